r"""Build R-Tuning training data from ParaRel: probe the model, split known/unknown, write LMFlow JSON.

    python training/pararel/run_pararel.py --model smollm2-135m --method unsure \
        --data_dir ../shared/R-Tuning-data --sample 300

Methods: unsure (R-Tuning), unknown (R-Tuning-R), uncertain (R-Tuning-U, --num_try samples),
vanilla (gold answers only), correctness (Cor-RAIT: --num_try samples, certain when at least
--min_correct_ratio of them are right); each is declared in rtuning/methods.py. Writes training/training_data/{result}_{method}.json plus
.records.jsonl (per question) and .meta.json (settings, hashes, counts). Rerun to resume.
"""

from rtuning.cli import probe_main

if __name__ == "__main__":
    probe_main("pararel", doc=__doc__)
