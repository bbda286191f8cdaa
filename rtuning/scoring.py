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
  open-QA probe (and R-Tuning-U's samples) generating 15 tokens with no stop, cut at the first
  "." character, multiple-choice R-Tuning-U samples of one token drawn from the whole
  vocabulary, and WiCE's "known" rule (the gold label word inside the chosen option's word, so
  every `supported` question is known). Its multiple-choice probe scores the letters, as ours.

Each rule is a field, so a mix of the two (`with_rules`) measures one rule at a time
(benchmarks/compat_effects.py). The " sure"/" unsure" ids are the tokens that really follow
"I am" under both rules (the original's own ids for them, `tokenizer("sure").input_ids[0]`, are
those on LLaMA; on a BPE tokenizer they are the bare words: `original_sure_ids` gives them, for
measuring).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

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


# The original's rules, by name: the fields of ScoringRules each one sets (for `with_rules`).
RULES = {
    "stop": ("stop_ids",),
    "letters": ("first_id_letters",),
    "sure_spacing": ("decoded_answer",),
    "probe_read": ("probe_cut",),
    "choice_samples": ("vocab_samples",),
    "known": ("label_word_known",),
}


@dataclass(frozen=True)
class ScoringRules:
    """The rules of one compat mode, resolved against a tokenizer; each flag is one of the
    original's rules (all False: ours)."""

    compat: str
    stop_ids: frozenset[int]  # end an answer (besides the end tokens)
    sure_id: int
    unsure_id: int
    tokenizer: object = None
    first_id_letters: bool = False  # letters are tokenizer("A").input_ids[0]
    decoded_answer: bool = False  # the sure question gets the answer as decoded (leading space)
    probe_cut: bool = False  # open-QA probe: probe_new_tokens, no stop, cut at the first "."
    vocab_samples: bool = False  # multiple-choice samples: one token from the whole vocabulary
    label_word_known: bool = False  # probe: gold label word in the chosen option's word (WiCE)

    @classmethod
    def build(cls, tokenizer, compat: str = "default") -> "ScoringRules":
        if compat not in COMPAT_MODES:
            raise ValueError(f"unknown --compat {compat!r}; choose from {', '.join(COMPAT_MODES)}")
        ctx = "Question: Is it? Answer: Yes." + SURE_QUESTION + " I am"
        sure, unsure = continuation_token(tokenizer, ctx, " sure"), continuation_token(tokenizer, ctx, " unsure")
        if sure == unsure:
            raise ValueError("the tokenizer gives ' sure' and ' unsure' the same first token")
        if compat == "default":
            return cls(compat, period_token_ids(tokenizer), sure, unsure, tokenizer)
        return cls(compat, frozenset([_first_id(tokenizer, ".")]), sure, unsure, tokenizer, first_id_letters=True,
                   decoded_answer=True, probe_cut=True, vocab_samples=True, label_word_known=True)

    @property
    def original(self) -> bool:
        return self.compat == "original"

    def with_rules(self, other: "ScoringRules", *names: str) -> "ScoringRules":
        """These rules with the named ones (keys of RULES) taken from `other`; the compat name
        says which ("default+stop"), so a mix never passes for either mode in a resume key."""
        unknown = [n for n in names if n not in RULES]
        if unknown:
            raise ValueError(f"unknown scoring rule {unknown[0]!r}; choose from {', '.join(RULES)}")
        fields = {f: getattr(other, f) for n in names for f in RULES[n]}
        return replace(self, compat="+".join([self.compat, *names]), **fields)

    def settings(self) -> dict:
        """What the rules change in results: part of each run's resume key."""
        return {"compat": self.compat}

    def letter_ids(self, choices: tuple[str, ...], sep: str) -> list[int]:
        """The token scored for each option letter."""
        if self.first_id_letters:
            ids = [_first_id(self.tokenizer, c) for c in choices]
        else:  # the letter as the tokenizer writes it right after "Answer:" (+ separator)
            ids = [continuation_token(self.tokenizer, "Question: Which one?\nAnswer:", sep + c) for c in choices]
        if len(set(ids)) != len(ids):
            raise ValueError(f"option letters {choices} share a first token")
        return ids

    def sure_text(self, prompt: str, answer: str, raw: str | None, sep: str) -> str:
        """The sure question after an answer: stripped (default) or as decoded (original)."""
        return sure_prompt(prompt, raw if self.decoded_answer and raw is not None else answer, sep)

    def probe_stop(self) -> frozenset[int]:
        """Stop tokens while probing open questions: none under the original's rule (it cuts
        the decoded text instead)."""
        return frozenset() if self.probe_cut else self.stop_ids

    @staticmethod
    def cut_probe_text(text: str, ended_by_eos: bool = False) -> str:
        """The original probe's reading of its 15 tokens: up to the first "." character; with
        none, `find` gives -1 and the last character is dropped (SPEC.md §6). The original
        decodes with the special tokens, so an answer that ended at the end token loses the
        last character of that token's text ("</s>"), not of the answer."""
        cut = text.find(".")
        if cut < 0 and ended_by_eos:
            return text
        return text[:cut]


def original_sure_ids(tokenizer) -> tuple[int, int]:
    """The original's sure/unsure ids, `tokenizer("sure").input_ids[0]` (add_bos_token=False):
    on LLaMA the tokens that follow "I am" (ours), on a BPE tokenizer the bare words (not used
    under either mode; benchmarks/compat_effects.py measures the difference)."""
    return _first_id(tokenizer, "sure"), _first_id(tokenizer, "unsure")
