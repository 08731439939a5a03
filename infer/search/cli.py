"""``g2net-search`` / ``python -m infer.search``: the command line of
:func:`infer.search.pipeline.run`.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from pathlib import Path

from data.cli import cli_errors
from data.config import ConfigError, config_help, load_config
from data.layout import DETECTORS
from data.strain import StrainError
from infer.config import InferError
from infer.search.config import SearchConfig, SearchError
from infer.search.outputs import format_summary
from infer.search.pipeline import run


def _split_overrides(strain: list[str], overrides: list[str]) -> tuple[list[str], list[str]]:
    """``--strain`` takes several values, so key=value overrides typed right after it land in
    it: those whose name is not a detector-like ``X1`` are overrides."""
    keep, extra = [], []
    for item in strain:
        name = item.partition("=")[0]
        (keep if re.fullmatch(r"[A-Z]\d", name) or "=" not in item else extra).append(item)
    return keep, extra + list(overrides)


PROG = "g2net-search"


def main(argv: list[str] | None = None) -> None:
    """The console entry point; returns None (``sys.exit(main())`` must mean success)."""
    ap = argparse.ArgumentParser(
        prog=PROG,
        description="Search long H1/L1/V1 strain with a trained fold ensemble: triggers, "
                    "false-alarm rates from time slides, found injections.",
        epilog=config_help(SearchConfig),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--runs", type=Path, nargs="+", metavar="RUN",
                    help="run directories (runs/NAME with fold*/) or single folds; several are "
                         "combined on their logits (docs/search.md)")
    ap.add_argument("--matched-filter", action="store_true",
                    help="the matched-filter search with the project's template bank instead "
                         "of a model (no --runs; keys matched_filter.*)")
    ap.add_argument("--strain", nargs="+", required=True, metavar="IFO=PATH",
                    help="H1=PATH L1=PATH V1=PATH; PATH: a GWF/HDF5 file, several separated by "
                         "commas, or a glob")
    ap.add_argument("--out", type=Path, required=True, help="output directory")
    ap.add_argument("--channel", action="append", default=[], metavar="IFO=NAME",
                    help="channel (GWF) or dataset (HDF5) of a detector; default: the file's "
                         "only IFO:... one")
    ap.add_argument("--stride", type=float, help="s between windows (default 0.25)")
    ap.add_argument("--slides", type=int, help="time slides for the background (default 0)")
    ap.add_argument("--injections", type=Path, help="CSV with gps_time and snr columns")
    ap.add_argument("--psd", choices=("local", "training"), help="whitening PSD (default local)")
    ap.add_argument("--config", type=Path, help="search config YAML")
    ap.add_argument("--rescore", action="store_true", help="ignore cached window scores")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    ap.add_argument("overrides", nargs="*", help="config overrides key=value (listed below)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from accelerate import Accelerator

    strain, overrides = _split_overrides(args.strain, args.overrides)
    for flag, key in (("stride", "stride"), ("slides", "slides"), ("psd", "psd.source")):
        if getattr(args, flag) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
    with cli_errors(PROG, user_errors=(InferError, StrainError)):
        launched = int(os.environ.get("WORLD_SIZE", "1"))
        if launched > 1:
            # Every rank would score every window and write the same files (issue 17): refuse
            # before any work. One process uses one device; search several stretches of strain
            # as separate commands to use several.
            raise SearchError(f"the search runs in one process, but it was launched as "
                              f"{launched}: run g2net-search (or python -m infer.search) "
                              "without accelerate launch/torchrun, one stretch of strain per "
                              "process")
        cfg = load_config(SearchConfig, args.config, overrides)
        for item in args.channel:
            ifo, sep, name = item.partition("=")
            if not sep or ifo not in DETECTORS or not name:
                raise ConfigError(f"--channel {item!r}: expected IFO=NAME with IFO one of "
                                  f"{', '.join(DETECTORS)}")
            cfg.channels[ifo] = name
        if args.matched_filter:
            if args.runs:
                raise ConfigError("--matched-filter searches with the template bank: give no "
                                  "--runs")
            from infer.search.mf import run as run_mf

            summary = run_mf(strain, args.out, cfg, injections=args.injections,
                             rescore=args.rescore, accelerator=Accelerator(),
                             progress=not args.quiet)
        else:
            if not args.runs:
                raise ConfigError("--runs: give a run directory (or --matched-filter)")
            summary = run(args.runs, strain, args.out, cfg, injections=args.injections,
                          rescore=args.rescore, accelerator=Accelerator(),
                          progress=not args.quiet)
    print(format_summary(summary))
