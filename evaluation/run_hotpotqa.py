r"""Evaluate a model on HotpotQA: paragraphs + question, greedy answer of up to 8
tokens (stop at "."), answer confidence, sure-probability, accuracy and AP. Long contexts are cut
from the left to --max_prompt_tokens.

    python evaluation/run_hotpotqa.py --model output_models/pararel_unsure --domain ID \
        --data_dir ../shared/R-Tuning-data --sample 100

Writes evaluation/results/{result}.* (one test set, so no domain in the name, as the original)
and prints the summary table. --dataset STEM evaluates HotpotQA/STEM.json instead.
"""

from rtuning.cli import evaluate_main

if __name__ == "__main__":
    evaluate_main("hotpotqa", doc=__doc__)
