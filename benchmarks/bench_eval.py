"""Evaluation speed: the original per-question algorithm against our engine, on ParaRel.

    python benchmarks/bench_eval.py --model smollm2-135m --limit 128 \
        --data_dir $RTUNING_DATA_DIR --output benchmarks/results/eval_smollm2-135m.json

The evaluation half of bench_backends.py with the reference and hf backends (add others with
--backends). See benchmarks/README.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_backends import main as bench  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    return bench(["--kinds", "eval", "--backends", "reference,hf", *(argv or sys.argv[1:])])


if __name__ == "__main__":
    main()
