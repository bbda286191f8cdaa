#!/usr/bin/env bash
# Reproduce benchmarks/results/*.json (the tables in benchmarks/README.md).
#   bash benchmarks/run_all.sh            # torch's default threads (all cores)
#   THREADS=1 bash benchmarks/run_all.sh  # one thread, e.g. while something else uses a core
set -euo pipefail
cd "$(dirname "$0")/.."
export RTUNING_DATA_DIR=${RTUNING_DATA_DIR:-dataset}
export TQDM_DISABLE=1
OUT=${OUT:-benchmarks/results}
T=${THREADS:+--threads $THREADS}
SUFFIX=${THREADS:+_t$THREADS}
DATA=${TRAIN_DATA:-runs/issue2/train/pararel_smollm2-135m_unsure.json}
if [ ! -f "$DATA" ]; then
  python training/pararel/run_pararel.py --method unsure --limit 200 --output_dir /tmp/bench_train
  DATA=/tmp/bench_train/pararel_smollm2-135m_unsure.json
fi
python benchmarks/bench_eval.py --model smollm2-135m --limit 128 --repeat 3 --data_dir "$RTUNING_DATA_DIR" \
  $T --output "$OUT/eval_smollm2-135m$SUFFIX.json"
python benchmarks/bench_probe.py --model smollm2-135m --limit 128 --repeat 3 --data_dir "$RTUNING_DATA_DIR" \
  $T --output "$OUT/probe_smollm2-135m$SUFFIX.json"
python benchmarks/bench_finetune.py --model smollm2-135m --data "$DATA" --steps 10 --block_size 512 \
  $T --output "$OUT/finetune_smollm2-135m$SUFFIX.json"
