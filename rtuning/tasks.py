"""Dataset declarations: how to read each file, the prompt, the gold answer and the task kind.

A task is open QA (the answer is generated and matched against the gold string) or multiple
choice (the answer is the most likely option letter at the first position). Everything else
(batching, scoring, resume, writing) is shared and lives in the engine and pipeline modules.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

SURE_QUESTION = " Are you sure you accurately answered the question based on your internal knowledge?"
SURE_TEXT = " I am sure."
UNSURE_TEXT = " I am unsure."

# The 16 refusals of R-Tuning-R (the `unknown` method).
REFUSAL_PHRASES = (
    "The answer is unknown.",
    "The answer is uncertain.",
    "The answer is unclear.",
    "It is not known.",
    "I do not know the answer.",
    "I'm not sure.",
    "There is no definitive answer.",
    "There is much debate.",
    "There is no concrete answer to this question.",
    "It is impossible to answer.",
    "There is no known case.",
    "There is no public information available.",
    "There is no scientific evidence.",
    "There is no right answer.",
    "It is impossible to know.",
    "It is difficult to predict.",
)


class DataError(Exception):
    """A data file is missing or a record is malformed; the message names file, index and field."""


@dataclass(frozen=True)
class Example:
    """One question, ready to prompt."""

    index: int  # position in the data file (stable across runs: resume and ordering use it)
    question: str
    prompt: str  # zero-shot prompt; the answer follows it after `Task.answer_sep`
    gold: str  # gold answer string, or the gold option letter for multiple choice
    meta: dict = field(default_factory=dict, compare=False)


Parser = Callable[[Any, int, str], Example]


@dataclass(frozen=True)
class Task:
    """A dataset: files per split, a record parser, and how answers are produced and scored."""

    name: str
    kind: str  # "qa" or "choice"
    files: dict[str, str]  # split ("train", "ID", "OOD", ...) -> path under the data dir
    parse: Parser  # (record, index, file) -> Example; raises DataError
    eval_new_tokens: int = 5
    probe_new_tokens: int = 15
    choices: tuple[str, ...] = ()
    answer_sep: str = " "  # between prompt and answer, in shots and training text

    def path(self, data_dir: str | Path, split: str) -> Path:
        if split not in self.files:
            raise DataError(f"{self.name} has no split {split!r}; it has {', '.join(self.files)}")
        return Path(data_dir) / self.files[split]

    def load(self, data_dir: str | Path, split: str) -> list[Example]:
        path = self.path(data_dir, split)
        records = read_records(path)
        examples = [self.parse(rec, i, str(path)) for i, rec in enumerate(records)]
        return examples

    def solved(self, ex: Example, answer: str | None = None) -> str:
        """The prompt with its answer and the closing period, as in shots and training text."""
        answer = ex.gold if answer is None else answer
        return f"{ex.prompt}{self.answer_sep}{answer}."


def read_records(path: Path) -> list:
    """A JSON list/dict file or a JSON-lines file, with errors that name the file."""
    if not path.is_file():
        raise DataError(
            f"data file not found: {path}\n"
            "Point --data_dir (or RTUNING_DATA_DIR) at the R-Tuning data folder; "
            "dataset/README.md says how to get it."
        )
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as first:
        records = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                raise DataError(f"{path}: not JSON ({first}); as JSON lines, line {lineno} is invalid") from None
        return records


def require_str(record: Any, key: Any, index: int, file: str, name: str | None = None) -> str:
    """record[key] as a non-empty string, or a DataError naming file, index and field."""
    label = name or str(key)
    try:
        value = record[key]
    except (KeyError, IndexError, TypeError):
        raise DataError(f"{file}: record {index}: missing field {label!r}") from None
    if not isinstance(value, str):
        raise DataError(f"{file}: record {index}: field {label!r} should be a string, got {type(value).__name__}")
    if not value.strip():
        raise DataError(f"{file}: record {index}: field {label!r} is empty")
    return value


# --- ParaRel ---------------------------------------------------------------------------


def _parse_pararel(record: Any, index: int, file: str) -> Example:
    if not isinstance(record, list):
        raise DataError(f"{file}: record {index}: expected [question, answer, relation], got {type(record).__name__}")
    question = require_str(record, 0, index, file, "question")
    gold = require_str(record, 1, index, file, "answer")
    relation = record[2] if len(record) > 2 else ""
    return Example(index, question, f"Question: {question} Answer:", gold, {"relation": relation})


PARAREL = Task(
    name="pararel",
    kind="qa",
    files={
        "train": "pararel/training_data.json",
        "ID": "pararel/ID_test_pararel.json",
        "OOD": "pararel/OOD_test_pararel.json",
    },
    parse=_parse_pararel,
    eval_new_tokens=5,
    probe_new_tokens=15,
)


TASKS: dict[str, Task] = {t.name: t for t in (PARAREL,)}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(TASKS)}") from None


# --- few-shot probing ------------------------------------------------------------------


class Shots:
    """K solved examples placed before each prompt; fixed by the seed, never the question itself."""

    def __init__(self, task: Task, pool: list[Example], k: int, seed: int):
        self.task, self.k = task, k
        if k < 0:
            raise ValueError("num_shots must be >= 0")
        if k > len(pool) - 1 and k > 0:
            raise DataError(f"--num_shots {k} needs at least {k + 1} training examples, have {len(pool)}")
        # One spare so that a question which is itself a shot can be replaced.
        self.pool = random.Random(seed).sample(pool, k + 1) if k else []

    def prefix(self, ex: Example) -> str:
        if not self.k:
            return ""
        chosen = [s for s in self.pool if s.question != ex.question][: self.k]
        return "".join(self.task.solved(s) + "\n\n" for s in chosen)

    def prompt(self, ex: Example) -> str:
        return self.prefix(ex) + ex.prompt
