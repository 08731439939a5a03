"""Ranking metrics shared by training (validation AUC) and inference (scoring).

Plain numpy, no scikit-learn: the ROC AUC is the Mann–Whitney U statistic of the scores,
with tied scores given their average rank (a tie between a positive and a negative counts
one half), which is exactly the area under the step ROC curve.
"""

from __future__ import annotations

import numpy as np


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x`` (N,), ties sharing the mean of their ranks (scipy's 'average')."""
    x = np.asarray(x)
    order = np.argsort(x, kind="mergesort")
    s = x[order]
    # Boundaries of runs of equal values in the sorted array.
    starts = np.r_[0, np.flatnonzero(s[1:] != s[:-1]) + 1]
    ends = np.r_[starts[1:], s.size]  # exclusive
    run_rank = (starts + ends + 1) / 2.0  # mean of the 1-based ranks start+1 .. end
    ranks = np.empty(s.size, dtype=np.float64)
    ranks[order] = np.repeat(run_rank, ends - starts)
    return ranks


def roc_auc(target: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` (N,) for binary ``target`` (N,) in {0, 1}.

    Raises ValueError when a class is missing (the AUC is undefined) or when the inputs are
    not finite or not of equal length.
    """
    y = np.asarray(target).reshape(-1)
    s = np.asarray(score, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"roc_auc: {y.size} targets but {s.size} scores")
    if not np.isfinite(s).all():
        raise ValueError("roc_auc: scores contain NaN or Inf")
    pos = y == 1
    if not (pos | (y == 0)).all():
        raise ValueError("roc_auc: targets must be 0 or 1")
    n_pos = int(pos.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"roc_auc: needs both classes, got {n_pos} positives and {n_neg} negatives"
        )
    rank_sum = average_ranks(s)[pos].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def probability(logits: np.ndarray) -> np.ndarray:
    """Sigmoid of float32 logits, computed in float64: a float32 sigmoid rounds every logit
    above ~17 to 1.0, and ties among confident samples would cost AUC."""
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))
