#!/usr/bin/env bash
# One prepared GPU check for an H200 (one GPU, 16 CPU cores); finishes in under 8 minutes;
# everything goes under the output folder ($1, or $OUT).
#
# Sections, in order of priority (a section starts only while the time budget has >= 30 s left):
#   1. train_throughput.py, resnet50, batch 128: pipeline efficiency a/b (calibench's step and
#      device loader against the same step on one resident batch) and speed-up a/c over the
#      DataLoader baseline, img/s and TFLOP/s, no compile;
#   2. eval_throughput.py, resnet50: one full evaluation (10k test, 5k val, 26k OOD) plus the
#      full 75-cell shift grid (750,000 images, --shift-per-cell 10000);
#   3. checkpoint_cost.py: writing a resnet50 checkpoint (+ SGD momentum) atomically from the
#      GPU, and its share of GPU time per epoch at the 21,000 img/s target, every epoch vs 300 s;
#   4. sweep_throughput.py: a resnet20 `calibench run` sweep of 8 runs (smoke protocol, the
#      carried subset) with --runs-per-device 1, 2, 4 and 8: total img/s of each sweep;
#   5. the same sweep for 4 and 8 under CUDA MPS (GPU_CHECK_MPS=1, when nvidia-cuda-mps-control
#      exists);
#   6. train_throughput.py with --compile (resnet50 img/s with torch.compile);
#   7. train_check.py: 2 real epochs of resnet50 on the carried subset and a full evaluation.
#
# The sections run under `timeout`; the whole script ends within GPU_CHECK_BUDGET_S (440 s) plus
# a few seconds; a section cut short is reported as such.
#
# Needs: the carried subset at .carry/cifar10_subset/cifar10.npz (47 MiB; cut it here with
# `python benchmarks/make_subset.py`; on a machine with ../shared/data it is cut on the fly),
# and, where torch_uncertainty is not installed, its wheel in .carry/wheels/ (see README.md).
#
# Writes, in the output folder: gpu_check.log (all output), results.jsonl (one JSON object per
# section: section, rc, seconds, result = the script's last-line JSON), summary.json (the one
# JSON summary: device, torch, every section's figures) and summary.md.
#
# Environment: GPU_CHECK_DEVICE (cuda), GPU_CHECK_TINY=1 (tiny sizes, resnet20: a dry run that
# works on CPU), GPU_CHECK_COMPILE=0 (skip section 6), GPU_CHECK_SWEEP=0 (skip 4 and 5),
# GPU_CHECK_MPS (1 where nvidia-cuda-mps-control exists), GPU_CHECK_DATA_ROOT,
# GPU_CHECK_BUDGET_S, PYTHON (python3).
#
#   bash benchmarks/gpu_check.sh /tmp/out
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_TINY=1 bash benchmarks/gpu_check.sh /tmp/x
set -u -o pipefail

: "${OUT:=${1:-}}"
: "${OUT:?give the folder that receives the results as \$1 or set OUT}"
OUT=$(mkdir -p "$OUT" && cd "$OUT" && pwd)
cd "$(dirname "$0")/.." || exit 2
mkdir -p "$OUT"

DEVICE=${GPU_CHECK_DEVICE:-cuda}
TINY=${GPU_CHECK_TINY:-0}
COMPILE=${GPU_CHECK_COMPILE:-1}
BUDGET=${GPU_CHECK_BUDGET_S:-440}
SWEEP=${GPU_CHECK_SWEEP:-1}
if command -v nvidia-cuda-mps-control >/dev/null 2>&1; then MPS=${GPU_CHECK_MPS:-1}; else MPS=0; fi
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
  BATCH=32
  TRAIN_ARGS="--images 96 --warmup 1 --steps 2 --repeats 2 --workers 1"
  EVAL_ARGS="--n-test 200 --n-val 100 --n-ood 300 --warmup tiny --shift-per-cell 4"
  CHECK_ARGS="--backbone resnet20 --train-subset 256 --batch-size 64 --eval-images 200"
  CKPT_ARGS="--backbone resnet20 --repeats 2"
  SWEEP_ARGS="--runs-per-device 1 --runs-per-device 2 --seeds 0-1 --train-subset 256 --epochs 1"
  MPS_SWEEP_ARGS="--runs-per-device 2 --seeds 0-1 --train-subset 256 --epochs 1"
  SUBSET_ARGS="--train 5400 --test 200"
