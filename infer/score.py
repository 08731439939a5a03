"""Scoring predictions against a truth file: overall AUC, AUC per SNR bin, and the oracle's.

The truth file is a CSV with columns ``id`` and ``target`` and, optionally, ``snr`` (network
optimal SNR of the injected signal; anything for noise) and ``oracle`` (the true-template
matched-filter statistic, :mod:`data.sim.samples`). It may hold more ids than the predictions (e.g.
``truth.csv`` lists both splits); every predicted id must be in it.

Per SNR bin [lo, hi) the positives are the signals with lo <= snr < hi and the negatives are
*all* noise samples, so each bin's AUC answers "how well are signals this loud told apart from
noise"; a bin with no signals has AUC None.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from data.metrics import roc_auc
from infer.config import InferError


def read_truth(path: str | Path) -> dict[str, np.ndarray]:
    """Columns of the truth CSV: ``id`` (str), ``target`` (int8), ``snr`` and ``oracle``
    (float64, NaN where empty) when present."""
    path = Path(path)
    if not path.is_file():
        raise InferError(f"{path}: truth file is missing")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "id" not in rows[0] or "target" not in rows[0]:
        raise InferError(f"{path}: expected a CSV with columns id,target[,snr,oracle]")
    out: dict[str, np.ndarray] = {"id": np.array([r["id"] for r in rows])}
    try:
        out["target"] = np.array([int(float(r["target"])) for r in rows], dtype=np.int8)
        for col in ("snr", "oracle"):
            if col in rows[0]:
                out[col] = np.array([float(r[col]) if r[col] != "" else math.nan for r in rows])
    except ValueError as e:
        raise InferError(f"{path}: {e}") from None
    if not np.isin(out["target"], (0, 1)).all():
        raise InferError(f"{path}: targets must be 0 or 1")
    return out


def align_truth(truth: dict[str, np.ndarray], ids: list[str], truth_name: str) -> dict:
    """The truth rows of ``ids``, in that order; InferError naming an id it lacks."""
    pos = {sid: i for i, sid in enumerate(truth["id"])}
    missing = [sid for sid in ids if sid not in pos]
    if missing:
        raise InferError(
            f"{len(missing)} predicted id(s) are not in {truth_name} (first: {missing[0]})"
        )
    rows = np.array([pos[sid] for sid in ids], dtype=np.int64)
    return {k: v[rows] for k, v in truth.items()}


def _auc_or_none(target: np.ndarray, score: np.ndarray) -> float | None:
    if target.min(initial=1) == target.max(initial=0):  # one class only (or empty)
        return None
    return float(roc_auc(target, score))


def snr_bin_edges(snr_bins: list[float]) -> list[tuple[float, float]]:
    """[0, 4, 6] -> [(0, 4), (4, 6), (6, inf)]."""
    edges = list(snr_bins) + [math.inf]
    return list(zip(edges[:-1], edges[1:]))


def score(
    ids: list[str], pred: np.ndarray, truth: dict[str, np.ndarray], snr_bins: list[float],
    truth_name: str = "truth", others: dict[str, np.ndarray] | None = None,
) -> dict:
    """AUC of ``pred`` (N,) for ``ids``, overall and per SNR bin, each beside the oracle's and
    beside each of ``others`` (named (N,) scores of the same ids, e.g. an ensemble's members
    and the matched-filter bank).

    Returns a JSON-able dict: ``n``, ``n_pos``, ``n_neg``, ``auc``, ``oracle_auc`` (None
    without an oracle column), ``others`` (``{name: auc}``) and ``snr_bins``:
    ``[{lo, hi, n_pos, auc, oracle_auc, others: {name: auc}}]`` (``hi`` None for the open last
    bin; empty without an snr column).
    """
    t = align_truth(truth, ids, truth_name)
    target = t["target"]
    pred = np.asarray(pred, dtype=np.float64)
    oracle = t.get("oracle")
    others = {k: np.asarray(v, dtype=np.float64) for k, v in (others or {}).items()}
    result = {
        "n": int(target.size),
        "n_pos": int(target.sum()),
        "n_neg": int(target.size - target.sum()),
        "auc": _auc_or_none(target, pred),
        "oracle_auc": _auc_or_none(target, oracle) if oracle is not None else None,
        "others": {k: _auc_or_none(target, v) for k, v in others.items()},
        "snr_bins": [],
    }
    if "snr" in t:
        noise = target == 0
        for lo, hi in snr_bin_edges(snr_bins):
            signal = (target == 1) & (t["snr"] >= lo) & (t["snr"] < hi)
            keep = noise | signal
            result["snr_bins"].append({
                "lo": lo,
                "hi": None if math.isinf(hi) else hi,
                "n_pos": int(signal.sum()),
                "auc": _auc_or_none(target[keep], pred[keep]) if signal.any() else None,
                "oracle_auc": (_auc_or_none(target[keep], oracle[keep])
                               if signal.any() and oracle is not None else None),
                "others": {k: _auc_or_none(target[keep], v[keep]) if signal.any() else None
                           for k, v in others.items()},
            })
    return result


def format_scores(result: dict) -> str:
    """A small table: overall and per-bin AUC, the model beside any others and the oracle."""

    def f(v):
        return "   -  " if v is None else f"{v:.4f}"

    others = list(result.get("others", {}))
    names = ["model", *others, "oracle"]
    width = max(7, *(len(n) for n in names))
    head = f"{'':>10} {'n_pos':>6} " + " ".join(f"{n:>{width}}" for n in names)

    def row(label, n_pos, b):
        values = [b["auc"], *(b.get("others", {}).get(k) for k in others), b["oracle_auc"]]
        return f"{label:>10} {n_pos:>6} " + " ".join(f"{f(v):>{width}}" for v in values)

    lines = [head, row("all", result["n_pos"], result)]
    for b in result["snr_bins"]:
        name = f"{b['lo']:g}-{b['hi']:g}" if b["hi"] is not None else f"{b['lo']:g}+"
        lines.append(row("snr " + name, b["n_pos"], b))
    return "\n".join(lines)
