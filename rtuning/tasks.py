"""Dataset declarations: how to read each file, the prompt, the gold answer and the task kind.

A task is open QA (the answer is generated and matched against the gold string) or multiple
choice (the answer is the most likely option letter at the first position). Everything else
(batching, scoring, resume, writing) is shared and lives in the engine and pipeline modules.
"""

from __future__ import annotations

import json
import random
import sys
from dataclasses import dataclass, field, replace
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
    gold: str  # gold answer string, the gold option letter, or "" for unanswerable sets
    meta: dict = field(default_factory=dict, compare=False)
    # prompt[:context_end] is context (evidence, paragraphs) that may be cut from the left when
    # the prompt is too long; the rest (claim, question, options) is always kept.
    context_end: int = 0
    # prompt is the task's probe prompt (Task.probing): shots placed before it take that form too
    probe: bool = False


Parser = Callable[[Any, int, str], Example]


@dataclass(frozen=True)
class Task:
    """A dataset: files per split, a record parser, and how answers are produced and scored.

    kind: "qa" (generated answer, gold is a substring), "choice" (option letter scored at the
    first position) or "refusal" (unanswerable questions: only refusal is measured).
    """

    name: str
    kind: str
    files: dict[str, str]  # split ("train", "ID", "OOD", ...) -> path under the data dir
    parse: Parser | None = None  # (record, index, file) -> Example; raises DataError
    reader: Callable[["Task", Path, str], list[Example]] | None = None  # whole-file loaders (MMLU)
    eval_new_tokens: int = 5
    probe_new_tokens: int = 15
    choices: tuple[str, ...] = ()
    # between prompt and answer (or R-Tuning-R's refusal) in shots and training texts, as the
    # original's training scripts write them; option letters are scored as the token after it
    answer_sep: str = " "
    sure_sep: str = " "  # between prompt and answer in the sure prompt (the original's evaluation)
    # the original's probe prompt where it differs from the evaluation prompt (ParaRel); it must
    # keep the evaluation prompt's context, prompt[:context_end]
    probe_prompt: Callable[[Example], str] | None = None
    shots_from: str | None = None  # task whose training file gives shots, when this one has none
    records_key: str | None = None  # records live under this key of a JSON object (SelfAware)
    keep: Callable[[Example, str], bool] | None = None  # which records of a shared file a split uses
    needs_context: bool = False  # a file whose records all lack context (paragraphs) is refused
    # each option's label word (FEVER, WiCE), which the original's probe compares with the gold
    # label's by substring (ScoringRules.label_word_known)
    label_words: tuple[str, ...] = ()

    @property
    def domains(self) -> tuple[str, ...]:
        """The evaluation splits."""
        return tuple(k for k in self.files if k != "train")

    def path(self, data_dir: str | Path, split: str) -> Path:
        if split not in self.files:
            raise DataError(f"{self.name} has no split {split!r}; it has {', '.join(self.files)}")
        return Path(data_dir) / self.files[split]

    def load(self, data_dir: str | Path, split: str) -> list[Example]:
        path = self.path(data_dir, split)
        if self.reader is not None:
            return self.reader(self, path, split)
        records = read_records(path)
        if self.records_key is not None:
            if not isinstance(records, dict) or not isinstance(records.get(self.records_key), list):
                got = type(records).__name__ if not isinstance(records, dict) else f"keys {', '.join(map(repr, records)) or 'none'}"
                raise DataError(f"{path}: expected an object with a list of records under {self.records_key!r}, "
                                f"got {got}; expected {LAYOUTS.get(self.name, 'the release layout')}")
            records = records[self.records_key]
        elif isinstance(records, dict):
            records = [records]  # a JSON-lines file of one line is one JSON object: one record
        if not isinstance(records, list):
            raise DataError(f"{path}: expected a list of records, got {type(records).__name__}; "
                            f"expected {LAYOUTS.get(self.name, 'the release layout')}")
        if not records:
            raise DataError(f"{path}: no records (an empty list); expected {LAYOUTS.get(self.name, 'the release layout')}")
        examples = [self.parse(rec, i, str(path)) for i, rec in enumerate(records)]
        if self.needs_context:
            _check_context_present(examples, path)
        if self.keep is not None:
            examples = [ex for ex in examples if self.keep(ex, split)]
            if not examples:
                raise DataError(f"{path}: none of its {len(records):,} records belongs to the {split!r} split")
        return examples

    def solved(self, ex: Example, answer: str | None = None) -> str:
        """The prompt with its answer and the closing period, as in shots and training text."""
        answer = ex.gold if answer is None else answer
        return f"{ex.prompt}{self.answer_sep}{answer}."

    def refused(self, ex: Example, refusal: str) -> str:
        """R-Tuning-R's text for an uncertain question: the refusal (it has its own period)
        where the answer would be."""
        return f"{ex.prompt}{self.answer_sep}{refusal}"

    def probing(self, ex: Example) -> Example:
        """The example as the original probes it (its probe prompt), marked so shots follow suit."""
        prompt = self.probe_prompt(ex) if self.probe_prompt is not None else ex.prompt
        return replace(ex, prompt=prompt, probe=True)

    def with_dataset(self, split: str, stem: str) -> "Task":
        """The task reading `split` from {stem}.json in the same folder (the original's --dataset)."""
        current = self.path("", split)
        if not stem or stem != Path(stem).name or stem in (".", "..") or stem.endswith(".json"):
            raise DataError(f"--dataset {stem!r}: give the data file's stem (as {current.stem!r} for "
                            f"{current}), not a path or a file name")
        return replace(self, files={**self.files, split: (current.parent / f"{stem}.json").as_posix()})

    def result_name(self, result: str, domain: str) -> str:
        """Output stem as the original names results: {result}_{domain} where there are several
        test sets (ParaRel, MMLU, the refusal sets), {result} where there is one."""
        return f"{result}_{domain}" if len(self.domains) > 1 else result


