"""Randomly initialised models of real architectures, built from their config on the spot (no hub).

    python benchmarks/random_model.py --arch open_llama_3b --tokenizer smollm2-135m --output /tmp/ol3b
    python benchmarks/random_model.py --arch open_llama_3b --count          # parameters, nothing allocated
    python benchmarks/random_model.py --save_tokenizer .gpucarry/smollm2-tokenizer   # the tokenizer alone

Speed does not depend on the weights' values, so a random model of a 3B architecture times
every backend as the real one would; its answers are random text, so benchmarks cap the new
tokens (bench_backends --eval_new_tokens). The model is saved with save_pretrained (safetensors,
bf16 by default) next to its tokenizer, so every backend loads it by path.

Vocabulary: the embedding must cover every id the tokenizer produces, so vocab_size is the
tokenizer's length. With SmolLM2's tokenizer (49,152 ids, the embedded model's, which ships
with this project) an open_llama_3b body gets 49,152 embedding and output rows instead of its
own 32,000: 3.54B parameters instead of 3.43B (+3.2%), every transformer block as in the real
model. `param_count` says exactly.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

# Each shape is copied from the model's published config.json (the source named beside it);
# vocab_size is the architecture's own and is replaced by the tokenizer's (module docstring).
ARCHS: dict[str, dict] = {
    # openlm-research/open_llama_3b, config.json (LlamaForCausalLM, 3.43B parameters)
    "open_llama_3b": dict(hidden_size=3200, intermediate_size=8640, num_hidden_layers=26, num_attention_heads=32,
                          num_key_value_heads=32, max_position_embeddings=2048, rms_norm_eps=1e-6,
                          rope_theta=10000.0, tie_word_embeddings=False, vocab_size=32000),
    # HuggingFaceTB/SmolLM2-135M-Instruct, config.json; the same numbers are in the embedded
    # model's GGUF (rtuning.models.materialize writes them out)
    "smollm2_135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, max_position_embeddings=8192, rms_norm_eps=1e-5,
                         rope_theta=100000.0, tie_word_embeddings=True, vocab_size=49152),
    # the tests' tiny Llama (tests/conftest.py): for CPU smoke runs of the GPU check
    "tiny": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=4096, rms_norm_eps=1e-6,
                 rope_theta=10000.0, tie_word_embeddings=True, vocab_size=49152),
}


def build_config(arch: str, tokenizer=None):
    """The LlamaConfig of `arch`, with the tokenizer's vocabulary size and special ids when given."""
    from transformers import LlamaConfig

    if arch not in ARCHS:
        raise SystemExit(f"--arch {arch!r}: choose one of {', '.join(ARCHS)}")
    shape = dict(ARCHS[arch])
    rope_theta = shape.pop("rope_theta")
    ids = {}
    if tokenizer is not None:
        shape["vocab_size"] = len(tokenizer)
        ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                   pad_token_id=tokenizer.pad_token_id)
    return LlamaConfig(**shape, **ids, rope_parameters={"rope_type": "default", "rope_theta": rope_theta})


def param_count(config) -> dict:
    """Parameters of the model `config` describes, counted on the meta device (nothing allocated)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    emb = model.get_input_embeddings().weight.numel()
    total = sum(p.numel() for p in model.parameters())  # tied weights are one Parameter, counted once
    return {"total": total, "embedding": emb, "tied_embeddings": bool(config.tie_word_embeddings),
            "per_block": sum(p.numel() for p in model.model.layers[0].parameters()),
            "blocks": config.num_hidden_layers}


def load_any_tokenizer(name: str):
    """A registry name (smollm2-135m), a model folder or a folder holding only a tokenizer."""
    from rtuning.models import load_tokenizer, resolve_model

    return load_tokenizer(resolve_model(name))


def save_random_model(arch: str, tokenizer, output: str | Path, dtype: torch.dtype = torch.bfloat16,
                      device: str = "auto", seed: int = 0) -> dict:
    """Build `arch` with random weights (transformers' own init), save it and the tokenizer to `output`."""
    from transformers import AutoModelForCausalLM

    config = build_config(arch, tokenizer)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(seed)
    # Initialised where it will run and in its final dtype: a 3B model in fp32 on the CPU is
    # 14 GB and a minute of random numbers; on a GPU in bf16 it takes seconds.
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    info = {"arch": arch, "source": "benchmarks/random_model.py ARCHS[" + repr(arch) + "]", "dtype": str(dtype).replace("torch.", ""),
            "seed": seed, "vocab_size": config.vocab_size, "arch_vocab_size": ARCHS[arch]["vocab_size"],
            "params": sum(p.numel() for p in model.parameters()), "path": str(output),
            "shape": {k: v for k, v in ARCHS[arch].items() if k != "vocab_size"}}
    (output / "random_model.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=sorted(ARCHS), default="open_llama_3b")
    p.add_argument("--tokenizer", default="smollm2-135m", help="registry name or folder with a tokenizer; 'none' (with --count): the architecture's own vocabulary")
    p.add_argument("--output", help="folder to save the model and tokenizer into")
    p.add_argument("--dtype", default="bf16", help="bf16, fp16 or fp32")
    p.add_argument("--device", default="auto", help="where the weights are initialised (auto: CUDA if present)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="FILE", help="also write what was built (shape, parameters, path) to FILE")
    p.add_argument("--count", action="store_true", help="print the parameter count (meta device) and stop")
    p.add_argument("--save_tokenizer", metavar="DIR", help="save the tokenizer alone to DIR (to carry it) and stop")
    args = p.parse_args(argv)
    tok = None if args.tokenizer == "none" else load_any_tokenizer(args.tokenizer)
    if args.save_tokenizer:
        if tok is None:
            p.error("--save_tokenizer needs --tokenizer")
        tok.save_pretrained(args.save_tokenizer)
        print(f"tokenizer ({len(tok)} ids) saved to {args.save_tokenizer}")
        return {"tokenizer": args.save_tokenizer, "vocab_size": len(tok)}
    if args.count:
        counts = param_count(build_config(args.arch, tok))
        print(json.dumps(counts))
        return counts
    if not args.output:
        p.error("--output is required (or --count / --save_tokenizer)")
    from rtuning.models import DTYPES

    if args.dtype not in DTYPES:
        p.error(f"--dtype {args.dtype!r}: choose one of {', '.join(DTYPES)}")
    info = save_random_model(args.arch, tok, args.output, DTYPES[args.dtype], args.device, args.seed)
    if args.json:
        Path(args.json).write_text(json.dumps(info, indent=2) + "\n")
    print(f"{args.arch}: {info['params'] / 1e9:.3f}B parameters ({info['dtype']}, vocab {info['vocab_size']}) "
          f"saved to {args.output}")
    return info


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
