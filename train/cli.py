"""Train a timm classifier on the CQT image store, one cross-validation fold per run.

    accelerate launch [launch flags] -m train --config configs/train/NAME.yaml [key=value ...]
    python -m train --config configs/train/NAME.yaml [key=value ...]     # one process

``fold=all`` trains every fold in turn, each in a fresh subprocess, from a single process;
the fold that completes the set joins the out-of-fold predictions (docs/training.md).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

from data.cli import cli_errors
from data.config import (
    ConfigError,
    config_help,
    load_config,
)
from train import checkpoints
from train.config import TrainConfig, TrainError, check
from train.engine import NonFiniteLoss
from train.fold import train_fold
from train.oof import join_oof_when_complete

log = logging.getLogger("train")


# ---------------------------------------------------------------------------------------------
# All folds


def fold_command(config: str | None, overrides: list[str], name: str, fold: int) -> list[str]:
    """The subprocess that trains one fold of ``fold=all``."""
    return [sys.executable, "-m", "train", *(["--config", config] if config else []),
            *overrides, f"name={name}", f"fold={fold}"]


def run_all_folds(cfg: TrainConfig, config: str | None, overrides: list[str]) -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise TrainError(
            "fold=all runs from a single process; under a multi-process launch train one fold "
            "per launch (for k in 0..n_folds-1: accelerate launch ... fold=$k): the last one "
            "joins the out-of-fold predictions"
        )
    for k in range(cfg.n_folds):
        cmd = fold_command(config, overrides, cfg.name, k)
        log.info("fold %d/%d: %s", k, cfg.n_folds, " ".join(cmd))
        rc = subprocess.run(cmd).returncode
        if rc != 0:
            raise TrainError(f"fold {k} failed (exit status {rc}); later folds not started. "
                             "Fix it and re-run with resume=auto to continue")


# ---------------------------------------------------------------------------------------------


PROG = "g2net-train"


def check_trackers(names: list[str]) -> None:
    """ConfigError unless every name in ``log_with`` is a tracker accelerate knows and can
    start here (its package installed): accelerate itself would drop a missing one silently."""
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers
    from accelerate.utils import LoggerType

    packages = {"comet_ml": "comet-ml"}
    for name in names:
        if name not in LOGGER_TYPE_TO_CLASS:  # built-in or registered (register_tracker_class)
            raise ConfigError(f"log_with: unknown tracker {name!r} (known: "
                              f"{', '.join(sorted(LOGGER_TYPE_TO_CLASS))})")
        if name in LoggerType.list() and LoggerType(name) not in get_available_trackers():
            package = packages.get(name, name)
            raise ConfigError(f"log_with: tracker {name!r} needs the {package} package, which is "
                              f"not installed (pip install {package})")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split("\n")[0],
        epilog="example: accelerate launch -m train --config configs/train/tiny.yaml fold=0\n\n"
        + config_help(TrainConfig),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--config", help="YAML preset, e.g. configs/train/efficientnet_b0.yaml")
    ap.add_argument("overrides", nargs="*", help="key=value (dotted for sections: model.name=...)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("accelerate").setLevel(logging.WARNING)
    with cli_errors(PROG, user_errors=(TrainError, checkpoints.CheckpointDamaged),
                    runtime_errors=(NonFiniteLoss,),
                    rerun="re-run with resume=auto: it continues from the last checkpoint"):
        cfg = load_config(TrainConfig, args.config, args.overrides)
        if cfg.name is None:
            cfg.name = Path(args.config).stem if args.config else "default"
        check(cfg)
        check_trackers(cfg.log_with)
        if cfg.fold == "all":
            run_all_folds(cfg, args.config, args.overrides)
        else:
            summary = train_fold(cfg)
            if not math.isinf(summary["best_auc"]):
                log.info("fold %d: best val AUC %.4f at epoch %d (%s)", cfg.fold,
                         summary["best_auc"], summary["best_epoch"], summary["run"])
            if int(os.environ.get("RANK", "0")) == 0:
                join_oof_when_complete(Path(cfg.out) / cfg.name, cfg.n_folds)