def read_text(path: Path) -> str:
    """A data file's text: UTF-8 (a UTF-8 byte-order mark is dropped), else a DataError saying what it is."""
    if not path.is_file():
        raise DataError(
            f"data file not found: {path}\n"
            "Point --data_dir (or RTUNING_DATA_DIR) at the R-Tuning data folder; "
            "dataset/README.md says how to get it."
        )
    data = path.read_bytes()
    # UTF-32 first: its little-endian mark starts with UTF-16's
    for bom, encoding in ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),
                          (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16")):
        if data.startswith(bom):
            raise DataError(f"{path}: the file is {encoding} (it starts with a {encoding} byte-order mark); "
                            f"the loaders read UTF-8: convert it, e.g. iconv -f {encoding} -t UTF-8 {path} > NEW_FILE")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]  # a UTF-8 byte-order mark (written by some Windows editors) is no content
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataError(f"{path}: not UTF-8 (line {line}, byte offset {err.start}: 0x{data[err.start]:02x}); "
                        f"convert it, e.g. iconv -f LATIN1 -t UTF-8 {path} > NEW_FILE if it is Latin-1") from None
    if not text.strip():
        raise DataError(f"{path}: the file is empty ({len(data)} bytes{', whitespace only' if data else ''}); "
                        "expected a JSON list of records or JSON lines")
    return text


def read_records(path: Path) -> Any:
    """A JSON file (list or object) or a JSON-lines file, with errors that name the file."""
    text = read_text(path)
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


def _field(record: Any, key: Any, index: int, file: str, name: str | None = None) -> Any:
    label = name or str(key)
    try:
        return record[key]
    except (KeyError, IndexError, TypeError):
        raise DataError(f"{file}: record {index}: missing field {label!r}") from None


def require_str(record: Any, key: Any, index: int, file: str, name: str | None = None) -> str:
    """record[key] as a non-empty string, or a DataError naming file, index and field."""
    label = name or str(key)
    value = _field(record, key, index, file, name)
    if not isinstance(value, str):
        raise DataError(f"{file}: record {index}: field {label!r} should be a string, got {type(value).__name__}")
    if not value.strip():
        raise DataError(f"{file}: record {index}: field {label!r} is empty")
    return value


def require_str_list(record: Any, key: str, index: int, file: str, hint: str = "") -> list[str]:
    """record[key] as a list of strings (a lone string is refused: joining it would spell it out letter by letter)."""
    value = _field(record, key, index, file)
    if isinstance(value, str):
        raise DataError(f"{file}: record {index}: field {key!r} should be a list of strings, got one string "
                        f"({value[:40]!r}...); put it in a list: [\"...\"]{hint}")
    if not isinstance(value, list):
        raise DataError(f"{file}: record {index}: field {key!r} should be a list of strings, "
                        f"got {type(value).__name__}{hint}")
    for pos, item in enumerate(value):
        if not isinstance(item, str):
            raise DataError(f"{file}: record {index}: field {key!r}: item {pos} should be a string, "
                            f"got {type(item).__name__}{hint}")
    return value


