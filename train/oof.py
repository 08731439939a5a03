"""The run's out-of-fold predictions: once every fold has its ``oof.csv``, one
``RUN/oof.csv`` with every valid training sample's held-out prediction, and its AUC.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from data import rundir
from data.metrics import roc_auc
from train.config import TrainError

log = logging.getLogger("train")


def join_oof_when_complete(run: Path, n_folds: int) -> float | None:
    """Join the folds' ``oof.csv`` once every fold of the run has one; returns the OOF AUC."""
    if all((run / f"fold{k}" / rundir.OOF_FILE).is_file() for k in range(n_folds)):
        return join_oof(run, n_folds)
    return None


def join_oof(run: Path, n_folds: int) -> float:
    """Every fold's ``oof.csv`` into ``RUN/oof.csv``; returns and logs the out-of-fold AUC."""
    ids, target, logit = [], [], []
    for k in range(n_folds):
        i, t, z = rundir.read_oof(run / f"fold{k}" / rundir.OOF_FILE)
        ids += i
        target.append(t)
        logit.append(z)
    target, logit = np.concatenate(target), np.concatenate(logit)
    if len(set(ids)) != len(ids):
        raise TrainError(f"{run}: the folds' oof.csv share samples: they were trained with "
                         "different n_folds or fold_seed; re-train them with one assignment")
    order = np.argsort(ids, kind="stable")
    rundir.write_oof(run / rundir.OOF_FILE, np.array([int(ids[i], 16) for i in order], np.uint64),
                     target[order], logit[order])
    auc = roc_auc(target, logit)  # the logits: confident probabilities would tie
    log.info("%d folds: out-of-fold AUC %.4f over %d samples (%s)", n_folds, auc, len(ids),
             run / rundir.OOF_FILE)
    return auc
