#!/usr/bin/env bash
# The quality benchmark (issue 9's main table): on the standard synthetic set (20,000 train +
# 5,000 test, seed 1, the generator's default hard SNR distribution uniform:1,11), side by side
# on the same test samples: the true-template oracle, the matched-filter template bank, the CQT
# CPU model (configs/train/cpu.yaml, resnet18), the 1D CPU model (configs/train/cpu1d.yaml,
# g2net_1d_small) and their ensemble (a logistic stack fitted on their out-of-fold
# predictions), overall and per SNR bin. Each step's wall time is printed and kept in
# OUT/times.txt; docs/quality.md's main table comes from OUT/metrics.json.
#
#   bash bench/bench_quality.sh [WORK [OUT]]          (defaults: quality-data, runs/quality)
#
# Re-running resumes: the data set, the cache (preprocess resumes), the bank's submission and
# finished training runs (resume=auto) are kept.
#   EPOCHS=4 bash bench/bench_quality.sh ...          (both models' epochs; default: the configs')
#
# Both models train on fold 0 (16,000 samples) in one process each, one after the other;
# CPU speed here varies up to 3x between days, so compare the rows of one run only.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
WORK=${1:-quality-data}
OUT=${2:-runs/quality}
EPOCHS_ARG=${EPOCHS:+epochs=$EPOCHS}
mkdir -p "$OUT"
: > "$OUT/times.txt"

source bench/step.sh

if [ ! -f "$WORK/data/truth.csv" ]; then
  step synth $PY -m data.sim.samples --out "$WORK/data" --n-train 20000 --n-test 5000 --seed 1 --jobs 2
fi
step preprocess $PY -m preprocess --data "$WORK/data" --out "$WORK/cache" \
  --config configs/preprocess/default.yaml save_waves=true --no-progress
if [ ! -f "$OUT/mf.csv" ]; then  # re-runs keep the bank's submission
  step bank $PY -m infer.matched_filter --data "$WORK/data" --split test --out "$OUT/mf.csv" \
    --truth "$WORK/data/truth.csv" --fitting-factors 200 --report "$OUT/mf.json" --quiet
fi
for config in cpu cpu1d; do
  step "train_$config" $PY -m train --config "configs/train/$config.yaml" \
    store="$WORK/cache/train.zarr" out="$OUT" name="$config" fold=0 progress=false \
    resume=auto $EPOCHS_ARG
done
step infer $PY -m infer --runs "$OUT/cpu" "$OUT/cpu1d" --store "$WORK/cache/test.zarr" \
  --out "$OUT/submission.csv" --truth "$WORK/data/truth.csv" --bank "$OUT/mf.csv" \
  --quiet members=stack
