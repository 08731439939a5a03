"""Throughput of the synthetic data generator (data/sim/samples.py), files written to disk included.

    .venv/bin/python bench/bench_synth.py [--n 2000] [--jobs J] [--snr SPEC] [--dir DIR]

Goal (issue): at least 150 samples/s on a 2-core machine. Prints samples/s, the settings and
the machine's load (other processes on the cores lower the figure).
"""

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from data.sim import samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=2000, help="samples in all (4/5 train, 1/5 test)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--snr", default=samples.DEFAULT_SNR)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dir", type=Path, default=None, help="output (default: a temp dir)")
    args = ap.parse_args()

    out = args.dir or Path(tempfile.mkdtemp(prefix="g2net-synth-bench-"))
    n_test = args.n // 5
    load_before = os.getloadavg()
    start = time.perf_counter()
    summary = samples.generate(
        out, args.n - n_test, n_test, args.seed, snr=args.snr, jobs=args.jobs,
        overwrite=True, progress=False,
    )  # fmt: skip
    wall = time.perf_counter() - start
    load_after = os.getloadavg()
    if args.dir is None:
        shutil.rmtree(out)

    print(
        f"n={args.n} ({args.n - n_test} train + {n_test} test) jobs={args.jobs} "
        f"cpus={os.cpu_count()} snr={summary['snr']} approximant={summary['approximant']}"
    )
    print(
        f"{summary['samples_per_s']:.0f} samples/s in the sample loop "
        f"({summary['seconds']:.1f} s); {args.n / wall:.0f} samples/s end to end "
        f"({wall:.1f} s, with setup and label/truth files)"
    )
    print(f"oracle AUC {summary['oracle_auc']:.4f}")
    print(
        "load average (1, 5, 15 min): before "
        + ", ".join(f"{x:.2f}" for x in load_before)
        + "; after "
        + ", ".join(f"{x:.2f}" for x in load_after)
    )


if __name__ == "__main__":
    main()
