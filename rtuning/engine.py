"""The batched answering engine: greedy/sampled decoding, letter scoring and sure-probability.

All scoring reads next-token distributions from plain forward passes with a KV cache: no
`generate` call is used to read a single distribution. Inputs are left-padded with explicit
position ids, so a question's result does not depend on what it is batched with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .models import stop_token_ids
from .tasks import SURE_QUESTION


@dataclass
class Answer:
    """A decoded answer: its text, token ids and each chosen token's probability."""

    text: str
    token_ids: list[int] = field(default_factory=list)
    token_probs: list[float] = field(default_factory=list)
    stopped_by: str = "length"  # "period", "eos" or "length"

    @property
    def confidence(self) -> float:
        """Geometric mean of the chosen tokens' probabilities; 0 for an empty answer."""
        if not self.token_probs:
            return 0.0
        return math.exp(sum(math.log(max(p, 1e-45)) for p in self.token_probs) / len(self.token_probs))


@dataclass(frozen=True)
class Sampling:
    """Sampling settings; the generator makes the draw reproducible."""

    temperature: float = 0.7
    top_k: int = 50  # transformers' generate default, which the original release inherited
    generator: torch.Generator | None = None


@dataclass
class PromptCache:
    """The KV cache of a batch of left-padded prompts, kept after decoding their answers."""

    cache: object
    mask: torch.Tensor
    prompts: list[list[int]]


def continuation_token(tokenizer, context: str, word: str) -> int:
    """The first token id the tokenizer really produces for `word` right after `context`.

    With BPE tokenizers the word after "I am" is " sure" with its leading space, with
    SentencePiece it is "▁sure": encoding in context finds the right one for either.
    """
    base = tokenizer(context, add_special_tokens=False).input_ids
    full = tokenizer(context + word, add_special_tokens=False).input_ids
    n = 0
    while n < min(len(base), len(full)) and base[n] == full[n]:
        n += 1
    if n >= len(full):
        raise ValueError(f"{word!r} adds no token after {context!r}")
    return full[n]


def sure_prompt(prompt: str, answer: str, sep: str = " ") -> str:
    """The follow-up question whose next token is read for the sure-probability."""
    return f"{prompt}{sep}{answer}.{SURE_QUESTION} I am"


