#!/usr/bin/env bash
# The data-scaling curve (issue 9): one model trained on N synthetic samples, scored on the
# standard set's 5,000 test samples, so every point sits in the same table as
# bench/bench_quality.sh's oracle and bank.
#
#   bash bench/bench_scaling.sh N CONFIG EPOCHS [STANDARD [WORK [OUT]]]
#       N         training samples, a multiple of 16,000 (16000, 64000, 256000, ...)
#       CONFIG    a training config name (cpu1d, cpu, ...)
#       EPOCHS    passes over the N samples (the curve may trade epochs for samples); 0 makes
#                 the set and stops, so several models can then train on it side by side
#       STANDARD  bench_quality.sh's WORK (its data/ holds the standard set; default quality-data)
#       WORK      where the N-sample sets go (default scaling-data)
#       OUT       where runs go (default runs/scaling): OUT/CONFIG_nN_eEPOCHS/ holds fold0/ and
#                 the test submission with its metrics.json (overall and per SNR bin)
#
# For each N it generates a training-only set of N + 16,000 samples (seed 1000 + N / 16000, so
# no sample repeats the standard set's) with the generator's default SNR distribution, lends it
# the standard set's test split (a symlink, and its sample_submission.csv), preprocesses both
# with the default preset and the waves kept, and trains fold 0 of n_folds = N / 16000 + 1:
# N training samples and 16,000 validation samples for every N. The test split is whitened with
# this set's own training PSD, as a user's would be. The raw training files are deleted once
# the store is finished (KEEP_RAW=1 keeps them): at 98 KB a sample, 256,000 would hold 27 GB.
# JOBS=1: the generator in one process (default 2). TRAIN_ARGS="ema=true ...": more a.b=value
# overrides for training. Warm-up: a tenth of the training
# (WARMUP=EPOCHS sets another). Re-running resumes every step (the store, resume=auto). Times
# go to OUT/times.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
N=${1:?N (training samples) missing}
CONFIG=${2:?CONFIG (training config name) missing}
EPOCHS=${3:?EPOCHS missing}
STANDARD=${4:-quality-data}
WORK=${5:-scaling-data}
OUT=${6:-runs/scaling}
if (( N % 16000 != 0 || N < 16000 )); then
  echo "bench_scaling.sh: error: N must be a positive multiple of 16000, got $N" >&2
  exit 2
fi
if [ ! -f "$STANDARD/data/truth.csv" ]; then
  echo "bench_scaling.sh: error: no standard set at $STANDARD/data (run bench_quality.sh)" >&2
  exit 2
fi
SET="$WORK/n$N"
FOLDS=$(( N / 16000 + 1 ))
RUN="${CONFIG}_n${N}_e${EPOCHS}"
mkdir -p "$OUT"

source bench/step.sh

complete() {  # both stores finished (data.store.require_complete)
  $PY -c 'import sys; from data.store import require_complete as r; [r(p) for p in sys.argv[1:]]' \
    "$SET/cache/train.zarr" "$SET/cache/test.zarr" 2> /dev/null
}

if ! complete; then
  if [ ! -f "$SET/data/training_labels.csv" ]; then
    step "synth_n$N" $PY -m data.sim.samples --out "$SET/data" --n-train $(( N + 16000 )) \
      --n-test 0 --seed $(( 1000 + N / 16000 )) --jobs "${JOBS:-2}"
    rm -rf "$SET/data/test"
    ln -s "$(realpath "$STANDARD/data/test")" "$SET/data/test"
    cp "$STANDARD/data/sample_submission.csv" "$SET/data/sample_submission.csv"
  fi
  step "preprocess_n$N" $PY -m preprocess --data "$SET/data" --out "$SET/cache" \
    --config configs/preprocess/default.yaml save_waves=true --no-progress
fi
if [ -z "${KEEP_RAW:-}" ] && [ -d "$SET/data/train" ] && complete; then
  rm -rf "$SET/data/train"
fi
if (( EPOCHS == 0 )); then
  exit 0
fi
step "train_${RUN}" $PY -m train --config "configs/train/$CONFIG.yaml" \
  store="$SET/cache/train.zarr" out="$OUT" name="$RUN" n_folds=$FOLDS fold=0 \
  epochs="$EPOCHS" warmup_epochs="${WARMUP:-$(awk "BEGIN { print $EPOCHS / 10 }")}" progress=false resume=auto \
  ${TRAIN_ARGS:-}
step "infer_${RUN}" $PY -m infer --runs "$OUT/$RUN" --store "$SET/cache/test.zarr" \
  --out "$OUT/$RUN/submission.csv" --truth "$STANDARD/data/truth.csv" --quiet
