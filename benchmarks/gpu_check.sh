#!/usr/bin/env bash
# One prepared GPU check for an H100; finishes in under 8 minutes; everything goes under $OUT.
#
#   1. train_throughput.py for resnet50 at batch 128 and 512 (pipelines a, b, c);
#   2. train_check.py: 2 real epochs of resnet50 on the carried CIFAR-10 subset, then a full
#      evaluation; checks that the loss falls and every metric is finite;
#   3. eval_throughput.py for resnet50 at batch 128 and 512;
#   4. 1 and 3 again with torch.compile.
#
# The sections run in that order, each under `timeout`, and a section starts only while the
# time budget (GPU_CHECK_BUDGET_S, 450 s) has at least 30 s left, so the whole script ends
# within the budget plus a few seconds; a section cut short is reported as such.
#
# Needs: the carried subset at .carry/cifar10_subset/cifar10.npz (cut it here with
# `python benchmarks/make_subset.py`; on a machine with ../shared/data it is cut on the fly),
# and, where torch_uncertainty is not installed, its wheel in .carry/wheels/ (see README.md).
#
# Writes $OUT/gpu_check.log (all output), $OUT/results.jsonl (one JSON object per section:
# section, rc, seconds, result = the script's last-line JSON) and $OUT/summary.md.
#
# Environment: GPU_CHECK_DEVICE (cuda), GPU_CHECK_TINY=1 (tiny sizes, resnet20: a dry run that
# works on CPU), GPU_CHECK_COMPILE=0 (skip section 4), GPU_CHECK_DATA_ROOT, GPU_CHECK_BUDGET_S,
# PYTHON (python3).
#
#   OUT=/tmp/out bash benchmarks/gpu_check.sh
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_TINY=1 OUT=/tmp/x bash benchmarks/gpu_check.sh
set -u -o pipefail

: "${OUT:?set OUT to the folder that receives the results}"
cd "$(dirname "$0")/.." || exit 2
mkdir -p "$OUT"

DEVICE=${GPU_CHECK_DEVICE:-cuda}
TINY=${GPU_CHECK_TINY:-0}
COMPILE=${GPU_CHECK_COMPILE:-1}
BUDGET=${GPU_CHECK_BUDGET_S:-450}
DATA_ROOT=${GPU_CHECK_DATA_ROOT:-.carry/cifar10_subset}
PY=${PYTHON:-python3}
LOG="$OUT/gpu_check.log"
RESULTS="$OUT/results.jsonl"
: >"$LOG"
: >"$RESULTS"

export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/calibench-inductor-cache}

if [ "$TINY" = 1 ]; then
  BACKBONE=resnet20
  BATCHES="16 32"
  TRAIN_ARGS="--images 96 --warmup 1 --steps 2 --repeats 2 --workers 1"
  EVAL_ARGS="--n-test 200 --n-val 100 --n-ood 300 --warmup tiny"
  CHECK_ARGS="--backbone resnet20 --train-subset 256 --batch-size 64 --eval-images 200"
  SUBSET_ARGS="--train 5400 --test 200"
else
  BACKBONE=resnet50
  BATCHES="128 512"
  TRAIN_ARGS="--images 50000 --warmup 10 --steps 20 --repeats 5 --workers 8"
  EVAL_ARGS="--repeats 3"
  CHECK_ARGS="--backbone resnet50"
  SUBSET_ARGS=""
fi

log() { echo "[gpu_check $(date -u +%H:%M:%S) +$((SECONDS - START))s] $*" | tee -a "$LOG"; }

START=$SECONDS

# section NAME CAP_SECONDS COMMAND...: run COMMAND under timeout, log it, record its last JSON line.
section() {
  local name=$1 cap=$2
  shift 2
  local left=$((BUDGET - (SECONDS - START)))
  if [ "$left" -lt 30 ]; then
    log "$name: skipped, ${left}s of the ${BUDGET}s budget left"
    printf '{"section": "%s", "rc": null, "seconds": 0, "skipped": "time budget", "result": null}\n' \
      "$name" >>"$RESULTS"
    return
  fi
  [ "$cap" -gt "$left" ] && cap=$left
  log "$name: start (limit ${cap}s): $*"
  local t0=$SECONDS tmp
  tmp=$(mktemp)
  timeout -k 5 "$cap" "$@" 2>&1 | tee "$tmp" >>"$LOG"
  local rc=${PIPESTATUS[0]}
  local json
  json=$(grep '^{' "$tmp" | tail -n 1)
  [ -z "$json" ] && json=null
  printf '{"section": "%s", "rc": %s, "seconds": %s, "result": %s}\n' \
    "$name" "$rc" "$((SECONDS - t0))" "$json" >>"$RESULTS"
  log "$name: rc=$rc after $((SECONDS - t0))s"
  rm -f "$tmp"
}

log "device=$DEVICE tiny=$TINY compile=$COMPILE budget=${BUDGET}s backbone=$BACKBONE"
{
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
} >>"$LOG" 2>&1

if ! "$PY" -c "import torch_uncertainty" >/dev/null 2>&1; then
  if ls .carry/wheels/*.whl >/dev/null 2>&1; then
    log "installing carried wheels: $(ls .carry/wheels)"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/calibench-site .carry/wheels/*.whl >>"$LOG" 2>&1
    export PYTHONPATH="$PYTHONPATH:/tmp/calibench-site"
  else
    log "torch_uncertainty is missing and .carry/wheels/ holds no wheel: metrics will fail"
  fi
fi

if [ ! -f "$DATA_ROOT/cifar10.npz" ] && [ -f ../shared/data/cifar10.npz ]; then
  # shellcheck disable=SC2086
  "$PY" benchmarks/make_subset.py --out "$DATA_ROOT/cifar10.npz" $SUBSET_ARGS >>"$LOG" 2>&1
fi

# shellcheck disable=SC2086
for bs in $BATCHES; do
  section "train_throughput bs=$bs" 90 \
    "$PY" benchmarks/train_throughput.py --backbone "$BACKBONE" --batch-size "$bs" \
    --device "$DEVICE" --no-compile $TRAIN_ARGS
done
# shellcheck disable=SC2086
section "train_check 2 epochs" 120 \
  "$PY" benchmarks/train_check.py --data-root "$DATA_ROOT" --device "$DEVICE" --epochs 2 $CHECK_ARGS
# shellcheck disable=SC2086
for bs in $BATCHES; do
  section "eval_throughput bs=$bs" 75 \
    "$PY" benchmarks/eval_throughput.py --backbone "$BACKBONE" --batch-size "$bs" \
    --device "$DEVICE" --no-compile $EVAL_ARGS
done
if [ "$COMPILE" = 1 ]; then
  # shellcheck disable=SC2086
  for bs in $BATCHES; do
    section "train_throughput bs=$bs compile" 150 \
      "$PY" benchmarks/train_throughput.py --backbone "$BACKBONE" --batch-size "$bs" \
      --device "$DEVICE" --compile $TRAIN_ARGS
  done
  # shellcheck disable=SC2086
  for bs in $BATCHES; do
    section "eval_throughput bs=$bs compile" 120 \
      "$PY" benchmarks/eval_throughput.py --backbone "$BACKBONE" --batch-size "$bs" \
      --device "$DEVICE" --compile $EVAL_ARGS
  done
fi

"$PY" benchmarks/summarize_gpu_check.py "$RESULTS" >"$OUT/summary.md" 2>>"$LOG"
status=$?
tee -a "$LOG" <"$OUT/summary.md"
log "done in $((SECONDS - START))s, status $status (1: a section failed or timed out)"
exit "$status"
