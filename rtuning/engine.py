"""The batched answering engine: greedy/sampled decoding, letter scoring and sure-probability.

All scoring reads next-token distributions from plain forward passes with a KV cache: no
`generate` call is used to read a single distribution. Every token carries its explicit
position and a mask that shows it only its own prompt, so a question's result does not depend
on what it is batched with (up to float rounding).

On a CPU the model's matmuls run near the machine's peak whatever the batch, so speed comes
from computing fewer tokens: prompts are packed as a token tree (shared prefixes such as the
few-shot examples once, no padding), finished rows leave the batch, and the sure question
continues from the cache of the prompt and the decoded answer (benchmarks/README.md).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from .backends.base import Answer, Sampling, common_prefix_length
from .models import stop_token_ids
from .scoring import period_token_ids


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


def _accepts(fn, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _kv(out):
    """The KV cache a forward pass returned: `cache` from transformers 5.24, `past_key_values` before."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def _is_plain(cache) -> bool:
    # The fast paths rebuild, slice and regroup caches, which assumes plain full-attention
    # DynamicCache layers (no sliding window, no quantisation, no offloading).
    from transformers.cache_utils import DynamicCache, DynamicLayer

    return (type(cache) is DynamicCache and not getattr(cache, "offloading", False)
            and all(type(layer) is DynamicLayer for layer in cache.layers))