def require_label(record: Any, key: str, index: int, file: str, labels: dict[str, str]) -> str:
    value = _field(record, key, index, file)
    if value not in labels:
        raise DataError(f"{file}: record {index}: field {key!r} is {value!r}, expected one of {', '.join(labels)}")
    return labels[value]


def require_object(record: Any, index: int, file: str, what: str) -> None:
    if not isinstance(record, dict):
        raise DataError(f"{file}: record {index}: expected an object with {what}, got {type(record).__name__}")


# --- ParaRel ---------------------------------------------------------------------------


def qa_prompt(question: str) -> str:
    return f"Question: {question} Answer:"


def pararel_probe_prompt(ex: Example) -> str:
    """The original's ParaRel probe: no space after "Question:" (evaluation and training have one)."""
    return f"Question:{ex.question} Answer:"


def _parse_pararel(record: Any, index: int, file: str) -> Example:
    if not isinstance(record, list):
        raise DataError(f"{file}: record {index}: expected [question, answer, relation], got {type(record).__name__}")
    question = require_str(record, 0, index, file, "question")
    gold = require_str(record, 1, index, file, "answer")
    relation = record[2] if len(record) > 2 else ""
    return Example(index, question, qa_prompt(question), gold, {"relation": relation})


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
    probe_prompt=pararel_probe_prompt,
)


# --- MMLU ------------------------------------------------------------------------------

MMLU_LETTERS = ("A", "B", "C", "D")


def mmlu_question(record: list) -> str:
    """`{q}\nA. {a}\nB. {b}\nC. {c}\nD. {d}\nAnswer:` (the answer letter follows directly)."""
    lines = [record[0]] + [f"{letter}. {option}" for letter, option in zip(MMLU_LETTERS, record[1:5])]
    return "\n".join(lines) + "\nAnswer:"


def mmlu_header(subject: str) -> str:
    """The original's header: each `_`-separated word of the subject gets a leading space, so
    "about" is followed by two spaces ("about  abstract algebra.")."""
    words = "".join(f" {word}" for word in subject.split("_"))
    return f"The following are multiple choice questions (with answers) about {words}.\n\n"


def _check_mmlu_record(record: Any, index: int, file: str) -> list:
    if isinstance(record, dict) and {"question", "choices"} <= set(record):
        raise DataError(f"{file}: record {index}: expected [question, A, B, C, D, answer letter], got an object "
                        f"with {', '.join(map(repr, record))} (the Hugging Face cais/mmlu layout); "
                        f"build the release files with: {PREPARE['mmlu']}")
    if not isinstance(record, list) or len(record) != 6:
        got = f"a list of {len(record)}" if isinstance(record, list) else type(record).__name__
        raise DataError(f"{file}: record {index}: expected [question, A, B, C, D, answer letter], got {got}")
    for pos, name in enumerate(("question", "A", "B", "C", "D")):
        if not isinstance(record[pos], str):
            raise DataError(f"{file}: record {index}: field {name!r} should be a string, got {type(record[pos]).__name__}")
        if not record[pos].strip():
            # an empty question or option still gets a letter scored: a prompt with a hole in it
            raise DataError(f"{file}: record {index}: field {name!r} is empty")
    if record[5] not in MMLU_LETTERS:
        raise DataError(f"{file}: record {index}: field 'answer' is {record[5]!r}, expected one of A, B, C, D")
    return record


def mmlu_prompt_file(path: Path, split: str) -> Path:
    """The 5-shot prompt file of a split's domain: MMLU_ID_prompt.json or MMLU_OOD_prompt.json."""
    domain = "OOD" if "OOD" in path.name else "ID"
    return path.with_name(f"MMLU_{domain}_prompt.json")


