r"""Evaluate a model on FalseQA: refusal on false-premise questions
(--domain unanswerable) and over-refusal on their answerable rewrites (--domain answerable).

    python evaluation/run_falseqa.py --model output_models/pararel_unsure --domain unanswerable \
        --data_dir ../shared/R-Tuning-data --sample 100

Writes evaluation/results/{result}_{domain}.* and prints the summary table.
"""

from rtuning.cli import evaluate_main

if __name__ == "__main__":
    evaluate_main("falseqa", doc=__doc__)
