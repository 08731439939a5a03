"""The whole system on a small synthetic data set, on a CPU (``make demo``, ``g2net-demo``):
generate, preprocess, train a tiny CQT model and a tiny 1D CNN on fold 0, predict the test
split with their stack and score it against the truth; everything lands in ``--out``
(docs/demo.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

TRAIN_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "train" / "tiny.yaml"
TRAIN1D_CONFIG = TRAIN_CONFIG.with_name("tiny1d.yaml")


def _stage(name: str, seconds: dict):
    """Context manager timing one stage into ``seconds[name]``."""

    class Timer:
        def __enter__(self):
            log.info("demo: %s ...", name)
            self.start = time.perf_counter()

        def __exit__(self, *exc):
            seconds[name] = round(time.perf_counter() - self.start, 2)
            if exc[0] is None:
                log.info("demo: %s done in %.1f s", name, seconds[name])

    return Timer()


def loudest_signal(truth_csv: Path, split: str = "test") -> dict:
    """The ``truth.csv`` row (a dict of strings) of the highest-SNR signal of ``split``."""
    import csv

    with truth_csv.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == split and r["target"] == "1"]
    if not rows:
        raise ValueError(f"{truth_csv}: no {split} signals")
    return max(rows, key=lambda r: float(r["snr"]))


def train_command(store: Path, run_dir: Path, epochs: int | None, overrides: list[str],
                  config: Path = TRAIN_CONFIG) -> list[str]:
    """The training subprocess: ``config`` on fold 0 only, into ``run_dir``; ``epochs`` None
    keeps the config's own."""
    return [
        sys.executable, "-m", "train", "--config", str(config), f"store={store}",
        f"out={run_dir.parent}", f"name={run_dir.name}", "fold=0",
        *([f"epochs={epochs}"] if epochs is not None else []), *overrides,
    ]


def run_demo(
    out: str | Path = "runs/demo",
    work: str | Path = "demo-data",
    n_train: int = 3000,
    n_test: int = 1000,
    epochs: int | None = None,
    snr: str = "uniform:2,16",
    seed: int = 0,
    jobs: int | None = None,
    train_overrides: list[str] = (),
    progress: bool = True,
    train_config: str | Path = TRAIN_CONFIG,
    preprocess_config: str | Path | None = None,
    train1d_config: str | Path | None = TRAIN1D_CONFIG,
) -> dict:
    """Run the four stages and draw the pictures; returns the report (also ``OUT/report.json``).
    ``train1d_config`` None leaves the 1D model out (a CQT model alone)."""
    from data.config import load_config
    from data.rundir import read_history
    from data.sim.samples import generate
    from infer.cli import run as infer_run
    from infer.config import InferConfig
    from infer.plots import cqt_preview, plot_run_curves
    from preprocess import pipeline
    from preprocess.config import PreprocessConfig

    out, work = Path(out), Path(work)
    data, cache, run_dir, run1d = work / "data", work / "cache", out / "train", out / "train1d"
    out.mkdir(parents=True, exist_ok=True)
    jobs = jobs or os.cpu_count() or 1
    seconds: dict[str, float] = {}
    start = time.perf_counter()

    with _stage("synth", seconds):
        synth = generate(data, n_train, n_test, seed, snr=snr, jobs=jobs, overwrite=True,
                         progress=progress)
    with _stage("preprocess", seconds):
        pcfg = load_config(PreprocessConfig, preprocess_config,
                           ["save_waves=true"] if train1d_config is not None else [])
        pipeline.run(data, cache, pcfg, splits=("train", "test"), overwrite=True,
                     progress=progress)
    runs = [(run_dir, Path(train_config))]
    if train1d_config is not None:
        runs.append((run1d, Path(train1d_config)))
    for name, (path, config) in zip(("train", "train1d"), runs):
        with _stage(name, seconds):
            if path.exists():  # a previous demo's run: training refuses to mix into it
                log.info("demo: replacing %s", path)
                shutil.rmtree(path)
            quiet = [] if progress else ["progress=false"]
            cmd = train_command(cache / "train.zarr", path, epochs, [*quiet, *train_overrides],
                                config)
            log.info("demo: %s", " ".join(cmd))
            subprocess.run(cmd, check=True)
    with _stage("infer", seconds):
        # Two runs: stacked by a logistic regression fitted on their fold-0 out-of-fold
        # predictions (a weaker member gets a smaller weight; a plain mean would not).
        summary = infer_run(out / "submission.csv",
                            InferConfig(members="stack" if len(runs) > 1 else "mean"),
                            runs=[p for p, _ in runs],
                            store=cache / "test.zarr",
                            sample_submission=data / "sample_submission.csv",
                            truth=data / "truth.csv", progress=progress)
    with _stage("pictures", seconds):
        loud = loudest_signal(data / "truth.csv")
        note = (f"network SNR {float(loud['snr']):.1f}, masses {float(loud['mass1']):.0f} + "
                f"{float(loud['mass2']):.0f} Msun, merger (geocentre) dashed")
        cqt = cqt_preview(data, loud["id"], out / "cqt.png", cache=cache, note=note,
                          merger_time=float(loud["merger_time"]))
        curves = plot_run_curves(run_dir / "fold0", out / "curves.png")
        if train1d_config is not None:
            plot_run_curves(run1d / "fold0", out / "curves1d.png")

    metrics = summary["metrics"]
    seconds["total"] = round(time.perf_counter() - start, 2)
    report = {
        "test_auc": metrics["auc"],
        "oracle_auc": metrics["oracle_auc"],
        "member_auc": metrics["others"],
        "n_train": n_train,
        "n_test": n_test,
        "snr": synth["snr"],
        "epochs": len(read_history(run_dir / "fold0" / "history.csv")["epoch"]),
        "train_config": str(train_config),
        "seed": seed,
        "auc_by_snr": metrics["snr_bins"],
        "metrics": {k: metrics[k]
                    for k in ("n", "n_pos", "n_neg", "auc", "oracle_auc", "others", "snr_bins")},
        "seconds": seconds,
        "infer_samples_per_s": summary["samples_per_s"],
        "files": {
            "submission": str(out / "submission.csv"),
            "metrics": str(out / "metrics.json"),
            "cqt": str(cqt),
            "curves": str(curves),
            **metrics["plots"],
            "run": str(run_dir),
            "data": str(data),
            "cache": str(cache),
        },
        "loudest_test_signal": {k: loud[k] for k in ("id", "snr", "merger_time")},
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def format_report(report: dict) -> str:
    from infer.score import format_scores

    s = report["seconds"]
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in s.items() if k != "total")
    table = format_scores(report["metrics"])
    files = report["files"]
    return "\n".join([
        f"demo: {report['n_train']} train + {report['n_test']} test samples, SNR {report['snr']}, "
        f"{report['epochs']} epochs on fold 0",
        f"test AUC {report['test_auc']:.4f}   oracle AUC {report['oracle_auc']:.4f}   "
        f"(matched filter with the true template: the ceiling)"
        + "".join(f"\n  member {k}: AUC {v:.4f}" for k, v in report["member_auc"].items()),
        table,
        f"time: {s['total']:.0f} s ({stages})",
        f"pictures: {files['cqt']}, {files['curves']}, {files['roc']}, {files['auc_vs_snr']}",
        f"report: {Path(files['submission']).parent / 'report.json'}",
    ])


