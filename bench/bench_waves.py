"""What keeping the whitened strain costs stage one: the same data preprocessed with and
without ``save_waves``, alternating, side by side in one run (CPU speed here varies between
days, not within a run).

    .venv/bin/python bench/bench_waves.py --data DIR [--rounds 2] [--work /tmp/...]

Each round preprocesses DIR's train split into a fresh cache twice, ``save_waves=false`` then
``true`` (then the other order the next round, so that neither always runs second), with
the default preset. Prints samples/s of each run, the median rate of each setting and their
ratio, and the bytes per sample on disk of the images and the waves arrays.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_preprocess import du  # noqa: E402  (this directory, run as a script)

from data.config import load_config  # noqa: E402
from preprocess import pipeline  # noqa: E402
from preprocess.config import PreprocessConfig  # noqa: E402

PRESET = Path(__file__).resolve().parents[1] / "configs" / "preprocess" / "default.yaml"


def one(data: Path, cache: Path, waves: bool) -> tuple[float, int, dict[str, int]]:
    """Preprocess DIR's train split into a fresh ``cache``: (seconds, samples, bytes/array)."""
    shutil.rmtree(cache, ignore_errors=True)
    cfg = load_config(PreprocessConfig, PRESET, [f"save_waves={str(waves).lower()}"])
    start = time.perf_counter()
    summary = pipeline.run(data, cache, cfg, splits=("train",), progress=False)
    seconds = time.perf_counter() - start
    store = cache / "train.zarr"
    sizes = {p.name: du(p) for p in store.iterdir() if p.is_dir()}
    return seconds, summary["splits"]["train"]["n"], sizes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="Kaggle-layout data set")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("/tmp/g2net-bench-waves"))
    args = ap.parse_args()
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    rates: dict[bool, list[float]] = {False: [], True: []}
    sizes: dict[bool, dict[str, int]] = {}
    for r in range(args.rounds):
        for waves in ((False, True) if r % 2 == 0 else (True, False)):
            seconds, n, sizes[waves] = one(args.data, args.work / f"waves-{waves}", waves)
            rates[waves].append(n / seconds)
            print(f"round {r + 1} save_waves={str(waves).lower():<5} {n} samples in "
                  f"{seconds:6.1f} s: {n / seconds:7.0f} samples/s", flush=True)
    without, with_ = statistics.median(rates[False]), statistics.median(rates[True])
    print(f"median: {without:.0f} samples/s without the waves, {with_:.0f} with: "
          f"{with_ / without:.2f} x")
    for name in ("images", "waves"):
        if name in sizes[True]:
            print(f"{name}: {sizes[True][name] / n:,.0f} B/sample on disk")
    shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
