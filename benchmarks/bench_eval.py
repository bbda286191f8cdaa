"""Evaluation speed: the original per-question algorithm (a) against the batched engine (b).

    python benchmarks/bench_eval.py --model smollm2-135m --limit 128 \
        --data_dir $RTUNING_DATA_DIR --output benchmarks/results/eval_smollm2-135m.json

(a) answers one question at a time: generate(max_new_tokens=5, output_scores=True), the
scores walked to the first period or end token, then a second generate on the re-encoded sure
prompt for p(sure). (b) is rtuning.pipeline.evaluate as the evaluation scripts run it. Both
see the same prompts (shots as rtuning.cli.Setup builds them). See benchmarks/README.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.compare import run_comparison  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    return run_comparison("eval", argv, __doc__)


if __name__ == "__main__":
    main()
