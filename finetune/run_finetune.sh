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
# Runs on the GPU when there is one, on the CPU otherwise.
#
# Scaling out (flags passed to `accelerate launch`; see README "Scaling out"):
#   --accelerate_config finetune/configs/{single,ddp,fsdp,zero2,zero3}.yaml
#   --num_processes N  --num_machines M  --machine_rank R  --main_process_ip IP  --main_process_port P
#   --cpu              (force CPU processes, e.g. two-process tests)
# Without a config: one process (NUM_PROCESSES=N or --num_processes N for data parallel).
# The launcher runs as `$PYTHON -m accelerate.commands.launch` (PYTHON defaults to `python`), so an
# interpreter outside the active environment works too: PYTHON=.venv/bin/python bash finetune/...
set -euo pipefail
py="${PYTHON:-python}"
# a relative interpreter path means the caller's directory, not the repository's
if [[ "$py" == */* && "$py" != /* ]]; then py="$PWD/$py"; fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
if ! command -v "$py" >/dev/null 2>&1; then
  echo "error: python interpreter '$py' not found; set PYTHON=/path/to/python" >&2
  exit 2
fi
case " $* " in
  *" --help "*|*" -h "*)
    # the launcher's own flags (this header), then the fine-tuning flags with their defaults
    sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$here/run_finetune.sh"
    echo
    exec "$py" -m rtuning.finetune --help ;;
esac
if ! "$py" -c "import accelerate" 2>/dev/null; then
  echo "error: accelerate is not installed for $py; pip install -r requirements.txt (or set PYTHON)" >&2
  exit 2
fi
launch=()
config=""
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --accelerate_config) config="$2"; shift 2 ;;
    --num_processes|--num_machines|--machine_rank|--main_process_ip|--main_process_port)
      [ $# -ge 2 ] || { echo "error: $1 needs a value" >&2; exit 2; }
      launch+=("$1" "$2"); shift 2 ;;
    --cpu) launch+=(--cpu); shift ;;
    *) args+=("$1"); shift ;;
  esac
done
if [ -n "$config" ]; then
  [ -f "$config" ] || { echo "error: accelerate config not found: $config" >&2; exit 2; }
  if grep -q "DEEPSPEED" "$config" && ! "$py" -c "import deepspeed" 2>/dev/null; then
    echo "error: $config uses DeepSpeed, which is not installed: pip install deepspeed" >&2
    exit 2
  fi
  launch=(--config_file "$config" "${launch[@]}")
else
  # precision is set by --dtype through the Trainer, not by the launcher
  launch=(--num_processes "${NUM_PROCESSES:-1}" --num_machines 1 --mixed_precision no --dynamo_backend no
          "${launch[@]}")
fi
# accelerate's --cpu starts a single process whatever --num_processes says; several CPU
# processes go through the multi-process (torchrun) launcher and a gloo process group.
nproc=1; machines=1; cpu=0; rest=()
for ((i = 0; i < ${#launch[@]}; i++)); do
  case "${launch[$i]}" in
    --num_processes) nproc="${launch[$((i + 1))]}"; rest+=("${launch[$i]}") ;;
    --num_machines) machines="${launch[$((i + 1))]}"; rest+=("${launch[$i]}") ;;
    --cpu) cpu=1; continue ;;
    *) rest+=("${launch[$i]}") ;;
  esac
done
if [ "$cpu" = 1 ]; then
  if [ "$nproc" -gt 1 ]; then
    export ACCELERATE_USE_CPU=true CUDA_VISIBLE_DEVICES=""
    launch=(--multi_gpu "${rest[@]}")
  else
    launch=(--cpu "${rest[@]}")
  fi
fi
# accelerate launch sets OMP_NUM_THREADS=1 for every process it starts unless told otherwise
# (only its --cpu mode counts cores): a fine-tune on a CPU would leave all but one core idle.
# Unless OMP_NUM_THREADS is set, each process gets its share of this machine's cores.
if [ -z "${OMP_NUM_THREADS:-}" ]; then
  from_config() { sed -n "s/^$1:[[:space:]]*\([0-9][0-9]*\).*/\1/p" "$config"; }
  if [ -n "$config" ]; then
    if [ "$nproc" = 1 ]; then nproc="$(from_config num_processes)"; fi
    if [ "$machines" = 1 ]; then machines="$(from_config num_machines)"; fi
  fi
  per_machine=$(( ${nproc:-1} / ${machines:-1} ))
  cores=$(nproc)  # the command: cores this job may use here
  threads=$(( cores / (per_machine > 0 ? per_machine : 1) ))
  launch+=(--num_cpu_threads_per_process "$(( threads > 0 ? threads : 1 ))")
fi
exec "$py" -m accelerate.commands.launch "${launch[@]}" -m rtuning.finetune "${args[@]}"
