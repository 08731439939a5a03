#!/usr/bin/env bash
# The CQT settings compared by AUC (issue 9): the standard set preprocessed with each preset,
# the CPU CQT model (configs/train/cpu.yaml, resnet18) trained on fold 0 of each for the same
# number of epochs (the same 16,000 samples, the same samples seen), and each scored on the
# same 5,000 test samples with the matched-filter bank's per-SNR-bin figures beside it. The
# cost of each preset is its training time (printed, and kept in OUT/times.txt): the images
# grow with bins per octave and 1 / hop, and so does every step.
#
#   bash bench/bench_presets.sh STANDARD OUT EPOCHS PRESET [PRESET ...]
#
#   STANDARD  the standard set's work directory from bench_quality.sh (STANDARD/data/...)
#   OUT       stores land in OUT/NAME, runs in OUT/runs/NAME, metrics in OUT/runs/NAME/
#   EPOCHS    training epochs for every preset (warm-up: a quarter of them)
#   PRESET    default | bpo12 | bpo16h16 | seed
#
# Presets: default = configs/preprocess/default.yaml (8 bins per octave, hop 32); bpo12 = 12
# bins per octave; bpo16h16 = 16 bins per octave and hop 16; seed =
# configs/preprocess/seed.yaml (40 bins per octave, hop 16, filter scale 0.25). The time-shift
# augmentation is kept at the same 125 ms for every hop. No weight EMA: at decay 0.998 per step
# it would still hold a third of the initial weights after the 500 steps of two epochs.
# Presets are independent: run two invocations side by side (OMP_NUM_THREADS=1 each) on a
# 2-core machine. Re-running resumes. The bank's submission: BANK_CSV, else STANDARD/mf.csv or
# runs/quality/mf.csv (where bench_quality.sh leaves it), when one exists.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
STANDARD=${1:?STANDARD (the work directory of the standard set) missing}
OUT=${2:?OUT missing}
EPOCHS=${3:?EPOCHS missing}
shift 3
[ $# -gt 0 ] || { echo "no PRESET given (default, bpo12, bpo16h16, seed)" >&2; exit 2; }
mkdir -p "$OUT/runs"
source bench/step.sh
: >> "$OUT/times.txt"
BANK=()  # the bank's figures beside each preset's, when its submission is found
for f in ${BANK_CSV:-} "$STANDARD/mf.csv" runs/quality/mf.csv; do
  if [ -f "$f" ]; then BANK=(--bank "$f"); break; fi
done

for preset in "$@"; do
  case $preset in
    default)  config=default; over=(save_waves=true); shift_frames=8 ;;
    bpo12)    config=default; over=(cqt.bins_per_octave=12); shift_frames=8 ;;
    bpo16h16) config=default; over=(cqt.bins_per_octave=16 cqt.hop_length=16); shift_frames=16 ;;
    seed)     config=seed; over=(); shift_frames=16 ;;
    *) echo "unknown preset $preset (default, bpo12, bpo16h16, seed)" >&2; exit 2 ;;
  esac
  step "preprocess_$preset" $PY -m preprocess --data "$STANDARD/data" --out "$OUT/$preset" \
    --config "configs/preprocess/$config.yaml" "${over[@]}" --no-progress
  step "train_$preset" $PY -m train --config configs/train/cpu.yaml \
    store="$OUT/$preset/train.zarr" out="$OUT/runs" name="$preset" fold=0 epochs="$EPOCHS" \
    warmup_epochs="$(awk "BEGIN { print $EPOCHS / 4 }")" augment.max_shift=$shift_frames \
    ema=false progress=false resume=auto
  step "infer_$preset" $PY -m infer --runs "$OUT/runs/$preset" --store "$OUT/$preset/test.zarr" \
    --out "$OUT/runs/$preset/submission.csv" --truth "$STANDARD/data/truth.csv" "${BANK[@]}" \
    --quiet
done
