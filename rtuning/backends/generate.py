"""The `generate` backend: plain batched `model.generate`, what a user writes first.

Left-padded batches of whole prompts, `generate(output_scores=True)` for the answers, and a
one-token `generate` over the left-padded sure prompts (or letter prompts) for next-token
probabilities; no cache is reused across calls and no prefix is shared. The peer that the hf
backend's engine is measured against (benchmarks/bench_backends.py).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from .base import Answer, Sampling
from .reference import TransformersModelBackend


class GenerateBackend(TransformersModelBackend):
    name = "generate"

    def _generate(self, seqs: Sequence[Sequence[int]], max_new_tokens: int, sampling: Sampling | None):
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, s in enumerate(seqs):
            ids[row, width - len(s):] = torch.tensor(list(s))
            mask[row, width - len(s):] = 1
        kwargs = {"do_sample": False}
        if sampling is not None:
            torch.manual_seed(sampling.seed)
            kwargs = {"do_sample": True, "temperature": sampling.temperature, "top_k": sampling.top_k}
        out = self.model.generate(ids.to(self.device), attention_mask=mask.to(self.device),
                                  max_new_tokens=max_new_tokens, output_scores=True, return_dict_in_generate=True,
                                  pad_token_id=self.pad_id, **kwargs)
        steps = len(out.scores)
        self.tokens_processed += sum(len(s) for s in seqs) + len(seqs) * (steps - 1)
        self.token_slots += len(seqs) * (width + steps - 1)
        self.logit_rows += len(seqs) * steps
        return out, width

    @torch.inference_mode()
    def decode(self, seqs: Sequence[Sequence[int]], max_new_tokens: int, *, stop: frozenset[int],
               sampling: Sampling | None = None, keep_state: bool = False) -> tuple[list[Answer], Any]:
        out, width = self._generate(seqs, max_new_tokens, sampling)
        probs = [torch.softmax(score.float(), dim=-1) for score in out.scores]
        answers = []
        for row in range(len(seqs)):
            tokens, token_probs, stopped = [], [], "length"
            for step in range(len(out.scores)):
                tok = int(out.sequences[row, width + step])
                if tok in self.eos_ids or tok in stop:
                    stopped = "eos" if tok in self.eos_ids else "period"
                    break
                tokens.append(tok)
                token_probs.append(float(probs[step][row, tok]))
            raw = self.tokenizer.decode(tokens, skip_special_tokens=True)
            answers.append(Answer(raw.strip(), tokens, token_probs, stopped, raw=raw))
        return answers, None

    @torch.inference_mode()
    def token_probs(self, seqs: Sequence[Sequence[int]], token_ids: Sequence[int], *, state: Any = None,
                    keep_state: bool = False) -> tuple[list[list[float]], Any]:
        out, _ = self._generate(seqs, 1, None)
        return torch.softmax(out.scores[0][:, list(token_ids)].float(), dim=-1).tolist(), None

    def suggest_batch_size(self, tokens_per_row: int) -> int:
        from ..engine import kv_batch_size

        return kv_batch_size(self.model, self.device, tokens_per_row, self.vocab_size)
