r"""Build R-Tuning training data from HotpotQA: probe the model, split known/unknown, write LMFlow JSON.

    python training/HotpotQA/run_hotpotqa.py --model smollm2-135m --method unsure \
        --data_dir ../shared/R-Tuning-data --sample 100

The context paragraphs + question; open answer decoded greedily (15 tokens, stop at
"."), correct when it contains the gold answer. Long contexts are cut from the left to
--max_prompt_tokens.
Writes training/training_data/{result}_{method}.json (+ .records.jsonl, .meta.json).
"""

from rtuning.cli import probe_main

if __name__ == "__main__":
    probe_main("hotpotqa", doc=__doc__)
