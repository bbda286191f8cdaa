"""The hf engine's decoder: greedy or sampled answers that stop at a period or end token.

Finished rows never contribute further tokens and leave the batch once they are a quarter of
the rows still going; with keep_prompt_cache, the prompts' KV cache and each row's decoded
answer tokens come back as a PromptCache for the sure question.
"""

from __future__ import annotations

import torch

from ..backends.base import Answer, Sampling
from .prefill import PromptCache, _cache_from, _is_plain, _kv


class Decoder:
    """The engine's decoding loop (uses PackedPrefill's `_prefill` and `_forward`)."""

    def generate(self, seqs: list[list[int]], max_new_tokens: int, sampling: Sampling | None = None) -> list[Answer]:
        """Greedy (or sampled) answers with the default period stop, without keeping a cache."""
        return self.decode(seqs, max_new_tokens, sampling)[0]

    @torch.inference_mode()
    def decode(self, seqs: list[list[int]], max_new_tokens: int, sampling: Sampling | None = None,
               keep_prompt_cache: bool = False, stop: torch.Tensor | None = None
               ) -> tuple[list[Answer], "PromptCache | None"]:
        """Decode each sequence until a period token, an end token or the length limit.

        Greedy unless `sampling` is given. `stop` is a vocabulary mask of the tokens that end
        an answer besides the end tokens (default: the period tokens). The stop token itself is
        not part of the answer,
        and rows that have stopped never contribute further tokens; once they number a
        quarter of the rows still going, they leave the batch and its cache (dropping rows
        copies the cache, so not for each one). With keep_prompt_cache, the KV cache of the
        prompts and of the decoded answer tokens comes back with the answers, for `token_probs`.
        """
        n = len(seqs)
        stop = self.period if stop is None else stop
        generator = torch.Generator().manual_seed(sampling.seed) if sampling is not None else None
        prompt_cache = None
        logits, cache, mask = self._prefill(seqs)
        plain = _is_plain(cache)
        # DynamicCache grows by concatenation, so these tensors stay the prompts' cache
        prompt_kv = [(layer.keys, layer.values) for layer in cache.layers] if plain and keep_prompt_cache else None
        prompt_mask = mask
        next_pos = mask.sum(-1, keepdim=True)
        rows = list(range(n))  # original row of each batch row
        live = [True] * n
        tokens: list[list[int]] = [[] for _ in range(n)]
        token_probs: list[list[float]] = [[] for _ in range(n)]
        stopped = ["length"] * n
        width = prompt_mask.shape[1]
        answer_kv: list[tuple[list[int], list]] = []  # (rows, per-layer answer KV) of rows that left
        for step in range(max_new_tokens):
            probs = torch.softmax(logits, dim=-1)
            chosen = probs.argmax(-1) if sampling is None else self._sample(logits, sampling, generator)
            chosen_p = probs.gather(1, chosen[:, None]).squeeze(1)
            # one transfer to the host per step
            host = torch.stack([chosen.double(), chosen_p.double(), self.eos[chosen].double(),
                                stop[chosen].double()]).cpu().tolist()
            for j, (tok, p, eos, per) in enumerate(zip(*host)):
                if not live[j]:
                    continue
                row = rows[j]
                if eos or per:
                    stopped[row] = "eos" if eos else "period"
                    live[j] = False
                else:
                    tokens[row].append(int(tok))
                    token_probs[row].append(p)
            alive = sum(live)
            if not alive or step == max_new_tokens - 1:
                break
            if plain and (len(live) - alive) * 4 >= alive:
                keep = [j for j, x in enumerate(live) if x]
                if prompt_kv is not None and step:
                    gone = [j for j, x in enumerate(live) if not x]
                    answer_kv.append(self._answer_columns(cache, gone, width, [rows[j] for j in gone]))
                index = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(index)
                mask, next_pos, chosen = mask[index], next_pos[index], chosen[index]
                rows, live = [rows[j] for j in keep], [True] * len(keep)
            mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=mask.dtype, device=self.device)], dim=1)
            out = self._forward(chosen[:, None], mask, next_pos, cache, sum(live), rows)
            logits, cache = out.logits[:, -1, :].float(), _kv(out)
            next_pos = next_pos + 1
        if keep_prompt_cache:
            if prompt_kv is not None:
                if cache.get_seq_length() > width:
                    answer_kv.append(self._answer_columns(cache, range(len(rows)), width, rows))
                out = cache = None  # free the decoding cache before the prompt cache grows
                # answer tokens whose KV was computed: all but the last of a row cut by the length limit
                fed = [t[: len(t) - (s == "length")] for t, s in zip(tokens, stopped)]
                prompt_cache = self._with_answers(prompt_kv, prompt_mask, seqs, fed, answer_kv)
            elif cache.is_croppable:  # rows never left this cache: cut it back to the prompts
                cache.crop(-(cache.get_seq_length() - prompt_mask.shape[1]))
                prompt_cache = PromptCache(cache, prompt_mask, [list(s) for s in seqs])
        texts = self.tokenizer.batch_decode(tokens, skip_special_tokens=True)
        answers = [Answer(t.strip(), tk, tp, s, raw=t) for t, tk, tp, s in zip(texts, tokens, token_probs, stopped)]
        return answers, prompt_cache

    @staticmethod
    def _answer_columns(cache, batch_rows, width: int, rows: list[int]):
        index = torch.tensor(list(batch_rows), device=cache.layers[0].keys.device)
        return rows, [(layer.keys[index, :, width:], layer.values[index, :, width:]) for layer in cache.layers]

    def _with_answers(self, prompt_kv, prompt_mask, seqs, fed, answer_kv) -> PromptCache:
        """The prompts' cache with each row's answer-token KV appended after it (left-aligned)."""
        n, a = len(seqs), max((len(t) for t in fed), default=0)
        if a == 0:
            return PromptCache(_cache_from(prompt_kv), prompt_mask, [list(s) for s in seqs])
        layers = []
        for i, (k, v) in enumerate(prompt_kv):
            prompt_kv[i] = None  # each old layer goes as its extended copy is made
            ak = k.new_zeros((n, k.shape[1], a, k.shape[3]))
            av = v.new_zeros((n, v.shape[1], a, v.shape[3]))
            for rows, kv in answer_kv:
                gk, gv = kv[i]
                cols = min(a, gk.shape[2])
                index = torch.tensor(rows, device=k.device)
                ak[index, :, :cols] = gk[:, :, :cols]
                av[index, :, :cols] = gv[:, :, :cols]
            layers.append((torch.cat([k, ak], dim=2), torch.cat([v, av], dim=2)))
        cols = torch.arange(a, device=self.device)[None, :]
        lengths = torch.tensor([len(t) for t in fed], device=self.device)[:, None]
        mask = torch.cat([prompt_mask, (cols < lengths).to(prompt_mask.dtype)], dim=1)
        return PromptCache(_cache_from(layers), mask, [list(s) for s in seqs], [list(t) for t in fed])

    def _sample(self, logits: torch.Tensor, sampling: Sampling, generator: torch.Generator) -> torch.Tensor:
        scaled = logits / sampling.temperature
        if sampling.top_k and sampling.top_k < scaled.shape[-1]:
            kth = torch.topk(scaled, sampling.top_k, dim=-1).values[:, -1:]
            scaled = scaled.masked_fill(scaled < kth, float("-inf"))
        # Draw on the CPU so a seeded CPU generator gives the same answers on every device.
        probs = torch.softmax(scaled, dim=-1).cpu()
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1).to(self.device)

