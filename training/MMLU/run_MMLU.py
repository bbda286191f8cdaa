r"""Build R-Tuning training data from MMLU: 5-shot subject prompts, answer = the most likely letter.

    python training/MMLU/run_MMLU.py --model smollm2-135m --method unsure \
        --dataset MMLU_ID_train --prompt_domain ID --data_dir ../shared/R-Tuning-data --sample 100

The answer is the argmax over the letters A-D at the first position (one forward pass);
`uncertain` samples the letter --num_try times at temperature 0.7. Writes
training/training_data/{result}_{method}.json (+ .records.jsonl, .meta.json).
"""

from rtuning.cli import probe_main, probe_parser
from rtuning.tasks import mmlu_training_task

if __name__ == "__main__":
    parser = probe_parser(__doc__)
    parser.add_argument("--prompt_domain", choices=("ID", "OOD"), default="ID", help="which 5-shot prompt file")
    args = parser.parse_args()
    probe_main(mmlu_training_task(prompt_domain=args.prompt_domain), args=args)  # --dataset: the file under MMLU/
