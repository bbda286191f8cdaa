"""Recompute AP (and the summary) from a results file, ours or the original release's.

    python evaluation/calculate_ap.py --result evaluation/results/smollm2-135m_pararel_ID.json
    python evaluation/calculate_ap.py --precision full --result results/a.json results/b.json

The file is a JSON list of [correct, answer_confidence, sure_probability] per question; rows
with more fields (files from forks of the original) are read by their first three.
AP ranks questions by 0.5 * answer_confidence + 0.5 * sure_probability (the paper's mix).
Beside it: Brier score of p(sure), AURC of the paper's score, and AbstainQA's effective
reliability (abstaining = p(sure) < 0.5; a results file has no answer text, so refusal
phrases are not seen: the .summary.json next to it has the metrics from the full records).
A file with no correct answer has no AP; it prints 0.0 as the original does, with a note.
--precision full prints each file's AP with all its digits, one line per file, so that it
can be diffed with the original's output (notes go to stderr).
"""

import argparse
import json
import sys

from rtuning.metrics import format_table, honesty_metrics, summarize

COLUMNS = [("file", "file", ""), ("n", "n", "d"), ("accuracy", "acc%", ".2%"), ("ap", "AP%", ".2%"),
           ("ap_answer_conf", "AP(conf)%", ".2%"), ("ap_sure_prob", "AP(sure)%", ".2%"),
           ("answer_rate", "answer%", ".2%"), ("accuracy_answered", "acc@ans%", ".2%"),
           ("brier_sure_prob", "Brier", ".3f"), ("aurc", "AURC", ".3f"),
           ("effective_reliability", "eff.rel.", ".3f")]
AP_KEYS = ("ap", "ap_answer_conf", "ap_sure_prob")


def read_results(path: str) -> list[list[float]]:
    """The [correct, answer_conf, sure_prob] rows of a results file; SystemExit with one line if it is not one."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        hint = " (a .jsonl records file? pass the .json results file beside it)" if path.endswith(".jsonl") else ""
        sys.exit(f"error: {path}: not a JSON results file{hint}: {e}")
    except (OSError, UnicodeDecodeError) as e:
        sys.exit(f"error: {path}: {e}")
    if isinstance(data, dict) and "instances" in data and "type" in data:
        sys.exit(f"error: {path}: this is an LMFlow training file ({{\"type\": {data['type']!r}, ...}}), not a "
                 f"results file; pass the .json that evaluation/run_<dataset>.py writes")
    if not isinstance(data, list):
        sys.exit(f"error: {path}: expected a JSON list of [correct, answer_conf, sure_prob] rows, "
                 f"got a {type(data).__name__}")
    for i, item in enumerate(data):
        if not (isinstance(item, list) and len(item) >= 3 and all(isinstance(x, (int, float)) for x in item[:3])):
            sys.exit(f"error: {path}: record {i}: expected [correct, answer_conf, sure_prob, ...], got {item!r}")
    return [item[:3] for item in data]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--result", required=True, nargs="+", help="results file(s)")
    p.add_argument("--precision", choices=("table", "full"), default="table",
                   help="table: the summary in percent (default); full: each file's AP with all its digits")
    args = p.parse_args(argv)
    rows, printed = [], []
    for path in args.result:
        data = read_results(path)
        row = {"file": path, "n": 0}
        if data:
            correct, conf, sure = (list(x) for x in zip(*data))
            row.update(summarize(correct, conf, sure))
            row.update(honesty_metrics([{"correct": c, "answer_conf": a, "sure_prob": s}
                                        for c, a, s in data]))
        shown = dict(row)
        if data and not any(correct):
            # sklearn's average_precision_score gives 0.0 here, so the original prints 0.0
            print(f"note: {path}: no correct answer, so AP is undefined; printed as 0.0, as the original does",
                  file=sys.stderr)
            shown.update({k: 0.0 for k in AP_KEYS})
        rows.append(row)
        printed.append(shown)
    if args.precision == "full":
        for shown in printed:
            print(shown.get("ap") if shown["n"] else "-")
    else:
        print(format_table(printed, COLUMNS))
    return rows[0] if len(rows) == 1 else {"rows": rows}


if __name__ == "__main__":
    main()
