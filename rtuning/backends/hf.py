"""The `hf` backend: a transformers model behind the batched engine (rtuning/engine.py)."""

from __future__ import annotations

from typing import Any, Sequence

from .base import Answer, Backend, BackendError, Sampling


class HFBackend(Backend):
    """transformers model + the engine: tree-packed prompts with a kept shared-prefix cache,
    finished rows leaving the decoding batch, and the prompt (and answer) KV cache handed back
    as state so that the sure question computes only what follows the prompt."""

    name = "hf"
    ENGINE_VERSION = 2  # the engine's arithmetic (prefix sharing, row dropping) moves the last bits

    def __init__(self, model=None, tokenizer=None, share_prefix: bool = True, engine=None):
        from ..engine import Engine

        self.engine = engine or Engine(model, tokenizer, share_prefix=share_prefix)
        self.model, self.tokenizer = self.engine.model, self.engine.tokenizer
        self.eos_ids = frozenset(int(i) for i in self.engine.eos.nonzero().flatten().tolist())
        self.vocab_size = self.engine.vocab_size
        self.device = self.engine.device
        self._masks: dict[frozenset[int], Any] = {}

    @classmethod
    def load(cls, spec, options) -> "HFBackend":
        from ..models import load_model, pick_device, pick_dtype

        device = options.extra.get("process_device") or pick_device(options.device)
        dtype = pick_dtype(options.dtype, device)
        if options.tensor_parallel_size != 1 or options.data_parallel_size != 1:
            raise BackendError("--tensor_parallel_size/--data_parallel_size are vLLM's; the hf backend "
                               "shards with --device_map auto or runs data-parallel under accelerate launch")
        try:
            model, tok = load_model(spec, device, dtype, device_map=options.device_map)
        except (OSError, ValueError) as e:
            raise BackendError(f"could not load model {spec.name!r} (a registry name, hub id, local folder or "
                               f".gguf file): {e}") from None
        return cls(model, tok)

    def settings(self) -> dict:
        dtype = next(self.model.parameters()).dtype
        return {"backend": "hf", "engine_version": self.ENGINE_VERSION, "dtype": str(dtype).replace("torch.", "")}

    def _mask(self, stop: frozenset[int]):
        if stop not in self._masks:
            self._masks[stop] = self.engine.stop_mask(stop)
        return self._masks[stop]

    def decode(self, seqs: Sequence[Sequence[int]], max_new_tokens: int, *, stop: frozenset[int],
               sampling: Sampling | None = None, keep_state: bool = False) -> tuple[list[Answer], Any]:
        return self.engine.decode([list(s) for s in seqs], max_new_tokens, sampling, keep_state, self._mask(stop))

    def token_probs(self, seqs: Sequence[Sequence[int]], token_ids: Sequence[int], *, state: Any = None,
                    keep_state: bool = False) -> tuple[list[list[float]], Any]:
        probs, cache = self.engine.token_probs([list(s) for s in seqs], list(token_ids), state, keep_state)
        return probs.tolist(), cache

    def suggest_batch_size(self, tokens_per_row: int) -> int:
        return self.engine.suggest_batch_size(tokens_per_row)

    def work(self) -> dict:
        e = self.engine
        return {"tokens_processed": e.tokens_processed, "token_slots": e.token_slots, "logit_rows": e.logit_rows}

    def reset_work(self) -> None:
        self.engine.reset_counters()

    def close(self) -> None:
        self.engine = self.model = None
