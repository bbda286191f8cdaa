r"""Evaluate a model on HaluEval QA: knowledge + question, greedy answer of up to 8
tokens, answer confidence, sure-probability, accuracy (gold = right_answer) and AP.

    python evaluation/run_halueval.py --model output_models/pararel_unsure --domain OOD \
        --data_dir ../shared/R-Tuning-data --sample 100

Writes evaluation/results/{result}.* (one test set, so no domain in the name, as the original)
and prints the summary table. --dataset STEM evaluates HaluEvalQA/STEM.json instead.
"""

from rtuning.cli import evaluate_main

if __name__ == "__main__":
    evaluate_main("halueval", doc=__doc__)
