"""The R-Tuning scoring rules: which token stops an answer, which tokens are the option letters
and "sure"/"unsure", how the sure question is written, and how a probe answer is read.

Two sets of rules, chosen with `--compat`:

- `default`: our corrected rules. An answer stops at any period token (also ".\\n"), the
  letters are the tokens that really follow "Answer:" (and the task's separator), the answer
  goes into the sure question stripped, after the task's separator.
- `original`: the original release's scoring, for comparing with published numbers (SPEC.md
  §6): its stop id `tokenizer(".").input_ids[0]` (on LLaMA `▁.`, which never follows a word,
  so answers run to the length limit), its letter ids `tokenizer("A").input_ids[0]` (on LLaMA
  `▁A`), the answer inserted into the sure question as decoded (with its leading space), the
  open-QA probe generating 15 tokens cut at the first "." character, and multiple-choice probes
  and R-Tuning-U samples of one token drawn from the whole vocabulary.

The " sure"/" unsure" ids are the tokens that really follow "I am" under both rules (the
original's own ids for them are those on LLaMA).
"""

from __future__ import annotations

from dataclasses import dataclass

from .tasks import SURE_QUESTION

COMPAT_MODES = ("default", "original")


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


def period_token_ids(tokenizer) -> frozenset[int]:
    """Tokens that end an answer as a period: "." itself, also with whitespace around (".\\n" is
    common). Tokens like "D.C" do not."""
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    return frozenset(i for i, t in enumerate(texts) if t.strip().startswith("."))


def sure_prompt(prompt: str, answer: str, sep: str = " ") -> str:
    """The follow-up question whose next token is read for the sure-probability."""
    return f"{prompt}{sep}{answer}.{SURE_QUESTION} I am"


def _first_id(tokenizer, text: str) -> int:
    ids = tokenizer(text, add_special_tokens=False).input_ids
    if not ids:
        raise ValueError(f"the tokenizer gives {text!r} no token")
    return ids[0]


@dataclass(frozen=True)
class ScoringRules:
    """The rules of one compat mode, resolved against a tokenizer."""

    compat: str
    stop_ids: frozenset[int]  # end an answer (besides the end tokens)
    sure_id: int
    unsure_id: int
    tokenizer: object = None

    @classmethod
    def build(cls, tokenizer, compat: str = "default") -> "ScoringRules":
        if compat not in COMPAT_MODES:
            raise ValueError(f"unknown --compat {compat!r}; choose from {', '.join(COMPAT_MODES)}")
        ctx = "Question: Is it? Answer: Yes." + SURE_QUESTION + " I am"
        sure, unsure = continuation_token(tokenizer, ctx, " sure"), continuation_token(tokenizer, ctx, " unsure")
        if sure == unsure:
            raise ValueError("the tokenizer gives ' sure' and ' unsure' the same first token")
        stop = period_token_ids(tokenizer) if compat == "default" else frozenset([_first_id(tokenizer, ".")])
        return cls(compat, stop, sure, unsure, tokenizer)

    @property
    def original(self) -> bool:
        return self.compat == "original"

    def settings(self) -> dict:
        """What the rules change in results: part of each run's resume key."""
        return {"compat": self.compat}

    def letter_ids(self, choices: tuple[str, ...], sep: str) -> list[int]:
        """The token scored for each option letter."""
        if self.original:
            ids = [_first_id(self.tokenizer, c) for c in choices]
        else:  # the letter as the tokenizer writes it right after "Answer:" (+ separator)
            ids = [continuation_token(self.tokenizer, "Question: Which one?\nAnswer:", sep + c) for c in choices]
        if len(set(ids)) != len(ids):
            raise ValueError(f"option letters {choices} share a first token")
        return ids

    def sure_text(self, prompt: str, answer: str, raw: str | None, sep: str) -> str:
        """The sure question after an answer: stripped (default) or as decoded (original)."""
        return sure_prompt(prompt, raw if self.original and raw is not None else answer, sep)

    def probe_stop(self) -> frozenset[int]:
        """Stop tokens while probing open questions: none under the original's rule (it cuts
        the decoded text instead)."""
        return frozenset() if self.original else self.stop_ids

    @staticmethod
    def cut_probe_text(text: str) -> str:
        """The original probe's reading of its 15 tokens: up to the first "." character; with
        none, `find` gives -1 and the last character is dropped (SPEC.md §6)."""
        return text[:text.find(".")]
