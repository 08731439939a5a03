"""Injections in a searched stretch: reading their list, vetoing them from the background, and
matching them to zero-lag triggers (found at which FAR).
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np

from data.layout import DETECTORS
from infer.search.config import (
    SearchConfig,
    SearchError,
    far_per_year,
)
from infer.search.grid import slide_rows, whole_multiple
from infer.search.scoring import WindowScores
from infer.search.triggers import Triggers


def source_windows(ws: WindowScores, k: int, cfg: SearchConfig) -> np.ndarray:
    """(3, grid.n) grid index of the window each detector's row of slide ``k``'s windows comes
    from (:func:`infer.search.grid.slide_rows` ring by ring); -1 where slide ``k`` has no
    window."""
    m = whole_multiple(cfg.slide_step, ws.grid.stride_s, "slide_step", "stride")
    slid = [DETECTORS.index(d) for d in cfg.slide_detectors]
    src = np.full((len(DETECTORS), ws.grid.n), -1, dtype=np.int64)
    for a, b in ws.rings:
        rows = slide_rows(b - a, k, m, len(slid), slid)
        if rows is not None:
            src[:, a:b] = a + rows
    return src


def veto_injections(ws: WindowScores, times: np.ndarray, cfg: SearchConfig) -> tuple[
        WindowScores, int]:
    """A copy of ``ws`` whose slid windows (slides >= 1) are unscored (NaN) where any detector's
    row comes from a window that holds an injection's merger within ``cfg.injection_veto`` s
    of its span: the injections the search looks for then make no background. Zero lag is
    kept whole. Returns the copy and the number of slid windows left out."""
    if cfg.injection_veto <= 0 or ws.scores.shape[0] == 1 or times.size == 0:
        return ws, 0
    starts = ws.grid.starts(np.arange(ws.grid.n))
    span = ws.grid.n_time / ws.grid.sample_rate
    times = np.sort(times)
    lo = np.searchsorted(times, starts - cfg.injection_veto, side="left")
    hi = np.searchsorted(times, starts + span + cfg.injection_veto, side="right")
    near = hi > lo  # (grid.n,) windows that see an injection
    scores = ws.scores.copy()
    n_vetoed = 0
    for k in range(1, scores.shape[0]):
        src = source_windows(ws, k, cfg)
        hit = ((src >= 0) & near[np.maximum(src, 0)]).any(axis=0) & np.isfinite(scores[k])
        scores[k, hit] = np.nan
        n_vetoed += int(hit.sum())
    return dataclasses.replace(ws, scores=scores), n_vetoed


def read_injections(path: str | Path) -> dict[str, np.ndarray]:
    """``gps_time`` and ``snr`` (and any other numeric columns) of an injections CSV, in time
    order. SearchError naming the file and column when they are missing or not numbers."""
    path = Path(path)
    if not path.is_file():
        raise SearchError(f"{path}: injections file not found")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        columns = reader.fieldnames or []
    for col in ("gps_time", "snr"):
        if col not in columns:
            raise SearchError(f"{path}: no column {col!r} (columns: {', '.join(columns)})")
    out = {}
    for col in columns:
        try:
            out[col] = np.array([float(r[col]) for r in rows], dtype=np.float64)
        except (TypeError, ValueError):
            if col in ("gps_time", "snr"):
                raise SearchError(f"{path}: column {col!r} holds a value that is not a number")
    order = np.argsort(out["gps_time"], kind="stable")
    return {k: v[order] for k, v in out.items()}


def match_injections(injections: dict, ws: WindowScores, zero: Triggers, far: np.ndarray,
                     cfg: SearchConfig, offset: float) -> dict[str, np.ndarray]:
    """Per injection: analysed (the window whose trigger time would be nearest was scored),
    the loudest zero-lag trigger within +-match_window (its index into ``zero``, -1 if none)
    and found at each of ``cfg.far_thresholds``."""
    t = injections["gps_time"]
    k = np.round((t - offset - ws.grid.t0) / ws.grid.stride_s).astype(np.int64)
    inside = (k >= 0) & (k < ws.grid.n)
    analysed = np.zeros(t.size, dtype=bool)
    analysed[inside] = np.isfinite(ws.scores[0, k[inside]])
    match = np.full(t.size, -1, dtype=np.int64)
    order = np.argsort(zero.gps_time)
    times = zero.gps_time[order]
    lo = np.searchsorted(times, t - cfg.match_window, side="left")
    hi = np.searchsorted(times, t + cfg.match_window, side="right")
    for i in range(t.size):
        if hi[i] > lo[i]:
            cand = order[lo[i]:hi[i]]
            match[i] = cand[np.argmax(zero.score[cand])]
    out = {"analysed": analysed, "match": match}
    for spec in cfg.far_thresholds:
        limit = far_per_year(spec)
        found = np.zeros(t.size, dtype=bool)
        has = match >= 0
        found[has] = far[match[has]] <= limit
        out[spec] = found & analysed
    return out
