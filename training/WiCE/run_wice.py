r"""Build R-Tuning training data from WiCE: probe the model, split known/unknown, write LMFlow JSON.

    python training/WiCE/run_wice.py --model smollm2-135m --method unsure \
        --data_dir ../shared/R-Tuning-data --sample 100

The claim + evidence prompt with three lettered options; the answer is the most likely
letter at the first position (one forward pass); `uncertain` samples the letter --num_try times.
Writes training/training_data/{result}_{method}.json (+ .records.jsonl, .meta.json).
"""

from rtuning.cli import probe_main

if __name__ == "__main__":
    probe_main("wice", doc=__doc__)
