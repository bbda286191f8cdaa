"""The training-data methods, one declaration each: how a training question is labelled certain
from the probe's records, whether the probe samples answers for it (how many, how hot, whether
each sample is scored), the training text, and the name reports give it.

The probe (rtuning.pipeline.probe), the training text (training_texts), the probe's command
line (rtuning.cli.probe_parser), the study (rtuning.reproduce) and the report read these
declarations; adding a method is one `Method(...)` in METHODS below.
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from .metrics import answer_entropy
from .tasks import REFUSAL_PHRASES, SURE_QUESTION, SURE_TEXT, UNSURE_TEXT, Example, Task


def positive(value: str) -> int:
    """A whole number >= 1 (an argparse type: no samples would leave nothing to label from)."""
    if not value.strip().isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: expected a whole number >= 1")
    return int(value)


def ratio(value: str) -> float:
    """A share between 0 and 1 (an argparse type)."""
    try:
        x = float(value)
    except ValueError:
        x = float("nan")
    if not 0 <= x <= 1:  # NaN fails too
        raise argparse.ArgumentTypeError(f"{value!r}: expected a share between 0 and 1")
    return x


@dataclass(frozen=True)
class Flag:
    """A probe option (--name) that a method reads; methods that read the same option share one Flag."""

    name: str
    type: Callable[[str], Any]
    default: Any
    help: str


NUM_TRY = Flag("num_try", positive, 5, "samples per question")
TEMPERATURE = Flag("temperature", float, 0.7, "sampling temperature of those samples")
MIN_CORRECT_RATIO = Flag("min_correct_ratio", ratio, 0.5,
                         "certain when at least this share of the samples is correct (CRaFT's boundary: 0.5)")

# Probe runs written before methods were declarations had these two in every method's resume
# key; they stay there, so that those runs still resume. Other flags are in the key of the
# methods that read them only.
EVERY_PROBE_KEY = frozenset({NUM_TRY.name, TEMPERATURE.name})


@dataclass(frozen=True)
class SamplingStep:
    """A sampling step in the probe: `count` answers per question at `temperature` (both flags),
    drawn by the task runner's `samples` (letters for multiple choice) and recorded as
    `samples`; with `score`, each sample's correctness by the task's rule (the matcher; for
    multiple choice, sampled letter == gold) as `samples_correct`; then the fields `summary`
    derives from the record (e.g. the answers' entropy)."""

    count: Flag = NUM_TRY
    temperature: Flag = TEMPERATURE
    score: bool = False
    summary: Callable[[dict], dict] = lambda record: {}


@dataclass(frozen=True)
class Method:
    """One way to build refusal-aware training data from a probe of the base model.

    certain(records, settings) -> one flag per record (records in question order, settings:
    the values of the method's flags); text(task, example, certain, rng) -> the training text
    (rng is the seeded generator of the whole file: draw from it only where the text needs
    it, as the file's shuffle follows)."""

    name: str  # --method NAME, file names, the study's --methods
    display: str  # reports
    certain: Callable[[list[dict], Mapping[str, Any]], list[bool]]
    text: Callable[[Task, Example, bool, random.Random], str]
    sampling: SamplingStep | None = None  # None: the greedy probe alone
    flags: tuple[Flag, ...] = ()  # options the label rule reads besides the sampling step's
    paper: bool = True  # one of the paper's methods: in the study unless --methods says otherwise
    description: str = ""

    def reads(self) -> tuple[Flag, ...]:
        """Every flag this method reads: its sampling step's, then its own."""
        step = (self.sampling.count, self.sampling.temperature) if self.sampling else ()
        return step + self.flags

    def settings(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The values of the flags it reads, from `values` (e.g. vars(args)) or the defaults."""
        return {f.name: values.get(f.name, f.default) for f in self.reads()}


# -- label rules: records -> certain flags -------------------------------------------------

def greedy_correct(records: Sequence[dict], settings: Mapping[str, Any]) -> list[bool]:
    """Certain when the greedy answer is correct (the paper's supervised split)."""
    return [bool(r["correct"]) for r in records]


def lowest_entropy_half(records: Sequence[dict], settings: Mapping[str, Any]) -> list[bool]:
    """The half with the lowest answer entropy (R-Tuning-U); ties broken by question order, so
    the split is deterministic."""
    ranked = sorted(range(len(records)), key=lambda k: (records[k]["entropy"], records[k]["index"]))
    certain = set(ranked[: len(records) // 2])
    return [k in certain for k in range(len(records))]


def correct_share_reaches(records: Sequence[dict], settings: Mapping[str, Any]) -> list[bool]:
    """Certain when the share of correct samples is >= --min_correct_ratio (reaching the
    boundary counts as certain: with 0.5, 2 of 4 correct samples is certain)."""
    threshold = settings[MIN_CORRECT_RATIO.name]
    return [sum(r["samples_correct"]) >= threshold * len(r["samples_correct"]) for r in records]


# -- training texts -------------------------------------------------------------------------

def gold_text(task: Task, ex: Example, certain: bool, rng: random.Random) -> str:
    """The gold answer whatever the label (the paper's vanilla baseline)."""
    return task.solved(ex)


def sure_suffix_text(task: Task, ex: Example, certain: bool, rng: random.Random) -> str:
    """The gold answer, then the sure question and "I am sure." or "I am unsure." (R-Tuning)."""
    return task.solved(ex) + SURE_QUESTION + (SURE_TEXT if certain else UNSURE_TEXT)


def refusal_text(task: Task, ex: Example, certain: bool, rng: random.Random) -> str:
    """The gold answer where certain, else one of the 16 refusals drawn with rng where the answer
    would be, as the original: "Answer:The answer is unknown." in MMLU (R-Tuning-R)."""
    return task.solved(ex) if certain else task.refused(ex, rng.choice(REFUSAL_PHRASES))


def _entropy(record: dict) -> dict:
    return {"entropy": answer_entropy(record["samples"])}


def _correct_ratio(record: dict) -> dict:
    scored = record["samples_correct"]
    return {"correct_ratio": sum(scored) / len(scored) if scored else None}


# The study's and the reports' order: the paper's four, then the methods after it.
METHODS: dict[str, Method] = {m.name: m for m in (
    Method("vanilla", "Vanilla", greedy_correct, gold_text,
           description="gold answers only (the paper's baseline)"),
    Method("unsure", "R-Tuning", greedy_correct, sure_suffix_text,
           description="sure/unsure after the answer, by the greedy answer's correctness"),
    Method("uncertain", "R-Tuning-U", lowest_entropy_half, sure_suffix_text,
           sampling=SamplingStep(summary=_entropy),
           description="sure/unsure by the entropy of --num_try sampled answers (no gold needed)"),
    Method("unknown", "R-Tuning-R", greedy_correct, refusal_text,
           description="a refusal replaces the answers the greedy probe got wrong"),
    # CRaFT (Zhu et al., AAAI 2025)'s correctness-only baseline: RAIT data labelled by the
    # share of correct sampled answers; trained here with R-Tuning's sure/unsure text
    Method("correctness", "Cor-RAIT", correct_share_reaches, sure_suffix_text,
           sampling=SamplingStep(score=True, summary=_correct_ratio), flags=(MIN_CORRECT_RATIO,), paper=False,
           description="sure/unsure by the share of correct --num_try sampled answers (CRaFT's Cor-RAIT)"),
)}


def get_method(name: str) -> Method:
    """The declaration of a method name; a ValueError naming the known ones otherwise."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[name]


def method_flags() -> list[Flag]:
    """Every flag some method reads, once each, in declaration order."""
    flags: dict[str, Flag] = {}
    for m in METHODS.values():
        for f in m.reads():
            if flags.setdefault(f.name, f) != f:
                raise ValueError(f"methods declare two different flags --{f.name}; share one Flag")
    return list(flags.values())


def readers(flag: Flag) -> list[str]:
    """The methods that read a flag."""
    return [m.name for m in METHODS.values() if flag in m.reads()]


def not_in_key(method: Method) -> frozenset[str]:
    """The method flags left out of this method's resume key: those it does not read (except
    EVERY_PROBE_KEY's), so a new method's flag does not change the other methods' keys."""
    return frozenset(f.name for f in method_flags() if f not in method.reads() and f.name not in EVERY_PROBE_KEY)
