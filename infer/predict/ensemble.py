"""Combining predictions: folds and views into one member, members (``--runs``) into one
target by their mean, mean rank, or a logistic stack fitted on their out-of-fold predictions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.metrics import average_ranks, probability
from data.rundir import (
    OOF_FILE,
    read_oof,
)
from infer.config import InferError
from infer.predict.checkpoints import Fold, MismatchError


def combine(probs: np.ndarray, ensemble: str) -> np.ndarray:
    """(n_folds, n_views, N) probabilities -> (N,) targets.

    Views are always averaged as probabilities. Folds: ``"mean"`` averages the probabilities;
    ``"rank"`` averages each fold's ranks scaled to (0, 1] (ties share their mean rank), which
    ignores folds' differing calibration and keeps only their orderings.
    """
    return combine_members(probs.mean(axis=1, dtype=np.float64), ensemble)


def combine_members(p: np.ndarray, how: str) -> np.ndarray:
    """(n_members, N) probabilities -> (N,): their mean, or mean rank in (0, 1]. (A stack is
    applied to single models' logits, not to combined members: :func:`apply_stack`.)"""
    if how == "mean":
        return p.mean(axis=0)
    if how == "rank":
        n = p.shape[1]
        return np.mean([average_ranks(q) / n for q in p], axis=0)
    raise ValueError(f"unknown ensemble {how!r}; expected mean or rank")


@dataclass
class Stack:
    """A logistic regression over the members' logits: p = sigmoid(weights . z + bias), z the
    members' logits for one sample, fitted on out-of-fold predictions (``n_fit`` samples): one
    model of each member, one view, as :func:`apply_stack` applies it."""

    weights: np.ndarray  # (n_members,)
    bias: float
    n_fit: int

    def apply(self, z: np.ndarray) -> np.ndarray:
        """(n_members, N) logits -> (N,) probabilities."""
        return probability(self.weights @ z + self.bias)


def fit_stack(z: np.ndarray, target: np.ndarray, l2: float = 1e-3) -> Stack:
    """Fit :class:`Stack` to (n_members, M) out-of-fold logits and (M,) 0/1 targets by
    minimising the mean logistic loss + ``l2`` * |weights|^2 (scipy's L-BFGS; the loss is convex,
    the gradient exact). Members are the runs of an ensemble: a handful of weights, so a few
    thousand out-of-fold samples fit them without overfitting."""
    from scipy.optimize import minimize

    z = np.asarray(z, dtype=np.float64)  # (k, M)
    y = np.asarray(target, dtype=np.float64)
    k, m = z.shape

    def loss(theta):
        w, b = theta[:k], theta[k]
        s = w @ z + b
        # log(1 + e^s) - y s, computed stably; its gradient is (sigmoid(s) - y).
        value = np.mean(np.logaddexp(0.0, s) - y * s) + l2 * w @ w
        r = probability(s) - y
        grad = np.concatenate([z @ r / m + 2 * l2 * w, [r.mean()]])
        return value, grad

    theta0 = np.concatenate([np.full(k, 1.0 / k), [0.0]])
    res = minimize(loss, theta0, jac=True, method="L-BFGS-B")
    return Stack(weights=res.x[:k], bias=float(res.x[k]), n_fit=m)


def read_member_oof(run: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """A run's out-of-fold predictions: ``RUN/oof.csv`` (every fold joined), else the
    ``oof.csv`` of each fold directory found. (ids, target, logit)."""
    joined = Path(run) / OOF_FILE
    files = [joined] if joined.is_file() else sorted(Path(run).glob(f"fold*/{OOF_FILE}"))
    if not files:
        raise InferError(f"{run}: no oof.csv (ensemble=stack fits its weights on the runs' "
                         "out-of-fold predictions, written by training)")
    ids, target, pred = [], [], []
    for f in files:
        i, t, p = read_oof(f)
        ids += i
        target.append(t)
        pred.append(p)
    return ids, np.concatenate(target), np.concatenate(pred)


def fit_member_stack(runs: list[Path], folds: list[Fold]) -> Stack:
    """:func:`fit_stack` on the out-of-fold logits that every run has, after checking that the
    runs were trained on the same fold assignment (else an out-of-fold prediction of one run
    may come from a model that trained on that sample in another) and that every run brings
    the same folds (the stack is applied fold by fold: :func:`apply_stack`)."""
    assign = {(f.card.n_folds, f.card.fold_seed) for f in folds}
    if len(assign) > 1:
        raise MismatchError("members=stack: the runs were trained on different fold "
                            f"assignments (n_folds, fold_seed): {sorted(assign)}")
    fold_sets = {m: sorted(f.card.fold for f in folds if f.member == m)
                 for m in range(len(runs))}
    if len({tuple(v) for v in fold_sets.values()}) > 1:
        listed = "; ".join(f"{runs[m]}: {v}" for m, v in fold_sets.items())
        raise MismatchError("members=stack applies the stack to each fold's models together, "
                            f"so every run must bring the same folds ({listed})")
    oofs = [read_member_oof(r) for r in runs]
    common = set(oofs[0][0]).intersection(*(set(o[0]) for o in oofs[1:]))
    if len(common) < 50:  # a few weights, but not fitted on a handful of samples
        raise InferError(f"members=stack: the runs share only {len(common)} out-of-fold "
                         "samples; train the same folds of each run")
    order = sorted(common)
    z, target = [], None
    for ids, t, logit in oofs:
        pos = {sid: i for i, sid in enumerate(ids)}
        rows = np.array([pos[sid] for sid in order])
        z.append(logit[rows])
        if target is None:
            target = t[rows]
        elif not np.array_equal(target, t[rows]):
            raise MismatchError("members=stack: the runs' out-of-fold targets disagree")
    return fit_stack(np.stack(z), target)


def apply_stack(stack: Stack, folds: list[Fold], logits: np.ndarray) -> np.ndarray:
    """(n_folds, n_views, N) logits of every fold (``folds``, of several members) -> (N,).

    The stack was fitted on out-of-fold predictions: one model of each member, one view. So
    it is applied to exactly that, for each fold number and each TTA view: the members'
    fold-k models' logits of that view; the probabilities are then averaged over folds and
    views, as a single run's are (issue 17: applied to fold- and view-averaged probabilities
    it was fitted on something else)."""
    n_members = len(stack.weights)
    rows: dict[int, dict[int, int]] = {}
    for i, f in enumerate(folds):
        rows.setdefault(f.card.fold, {})[f.member] = i
    if any(len(by_member) != n_members for by_member in rows.values()):
        raise MismatchError("members=stack: every run must bring the same folds")
    out = [stack.apply(logits[[by_member[m] for m in range(n_members)], v])
           for _, by_member in sorted(rows.items()) for v in range(logits.shape[1])]
    return np.mean(out, axis=0)
