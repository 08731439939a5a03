#!/usr/bin/env bash
# The quality benchmark (issue 4): the default CPU config on the standard synthetic set
# (20,000 train + 5,000 test, the generator's default hard SNR distribution uniform:1,11),
# scored against truth.csv beside the matched-filter oracle. Its result and wall time: the
# README's "Quality" table.
#   bash bench/bench_quality.sh [extra train key=value ...]
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m infer.demo --n-train 20000 --n-test 5000 --snr uniform:1,11 --seed 1 \
    --train-config configs/train/cpu.yaml --preprocess-config configs/preprocess/default.yaml \
    --out runs/quality --work quality-data --quiet "$@"
