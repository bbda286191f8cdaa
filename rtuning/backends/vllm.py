"""The `vllm` backend: vLLM's offline `LLM` with automatic prefix caching.

What the protocol asks for, read exactly:

- answers: greedy (temperature 0) or seeded sampling, `stop_token_ids` = the rules' stop
  tokens and the end tokens, at most the task's new tokens; each chosen token's probability
  from its log-probability (`logprobs=0` returns the chosen token's own, computed from the raw
  logits);
- option letters and p(sure): one generated position with `logprob_token_ids` = the letters
  (or " sure", " unsure"), which returns the log-probabilities of exactly those tokens from the
  full softmax, not a top-k list; the softmax over them is the protocol's answer
  (p(sure) / (p(sure) + p(unsure)) for two). Needs vLLM 0.32 or later.

The shared few-shot block and each question's prompt are computed once and reused by the
sure question through vLLM's prefix cache, so no state passes between calls.

Parallelism: `--tensor_parallel_size N` shards the model over N GPUs. Data parallelism is the
pipeline's own: launched with `accelerate launch --num_processes P` (or torchrun), each
process runs its own LLM on its own GPUs (visible devices set per local rank) over every P-th
batch, as with the hf backend.
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

from .base import Answer, Backend, BackendError, Sampling


class VLLMBackend(Backend):
    name = "vllm"
    pads_batches = False  # vLLM schedules tokens itself: no padded-token cap per batch

    def __init__(self, llm, tokenizer, settings: dict, eos_ids: frozenset[int], vocab_size: int, context: int):
        self.llm, self.tokenizer = llm, tokenizer
        self._settings = settings
        self.eos_ids, self.vocab_size, self.context_length = eos_ids, vocab_size, context
        self.on_gpu = settings["device"] == "cuda"
        self.reset_work()

    @classmethod
    def load(cls, spec, options) -> "VLLMBackend":
        from ..models import load_tokenizer, materialize, pick_device, pick_dtype

        folder = materialize(spec)
        if os.path.isfile(os.path.join(folder, "adapter_config.json")):
            raise BackendError(f"{spec.name}: a LoRA adapter folder; merge it into its base model first "
                               "(peft's merge_and_unload) or evaluate it with --backend hf")
        try:
            import vllm
        except ImportError as e:  # installed but broken, e.g. torchvision beside the CPU torch
            raise BackendError(f"vllm is installed but does not import ({e}); README \"vLLM\" says how to "
                               "install it") from None
        if not hasattr(vllm.SamplingParams(), "logprob_token_ids"):
            raise BackendError(f"vllm {vllm.__version__} cannot read chosen tokens' log-probabilities "
                               "(logprob_token_ids); install vllm 0.32 or later")
        import torch
        from transformers import AutoConfig, GenerationConfig

        tp = options.tensor_parallel_size
        gpus = torch.cuda.device_count()
        device = pick_device(options.device)
        if device.type == "cuda":
            from ..distributed import current

            procs = current()
            if procs.world > 1:
                # data parallel under a launcher: this process's own GPUs, tp of them
                local = int(os.environ.get("LOCAL_RANK", procs.rank))
                if (local + 1) * tp > gpus:
                    raise BackendError(f"{procs.world} processes x --tensor_parallel_size {tp} need "
                                       f"{procs.world * tp} GPUs; {gpus} are visible")
                os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(local * tp + i) for i in range(tp))
            elif tp > gpus:
                raise BackendError(f"--tensor_parallel_size {tp} is larger than the {gpus} GPUs present")
        elif tp != 1:
            raise BackendError(f"--tensor_parallel_size {tp} needs GPUs; this run is on {device}")
        dtype = str(pick_dtype(options.dtype, device)).replace("torch.", "")
        config = AutoConfig.from_pretrained(folder)
        context = getattr(config, "max_position_embeddings", None) or 2048
        max_len = min(context, int(options.extra.get("max_model_len") or context))
        # Compiling on CPU takes minutes for seconds of gain; CUDA graphs pay off on a GPU.
        eager = device.type != "cuda"
        # On the CPU backend this fraction reserves system memory for weights and KV cache.
        memory = options.gpu_memory_utilization if device.type == "cuda" else float(
            options.extra.get("cpu_memory_fraction") or 0.15)
        settings = {"backend": "vllm", "vllm_version": vllm.__version__, "dtype": dtype,
                    "tensor_parallel_size": tp, "enforce_eager": eager, "prefix_caching": True,
                    "max_model_len": max_len, "device": device.type}
        try:
            llm = vllm.LLM(model=folder, tokenizer=folder, dtype=dtype, seed=options.seed, enable_prefix_caching=True,
                           tensor_parallel_size=tp, gpu_memory_utilization=memory, max_model_len=max_len,
                           enforce_eager=eager, generation_config="vllm", disable_log_stats=True)
        except Exception as e:  # vLLM raises many kinds; one line is what the user needs
            raise BackendError(f"vLLM could not load {spec.name!r} from {folder}: {type(e).__name__}: "
                               f"{str(e).splitlines()[0] if str(e) else ''}") from None
        tokenizer = load_tokenizer(spec)
        eos = {tokenizer.eos_token_id}
        try:
            gen = GenerationConfig.from_pretrained(folder).eos_token_id
            eos.update(gen if isinstance(gen, (list, tuple)) else [gen])
        except OSError:
            pass
        vocab = getattr(config, "vocab_size", None) or len(tokenizer)
        return cls(llm, tokenizer, settings, frozenset(i for i in eos if i is not None), vocab, max_len)

    def settings(self) -> dict:
        return dict(self._settings)

    def reset_work(self) -> None:
        self.tokens_processed = self.logit_rows = 0

    def work(self) -> dict:
        # prompt tokens sent plus tokens generated: vLLM's prefix cache computes fewer
        return {"tokens_processed": self.tokens_processed, "token_slots": self.tokens_processed,
                "logit_rows": self.logit_rows}

    def _run(self, seqs: Sequence[Sequence[int]], params: list) -> list:
        from vllm.inputs import TokensPrompt

        outs = self.llm.generate([TokensPrompt(prompt_token_ids=list(s)) for s in seqs], params, use_tqdm=False)
        self.tokens_processed += sum(len(s) for s in seqs) + sum(len(o.outputs[0].token_ids) for o in outs)
        self.logit_rows += sum(len(o.outputs[0].token_ids) for o in outs)
        return outs

    def decode(self, seqs: Sequence[Sequence[int]], max_new_tokens: int, *, stop: frozenset[int],
               sampling: Sampling | None = None, keep_state: bool = False) -> tuple[list[Answer], Any]:
        from vllm import SamplingParams

        stops = sorted((set(stop) | set(self.eos_ids)) - {None})
        common = dict(max_tokens=max_new_tokens, logprobs=0, stop_token_ids=stops, detokenize=False,
                      skip_special_tokens=True)
        if sampling is None:
            params = [SamplingParams(temperature=0.0, **common)] * len(seqs)
        else:  # one seed per row: a repeated prompt draws different samples, reproducibly
            params = [SamplingParams(temperature=sampling.temperature, top_k=sampling.top_k or 0,
                                     seed=sampling.seed * 100_003 + row, **common) for row in range(len(seqs))]
        answers = []
        for out in self._run(seqs, params):
            comp = out.outputs[0]
            tokens, probs, stopped = [], [], "length"
            for step, tok in enumerate(comp.token_ids):
                if tok in self.eos_ids or tok in stop:
                    stopped = "eos" if tok in self.eos_ids else "period"
                    break
                tokens.append(tok)
                probs.append(math.exp(comp.logprobs[step][tok].logprob))
            raw = self.tokenizer.decode(tokens, skip_special_tokens=True)
            answers.append(Answer(raw.strip(), tokens, probs, stopped, raw=raw))
        return answers, None

    def token_probs(self, seqs: Sequence[Sequence[int]], token_ids: Sequence[int], *, state: Any = None,
                    keep_state: bool = False) -> tuple[list[list[float]], Any]:
        from vllm import SamplingParams

        ids = list(token_ids)
        params = SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=ids, detokenize=False)
        rows = []
        for out in self._run(seqs, [params] * len(seqs)):
            lp = out.outputs[0].logprobs[0]
            vals = [lp[i].logprob for i in ids]
            top = max(vals)
            w = [math.exp(v - top) for v in vals]
            total = sum(w)
            rows.append([x / total for x in w])
        return rows, None

    def suggest_batch_size(self, tokens_per_row: int) -> int:
        # vLLM batches tokens itself; a call only needs enough rows to keep it full (AbstentionBench
        # sends 1024); the pipeline saves after each call, so CPU runs keep calls shorter
        return 1024 if self.on_gpu else 256

    def close(self) -> None:
        llm, self.llm = self.llm, None
        if llm is not None:
            del llm
