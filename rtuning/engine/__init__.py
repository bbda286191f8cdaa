"""The hf backend's batched engine: prefill (prefill.py), decoding (decode.py), next-token scoring (here).

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

import torch

from ..backends.base import Answer, Sampling, common_prefix_length
from ..models import stop_token_ids
from ..scoring import period_token_ids
from .decode import Decoder
from .prefill import PackedPrefill, PromptCache, _accepts

__all__ = ["Engine", "PromptCache", "kv_batch_size", "Answer", "Sampling"]


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




class Engine(PackedPrefill, Decoder):
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

