"""Stratified K-fold assignment, numpy only (no scikit-learn in this environment)."""

from __future__ import annotations

import numpy as np


def stratified_folds(targets: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold number (0 .. n_folds-1) for every sample, stratified on the binary ``targets``.

    Each class is permuted with ``default_rng(seed)`` and dealt to the folds in turn; the
    dealing continues from one class to the next, so fold sizes differ by at most one and
    each fold's count of each class by at most one from the others'. The same
    (targets, n_folds, seed) always gives the same folds.
    """
    targets = np.asarray(targets)
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2, got {n_folds}")
    classes, counts = np.unique(targets, return_counts=True)
    if classes.size < 2 or counts.min() < n_folds:
        have = ", ".join(f"{c:g}: {n}" for c, n in zip(classes, counts))
        raise ValueError(
            f"cannot make {n_folds} stratified folds: every fold needs both classes, and the "
            f"samples per class are {{{have}}}"
        )
    rng = np.random.default_rng(seed)
    fold = np.empty(targets.size, dtype=np.int64)
    offset = 0
    for c in classes:
        members = rng.permutation(np.flatnonzero(targets == c))
        fold[members] = (offset + np.arange(members.size)) % n_folds
        offset += members.size
    return fold
