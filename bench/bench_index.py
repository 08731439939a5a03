"""Index build time on a large fake Kaggle listing (empty files; the index never opens them).

    .venv/bin/python bench/bench_index.py [--n 786000] [--dir /tmp/g2net-index-bench]

Goal (issue 2): at most 5 s per 100,000 ids, without opening or stat-ing each file.
"""

import argparse
import os
import shutil
import time
from pathlib import Path

import numpy as np

from data.layout import build_index, sample_path, write_labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=786_000)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/g2net-index-bench"))
    args = ap.parse_args()

    root = args.dir
    marker = root / f".n{args.n}"
    ids = [f"{v:010x}" for v in np.random.default_rng(0).choice(16**10, args.n, replace=False)]
    if not marker.exists():
        shutil.rmtree(root, ignore_errors=True)
        t = time.perf_counter()
        for sid in ids:
            p = sample_path(root, "train", sid)
            try:
                os.close(os.open(p, os.O_CREAT | os.O_WRONLY))
            except FileNotFoundError:
                p.parent.mkdir(parents=True, exist_ok=True)
                os.close(os.open(p, os.O_CREAT | os.O_WRONLY))
        write_labels(root / "training_labels.csv", ids, np.arange(args.n) % 2)
        marker.touch()
        print(f"made {args.n:,} empty files in {time.perf_counter() - t:.1f} s")

    os.system("sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null")
    for label in ("cold-ish", "warm"):
        t = time.perf_counter()
        idx = build_index(root, "train")
        dt = time.perf_counter() - t
        print(f"{label}: indexed {len(idx):,} ids in {dt:.2f} s = "
              f"{dt / len(idx) * 1e5:.2f} s per 100,000")


if __name__ == "__main__":
    main()