def read_mmlu(task: "Task", path: Path, split: str, prompt_path: Path | None = None) -> list[Example]:
    """Subject -> records files; each prompt is the subject header, its 5 shots, the question."""
    data = read_records(path)
    prompt_path = prompt_path or mmlu_prompt_file(path, split)
    shots = read_records(prompt_path)
    for file, content in ((path, data), (prompt_path, shots)):
        if not isinstance(content, dict):
            raise DataError(f"{file}: expected an object mapping subject -> list of records, got "
                            f"{type(content).__name__}; build the MMLU files with: {PREPARE['mmlu']}")
        if not content:
            raise DataError(f"{file}: no subjects (an empty object); expected {LAYOUTS['mmlu']}")
    examples, index = [], 0
    for subject, records in data.items():
        if subject not in shots:
            raise DataError(f"{prompt_path}: no shots for subject {subject!r} (needed by {path})")
        if not isinstance(shots[subject], list) or not shots[subject]:
            raise DataError(f"{prompt_path}: subject {subject!r}: expected a non-empty list of solved examples")
        head = mmlu_header(subject) + "".join(
            mmlu_question(_check_mmlu_record(s, k, f"{prompt_path}[{subject}]")) + s[5] + "\n\n"
            for k, s in enumerate(shots[subject]))
        if not isinstance(records, list):
            raise DataError(f"{path}: subject {subject!r}: expected a list of records")
        for k, rec in enumerate(records):
            _check_mmlu_record(rec, index, f"{path} (subject {subject}, item {k})")
            # header and shots may be cut (from the left) when a prompt must be shortened
            examples.append(Example(index, rec[0], head + mmlu_question(rec), rec[5], {"subject": subject},
                                    context_end=len(head)))
            index += 1
    if not examples:
        raise DataError(f"{path}: no records (every subject's list is empty); expected {LAYOUTS['mmlu']}")
    return examples


def mmlu_training_task(dataset: str = "MMLU_ID_train", prompt_domain: str = "ID") -> "Task":
    """MMLU probing on MMLU/{dataset}.json with the 5-shot prompts of MMLU_{prompt_domain}_prompt.json."""
    def reader(task: Task, path: Path, split: str) -> list[Example]:
        return read_mmlu(task, path, split, path.with_name(f"MMLU_{prompt_domain}_prompt.json"))

    return replace(MMLU, files={**MMLU.files, "train": f"MMLU/{dataset}.json"}, reader=reader)


MMLU = Task(
    name="mmlu",
    kind="choice",
    files={"train": "MMLU/MMLU_ID_train.json", "ID": "MMLU/MMLU_ID_test.json", "OOD": "MMLU/MMLU_OOD_test.json"},
    reader=read_mmlu,
    choices=MMLU_LETTERS,
    answer_sep="",  # the shots and training texts read "Answer:B"
    sure_sep="",  # the original's sure prompt too: "Answer:B. Are you sure ..."
)


# --- FEVER and WiCE: claim + evidence, three lettered options ---------------------------


def claim_task(name: str, files: dict[str, str], options: tuple[str, str, str], labels: dict[str, str],
               answer_sep: str) -> Task:
    def parse(record: Any, index: int, file: str) -> Example:
        require_object(record, index, file, "claim, evidence, label")
        claim = require_str(record, "claim", index, file)
        evidence = require_str_list(record, "evidence", index, file, _evidence_hint(name, record))
        gold = require_label(record, "label", index, file, labels)
        context = f"Evidence:{' '.join(evidence)}"
        prompt = (f"{context}\nClaim:{claim}\nQuestion:Does the evidence support the claim?\n"
                  + "".join(f"{o}\n" for o in options) + "Answer:")
        return Example(index, claim, prompt, gold, {"label": record["label"]}, context_end=len(context))

    # the sure prompt has a space before the letter in both originals ("Answer: B. Are you sure")
    return Task(name=name, kind="choice", files=files, parse=parse, choices=("A", "B", "C"),
                answer_sep=answer_sep, sure_sep=" ", label_words=tuple(labels))


def _evidence_hint(name: str, record: dict) -> str:
    """Where FEVER 1.0's own layout is met (evidence as [annotation, evidence, page, sentence] ids), how to convert it."""
    evidence = record.get("evidence")
    if name == "fever" and isinstance(evidence, list) and evidence and all(isinstance(e, list) for e in evidence):
        return ("; this looks like FEVER 1.0's own layout (evidence as [annotation id, evidence id, page, sentence] "
                f"ids, without the sentences' text): convert it with: {PREPARE['fever']}")
    return ""


FEVER = claim_task(
    "fever", {"train": "FEVER/fever_10k.json", "ID": "FEVER/fever_10k_test.json"},
    ("A: SUPPORTS.", "B: REFUTES.", "C: NOT ENOUGH INFO."),
    {"SUPPORTS": "A", "REFUTES": "B", "NOT ENOUGH INFO": "C"},
    answer_sep=" ",  # the original's FEVER training texts: "Answer: B." and "Answer: The answer is ..."
)
WICE = claim_task(
    "wice", {"train": "WiCE/wice_train.json", "ID": "WiCE/wice_test.json"},
    ("A:supported.", "B:partially_supported.", "C:not_supported."),
    {"supported": "A", "partially_supported": "B", "not_supported": "C"},
    answer_sep="",  # the original's WiCE training texts: "Answer:B." and "Answer:The answer is ..."
)


