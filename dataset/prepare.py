"""Build the R-Tuning release's data files from the public originals, in the release layout.

    python dataset/prepare.py mmlu --source data/            # MMLU's dev/ and test/ CSV folders
    python dataset/prepare.py halueval --source qa_data.json
    python dataset/prepare.py hotpotqa --source hotpot_train_v1.1.json --dev hotpot_dev_distractor_v1.json
    python dataset/prepare.py wice --source data/entailment_retrieval/claim/
    python dataset/prepare.py fever --source train.jsonl --test shared_task_dev.jsonl --wiki_pages wiki-pages/
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
from rtuning.tasks import MMLU_LETTERS, TASKS, DataError, read_text

MMLU_SUBJECTS, MMLU_ID_SUBJECTS = 57, 28
# (name, config) on the Hugging Face Hub; hotpotqa/hotpot_qa is where the old name hotpot_qa now lives
MMLU_HUB = ("cais/mmlu", "all")
HALUEVAL_HUB = ("pminervini/HaluEval", "qa")
HOTPOT_HUB = ("hotpotqa/hotpot_qa", "distractor")
WICE_LABELS = ("supported", "partially_supported", "not_supported")
WICE_LAYOUT = ("WiCE's claim-level JSON lines (data/entailment_retrieval/claim/{train,test}.jsonl): "
               "{label, supporting_sentences, claim, evidence: [sentence, ...], meta}")

Rows = dict[str, list[list[str]]]  # MMLU subject -> [question, A, B, C, D, letter] rows


class SourceError(Exception):
    """A missing or malformed input file; the message names the file and the line or record."""


# --- reading inputs ---------------------------------------------------------------------


def read_json_records(path: Path) -> list[tuple[str, Any]]:
    """(where, record) pairs from a JSON list or a JSON-lines file; `where` is "record N" or "line N"."""
    if not path.is_file():
        raise SourceError(f"input file not found: {path}")
    text = read_text(path)  # refuses empty, UTF-16 and other non-UTF-8 files with one line
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
    if not data:
        raise SourceError(f"{path}: no records (an empty list)")
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
            raise SourceError(f"{file}: {where}: expected an object with string fields {', '.join(HALUEVAL_FIELDS)}; "
                              "the layouts known here: HaluEval's data/qa_data.json (JSON lines) and the "
                              f"Hugging Face {HALUEVAL_HUB[0]} ({HALUEVAL_HUB[1]}) rows, which have these fields")
    check_with_task("halueval", records, file)
    return {"HaluEvalQA/HaluEvalQA.json": [{k: rec[k] for k in HALUEVAL_FIELDS} for _, rec in records]}


# --- HotpotQA ---------------------------------------------------------------------------


HOTPOT_LAYOUTS = (
    "HotpotQA's own JSON (hotpot_train_v1.1.json, hotpot_dev_distractor_v1.json, hotpot_dev_fullwiki_v1.json): "
    "context [[title, [sentence, ...]], ...]",
    "the Hugging Face hotpot_qa layout: context {title: [...], sentences: [[...]]}, "
    "supporting_facts {title: [...], sent_id: [...]}",
    "context as a list of {title, sentences} objects",
    "context with each paragraph as one text: [[title, text], ...] (kept as a one-sentence paragraph)",
)


def hotpot_paragraph(p: Any) -> Any:
    """[title, [sentences]] from a {title, sentences} object or a [title, text] pair; others as they are."""
    if isinstance(p, dict):
        p = [p["title"], p["sentences"]]
    if isinstance(p, list) and len(p) == 2 and isinstance(p[1], str):
        return [p[0], [p[1]]]
    return p


def hotpot_original_layout(rec: Any, where: str, file: str) -> Any:
    """Convert a record of one of HOTPOT_LAYOUTS to HotpotQA's own layout (the release's)."""
    if not isinstance(rec, dict) or "context" not in rec:
        raise SourceError(f"{file}: {where}: not a HotpotQA record (no 'context'); the layouts known here: "
                          + "; ".join(HOTPOT_LAYOUTS))
    ctx = rec["context"]
    try:
        if isinstance(ctx, dict):  # Hugging Face: parallel lists
            sup = rec.get("supporting_facts") or {"title": [], "sent_id": []}
            context = [[t, list(s)] for t, s in zip(ctx["title"], ctx["sentences"], strict=True)]
            facts = [[t, i] for t, i in zip(sup["title"], sup["sent_id"], strict=True)]
        elif isinstance(ctx, list):
            # objects become pairs; a paragraph kept as one text becomes one sentence, which gives
            # the same prompt (sentences are joined with spaces)
            context = [hotpot_paragraph(p) for p in ctx]
            facts = rec.get("supporting_facts", [])
        else:
            raise TypeError
    except (KeyError, TypeError, ValueError):
        raise SourceError(f"{file}: {where}: field 'context' is in none of the layouts known here: "
                          + "; ".join(HOTPOT_LAYOUTS)) from None
    if "answer" not in rec:
        raise SourceError(f"{file}: {where}: no 'answer' (HotpotQA's test files, e.g. hotpot_test_fullwiki_v1.json, "
                          "have none: use the train and dev files)")
    if context == ctx and not isinstance(ctx, dict):
        return rec  # already HotpotQA's own layout: written as read
    out = {"_id": rec["id"]} if "id" in rec else {}
    out.update((k, v) for k, v in rec.items() if k not in ("id", "context", "supporting_facts"))
    return {**out, "supporting_facts": facts, "context": context}


def hotpot_records(records: Iterable[tuple[str, Any]], file: str, limit: int | None = None) -> list:
    records = list(records)[:limit]
    converted = [(where, hotpot_original_layout(rec, where, file)) for where, rec in records]
    check_with_task("hotpotqa", converted, file)
    if all(not rec["context"] for _, rec in converted):
        raise SourceError(f"{file}: no record has any context paragraph; the layouts known here: "
                          + "; ".join(HOTPOT_LAYOUTS))
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
                                  f"{', '.join(WICE_LABELS)}; the layout known here: {WICE_LAYOUT}")
        check_with_task("wice", records, str(path))
        out[name] = [rec for _, rec in records]
    return out


# --- FEVER ------------------------------------------------------------------------------

FEVER_LABELS = ("SUPPORTS", "REFUTES", "NOT ENOUGH INFO")
FEVER_LAYOUTS = (
    "FEVER 1.0's JSON lines (train.jsonl, shared_task_dev.jsonl, paper_dev.jsonl): {id, label, claim, "
    "evidence: [[[annotation id, evidence id, page, sentence id], ...], ...]}, with --wiki_pages for the text",
    "the release's layout: {id, claim, evidence: [sentence, ...], label}",
)


def fever_wanted(records: list[tuple[str, Any]], file: str) -> set[str]:
    """The wiki pages FEVER 1.0 records cite (empty for records already holding sentence text)."""
    pages = set()
    for where, rec in records:
        if not isinstance(rec, dict) or rec.get("label") not in FEVER_LABELS or not isinstance(rec.get("claim"), str):
            raise SourceError(f"{file}: {where}: not a FEVER record (claim, label one of {', '.join(FEVER_LABELS)}); "
                              "the layouts known here: " + "; ".join(FEVER_LAYOUTS))
        evidence = rec.get("evidence")
        if isinstance(evidence, list) and all(isinstance(e, str) for e in evidence):
            continue
        try:
            pages.update(item[2] for group in evidence for item in group if item[2] is not None)
        except (TypeError, IndexError):
            raise SourceError(f"{file}: {where}: field 'evidence' is in none of the layouts known here: "
                              + "; ".join(FEVER_LAYOUTS)) from None
    return pages


def read_wiki_pages(folder: Path, wanted: set[str]) -> dict[str, dict[int, str]]:
    """page -> sentence id -> text, for the wanted pages of FEVER's wiki-pages/wiki-*.jsonl."""
    files = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    if not files:
        raise SourceError(f"no *.jsonl files in {folder} (expected FEVER's wiki-pages folder, wiki-001.jsonl ...)")
    pages: dict[str, dict[int, str]] = {}
    for path in files:
        for where, page in read_json_records(path):
            if isinstance(page, dict) and page.get("id") in wanted:
                # "lines" is one sentence a line: "{id}\t{text}\t{links...}"
                pages[page["id"]] = {int(n): t for n, t, *_ in
                                     (line.split("\t") for line in page.get("lines", "").split("\n"))
                                     if n.isdigit()}
    return pages


