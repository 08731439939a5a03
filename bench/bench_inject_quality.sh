#!/usr/bin/env bash
# Training with injections against training on the fixed labelled set (issue 18's quality
# table), on the standard synthetic set of bench_quality.sh (20,000 train + 5,000 test, seed 1,
# default preprocessing with the whitened strain). Every run trains fold 0; every row is scored
# on the same 5,000 test samples, per SNR bin, with the oracle (and the bank, given its mf.csv).
#
#   bash bench/bench_inject_quality.sh [WORK [OUT]]      (defaults: quality-data, runs/inject)
#
# WORK must hold bench_quality.sh's data and cache (it makes them if absent). Steps:
#   bank      100,000 waveforms (the generator's prior), 20,000 of them used
#   inj1d     g2net_1d_small pretrained on injections into fold 0's own target-0 noise
#             (detectors shuffled), SNR uniform 2-16, 4 epochs x 32,000 = 128,000 samples
#   fine1d    inj1d fine-tuned on fold 0's labelled samples, 2 epochs = 32,000 samples
#             (128,000 + 32,000 = the fixed-set cpu1d run's 160,000)
#   inj2d     resnet18 pretrained the same way, 16,000 samples
#   fine2d    inj2d fine-tuned 1 epoch on the labels (16,000 + 16,000 = cpu.yaml's 32,000)
# Two runs at a time, one thread each (2 cores); times are in OUT/times.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
WORK=${1:-quality-data}
OUT=${2:-runs/inject}
mkdir -p "$OUT"
: > "$OUT/times.txt"
source bench/step.sh
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

if [ ! -f "$WORK/cache/train.zarr/zarr.json" ]; then
  step synth $PY -m data.sim.samples --out "$WORK/data" --n-train 20000 --n-test 5000 --seed 1 --jobs 2
  step preprocess $PY -m preprocess --data "$WORK/data" --out "$WORK/cache" \
    --config configs/preprocess/default.yaml save_waves=true --no-progress
fi
STORE="$WORK/cache/train.zarr"
BANK="$WORK/bank100k"
step bank $PY -m data.inject.bank --out "$BANK" --n 100000 --jobs 2 --quiet
INJ=(source=inject "inject.bank=$BANK" inject.max_waveforms=20000 inject.snr=uniform:2,16)
COMMON=(store="$STORE" out="$OUT" fold=0 progress=false resume=auto)

train() {  # train NAME CONFIG KEY=VALUE...: one run, its log in OUT/NAME.log
  local name=$1 config=$2
  shift 2
  $PY -m train --config "configs/train/$config.yaml" "${COMMON[@]}" name="$name" "$@" \
    > "$OUT/$name.log" 2>&1
}
pretrain() {
  train inj1d cpu1d "${INJ[@]}" inject.samples_per_epoch=32000 epochs=4 &
  train inj2d cpu "${INJ[@]}" inject.samples_per_epoch=16000 epochs=1 &
  wait
}
finetune() {
  train fine1d cpu1d init_from="$OUT/inj1d/fold0" epochs=2 warmup_epochs=0.1 &
  train fine2d cpu init_from="$OUT/inj2d/fold0" epochs=1 warmup_epochs=0.1 &
  wait
}
step pretrain pretrain
step finetune finetune
for run in inj1d fine1d inj2d fine2d; do
  step "infer_$run" $PY -m infer --runs "$OUT/$run" --store "$WORK/cache/test.zarr" \
    --out "$OUT/eval/$run/submission.csv" --truth "$WORK/data/truth.csv" --quiet \
    ${MF:+--bank "$MF"}  # metrics.json beside it; MF=runs/quality/mf.csv adds the bank
done