# --- HotpotQA and HaluEval: context + question, open answer -----------------------------


def _hotpot_hint(file: str, layout: str) -> str:
    flag = "--dev" if Path(file).name == "hotpot_test.json" else "--source"
    return (f"; this is {layout}: convert it with: python dataset/prepare.py hotpotqa {flag} {file} "
            f"--out_dir DATA_DIR")


def _hotpot_paragraphs(paragraphs: Any, index: int, file: str) -> list:
    """HotpotQA's context as [[title, [sentences]], ...]; other layouts are refused, naming their converter."""
    where = f"{file}: record {index}: field 'context'"
    expected = "should be a list of [title, [sentence, ...]] pairs"
    if isinstance(paragraphs, dict):
        hint = (_hotpot_hint(file, "the Hugging Face hotpot_qa layout ({title: [...], sentences: [[...]]})")
                if {"title", "sentences"} <= set(paragraphs) else "")
        raise DataError(f"{where} {expected}, got an object{hint}")
    if not isinstance(paragraphs, list):
        raise DataError(f"{where} {expected}, got {type(paragraphs).__name__}")
    for j, par in enumerate(paragraphs):
        if isinstance(par, dict):
            hint = (_hotpot_hint(file, "a list of {title, sentences} objects")
                    if {"title", "sentences"} <= set(par) else "")
            raise DataError(f"{where}: paragraph {j} should be a [title, [sentence, ...]] pair, got an object{hint}")
        if not isinstance(par, (list, tuple)) or len(par) != 2:
            raise DataError(f"{where}: paragraph {j} should be a [title, [sentence, ...]] pair, got "
                            f"{type(par).__name__ if not isinstance(par, list) else f'a list of {len(par)}'}")
        title, sentences = par
        if not isinstance(title, str):
            raise DataError(f"{where}: paragraph {j}: the title should be a string, got {type(title).__name__}")
        if isinstance(sentences, str):
            # joined as a list it would read "T h e   f i l m": refuse rather than spell it out
            raise DataError(f"{where}: paragraph {j} ({title!r}) should hold a list of sentences, got one string"
                            + _hotpot_hint(file, "a layout with each paragraph as one text"))
        if not isinstance(sentences, list) or not all(isinstance(t, str) for t in sentences):
            raise DataError(f"{where}: paragraph {j} ({title!r}) should hold a list of sentences (strings)")
    return paragraphs


def _parse_hotpot(record: Any, index: int, file: str) -> Example:
    require_object(record, index, file, "question, answer, context")
    question = require_str(record, "question", index, file)
    gold = require_str(record, "answer", index, file)
    paragraphs = _hotpot_paragraphs(_field(record, "context", index, file), index, file)
    context = " ".join(f"{title}:{' '.join(sentences)}\n" for title, sentences in paragraphs)
    prompt = f"{context}\nQuestion: {question}\nAnswer:"
    return Example(index, question, prompt, gold, {"type": record.get("type")}, context_end=len(context))


def _check_context_present(examples: list[Example], path: Path) -> None:
    """Refuse a file none of whose records has context; name the few that lack it (asked closed-book)."""
    empty = [ex.index for ex in examples if ex.context_end == 0]
    if empty and len(empty) == len(examples):
        raise DataError(f"{path}: record {empty[0]}: field 'context' is empty, and so is every other record's; "
                        f"expected {LAYOUTS.get('hotpotqa')}")
    if empty:
        shown = ", ".join(map(str, empty[:10])) + (" ..." if len(empty) > 10 else "")
        print(f"warning: {path}: {len(empty)} of {len(examples):,} records have an empty 'context' "
              f"(records {shown}): they are asked without paragraphs", file=sys.stderr)


HOTPOTQA = Task(
    name="hotpotqa", kind="qa",
    files={"train": "HotpotQA/hotpot_10k.json", "ID": "HotpotQA/hotpot_test.json"},
    parse=_parse_hotpot, eval_new_tokens=8, probe_new_tokens=15, needs_context=True,
)


