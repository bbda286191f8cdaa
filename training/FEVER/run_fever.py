r"""Build R-Tuning training data from FEVER: probe the model, split known/unknown, write LMFlow JSON.

    python training/FEVER/run_fever.py --model smollm2-135m --method unsure \
        --data_dir ../shared/R-Tuning-data --sample 100

The claim + evidence prompt with three lettered options; the answer is the most likely
letter at the first position (one forward pass); `uncertain` samples the letter --num_try times.
Writes training/training_data/{result}_{method}.json (+ .records.jsonl, .meta.json).
"""

from rtuning.cli import probe_main

if __name__ == "__main__":
    probe_main("fever", doc=__doc__)
