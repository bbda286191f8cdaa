#!/usr/bin/env bash
# Full-parameter supervised fine-tuning on R-Tuning's refusal-aware data (LMFlow text-only JSON).
#
#   bash finetune/run_finetune.sh --model_name_or_path smollm2-135m \
#       --dataset_path training/training_data/pararel_smollm2-135m_unsure.json \
#       --output_model_path output_models/pararel_unsure
#
# Defaults follow the paper: 1 epoch (not LMFlow's 0.01), lr 2e-5, block size 512, batch 4.
# Override with --num_train_epochs, --learning_rate, --per_device_train_batch_size,
# --gradient_accumulation_steps, --seed, --dtype bf16|fp16|fp32, --max_steps ...
# Runs on the GPU when there is one, on the CPU otherwise. Set NUM_PROCESSES=N to start N
# data-parallel processes through accelerate (one per GPU).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
if ! command -v accelerate >/dev/null 2>&1; then
  echo "error: 'accelerate' not found; pip install -r requirements.txt" >&2
  exit 2
fi
exec accelerate launch --num_processes "${NUM_PROCESSES:-1}" --num_machines 1 --dynamo_backend no \
  -m rtuning.finetune "$@"
