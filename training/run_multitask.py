r"""Build the paper's multi-task training data: probe all five datasets, merge their refusal-aware data.

    python training/run_multitask.py --model smollm2-135m --method unsure \
        --data_dir ../shared/R-Tuning-data --sample 100

Runs each dataset's probe (ParaRel, MMLU, WiCE, HotpotQA, FEVER; --datasets to choose) with the
same settings, writing the per-dataset files into --output_dir as the single-dataset scripts do
(so finished ones resume), then writes {result}_{method}.json with all instances, shuffled with
--seed. Fine-tune on that file, or on the folder (run_finetune.sh reads every .json in it).
"""

import random
from pathlib import Path

from rtuning.cli import probe_main, probe_parser
from rtuning.pipeline import lmflow_text_only
from rtuning.records import read_json, write_json
from rtuning.tasks import TRAINING_TASKS, get_task, mmlu_training_task


def main() -> None:
    parser = probe_parser(__doc__)
    parser.add_argument("--datasets", default=",".join(TRAINING_TASKS), help="comma-separated datasets")
    args = parser.parse_args()
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    if args.dataset is not None:
        parser.error("--dataset names one dataset's file; run that dataset's script to probe it")
    for name in names:
        if name not in TRAINING_TASKS:
            parser.error(f"--datasets: {name!r} is not a training dataset ({', '.join(TRAINING_TASKS)})")
    merged_name = args.result or "multitask"
    texts, parts = [], []
    for name in names:
        task = mmlu_training_task() if name == "mmlu" else get_task(name)
        sub = parser.parse_args(namespace=None)  # fresh copy of the same settings
        sub.result = f"{merged_name}-{name}"
        out = probe_main(task, args=sub)
        parts.append(out["training_data"])
        texts += [inst["text"] for inst in read_json(Path(out["training_data"]))["instances"]]
    random.Random(args.seed).shuffle(texts)
    merged = Path(args.output_dir) / "merged" / f"{merged_name}_{args.method}.json"
    write_json(merged, lmflow_text_only(texts))
    print(f"merged {len(texts)} instances from {len(parts)} datasets into {merged}")


if __name__ == "__main__":
    main()
