r"""Evaluate a model on MMLU: 5-shot subject prompts; the answer is the most likely of
the letters A-D (softmax over the letters gives its confidence); also sure-probability, accuracy and
AP. --domain ID or OOD.

    python evaluation/run_mmlu.py --model output_models/pararel_unsure --domain ID \
        --data_dir ../shared/R-Tuning-data --sample 100

Writes evaluation/results/{result}_{domain}.* and prints the summary table.
"""

from rtuning.cli import evaluate_main

if __name__ == "__main__":
    evaluate_main("mmlu", doc=__doc__)