def fever_records(records: list[tuple[str, Any]], file: str, wiki: Path | None) -> list[dict]:
    """Release-layout FEVER records: evidence as the text of the cited sentences (each once, in order)."""
    wanted = fever_wanted(records, file)
    if wanted and wiki is None:
        raise SourceError(f"{file}: the evidence is FEVER 1.0's sentence ids, not their text: pass --wiki_pages "
                          "with FEVER's wiki-pages folder (fever.ai, wiki-pages.zip)")
    pages = read_wiki_pages(wiki, wanted) if wanted else {}
    out = []
    for where, rec in records:
        evidence = rec["evidence"]
        if not all(isinstance(e, str) for e in evidence):
            texts = []
            for item in (item for group in evidence for item in group if item[2] is not None):
                try:
                    text = pages[item[2]][item[3]]
                except (KeyError, TypeError):
                    raise SourceError(f"{file}: {where}: sentence {item[3]} of page {item[2]!r} is not in "
                                      f"{wiki}") from None
                if text not in texts:
                    texts.append(text)
            evidence = texts
        out.append({"id": rec.get("id"), "claim": rec["claim"], "evidence": evidence, "label": rec["label"]})
    check_with_task("fever", list(zip((w for w, _ in records), out)), file)
    return out


def prepare_fever(args) -> dict[str, Any]:
    if not args.source and not args.test:
        raise SourceError("fever needs --source (training claims) and/or --test (test claims)")
    wiki = Path(args.wiki_pages) if args.wiki_pages else None
    out = {}
    for name, file in (("FEVER/fever_10k.json", args.source), ("FEVER/fever_10k_test.json", args.test)):
        if file:
            records = read_json_records(Path(file))[: args.num]
            out[name] = fever_records(records, file, wiki)
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

    s = command("fever", "FEVER -> FEVER/fever_10k.json (--source) and FEVER/fever_10k_test.json (--test)",
                "FEVER 1.0 claims for training (e.g. train.jsonl) or a file in the release's layout",
                None, required=False,
                description="FEVER 1.0 cites evidence by page and sentence id; --wiki_pages gives the text. "
                            "Files from fever.ai: train.jsonl, shared_task_dev.jsonl, wiki-pages.zip.")
    s.add_argument("--test", help="FEVER 1.0 claims for testing (e.g. shared_task_dev.jsonl) -> fever_10k_test.json")
    s.add_argument("--wiki_pages", help="FEVER's wiki-pages folder (wiki-001.jsonl ...), for the evidence text")
    s.add_argument("--num", type=int, default=None, help="keep the first N claims of each file (default: all)")
    s.set_defaults(run=prepare_fever)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        files = args.run(args)
        for name, data in files.items():  # never leave an empty file where the scripts look
            if not data or (isinstance(data, dict) and not any(data.values())):
                raise SourceError(f"no records for {name}: the input held none; nothing written")
    except (SourceError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    write_outputs(Path(args.out_dir), files)
    return 0


if __name__ == "__main__":
    sys.exit(main())
