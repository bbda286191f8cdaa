"""Recompute AP (and the summary) from a results file, ours or the original release's.

    python evaluation/calculate_ap.py --result evaluation/results/smollm2-135m_pararel_ID.json

The file is a JSON list of [correct, answer_confidence, sure_probability] per question.
AP ranks questions by 0.5 * answer_confidence + 0.5 * sure_probability (the paper's mix).
"""

import argparse
import json
import sys

from rtuning.metrics import format_table, summarize


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--result", required=True, nargs="+", help="results file(s)")
    args = p.parse_args(argv)
    rows = []
    for path in args.result:
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            sys.exit(f"error: {path}: {e}")
        for i, item in enumerate(data):
            if not (isinstance(item, list) and len(item) == 3 and all(isinstance(x, (int, float)) for x in item)):
                sys.exit(f"error: {path}: record {i}: expected [correct, answer_conf, sure_prob], got {item!r}")
        rows.append({"file": path, **(summarize(*zip(*data)) if data else {"n": 0})})
    print(format_table(rows, [("file", "file", ""), ("n", "n", "d"), ("accuracy", "acc%", ".2%"),
                              ("ap", "AP%", ".2%"), ("ap_answer_conf", "AP(conf)%", ".2%"),
                              ("ap_sure_prob", "AP(sure)%", ".2%"), ("answer_rate", "answer%", ".2%")]))
    return rows[0] if len(rows) == 1 else {"rows": rows}


if __name__ == "__main__":
    main()