class Engine:
    """Wraps a causal LM and its tokenizer for batched scoring."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        self.device = next(model.parameters()).device
        vocab = model.get_output_embeddings().weight.shape[0]
        texts = tokenizer.batch_decode([[i] for i in range(min(vocab, len(tokenizer)))])
        # The original stops at a token that is "."; we also accept it with whitespace around
        # (".\n" is common). Tokens like "D.C" do not stop the answer.
        period = torch.zeros(vocab, dtype=torch.bool)
        for i, t in enumerate(texts):
            if t.strip().startswith("."):
                period[i] = True
        self.period = period.to(self.device)
        eos = torch.zeros(vocab, dtype=torch.bool)
        for i in stop_token_ids(model, tokenizer):
            if i < vocab:
                eos[i] = True
        self.eos = eos.to(self.device)
        ctx = "Question: Is it? Answer: Yes." + SURE_QUESTION + " I am"
        self.sure_id = continuation_token(tokenizer, ctx, " sure")
        self.unsure_id = continuation_token(tokenizer, ctx, " unsure")
        if self.sure_id == self.unsure_id:
            raise ValueError("the tokenizer gives ' sure' and ' unsure' the same first token")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.prompt_cache: PromptCache | None = None

    # -- encoding -------------------------------------------------------------------------

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids with the tokenizer's special tokens (BOS where it adds one, as in training)."""
        return self.tokenizer(texts, add_special_tokens=True).input_ids

    def _left_pad(self, seqs: list[list[int]]):
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, s in enumerate(seqs):
            if s:
                ids[row, width - len(s):] = torch.tensor(s)
                mask[row, width - len(s):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return ids, mask, positions

    # -- scoring --------------------------------------------------------------------------

    @torch.inference_mode()
    def next_token_probs(self, seqs: list[list[int]]) -> torch.Tensor:
        """Full next-token distribution after each sequence (float32, on CPU), one forward pass."""
        ids, mask, positions = self._left_pad(seqs)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                         use_cache=False, logits_to_keep=1)
        return torch.softmax(out.logits[:, -1, :].float(), dim=-1).cpu()

    def sure_probability(self, seqs: list[list[int]], prompt_cache: "PromptCache | None" = None) -> list[float]:
        """p(sure) / (p(sure) + p(unsure)) after each (already encoded) sure prompt.

        With the prompt_cache of the `generate` call that produced the answers, only the
        tokens after each prompt (answer and sure question) are computed; rows whose sure
        prompt does not start with their prompt's tokens are scored in full.
        """
        if prompt_cache is None:
            probs = self.next_token_probs(seqs)
        else:
            probs = self._continue_from_cache(prompt_cache, seqs)
        sure, unsure = probs[:, self.sure_id], probs[:, self.unsure_id]
        total = sure + unsure
        ratio = torch.where(total > 0, sure / total.clamp(min=1e-45), torch.full_like(total, 0.5))
        return ratio.tolist()

    @torch.inference_mode()
    def _continue_from_cache(self, pc: "PromptCache", seqs: list[list[int]]) -> torch.Tensor:
        n = len(seqs)
        if n != len(pc.prompts):
            raise ValueError("prompt cache and sequences differ in batch size")
        suffixes, fallback = [], []
        for row, (full, prompt) in enumerate(zip(seqs, pc.prompts)):
            if len(full) > len(prompt) and full[: len(prompt)] == prompt:
                suffixes.append(full[len(prompt):])
            else:  # the tokenizer merged across the prompt boundary: score this row in full
                suffixes.append([self.pad_id])
                fallback.append(row)
        width = max(len(x) for x in suffixes)
        ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        smask = torch.zeros((n, width), dtype=torch.long)
        for row, x in enumerate(suffixes):  # right-padded: causal attention never sees the pads
            ids[row, : len(x)] = torch.tensor(x)
            smask[row, : len(x)] = 1
        ids, smask = ids.to(self.device), smask.to(self.device)
        lengths = pc.mask.sum(-1, keepdim=True)
        positions = lengths + torch.arange(width, device=self.device)[None, :]
        mask = torch.cat([pc.mask, smask], dim=1)
        last = torch.tensor([len(x) - 1 for x in suffixes], device=self.device)
        keep = torch.unique(last)  # logits only where some row ends
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=pc.cache,
                         use_cache=True, logits_to_keep=keep)
        column = torch.searchsorted(keep, last)
        logits = out.logits[torch.arange(n, device=self.device), column].float()
        probs = torch.softmax(logits, dim=-1).cpu()
        if fallback:
            probs[fallback] = self.next_token_probs([seqs[r] for r in fallback])
        return probs

    def choose_letter(self, seqs: list[list[int]], letter_ids: list[int], sampling: Sampling | None = None,
                      keep_prompt_cache: bool = False) -> list[tuple[int, list[float]]]:
        """Pick an option from the letters' logits at the first position (softmax over letters)."""
        ids, mask, positions = self._left_pad(seqs)
        with torch.inference_mode():
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                             use_cache=keep_prompt_cache, logits_to_keep=1)
        self.prompt_cache = PromptCache(out.cache, mask, [list(s) for s in seqs]) if keep_prompt_cache else None
        logits = out.logits[:, -1, letter_ids].float()
        probs = torch.softmax(logits, dim=-1)
        if sampling is None:
            picks = probs.argmax(-1)
        else:
            sampled = torch.softmax(logits / sampling.temperature, dim=-1).cpu()
            picks = torch.multinomial(sampled, 1, generator=sampling.generator).squeeze(-1)
        return [(int(k), row) for k, row in zip(picks.tolist(), probs.cpu().tolist())]

    # -- decoding -------------------------------------------------------------------------

    @torch.inference_mode()
    def generate(self, seqs: list[list[int]], max_new_tokens: int,
                 sampling: Sampling | None = None, keep_prompt_cache: bool = False) -> list[Answer]:
        """Decode each sequence until a period token, an end token or the length limit.

        Greedy unless `sampling` is given. The stop token itself is not part of the answer,
        and rows that have stopped never contribute further tokens. With keep_prompt_cache,
        the prompts' KV cache is kept (as `self.prompt_cache`) for `sure_probability`.
        """
        n = len(seqs)
        self.prompt_cache = None
        ids, mask, positions = self._left_pad(seqs)
        prompt_mask = mask
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                         use_cache=True, logits_to_keep=1)
        cache = out.cache
        next_pos = positions[:, -1:] + 1
        tokens: list[list[int]] = [[] for _ in range(n)]
        token_probs: list[list[float]] = [[] for _ in range(n)]
        stopped = ["length"] * n
        done = torch.zeros(n, dtype=torch.bool, device=self.device)
        for step in range(max_new_tokens):
            logits = out.logits[:, -1, :].float()
            probs = torch.softmax(logits, dim=-1)
            if sampling is None:
                chosen = probs.argmax(-1)
            else:
                chosen = self._sample(logits, sampling)
            chosen_p = probs.gather(1, chosen[:, None]).squeeze(1)
            is_period, is_eos = self.period[chosen], self.eos[chosen]
            for row, (tok, p, per, eos, fin) in enumerate(zip(
                    chosen.tolist(), chosen_p.tolist(), is_period.tolist(), is_eos.tolist(), done.tolist())):
                if fin:
                    continue
                if eos or per:
                    stopped[row] = "eos" if eos else "period"
                else:
                    tokens[row].append(tok)
                    token_probs[row].append(p)
            done |= is_period | is_eos
            if bool(done.all()) or step == max_new_tokens - 1:
                break
            mask = torch.cat([mask, torch.ones((n, 1), dtype=mask.dtype, device=self.device)], dim=1)
            out = self.model(input_ids=chosen[:, None], attention_mask=mask, position_ids=next_pos,
                             cache=cache, use_cache=True)
            cache = out.cache
            next_pos = next_pos + 1
        if keep_prompt_cache and cache.is_croppable:
            cache.crop(-(cache.get_seq_length() - prompt_mask.shape[1]))
            self.prompt_cache = PromptCache(cache, prompt_mask, [list(s) for s in seqs])
        texts = self.tokenizer.batch_decode(tokens, skip_special_tokens=True)
        return [Answer(t.strip(), tk, tp, s) for t, tk, tp, s in zip(texts, tokens, token_probs, stopped)]

    def _sample(self, logits: torch.Tensor, sampling: Sampling) -> torch.Tensor:
        scaled = logits / sampling.temperature
        if sampling.top_k and sampling.top_k < scaled.shape[-1]:
            kth = torch.topk(scaled, sampling.top_k, dim=-1).values[:, -1:]
            scaled = scaled.masked_fill(scaled < kth, float("-inf"))
        # Draw on the CPU so a seeded CPU generator gives the same answers on every device.
        probs = torch.softmax(scaled, dim=-1).cpu()
        return torch.multinomial(probs, 1, generator=sampling.generator).squeeze(-1).to(self.device)
