r"""Evaluate a model on ParaRel: answer, answer confidence, sure-probability, accuracy and AP.

    python evaluation/run_pararel.py --model output_models/pararel_unsure --domain ID \
        --data_dir ../shared/R-Tuning-data --sample 300

Writes evaluation/results/{result}_{domain}.json (the original's [correct, conf, sure] list),
.jsonl (per question), .summary.json and .meta.json, and prints the summary table.
"""

from rtuning.cli import evaluate_main

if __name__ == "__main__":
    evaluate_main("pararel", doc=__doc__)