def _parse_halueval(record: Any, index: int, file: str) -> Example:
    require_object(record, index, file, "knowledge, question, right_answer")
    if "knowledge" not in record and "user_query" in record:
        raise DataError(f"{file}: record {index}: this is HaluEval's general set (user_query, chatgpt_response); "
                        "the QA set is data/qa_data.json: convert it with: "
                        "python dataset/prepare.py halueval --source qa_data.json --out_dir DATA_DIR")
    knowledge = require_str(record, "knowledge", index, file)
    question = require_str(record, "question", index, file)
    gold = require_str(record, "right_answer", index, file)
    context = f"Knowledge: {knowledge}"
    return Example(index, question, f"{context}\nQuestion: {question}\nAnswer:", gold, context_end=len(context))


HALUEVAL = Task(
    name="halueval", kind="qa", files={"OOD": "HaluEvalQA/HaluEvalQA.json"},
    parse=_parse_halueval, eval_new_tokens=8, shots_from="pararel",
)


# --- Unanswerable sets: refusal, not accuracy -------------------------------------------


def _parse_selfaware(record: Any, index: int, file: str) -> Example:
    require_object(record, index, file, "question, answerable")
    flag = _field(record, "answerable", index, file)
    if not isinstance(flag, bool):
        raise DataError(f"{file}: record {index}: field 'answerable' should be true or false")
    question = require_str(record, "question", index, file)
    return Example(index, question, qa_prompt(question), "", {"answerable": flag})


def _parse_prompt_record(record: Any, index: int, file: str) -> Example:
    require_object(record, index, file, "prompt, label")
    question = require_str(record, "prompt", index, file)
    meta = {k: record[k] for k in ("label", "category") if k in record}
    return Example(index, question, qa_prompt(question), "", meta)


# Refusal sets are evaluated with generation long enough for a refusal sentence, and shots
# (for instruct models) from ParaRel, whose "Question: ... Answer:" format they share.
SELFAWARE = Task(
    name="selfaware", kind="refusal",
    files={"unanswerable": "SelfAware/SelfAware.json", "answerable": "SelfAware/SelfAware.json"},
    parse=_parse_selfaware, records_key="example", eval_new_tokens=16, shots_from="pararel",
    keep=lambda ex, split: ex.meta["answerable"] == (split == "answerable"),
)
FALSEQA = Task(
    name="falseqa", kind="refusal",
    files={"unanswerable": "FalseQA/FalseQA_unanswerable.json", "answerable": "FalseQA/FalseQA_answerable.json"},
    parse=_parse_prompt_record, eval_new_tokens=16, shots_from="pararel",
)
NEC = Task(
    name="nec", kind="refusal",
    files={"unanswerable": "NEC/NEC_unanswerable.json", "answerable": "NEC/NEC_answerable.json"},
    parse=_parse_prompt_record, eval_new_tokens=16, shots_from="pararel",
)


# What each task's file holds (as in dataset/README.md) and, for the public layouts that
# dataset/prepare.py converts, its command: both go into error messages.
LAYOUTS = {
    "pararel": "a JSON list of [question, answer, relation] records",
    "mmlu": "a JSON object mapping subject -> [[question, A, B, C, D, answer letter], ...]",
    "fever": "a JSON list of {claim, evidence: [sentence, ...], label: SUPPORTS|REFUTES|NOT ENOUGH INFO}",
    "wice": "a JSON list of {claim, evidence: [sentence, ...], label: supported|partially_supported|not_supported}",
    "hotpotqa": "a JSON list of {question, answer, context: [[title, [sentence, ...]], ...]} (non-empty context)",
    "halueval": "a JSON list (or JSON lines) of {knowledge, question, right_answer, hallucinated_answer}",
    "selfaware": 'a JSON object {"example": [{question, answerable: true|false}, ...]}',
    "falseqa": "JSON lines of {prompt, label}",
    "nec": "JSON lines of {prompt, label, category}",
}
PREPARE = {
    "mmlu": "python dataset/prepare.py mmlu --source MMLU_DATA_FOLDER (with dev/ and test/ CSVs) --out_dir DATA_DIR",
    "fever": "python dataset/prepare.py fever --source FEVER_JSONL --wiki_pages WIKI_PAGES_FOLDER --out_dir DATA_DIR",
}

TASKS: dict[str, Task] = {t.name: t for t in (PARAREL, MMLU, FEVER, WICE, HOTPOTQA, HALUEVAL, SELFAWARE, FALSEQA, NEC)}
TRAINING_TASKS = ("pararel", "mmlu", "wice", "hotpotqa", "fever")


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
        # shots show the format of the question that follows: the probe prompt's when probing
        return "".join(self.task.solved(self.task.probing(s) if ex.probe else s) + "\n\n" for s in chosen)

    def prompt(self, ex: Example) -> str:
        return self.prefix(ex) + ex.prompt
