"""The inference backend protocol: the few operations the pipeline needs from a model.

A backend reads token ids (the pipeline encodes and truncates prompts with the backend's
tokenizer, so every backend sees the same tokens) and returns plain values:

- `decode`: answers with each chosen token's probability, stopping at a stop token (a
  period, by the scoring rules) or an end token, greedy or sampled with a seed;
- `token_probs`: the softmax over a few given tokens' logits at the next position (option
  letters, or " sure" / " unsure"), read exactly, never from a truncated top-k list.

Both may return a state (e.g. the prompts' KV cache) that a later `token_probs` call on
sequences extending the same prompts may continue from. The state is a value handed back by
the caller, never an attribute: a backend without such state returns None.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence


def common_prefix_length(a, b) -> int:
    """How many leading items two sequences share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class BackendError(Exception):
    """A backend cannot be used as asked (not installed, no GPU, a model it cannot load)."""


@dataclass
class Answer:
    """A decoded answer: its text (stripped), the text as decoded, token ids and probabilities."""

    text: str
    token_ids: list[int] = field(default_factory=list)
    token_probs: list[float] = field(default_factory=list)
    stopped_by: str = "length"  # "period", "eos" or "length"
    raw: str | None = None  # the decoded text before stripping (the original's sure prompt keeps it)

    @property
    def confidence(self) -> float:
        """Geometric mean of the chosen tokens' probabilities; 0 for an empty answer."""
        if not self.token_probs:
            return 0.0
        return math.exp(sum(math.log(max(p, 1e-45)) for p in self.token_probs) / len(self.token_probs))


@dataclass(frozen=True)
class Sampling:
    """Sampling settings; `seed` makes a call's draws reproducible on the same backend."""

    temperature: float = 0.7
    top_k: int = 50  # transformers' generate default, which the original release inherited
    seed: int = 0


class Backend:
    """What every backend provides; subclasses implement the methods below.

    `name` is the registry name; `tokenizer` the Hugging Face tokenizer the pipeline encodes
    with; `eos_ids` the end-of-sequence ids that always stop an answer.
    """

    name: ClassVar[str] = ""
    tokenizer: Any
    eos_ids: frozenset[int]
    vocab_size: int

    def settings(self) -> dict:
        """Everything about this backend that can change results: recorded in each run's
        metadata and its resume key."""
        raise NotImplementedError

    def decode(self, seqs: Sequence[Sequence[int]], max_new_tokens: int, *, stop: frozenset[int],
               sampling: Sampling | None = None, keep_state: bool = False) -> tuple[list[Answer], Any]:
        """Greedy (or sampled) answers, each ending before its first token in `stop` or an end
        token, at most max_new_tokens long; with keep_state, a state for `token_probs`."""
        raise NotImplementedError

    def token_probs(self, seqs: Sequence[Sequence[int]], token_ids: Sequence[int], *, state: Any = None,
                    keep_state: bool = False) -> tuple[list[list[float]], Any]:
        """For each sequence, softmax over the logits of `token_ids` at the next position.

        With the state of an earlier call on prompts that these sequences extend (same rows,
        same order), a backend may compute only what follows them."""
        raise NotImplementedError

    def suggest_batch_size(self, tokens_per_row: int) -> int:
        """Questions per batch for rows of about this many tokens."""
        raise NotImplementedError

    def work(self) -> dict:
        """Counters of the work done so far (tokens computed...), for benchmarks; may be empty."""
        return {}

    def close(self) -> None:
        """Release the model and any worker processes."""
