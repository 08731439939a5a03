"""Train a timm classifier on the CQT image store, one cross-validation fold per run.

    accelerate launch [launch flags] -m train --config configs/train/NAME.yaml [key=value ...]
    python -m train --config configs/train/NAME.yaml [key=value ...]     # one process
    g2net-train --config ...                                              # same as python -m train

Keys are those of :class:`train.config.TrainConfig` (``fold=1 epochs=3 model.name=resnet34
augment.swap_p=0.5 ...``). Devices, processes and mixed precision come from the launch flags
(``accelerate launch --mixed_precision bf16 --multi_gpu --num_processes 4``), never from the
config. Outputs go to ``OUT/NAME/fold{k}/`` (:mod:`train.checkpoints` lists them).

``fold=all`` trains every fold in turn, each in a fresh ``python -m train ... fold=k``
subprocess (same environment) so that no state leaks from one fold into the next. It runs
from a single process only: under a multi-process launch, train the folds one launch each,
as timm's and ConvNeXt's scripts leave to the shell::

    for k in 0 1 2 3 4; do accelerate launch --multi_gpu ... -m train ... fold=$k; done

Whichever way the folds were trained, the fold that completes the set joins every fold's
``oof.csv`` into ``OUT/NAME/oof.csv`` and logs the out-of-fold AUC. ``resume=auto`` resumes
each fold (finished folds return at once).

Bad input (missing, incomplete or foreign store, a fold outside ``n_folds``, an unknown or
mistyped key, a model or image size that cannot run, a tracker that is not installed, a run
directory that already holds checkpoints without ``resume=auto``) stops before any training
with one line ``g2net-train: error: ...`` and exit status 2; a NaN loss or a failed write
(``OSError``) ends with status 1 (:mod:`data.cli`).

``log_with=[tensorboard]`` (or wandb, mlflow, ...: accelerate's trackers) also reports the
flattened config and every epoch's ``history.csv`` row through accelerate's tracking API
(``init_trackers``, ``log(step=epoch)``); local trackers write under ``fold{k}/logs/NAME/``.
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