else
  BACKBONE=resnet50
  BATCH=128
  TRAIN_ARGS="--images 50000 --warmup 10 --steps 20 --repeats 5 --workers 8"
  EVAL_ARGS="--repeats 2 --batch-size 1000 --shift-per-cell 10000"
  CHECK_ARGS="--backbone resnet50"
  CKPT_ARGS="--backbone resnet50 --repeats 5"
  SWEEP_ARGS="--runs-per-device 1 --runs-per-device 2 --runs-per-device 4 --runs-per-device 8 --seeds 0-7 --train-subset 9000 --epochs 3"
  MPS_SWEEP_ARGS="--runs-per-device 4 --runs-per-device 8 --seeds 0-7 --train-subset 9000 --epochs 3"
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
section "train_throughput bs=$BATCH" 90 \
  "$PY" benchmarks/train_throughput.py --backbone "$BACKBONE" --batch-size "$BATCH" \
  --device "$DEVICE" --no-compile $TRAIN_ARGS
# shellcheck disable=SC2086
section "eval_throughput with shift grid" 100 \
  "$PY" benchmarks/eval_throughput.py --backbone "$BACKBONE" --device "$DEVICE" --no-compile $EVAL_ARGS
# shellcheck disable=SC2086
section "checkpoint_cost" 45 \
  "$PY" benchmarks/checkpoint_cost.py --device "$DEVICE" --dir "${TMPDIR:-/tmp}" $CKPT_ARGS
if [ "$SWEEP" = 1 ]; then
  # shellcheck disable=SC2086
  section "sweep_throughput" 170 \
    "$PY" benchmarks/sweep_throughput.py --device "$DEVICE" --data-root "$DATA_ROOT" $SWEEP_ARGS
  if [ "$MPS" = 1 ]; then
    export CUDA_MPS_PIPE_DIRECTORY=/tmp/calibench-mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/calibench-mps-log
    mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
    if nvidia-cuda-mps-control -d >>"$LOG" 2>&1; then
      # shellcheck disable=SC2086
      section "sweep_throughput mps" 90 \
        "$PY" benchmarks/sweep_throughput.py --device "$DEVICE" --data-root "$DATA_ROOT" $MPS_SWEEP_ARGS
      echo quit | nvidia-cuda-mps-control >>"$LOG" 2>&1
    else
      log "sweep_throughput mps: nvidia-cuda-mps-control -d failed; skipped"
    fi
    unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
  fi
fi
if [ "$COMPILE" = 1 ]; then
  # shellcheck disable=SC2086
  section "train_throughput bs=$BATCH compile" 150 \
    "$PY" benchmarks/train_throughput.py --backbone "$BACKBONE" --batch-size "$BATCH" \
    --device "$DEVICE" --compile $TRAIN_ARGS
fi
# shellcheck disable=SC2086
section "train_check 2 epochs" 100 \
  "$PY" benchmarks/train_check.py --data-root "$DATA_ROOT" --device "$DEVICE" --epochs 2 $CHECK_ARGS

"$PY" benchmarks/summarize_gpu_check.py "$RESULTS" --json "$OUT/summary.json" >"$OUT/summary.md" 2>>"$LOG"
status=$?
tee -a "$LOG" <"$OUT/summary.md"
log "done in $((SECONDS - START))s, status $status (1: a section failed or timed out)"
exit "$status"
