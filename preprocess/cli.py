"""``python -m preprocess`` / ``g2net-preprocess``: whiten + CQT the G2Net files into the cache.

    python -m preprocess --data DIR --out CACHE [--config configs/preprocess/seed.yaml]
                         [--splits train,test] [--overwrite] [--on-bad error|skip] [key=value ...]
    accelerate launch --multi_gpu --num_processes N -m preprocess ...   (N processes share chunks)

Writes ``CACHE/train.zarr``, ``CACHE/test.zarr`` and ``CACHE/preprocess.yaml``. Re-running the
same command resumes an interrupted run and does nothing for a finished one. Without
``--config`` the defaults of ``preprocess.config.PreprocessConfig`` apply; ``key=value``
overrides any setting (``cqt.hop_length=16``, ``store.codec=zstd``, ``device=cpu``); ``--help``
lists them all.

Exit status (:mod:`data.cli`): 2 for input it cannot use (data, config, an existing store made
another way), 1 when writing fails (a full disk: free space and re-run, it resumes), with one
line ``g2net-preprocess: error: ...``.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from data.cli import RESUMES, cli_errors, exit_with
from data.config import config_help, load_config
from data.layout import BadSample
from preprocess.config import PreprocessConfig
from preprocess.pipeline import RankError, run

PROG = "g2net-preprocess"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Whiten and constant-Q transform G2Net strain into a Zarr image cache.",
        epilog=config_help(PreprocessConfig),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", type=Path, required=True, help="Kaggle-layout data set root")
    p.add_argument("--out", type=Path, required=True, help="cache directory (CACHE)")
    p.add_argument("--config", type=Path, help="YAML preset, e.g. configs/preprocess/seed.yaml")
    p.add_argument("--splits", default="train,test", help="comma-separated (default train,test)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing stores instead of resuming them")
    p.add_argument("--on-bad", choices=("error", "skip"),
                   help="bad input file: stop (error, the default) or record it and go on")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """The console entry point; returns None (``sys.exit(main())`` must mean success)."""
    args = parse_args(argv)
    # Only the main process talks above warnings (RANK is set by torchrun and accelerate).
    main_process = int(os.environ.get("RANK", "0")) == 0
    logging.basicConfig(level=logging.INFO if main_process else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    hint = ("--on-bad skip records bad samples and goes on; re-running resumes after the "
            "chunks already done")
    with cli_errors(PROG, hints={BadSample: hint}, rerun=RESUMES):
        overrides = list(args.overrides) + ([f"on_bad={args.on_bad}"] if args.on_bad else [])
        cfg = load_config(PreprocessConfig, args.config, overrides)
        try:
            run(args.data, args.out, cfg, splits=args.splits, overwrite=args.overwrite,
                progress=not args.no_progress)
        except RankError as e:
            # Another process failed and said why on its own stderr. The main process says it
            # once more, naming that process; the others end with its status, silently.
            if main_process:
                exit_with(PROG, e.code, str(e))
            raise SystemExit(e.code) from None
