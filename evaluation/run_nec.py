r"""Evaluate a model on NEC (non-existent concepts): refusal on questions about
concepts that do not exist (--domain unanswerable), over-refusal on real ones (--domain answerable).

    python evaluation/run_nec.py --model output_models/pararel_unsure --domain unanswerable \
        --data_dir ../shared/R-Tuning-data --sample 100

Writes evaluation/results/{result}_{domain}.* and prints the summary table.
"""

from rtuning.cli import evaluate_main

if __name__ == "__main__":
    evaluate_main("nec", doc=__doc__)
