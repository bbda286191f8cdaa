r"""Evaluate a model on SelfAware: refusal on its unanswerable questions
(--domain unanswerable), over-refusal on its answerable ones (--domain answerable). A question
counts as refused when p(sure) < 0.5 or the answer is a refusal phrase.

    python evaluation/run_selfaware.py --model output_models/pararel_unsure --domain unanswerable \
        --data_dir ../shared/R-Tuning-data --sample 100

Writes evaluation/results/{result}_{domain}.* and prints the summary table.
"""

from rtuning.cli import evaluate_main

if __name__ == "__main__":
    evaluate_main("selfaware", doc=__doc__)
