"""Build the R-Tuning release's data files from the public originals, in the release layout.

    python dataset/prepare.py mmlu --source data/            # MMLU's dev/ and test/ CSV folders
    python dataset/prepare.py halueval --source qa_data.json
    python dataset/prepare.py hotpotqa --source hotpot_train_v1.1.json --dev hotpot_dev_distractor_v1.json
    python dataset/prepare.py wice --source data/entailment_retrieval/claim/
    python dataset/prepare.py mmlu --from_hub                # same, from the Hugging Face copy

Every subcommand works offline from local files (--source); mmlu, halueval and hotpotqa can
instead download the public Hugging Face copy (--from_hub, needs `datasets` and network).
Files go under --out_dir (default: $RTUNING_DATA_DIR or dataset/), e.g. MMLU/MMLU_ID_train.json;
check them afterwards with `python dataset/validate.py --data_dir OUT_DIR`.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any, Iterable

from rtuning.cli import default_data_dir
from rtuning.tasks import MMLU_LETTERS, TASKS, DataError

MMLU_SUBJECTS, MMLU_ID_SUBJECTS = 57, 28
# (name, config) on the Hugging Face Hub; hotpotqa/hotpot_qa is where the old name hotpot_qa now lives
MMLU_HUB = ("cais/mmlu", "all")
HALUEVAL_HUB = ("pminervini/HaluEval", "qa")
HOTPOT_HUB = ("hotpotqa/hotpot_qa", "distractor")
WICE_LABELS = ("supported", "partially_supported", "not_supported")

Rows = dict[str, list[list[str]]]  # MMLU subject -> [question, A, B, C, D, letter] rows


class SourceError(Exception):
    """A missing or malformed input file; the message names the file and the line or record."""


# --- reading inputs ---------------------------------------------------------------------


def read_json_records(path: Path) -> list[tuple[str, Any]]:
    """(where, record) pairs from a JSON list or a JSON-lines file; `where` is "record N" or "line N"."""
    if not path.is_file():
        raise SourceError(f"input file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        records = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append((f"line {lineno}", json.loads(line)))
                except json.JSONDecodeError as err:
                    raise SourceError(f"{path}: line {lineno} is not valid JSON ({err.msg})") from None
        return records
    if isinstance(data, dict):  # a single JSON-lines record is also a valid JSON document
        return [("line 1", data)]
    if not isinstance(data, list):
        raise SourceError(f"{path}: expected a list of records or JSON lines, got {type(data).__name__}")
    return [(f"record {i}", rec) for i, rec in enumerate(data)]


def hub(name: str, config: str):
    """A Hugging Face dataset through the `datasets` library (network needed)."""
    try:
        import datasets
    except ImportError:
        raise SourceError("--from_hub needs the `datasets` package: pip install datasets") from None
    print(f"downloading {name} ({config}) from the Hugging Face Hub ...", file=sys.stderr)
    return datasets.load_dataset(name, config)


def hub_rows(split, name: str) -> list[tuple[str, dict]]:
    return [(f"{name} row {i}", dict(r)) for i, r in enumerate(split)]


def check_with_task(task: str, records: list[tuple[str, Any]], file: str) -> None:
    """Parse each record with the project's own reader, so what we write is what the scripts read."""
    for i, (where, rec) in enumerate(records):
        try:
            TASKS[task].parse(rec, i, file)
        except DataError as err:
            raise SourceError(str(err) if where == f"record {i}" else f"{err} ({where})") from None


# --- MMLU -------------------------------------------------------------------------------


def read_mmlu_csv(path: Path) -> list[list[str]]:
    if not path.is_file():
        raise SourceError(f"input file not found: {path}")
    rows = []
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        for row in reader:
            if len(row) != 6 or row[5] not in MMLU_LETTERS:
                raise SourceError(f"{path}: line {reader.line_num}: expected 6 fields "
                                  f"(question, A, B, C, D, answer letter A-D), got {row!r:.200}")
            rows.append(row)
    return rows


def mmlu_from_csv(source: Path) -> tuple[Rows, Rows]:
    """(dev, test) rows per subject from MMLU's dev/{subject}_dev.csv and test/{subject}_test.csv."""
    test_files = sorted((source / "test").glob("*_test.csv"))
    if not test_files:
        raise SourceError(f"no test/*_test.csv files under {source} (expected MMLU's data folder)")
    subjects = [f.name[: -len("_test.csv")] for f in test_files]
    dev = {s: read_mmlu_csv(source / "dev" / f"{s}_dev.csv") for s in subjects}
    return dev, {s: read_mmlu_csv(f) for s, f in zip(subjects, test_files)}


