"""The hf engine's prompt side: prompts packed as a token tree, the shared-prefix KV cache.

Every distinct prompt prefix is computed once and without padding: rows are cut into chunks
of about PACK_TOKENS new tokens, each chunk one sequence of its tree's nodes where a node
attends to its ancestors only (a 4D mask) at its depth's position; the prefix most rows share
(the few-shot block) is computed alone once and kept for the next batches that share it. The
cache comes back in the usual left-padded layout, so decoding and scoring need not know.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from ..backends.base import common_prefix_length


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




class PackedPrefill:
    """The engine's prefill: `_prefill(seqs)` gives last-position logits, KV cache and mask."""

    # A shared prefix shorter than this is left to the token tree.
    MIN_SHARED_PREFIX = 8
    # New prompt tokens per tree-packed forward pass. Attention over a packed chunk grows with
    # its length squared (~10% on top of the matmuls at 256 with SmolLM2's 576 hidden units),
    # while longer chunks give the matmuls more rows; 256 measured best on CPU.
    PACK_TOKENS = 256

    def clear_prefix_cache(self) -> None:
        """Forget the kept KV cache of the last shared prefix."""
        self._prefix: tuple[int, ...] = ()
        self._prefix_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._prefix_key: int | None = None

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

