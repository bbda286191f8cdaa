"""Probing speed: the original per-question greedy 15-token answers (a) against the engine (b).

    python benchmarks/bench_probe.py --model smollm2-135m --limit 128 \
        --data_dir $RTUNING_DATA_DIR --output benchmarks/results/probe_smollm2-135m.json

(a) one generate(max_new_tokens=15, output_scores=True) per question, cut at the first period
or end token; (b) rtuning.pipeline.probe with method "unsure" (training questions by default,
--domain ID/OOD for test questions). See benchmarks/README.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.compare import run_comparison  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    return run_comparison("probe", argv, __doc__)


if __name__ == "__main__":
    main()