def mmlu_from_hub() -> tuple[Rows, Rows]:
    ds = hub(*MMLU_HUB)

    def group(split) -> Rows:
        rows: Rows = {}
        for i, r in enumerate(split):  # the Hub keeps each subject's rows in the CSV order
            if len(r["choices"]) != 4 or r["answer"] not in range(4):
                raise SourceError(f"{MMLU_HUB[0]}: row {i} ({r['subject']}): expected 4 choices and an answer 0-3")
            rows.setdefault(r["subject"], []).append([r["question"], *r["choices"], MMLU_LETTERS[r["answer"]]])
        return rows

    return group(ds["dev"]), group(ds["test"])


def build_mmlu(dev: Rows, test: Rows, allow_any_count: bool) -> dict[str, Any]:
    """The release's five MMLU files. Subjects sorted; the first 28 are in-domain. Each in-domain
    subject's test rows are halved in file order: the first n // 2 rows become MMLU_ID_test, the
    rest (the larger half when n is odd) MMLU_ID_train, which reproduces the release exactly."""
    subjects = sorted(test)
    if len(subjects) != MMLU_SUBJECTS and not allow_any_count:
        raise SourceError(f"found {len(subjects)} MMLU subjects, expected {MMLU_SUBJECTS} "
                          "(pass --allow_any_count to split whatever is there)")
    missing = [s for s in subjects if s not in dev]
    if missing:
        raise SourceError(f"no dev (5-shot) rows for subjects: {', '.join(missing)}")
    in_domain, out_domain = subjects[:MMLU_ID_SUBJECTS], subjects[MMLU_ID_SUBJECTS:]
    return {
        "MMLU/MMLU_ID_train.json": {s: test[s][len(test[s]) // 2:] for s in in_domain},
        "MMLU/MMLU_ID_test.json": {s: test[s][: len(test[s]) // 2] for s in in_domain},
        "MMLU/MMLU_OOD_test.json": {s: test[s] for s in out_domain},
        "MMLU/MMLU_ID_prompt.json": {s: dev[s] for s in in_domain},
        "MMLU/MMLU_OOD_prompt.json": {s: dev[s] for s in out_domain},
    }


def prepare_mmlu(args) -> dict[str, Any]:
    dev, test = mmlu_from_hub() if args.from_hub else mmlu_from_csv(Path(args.source))
    return build_mmlu(dev, test, args.allow_any_count)


# --- HaluEval ---------------------------------------------------------------------------

HALUEVAL_FIELDS = ("knowledge", "question", "right_answer", "hallucinated_answer")


def prepare_halueval(args) -> dict[str, Any]:
    if args.from_hub:
        records, file = hub_rows(hub(*HALUEVAL_HUB)["data"], "data"), HALUEVAL_HUB[0]
    else:
        records, file = read_json_records(Path(args.source)), args.source
    for where, rec in records:
        if not isinstance(rec, dict) or any(not isinstance(rec.get(k), str) for k in HALUEVAL_FIELDS):
            raise SourceError(f"{file}: {where}: expected an object with string fields {', '.join(HALUEVAL_FIELDS)}")
    check_with_task("halueval", records, file)
    return {"HaluEvalQA/HaluEvalQA.json": [{k: rec[k] for k in HALUEVAL_FIELDS} for _, rec in records]}


# --- HotpotQA ---------------------------------------------------------------------------


def hotpot_original_layout(rec: Any, where: str, file: str) -> Any:
    """Convert a Hugging Face layout record (dict context/supporting_facts) to the original one."""
    if not isinstance(rec, dict) or not isinstance(rec.get("context"), dict):
        return rec  # already the original layout (checked by the task parser afterwards)
    try:
        ctx, sup = rec["context"], rec.get("supporting_facts") or {"title": [], "sent_id": []}
        context = [[t, list(s)] for t, s in zip(ctx["title"], ctx["sentences"], strict=True)]
        facts = [[t, i] for t, i in zip(sup["title"], sup["sent_id"], strict=True)]
    except (KeyError, TypeError, ValueError):
        raise SourceError(f"{file}: {where}: Hugging Face layout needs context {{title, sentences}} and "
                          "supporting_facts {title, sent_id} of equal lengths") from None
    out = {"_id": rec["id"]} if "id" in rec else {}
    out.update((k, v) for k, v in rec.items() if k not in ("id", "context", "supporting_facts"))
    return {**out, "supporting_facts": facts, "context": context}


def hotpot_records(records: Iterable[tuple[str, Any]], file: str, limit: int | None = None) -> list:
    records = list(records)[:limit]
    converted = [(where, hotpot_original_layout(rec, where, file)) for where, rec in records]
    check_with_task("hotpotqa", converted, file)
    return [rec for _, rec in converted]


def prepare_hotpotqa(args) -> dict[str, Any]:
    out = {}
    if args.from_hub:
        ds = hub(*HOTPOT_HUB)
        train = ds["train"].select(range(min(args.num_train, len(ds["train"]))))
        out["HotpotQA/hotpot_10k.json"] = hotpot_records(hub_rows(train, "train"), HOTPOT_HUB[0])
        out["HotpotQA/hotpot_test.json"] = hotpot_records(hub_rows(ds["validation"], "validation"), HOTPOT_HUB[0])
        return out
    if not args.source and not args.dev:
        raise SourceError("hotpotqa needs --source (training file), --dev (dev distractor file), or --from_hub")
    if args.source:
        train = read_json_records(Path(args.source))
        out["HotpotQA/hotpot_10k.json"] = hotpot_records(train, args.source, args.num_train)
    if args.dev:
        out["HotpotQA/hotpot_test.json"] = hotpot_records(read_json_records(Path(args.dev)), args.dev)
    return out


# --- WiCE -------------------------------------------------------------------------------


def prepare_wice(args) -> dict[str, Any]:
    out = {}
    for split, name in (("train", "WiCE/wice_train.json"), ("test", "WiCE/wice_test.json")):
        path = Path(args.source) / f"{split}.jsonl"
        records = read_json_records(path)
        for where, rec in records:
            if not isinstance(rec, dict) or rec.get("label") not in WICE_LABELS:
                raise SourceError(f"{path}: {where}: expected an object whose 'label' is one of "
                                  f"{', '.join(WICE_LABELS)}")
        check_with_task("wice", records, str(path))
        out[name] = [rec for _, rec in records]
    return out


# --- command line -----------------------------------------------------------------------


def write_outputs(out_dir: Path, files: dict[str, Any]) -> None:
    for name, data in files.items():
        path = out_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        count = (f"{sum(map(len, data.values())):,} records, {len(data)} subjects" if isinstance(data, dict)
                 else f"{len(data):,} records")
        print(f"wrote {path} ({count})")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out_dir", default=default_data_dir(),
                   help="data folder to write into (default: $RTUNING_DATA_DIR or dataset/)")
    sub = p.add_subparsers(dest="dataset", required=True)

    def command(name: str, help: str, source_help: str, hub_help: str | None, required: bool = True,
                description: str = ""):
        s = sub.add_parser(name, help=help, description=f"{help}. {description}".strip())
        s.add_argument("--out_dir", default=argparse.SUPPRESS, help="as above; may also follow the subcommand")
        group = s.add_mutually_exclusive_group(required=required)
        group.add_argument("--source", help=source_help)
        if hub_help:
            group.add_argument("--from_hub", action="store_true", help=hub_help)
        s.set_defaults(from_hub=False)
        return s

    s = command("mmlu", "MMLU -> MMLU/MMLU_{ID_train,ID_test,OOD_test,ID_prompt,OOD_prompt}.json",
                "MMLU data folder holding dev/{subject}_dev.csv and test/{subject}_test.csv",
                f"load {MMLU_HUB[0]} ({MMLU_HUB[1]}) from the Hugging Face Hub")
    s.add_argument("--allow_any_count", action="store_true",
                   help=f"accept a subject count other than {MMLU_SUBJECTS} "
                        f"(the first {MMLU_ID_SUBJECTS} are still in-domain)")
    s.set_defaults(run=prepare_mmlu)

    s = command("halueval", "HaluEval QA -> HaluEvalQA/HaluEvalQA.json",
                "HaluEval's qa_data.json (JSON lines: knowledge, question, right_answer, hallucinated_answer)",
                f"load {HALUEVAL_HUB[0]} ({HALUEVAL_HUB[1]}, split data) from the Hugging Face Hub")
    s.set_defaults(run=prepare_halueval)

    s = command("hotpotqa", "HotpotQA -> HotpotQA/hotpot_10k.json (train) and HotpotQA/hotpot_test.json (dev)",
                "HotpotQA training file (e.g. hotpot_train_v1.1.json; original or Hugging Face layout)",
                f"load {HOTPOT_HUB[0]} ({HOTPOT_HUB[1]}, train and validation) from the Hugging Face Hub",
                required=False)
    s.add_argument("--dev", help="HotpotQA dev distractor file (hotpot_dev_distractor_v1.json) -> hotpot_test.json")
    s.add_argument("--num_train", type=int, default=10000, help="keep the first N training questions (default 10000)")
    s.set_defaults(run=prepare_hotpotqa)

    s = command("wice", "WiCE -> WiCE/wice_train.json and WiCE/wice_test.json (local files only)",
                "folder with WiCE's claim-level train.jsonl and test.jsonl (dev.jsonl is not used)", None,
                description="There is no --from_hub: WiCE has no official Hugging Face copy. The claim-level "
                            "files are data/entailment_retrieval/claim/ in github.com/ryokamoi/wice.")
    s.set_defaults(run=prepare_wice)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        files = args.run(args)
    except (SourceError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    write_outputs(Path(args.out_dir), files)
    return 0


if __name__ == "__main__":
    sys.exit(main())