def _cache_from(kv: list[tuple[torch.Tensor, torch.Tensor]]):
    """A DynamicCache holding these per-layer (keys, values), without copying them."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    cache = DynamicCache(ddp_cache_data=[(k[..., :0, :], v[..., :0, :]) for k, v in kv])
    for layer, (k, v) in zip(cache.layers, kv):
        if type(layer) is not DynamicLayer:  # not the layout these tensors were made for
            return DynamicCache(ddp_cache_data=kv)
        layer.keys, layer.values = k, v
    return cache


def kv_batch_size(model, device: torch.device, tokens_per_row: int, vocab: int,
                  memory_budget: int | None = None) -> int:
    """Rows of this many tokens whose KV cache (held up to three times at the peak) and float32
    vocabulary rows fit the budget: half the free GPU memory or a quarter of the available RAM
    by default; at most 256 on a GPU, 64 on a CPU."""
    cfg = model.config
    heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    elem = next(model.parameters()).element_size()
    per_row = 3 * 2 * cfg.num_hidden_layers * heads * head_dim * elem * tokens_per_row + 4 * 4 * vocab
    if memory_budget is None:
        if device.type == "cuda":
            memory_budget = torch.cuda.mem_get_info(device)[0] // 2
        else:
            try:
                import psutil

                memory_budget = psutil.virtual_memory().available // 4
            except ImportError:
                memory_budget = 4 << 30
    cap = 256 if device.type == "cuda" else 64
    return int(max(1, min(cap, memory_budget // per_row)))


class Engine:
    """Wraps a causal LM and its tokenizer for batched scoring.

    Arithmetic is spent on real tokens only: each distinct prompt prefix is computed once
    (tree-packed prompts, no padding; the prefix most rows share is kept for the following
    batches that share it), finished rows leave the decoding batch, the sure question
    continues from the cache of the prompt and the decoded answer, and logits are computed
    where they are read. A batch's numbers depend on its own rows only (bit for bit on one
    machine), so resumed runs match uninterrupted ones. With share_prefix=False prompts run
    as one left-padded batch (also the fallback for models whose cache or attention cannot
    take a custom 4D mask and regrouping). Counters (`tokens_processed`, `token_slots`,
    `logit_rows`) record the work for FLOP accounting.
    """

    # A shared prefix shorter than this is left to the token tree.
    MIN_SHARED_PREFIX = 8
    # New prompt tokens per tree-packed forward pass. Attention over a packed chunk grows with
    # its length squared (~10% on top of the matmuls at 256 with SmolLM2's 576 hidden units),
    # while longer chunks give the matmuls more rows; 256 measured best on CPU.
    PACK_TOKENS = 256

    def __init__(self, model, tokenizer, share_prefix: bool = True):
        self.model, self.tokenizer = model, tokenizer
        self.device = next(model.parameters()).device
        vocab = model.get_output_embeddings().weight.shape[0]
        self.vocab_size = vocab
        self.period = self.stop_mask(period_token_ids(tokenizer))
        self._stop_masks: dict[frozenset[int], torch.Tensor] = {}
        eos = torch.zeros(vocab, dtype=torch.bool)
        for i in stop_token_ids(model, tokenizer):
            if i < vocab:
                eos[i] = True
        self.eos = eos.to(self.device)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.share_prefix = share_prefix
        # transformers 5.24 renamed past_key_values to cache; vLLM's environments pin older releases
        core = model.get_base_model() if hasattr(model, "get_base_model") else model
        self._cache_kw = "cache" if _accepts(core.forward, "cache") else "past_key_values"
        # During a forward pass: the caller's row for each row of logits it computes (batch rows,
        # or the leaves of tree-packed prompts), for hooks and tests.
        self.active_rows: list[int] | None = None
        self.clear_prefix_cache()
        self.reset_counters()

    def reset_counters(self) -> None:
        """Zero the work counters: real tokens, tokens with padding, rows of vocabulary logits."""
        self.tokens_processed = 0
        self.token_slots = 0
        self.logit_rows = 0

    def stop_mask(self, ids: frozenset[int]) -> torch.Tensor:
        """A boolean vocabulary mask of these token ids, on the model's device."""
        mask = torch.zeros(self.vocab_size, dtype=torch.bool)
        mask[[i for i in ids if i < self.vocab_size]] = True
        return mask.to(self.device)

    def clear_prefix_cache(self) -> None:
        """Forget the kept KV cache of the last shared prefix."""
        self._prefix: tuple[int, ...] = ()
        self._prefix_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._prefix_key: int | None = None

    def suggest_batch_size(self, tokens_per_row: int, memory_budget: int | None = None) -> int:
        """Rows per batch for answering: enough rows to keep decoding busy, within memory.

        Prompts are tree-packed (PACK_TOKENS per pass, whatever the batch size) and the sure
        question runs rows x ~17 tokens, so the batch size mostly sets how many rows share each
        one-token decoding step, whose cost is reading the weights. On a 2-core CPU with
        SmolLM2-135M the throughput levels off by 64 rows (benchmarks/README.md); GPUs keep
        gaining up to a few hundred. Memory per row: the KV cache of `tokens_per_row` tokens
        (prompt, answer and sure question), held up to three times at the peak, plus a few
        float32 vocabulary rows. The budget defaults to half the free GPU memory, or a quarter
        of the available RAM.
        """
        return kv_batch_size(self.model, self.device, tokens_per_row, self.eos.numel(), memory_budget)

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
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, **{self._cache_kw: cache},
                             use_cache=True, logits_to_keep=1)
        finally:
            self.active_rows = None
        self.tokens_processed += real
        self.token_slots += ids.numel()
        self.logit_rows += ids.shape[0]
        return out

    # -- prompts: each distinct token prefix computed once ----------------------------------

    def _choose_prefix(self, seqs: list[list[int]]) -> tuple[int, ...]:
        """The prefix to compute first, once: the most length x number of rows starting with it."""
        n = len(seqs)
        best, best_score = (), 0
        if n >= 2:
            order = sorted(seqs)
            common = [min(common_prefix_length(a, b), len(a) - 1, len(b) - 1) for a, b in zip(order, order[1:])]
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
        return best

    def _weights_key(self) -> int:
        # in-place updates (optimizer steps, load_state_dict) bump tensor versions; replaced or
        # moved tensors change address
        return hash(tuple((p.data_ptr(), p._version, p.dtype) for p in self.model.parameters()))

    def _can_pack(self) -> bool:
        return self.share_prefix and getattr(self.model.config, "_attn_implementation", None) in ("sdpa", "eager")

    def _prefill(self, seqs: list[list[int]], need_cache: bool = True):
        """Forward the prompts: (last-position logits in float32, KV cache, attention mask).

        The cache comes back in the usual left-padded batch layout, whichever way it was
        computed: tree-packed (`_prefill_packed`) or as one padded batch. Without need_cache
        the cache may be None: the tree-packed path then skips gathering every row's cache,
        which reads and writes each row's whole prompt KV (14% of an MMLU probe's time).
        """
        if self._can_pack():
            result = self._prefill_packed(seqs, need_cache)
            if result is not None:
                return result
        ids, mask, positions = self._left_pad(seqs)
        out = self._forward(ids, mask, positions, None, sum(len(s) for s in seqs), list(range(len(seqs))))
        return out.logits[:, -1, :].float(), _kv(out), mask

    def _prefill_packed(self, seqs: list[list[int]], need_cache: bool = True):
        """Prompts as a token tree: every distinct prefix is computed once, with no padding.

        Rows (sorted, so that neighbours share the most) are cut into chunks of about
        PACK_TOKENS new tokens; each chunk is one sequence of its tree's nodes, where a node
        attends to its ancestors only (a 4D mask) at its depth's position. The prefix most rows
        share sits in the cache, computed once. Returns None where the model's cache cannot be
        handled this way.
        """
        n = len(seqs)
        if self._weights_key() != self._prefix_key:
            self.clear_prefix_cache()
        # The prefix most rows share (the few-shot examples) first, once, so that no chunk
        # computes it again. It is kept for the next batches, but used only by a batch that
        # chooses exactly the same prefix, and always computed alone from its first token: a
        # batch's numbers then depend on its own rows only, bit for bit, and a resumed run
        # writes the same files as an uninterrupted one.
        prefix = self._choose_prefix(seqs)
        if prefix and (self._prefix_kv is None or prefix != self._prefix):
            if not self._compute_prefix(prefix):
                return None
        memo, memo_kv = (self._prefix, self._prefix_kv) if prefix else ((), None)
        m0 = len(memo)
        # how much of the kept prefix each row uses (never its last token: that one needs logits)
        used = []
        for s in seqs:
            limit, m = min(m0, len(s) - 1), 0
            while m < limit and s[m] == memo[m]:
                m += 1
            used.append(m)
        order = sorted(range(n), key=lambda r: seqs[r])
        chunks, current, size, prev = [], [], 0, None
        for r in order:
            s = seqs[r]
            start = max(used[r], common_prefix_length(prev, s) if prev is not None and current else 0)
            cost = len(s) - min(start, len(s) - 1)
            if current and size + cost > self.PACK_TOKENS:
                chunks.append(current)
                current, size, cost = [], 0, len(s) - used[r]
            current.append(r)
            size += cost
            prev = s
        chunks.append(current)
        if len(chunks) == 1:  # one pass: keep the callers' row order, nothing to regroup
            chunks = [list(range(n))]
        width = max(len(s) for s in seqs)
        # Every row's cache is gathered at once from [kept prefix | chunk 1's tokens | chunk 2's ...]
        cols = [[] for _ in range(n)]
        logits = None
        parts: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
        offset = m0
        for chunk in chunks:
            part = self._packed_chunk([seqs[r] for r in chunk], [used[r] for r in chunk], memo_kv, m0, chunk)
            if part is None:
                return None
            chunk_logits, new_kv, paths = part
            for r, path in zip(chunk, paths):
                own = list(range(used[r])) + [offset + i for i in path]
                cols[r] = [0] * (width - len(own)) + own  # pads point at column 0, masked out
            offset += new_kv[0][0].shape[1]
            parts.append(new_kv)
            if len(chunks) == 1:
                logits = chunk_logits
            else:
                if logits is None:
                    logits = chunk_logits.new_empty((n, chunk_logits.shape[1]))
                logits[torch.tensor(chunk, device=self.device)] = chunk_logits
        mask = torch.zeros((n, width), dtype=torch.long)
        for r, s in enumerate(seqs):
            mask[r, width - len(s):] = 1
        if not need_cache:
            return logits.float(), None, mask.to(self.device)
        index = torch.tensor(cols, device=self.device).T.reshape(-1)  # position-major: a free view below
        merged = []
        for i in range(len(parts[0])):
            layer = [memo_kv[i]] if m0 else []
            ks = [kv[0][0] for kv in layer] + [part[i][0] for part in parts]  # each (heads, tokens, dim)
            vs = [kv[1][0] for kv in layer] + [part[i][1] for part in parts]
            k = torch.cat(ks, dim=1) if len(ks) > 1 else ks[0]
            v = torch.cat(vs, dim=1) if len(vs) > 1 else vs[0]
            # (heads, width * rows, dim) -> (rows, heads, width, dim)
            heads, dim = k.shape[0], k.shape[2]
            merged.append((k.index_select(1, index).view(heads, width, n, dim).permute(2, 0, 1, 3),
                           v.index_select(1, index).view(heads, width, n, dim).permute(2, 0, 1, 3)))
        return logits.float(), _cache_from(merged), mask.to(self.device)

    @torch.inference_mode()
    def _packed_chunk(self, seqs, used, memo_kv, m0: int, rows: list[int]):
        """One tree-packed forward pass: (each row's logits, per-layer KV of the new tokens, paths)."""
        nodes: dict = {}  # (parent key, token) -> node index; a parent key is a node or ("kept", m)
        tokens, parents, depths, kept_len, paths = [], [], [], [], []
        for s, m in zip(seqs, used):
            key, parent, path = ("kept", m), -1, []
            for d in range(m, len(s)):
                i = nodes.get((key, s[d]))
                if i is None:
                    i = nodes[(key, s[d])] = len(tokens)
                    tokens.append(s[d])
                    parents.append(parent)
                    depths.append(d)
                    kept_len.append(m)
                path.append(i)
                key = parent = i
            paths.append(path)
        t = len(tokens)
        allowed = torch.zeros((t, m0 + t), dtype=torch.bool)
        if m0:
            allowed[:, :m0] = torch.arange(m0)[None, :] < torch.tensor(kept_len)[:, None]
        for i, p in enumerate(parents):  # parents come before their children
            if p >= 0:
                allowed[i, m0:] = allowed[p, m0:]
            allowed[i, m0 + i] = True
        dtype = next(self.model.parameters()).dtype
        if self.model.config._attn_implementation == "sdpa":
            mask4 = allowed[None, None].to(self.device)
        else:  # eager attention adds the mask to the scores
            mask4 = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
            mask4 = mask4[None, None].to(self.device)
        leaves = sorted({p[-1] for p in paths})
        leaf_col = {leaf: j for j, leaf in enumerate(leaves)}
        cache = _cache_from([(k, v) for k, v in memo_kv]) if m0 else None
        ids = torch.tensor([tokens], dtype=torch.long, device=self.device)
        positions = torch.tensor([depths], dtype=torch.long, device=self.device)
        first_row = {}
        for r, p in zip(rows, paths):
            first_row.setdefault(p[-1], r)
        self.active_rows = [first_row[leaf] for leaf in leaves]  # the logits' rows are the leaves
        try:
            out = self.model(input_ids=ids, attention_mask=mask4, position_ids=positions, **{self._cache_kw: cache},
                             use_cache=True, logits_to_keep=torch.tensor(leaves, device=self.device))
        finally:
            self.active_rows = None
        self.tokens_processed += t
        self.token_slots += t
        self.logit_rows += len(leaves)
        if not _is_plain(_kv(out)):
            self.share_prefix = False  # this model's cache cannot be regrouped: plain batches from now on
            return None
        logits = out.logits[0, [leaf_col[p[-1]] for p in paths]]
        new_kv = [(layer.keys[0, :, m0:], layer.values[0, :, m0:]) for layer in _kv(out).layers]
        return logits, new_kv, paths

    @torch.inference_mode()
    def _compute_prefix(self, prefix: tuple[int, ...]) -> bool:
        """Compute the KV of `prefix` (a batch of one) and keep it."""
        ids = torch.tensor([prefix], dtype=torch.long, device=self.device)
        # the body only: no logits are needed (and output-layer hooks see no extra call)
        body = self.model.base_model if self.model.base_model is not self.model else self.model
        out = body(input_ids=ids, use_cache=True)
        self.tokens_processed += ids.shape[1]
        self.token_slots += ids.shape[1]
        if not _is_plain(_kv(out)):
            self.share_prefix = False  # this model's cache cannot be regrouped: plain batches from now on
            return False
        self._prefix = tuple(prefix)
        self._prefix_kv = [(layer.keys, layer.values) for layer in _kv(out).layers]
        self._prefix_key = self._weights_key()
        return True

    # -- scoring --------------------------------------------------------------------------

    @torch.inference_mode()
    def next_token_probs(self, seqs: list[list[int]]) -> torch.Tensor:
        """Full next-token distribution after each sequence (float32, on CPU), one forward pass."""
        logits, _, _ = self._prefill(seqs, need_cache=False)
        return torch.softmax(logits, dim=-1).cpu()

    @torch.inference_mode()
    def token_probs(self, seqs: list[list[int]], token_ids: list[int], prompt_cache: "PromptCache | None" = None,
                    keep_prompt_cache: bool = False) -> tuple[torch.Tensor, "PromptCache | None"]:
        """Softmax over the logits of `token_ids` at the next position after each sequence.

        With the prompt_cache of a `decode` or `token_probs` call whose prompts these sequences
        extend, only the tokens after each prompt are computed; rows whose sequence does not
        start with their prompt's tokens are scored in full. With keep_prompt_cache (and no
        prompt_cache), the prompts' KV cache comes back for a later call.
        """
        ids = torch.tensor(list(token_ids), device=self.device)
        cache = None
        if prompt_cache is not None:
            logits = self._continue_from_cache(prompt_cache, seqs)
        else:
            logits, kv, mask = self._prefill(seqs, need_cache=keep_prompt_cache)
            if keep_prompt_cache:
                cache = PromptCache(kv, mask, [list(s) for s in seqs])
        return torch.softmax(logits[:, ids].float(), dim=-1).cpu(), cache

    @torch.inference_mode()
    def _continue_from_cache(self, pc: "PromptCache", seqs: list[list[int]]) -> torch.Tensor:
        """Last-position logits (float32) of each sequence, continuing from the prompts' cache."""
        n = len(seqs)
        if n != len(pc.prompts):
            raise ValueError("prompt cache and sequences differ in batch size")
        width = pc.answer_width
        answers = pc.answers or [[] for _ in range(n)]
        suffixes, fallback, used = [], [], []
        for row, (full, prompt, ans) in enumerate(zip(seqs, pc.prompts, answers)):
            if len(full) > len(prompt) and full[: len(prompt)] == prompt:
                # the cached answer tokens that this sequence really starts with
                k = min(common_prefix_length(full[len(prompt):], ans), len(full) - len(prompt) - 1)
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
        logits = out.logits[:, -1, :].float()
        if fallback:
            logits[fallback] = self._prefill([seqs[r] for r in fallback], need_cache=False)[0]
        return logits

    # -- decoding -------------------------------------------------------------------------

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
