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
    """The KV cache of a batch of left-padded prompts, kept after decoding their answers.

    With `answers`, the cache also holds each row's answer tokens (those whose KV was
    computed while decoding) in the columns after the prompts, left-aligned: the mask's last
    `answer_width` columns mark them.
    """

    cache: object
    mask: torch.Tensor
    prompts: list[list[int]]
    answers: list[list[int]] | None = None

    @property
    def answer_width(self) -> int:
        return max((len(a) for a in self.answers), default=0) if self.answers else 0


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


def _common_length(a, b) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _is_plain(cache) -> bool:
    # The fast paths rebuild, slice and regroup caches, which assumes plain full-attention
    # DynamicCache layers (no sliding window, no quantisation, no offloading).
    from transformers.cache_utils import DynamicCache, DynamicLayer

    return (type(cache) is DynamicCache and not getattr(cache, "offloading", False)
            and all(type(layer) is DynamicLayer for layer in cache.layers))


def _cache_from(kv: list[tuple[torch.Tensor, torch.Tensor]]):
    from transformers.cache_utils import DynamicCache

    return DynamicCache(ddp_cache_data=kv)


def _pad_left(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    extra = width - t.shape[dim]
    if extra <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = extra
    return torch.cat([t.new_zeros(shape), t], dim=dim)


class Engine:
    """Wraps a causal LM and its tokenizer for batched scoring.

    Arithmetic is spent on real tokens only: a token prefix that most of a batch shares (the
    few-shot examples) is computed once and its KV cache kept for the following batches;
    decoding drops finished rows from the batch; the sure question continues from the
    answer prompt's cache; logits are computed for the last position only. Counters
    (`tokens_processed`, `token_slots`, `logit_rows`) record the work for FLOP accounting.
    """

    # A shared prefix shorter than this is not worth a separate forward pass.
    MIN_SHARED_PREFIX = 8

    def __init__(self, model, tokenizer, share_prefix: bool = True):
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
        self.share_prefix = share_prefix
        # original row of each row of the forward pass in progress (for hooks and tests)
        self.active_rows: list[int] | None = None
        self.clear_prefix_cache()
        self.reset_counters()

    def reset_counters(self) -> None:
        """Zero the work counters: real tokens, tokens with padding, rows of vocabulary logits."""
        self.tokens_processed = 0
        self.token_slots = 0
        self.logit_rows = 0

    def clear_prefix_cache(self) -> None:
        """Forget the kept KV cache of the last shared prefix."""
        self._prefix: tuple[int, ...] = ()
        self._prefix_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._prefix_key: tuple | None = None

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

    def _forward(self, ids, mask, positions, cache, real: int, rows: list[int] | None = None):
        """One counted forward pass with logits for the last position only."""
        self.active_rows = rows
        try:
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache,
                             use_cache=True, logits_to_keep=1)
        finally:
            self.active_rows = None
        self.tokens_processed += real
        self.token_slots += ids.numel()
        self.logit_rows += ids.shape[0]
        return out

    # -- shared prefix --------------------------------------------------------------------

    def _choose_prefix(self, seqs: list[list[int]]) -> tuple[int, ...]:
        """The token prefix that saves the most work: length x number of rows starting with it.

        Each row keeps at least its last token to compute (its logits are needed). Candidates
        come from the batch (two or more rows) or, for a lone row, from the kept prefix.
        """
        n = len(seqs)
        best, best_score = (), 0
        if n >= 2:
            order = sorted(seqs)
            common = [min(_common_length(a, b), len(a) - 1, len(b) - 1) for a, b in zip(order, order[1:])]
            for k in sorted(set(common), reverse=True):
                if k < self.MIN_SHARED_PREFIX or k * n <= best_score:
                    break
                run = longest = end = 0
                for i, c in enumerate(common):
                    run = run + 1 if c >= k else 0
                    if run > longest:
                        longest, end = run, i + 1
                if k * (longest + 1) > best_score:
                    best, best_score = tuple(order[end][:k]), k * (longest + 1)
        if not best and self._prefix:
            shared = [min(_common_length(s, self._prefix), len(s) - 1) for s in seqs]
            for k in sorted(set(shared), reverse=True):
                score = k * sum(1 for x in shared if x >= k)
                if k >= self.MIN_SHARED_PREFIX and score > best_score:
                    best, best_score = self._prefix[:k], score
        return best

    def _weights_key(self) -> tuple:
        # in-place weight updates (optimizer steps, load_state_dict) bump tensor versions
        return (sum(p._version for p in self.model.parameters()), next(self.model.parameters()).dtype)

    @torch.inference_mode()
    def _prefix_cache(self, prefix: tuple[int, ...]):
        """KV tensors (batch of one) of `prefix`, reusing the kept prefix's common part."""
        key = self._weights_key()
        if key != self._prefix_key:
            self.clear_prefix_cache()
        m = _common_length(self._prefix, prefix) if self._prefix_kv is not None else 0
        if m == len(prefix):
            return [(k[:, :, :m], v[:, :, :m]) for k, v in self._prefix_kv]
        base = _cache_from([(k[:, :, :m], v[:, :, :m]) for k, v in self._prefix_kv]) if m else None
        rest = torch.tensor([prefix[m:]], dtype=torch.long, device=self.device)
        positions = torch.arange(m, len(prefix), device=self.device)[None, :]
        out = self.model.base_model(input_ids=rest, position_ids=positions, cache=base, use_cache=True)
        self.tokens_processed += rest.shape[1]
        self.token_slots += rest.shape[1]
        cache = out.cache
        if not _is_plain(cache):
            self.share_prefix = False  # this model's cache cannot be shared this way
            return None
        self._prefix = tuple(prefix)
        self._prefix_kv = [(layer.keys, layer.values) for layer in cache.layers]
        self._prefix_key = key
        return self._prefix_kv

    # -- prompts --------------------------------------------------------------------------

    def _prefill(self, seqs: list[list[int]]):
        """Forward the prompts: (last-position logits in float32, KV cache, attention mask).

        Rows that start with the chosen shared prefix compute only the tokens after it; the
        others (rare: a question that is itself a shot) go through a plain pass, and the two
        caches are aligned on the right and stacked back into the rows' order.
        """
        n = len(seqs)
        prefix = self._choose_prefix(seqs) if self.share_prefix else ()
        kv = self._prefix_cache(prefix) if prefix else None
        P = len(prefix)
        shared = [r for r, s in enumerate(seqs) if kv is not None and len(s) > P and tuple(s[:P]) == prefix]
        if not shared:
            ids, mask, positions = self._left_pad(seqs)
            out = self._forward(ids, mask, positions, None, sum(len(s) for s in seqs), list(range(n)))
            return out.logits[:, -1, :].float(), out.cache, mask
        suffixes = [seqs[r][P:] for r in shared]
        ids, smask, spos = self._left_pad(suffixes)
        na = len(shared)
        mask = torch.cat([torch.ones((na, P), dtype=smask.dtype, device=self.device), smask], dim=1)
        cache = _cache_from([(k.expand(na, -1, -1, -1), v.expand(na, -1, -1, -1)) for k, v in kv])
        out = self._forward(ids, mask, spos + P, cache, sum(len(s) for s in suffixes), shared)
        logits, cache = out.logits[:, -1, :].float(), out.cache
        in_shared = set(shared)
        rest = [r for r in range(n) if r not in in_shared]
        if not rest:
            return logits, cache, mask
        ids_b, mask_b, pos_b = self._left_pad([seqs[r] for r in rest])
        out_b = self._forward(ids_b, mask_b, pos_b, None, sum(len(seqs[r]) for r in rest), rest)
        order = torch.tensor(shared + rest, device=self.device).argsort()
        width = max(mask.shape[1], mask_b.shape[1])
        mask = torch.cat([_pad_left(mask, width, 1), _pad_left(mask_b, width, 1)])[order]
        logits = torch.cat([logits, out_b.logits[:, -1, :].float()])[order]
        merged = []
        for la, lb in zip(cache.layers, out_b.cache.layers):
            merged.append((torch.cat([_pad_left(la.keys, width, 2), _pad_left(lb.keys, width, 2)])[order],
                           torch.cat([_pad_left(la.values, width, 2), _pad_left(lb.values, width, 2)])[order]))
        return logits, _cache_from(merged), mask

    # -- scoring --------------------------------------------------------------------------

    @torch.inference_mode()
    def next_token_probs(self, seqs: list[list[int]]) -> torch.Tensor:
        """Full next-token distribution after each sequence (float32, on CPU), one forward pass."""
        logits, _, _ = self._prefill(seqs)
        return torch.softmax(logits, dim=-1).cpu()

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
        width = pc.answer_width
        answers = pc.answers or [[] for _ in range(n)]
        suffixes, fallback, used = [], [], []
        for row, (full, prompt, ans) in enumerate(zip(seqs, pc.prompts, answers)):
            if len(full) > len(prompt) and full[: len(prompt)] == prompt:
                # the cached answer tokens that this sure prompt really starts with
                k = min(_common_length(full[len(prompt):], ans), len(full) - len(prompt) - 1)
                suffixes.append(full[len(prompt) + k:])
                used.append(k)
            else:  # the tokenizer merged across the prompt boundary: score this row in full
                suffixes.append([self.pad_id])
                fallback.append(row)
                used.append(0)
        base_mask = pc.mask
        if width and any(k < len(a) for k, a in zip(used, answers)):
            base_mask = pc.mask.clone()
            cols = torch.arange(width, device=self.device)[None, :]
            base_mask[:, -width:] = (cols < torch.tensor(used, device=self.device)[:, None]).to(base_mask.dtype)
        # Left-padded after the cache (the pads are masked out), so every row ends in the last
        # column and only that column needs logits.
        ids, smask, spos = self._left_pad(suffixes)
        lengths = base_mask.sum(-1, keepdim=True)
        mask = torch.cat([base_mask, smask], dim=1)
        out = self._forward(ids, mask, lengths + spos, pc.cache, sum(len(x) for x in suffixes), list(range(n)))
        probs = torch.softmax(out.logits[:, -1, :].float(), dim=-1).cpu()
        if fallback:
            probs[fallback] = self.next_token_probs([seqs[r] for r in fallback])
        return probs

    def choose_letter(self, seqs: list[list[int]], letter_ids: list[int], sampling: Sampling | None = None,
                      keep_prompt_cache: bool = False) -> list[tuple[int, list[float]]]:
        """Pick an option from the letters' logits at the first position (softmax over letters)."""
        with torch.inference_mode():
            logits, cache, mask = self._prefill(seqs)
        self.prompt_cache = PromptCache(cache, mask, [list(s) for s in seqs]) if keep_prompt_cache else None
        logits = logits[:, letter_ids]
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
        and rows that have stopped never contribute further tokens: once a quarter of the
        batch has stopped, those rows leave the batch and its cache. With keep_prompt_cache,
        the prompts' KV cache is kept (as `self.prompt_cache`) for `sure_probability`.
        """
        n = len(seqs)
        self.prompt_cache = None
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
            chosen = probs.argmax(-1) if sampling is None else self._sample(logits, sampling)
            chosen_p = probs.gather(1, chosen[:, None]).squeeze(1)
            # one transfer to the host per step
            host = torch.stack([chosen.double(), chosen_p.double(), self.eos[chosen].double(),
                                self.period[chosen].double()]).cpu().tolist()
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
            logits, cache = out.logits[:, -1, :].float(), out.cache
            next_pos = next_pos + 1
        if keep_prompt_cache:
            if prompt_kv is not None:
                if cache.get_seq_length() > width:
                    answer_kv.append(self._answer_columns(cache, range(len(rows)), width, rows))
                # answer tokens whose KV was computed: all but the last of a row cut by the length limit
                fed = [t[: len(t) - (s == "length")] for t, s in zip(tokens, stopped)]
                self.prompt_cache = self._with_answers(prompt_kv, prompt_mask, seqs, fed, answer_kv)
            elif cache.is_croppable:  # rows never left this cache: cut it back to the prompts
                cache.crop(-(cache.get_seq_length() - prompt_mask.shape[1]))
                self.prompt_cache = PromptCache(cache, prompt_mask, [list(s) for s in seqs])
        texts = self.tokenizer.batch_decode(tokens, skip_special_tokens=True)
        return [Answer(t.strip(), tk, tp, s) for t, tk, tp, s in zip(texts, tokens, token_probs, stopped)]

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

    def _sample(self, logits: torch.Tensor, sampling: Sampling) -> torch.Tensor:
        scaled = logits / sampling.temperature
        if sampling.top_k and sampling.top_k < scaled.shape[-1]:
            kth = torch.topk(scaled, sampling.top_k, dim=-1).values[:, -1:]
            scaled = scaled.masked_fill(scaled < kth, float("-inf"))
        # Draw on the CPU so a seeded CPU generator gives the same answers on every device.
        probs = torch.softmax(scaled, dim=-1).cpu()
        return torch.multinomial(probs, 1, generator=sampling.generator).squeeze(-1).to(self.device)
