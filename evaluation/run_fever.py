r"""Evaluate a model on FEVER: claim + evidence, options A-C scored by their letters'
logits; accuracy, confidence, sure-probability and AP.

    python evaluation/run_fever.py --model output_models/pararel_unsure --domain ID \
        --data_dir ../shared/R-Tuning-data --sample 100

Writes evaluation/results/{result}.* (one test set, so no domain in the name, as the original)
and prints the summary table. --dataset STEM evaluates FEVER/STEM.json instead.
"""

from rtuning.cli import evaluate_main

if __name__ == "__main__":
    evaluate_main("fever", doc=__doc__)
