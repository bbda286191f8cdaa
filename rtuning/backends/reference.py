"""The `reference` backend: the ORIGINAL release's per-question algorithm, faithfully, as the
baseline that tests and benchmarks compare every other backend with.

One question at a time: `model.generate(max_new_tokens=K, output_scores=True)`, a walk over
the scores (chosen token; stop at the first stop or end token), the answer confidence as the
geometric mean of the chosen tokens' probabilities; next-token probabilities (letters, the
sure question) from a SECOND `generate` call on the whole re-encoded sequence, only to read
one distribution. The stop and token ids are the caller's (the scoring rules), so any
difference from another backend comes from the arithmetic alone.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from .base import Answer, Backend, Sampling
from .hf import HFBackend


class TransformersModelBackend(Backend):
    """A transformers model driven through `model.generate`: what the reference and generate
    backends share (loading, end tokens, the work counters)."""

    def __init__(self, model, tokenizer):
        from ..models import stop_token_ids

        self.model, self.tokenizer = model, tokenizer
        self.device = next(model.parameters()).device
        self.vocab_size = model.get_output_embeddings().weight.shape[0]
        self.eos_ids = frozenset(i for i in stop_token_ids(model, tokenizer) if i < self.vocab_size)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.reset_work()

    @classmethod
    def load(cls, spec, options):
        hf = HFBackend.load(spec, options)
        return cls(hf.model, hf.tokenizer)

    def settings(self) -> dict:
        return {"backend": self.name, "dtype": str(next(self.model.parameters()).dtype).replace("torch.", "")}

    def reset_work(self) -> None:
        self.tokens_processed = self.token_slots = self.logit_rows = 0

    def work(self) -> dict:
        return {"tokens_processed": self.tokens_processed, "token_slots": self.token_slots,
                "logit_rows": self.logit_rows}


class ReferenceBackend(TransformersModelBackend):
    name = "reference"

    def _generate(self, ids: Sequence[int], max_new_tokens: int, sampling: Sampling | None):
        input_ids = torch.tensor([list(ids)], dtype=torch.long, device=self.device)
        kwargs = {"do_sample": False}
        if sampling is not None:
            torch.manual_seed(sampling.seed)
            kwargs = {"do_sample": True, "temperature": sampling.temperature, "top_k": sampling.top_k}
        out = self.model.generate(input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=max_new_tokens,
                                  output_scores=True, return_dict_in_generate=True, pad_token_id=self.pad_id,
                                  **kwargs)
        # forwards that generate ran: the prompt, then one token per further step
        self.tokens_processed += len(ids) + len(out.scores) - 1
        self.token_slots += len(ids) + len(out.scores) - 1
        self.logit_rows += len(out.scores)
        return out

    @torch.inference_mode()
    def decode(self, seqs: Sequence[Sequence[int]], max_new_tokens: int, *, stop: frozenset[int],
               sampling: Sampling | None = None, keep_state: bool = False) -> tuple[list[Answer], Any]:
        answers = []
        for row, ids in enumerate(seqs):
            draw = None if sampling is None else Sampling(sampling.temperature, sampling.top_k, sampling.seed + row)
            out = self._generate(ids, max_new_tokens, draw)
            tokens: list[int] = []
            probs: list[float] = []
            stopped = "length"
            for step, score in enumerate(out.scores):
                p = torch.softmax(score[0].float(), dim=-1)
                tok = int(out.sequences[0, len(ids) + step])
                if tok in self.eos_ids or tok in stop:
                    stopped = "eos" if tok in self.eos_ids else "period"
                    break
                tokens.append(tok)
                probs.append(float(p[tok]))
            raw = self.tokenizer.decode(tokens, skip_special_tokens=True)
            answers.append(Answer(raw.strip(), tokens, probs, stopped, raw=raw))
        return answers, None

    @torch.inference_mode()
    def token_probs(self, seqs: Sequence[Sequence[int]], token_ids: Sequence[int], *, state: Any = None,
                    keep_state: bool = False) -> tuple[list[list[float]], Any]:
        rows = []
        for ids in seqs:
            logits = self._generate(ids, 1, None).scores[0][0].float()
            rows.append(torch.softmax(logits[list(token_ids)], dim=-1).tolist())
        return rows, None

    def suggest_batch_size(self, tokens_per_row: int) -> int:
        return 1