PROG = "g2net-demo"


def main(argv: list[str] | None = None) -> None:
    """The console entry point: runs the demo and prints its report; returns None."""
    from data.cli import cli_errors, exit_with
    from infer.config import InferError
    from preprocess.pipeline import RankError

    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/demo"), help="report, pictures, run")
    ap.add_argument("--work", type=Path, default=Path("demo-data"), help="data set and cache")
    ap.add_argument("--n-train", type=int, default=3000)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=None, help="default: the train config's")
    ap.add_argument("--train-config", type=Path, default=TRAIN_CONFIG)
    ap.add_argument("--train1d-config", type=Path, default=TRAIN1D_CONFIG,
                    help="the 1D CNN's config (ensembled with the CQT model)")
    ap.add_argument("--no-1d", action="store_true", help="the CQT model alone")
    ap.add_argument("--preprocess-config", type=Path, default=None,
                    help="default: the PreprocessConfig defaults "
                    "(= configs/preprocess/default.yaml)")
    ap.add_argument("--snr", default="uniform:2,16", help="signal SNR spec (data.sim.samples)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=None, help="synth processes (default: all cores)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    ap.add_argument("train_overrides", nargs="*", help="training config key=value")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # data.sim.samples reports a bad size or SNR spec as a ValueError.
    with cli_errors(PROG, user_errors=(ValueError, InferError), runtime_errors=(RankError,)):
        try:
            report = run_demo(args.out, args.work, args.n_train, args.n_test, args.epochs,
                              args.snr, args.seed, args.jobs, args.train_overrides,
                              progress=not args.quiet, train_config=args.train_config,
                              preprocess_config=args.preprocess_config,
                              train1d_config=None if args.no_1d else args.train1d_config)
        except subprocess.CalledProcessError as e:
            exit_with(PROG, e.returncode if e.returncode > 0 else 1,
                      f"training failed with exit status {e.returncode} (its message is above)")
    print(format_report(report))


if __name__ == "__main__":
    main()
