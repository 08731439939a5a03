"""From window scores to triggers: clustering, the trigger's time, and false-alarm rates from
the background of the time slides.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from infer.search.config import (
    YEAR,
    SearchConfig,
)
from infer.search.scoring import WindowScores


def cluster(scores: np.ndarray, radius: int) -> np.ndarray:
    """Indices of the windows whose score is the highest within +-``radius`` windows (ties: the
    earliest), NaN (unscored) windows never; so triggers are more than ``radius`` apart."""
    s = np.where(np.isfinite(scores), scores, -np.inf)
    pad = np.full(radius, -np.inf)
    padded = np.concatenate([pad, s, pad])
    view = sliding_window_view(padded, radius)
    before = view[: s.size].max(axis=1)  # windows i - radius .. i - 1
    after = view[radius + 1: radius + 1 + s.size].max(axis=1)  # i + 1 .. i + radius
    return np.flatnonzero(np.isfinite(scores) & (s > before) & (s >= after))


@dataclass
class Triggers:
    gps_time: np.ndarray  # (n,) float64
    score: np.ndarray  # (n,) float64
    slide: np.ndarray  # (n,) int: 0 zero lag


def peak_onsets(scores: np.ndarray, idx: np.ndarray, reach: int) -> np.ndarray:
    """Earliest window of each peak: the run of consecutive windows up to window ``idx`` whose
    scores are at least half its score, at most ``reach`` windows back (a chirp is in at most
    a window's length of windows)."""
    s = np.where(np.isfinite(scores), scores, -np.inf)
    half = s[idx] / 2
    first = idx.copy()
    alive = np.ones(idx.size, dtype=bool)
    for d in range(1, reach + 1):
        j = idx - d
        alive &= j >= 0
        alive[alive] = s[j[alive]] >= half[alive]
        first[alive] = j[alive]
    return first


def trigger_times(ws: WindowScores, k: int, idx: np.ndarray, cfg: SearchConfig,
                  offset: float) -> np.ndarray:
    """GPS times of the triggers ``idx`` of slide ``k`` (``cfg.trigger_time``): a window's
    start + ``offset``, of the peak's earliest window ("onset") or of its loudest."""
    if cfg.trigger_time == "onset":
        idx = peak_onsets(ws.scores[k], idx, ws.grid.n_time // ws.grid.stride)
    return ws.grid.starts(idx) + offset


def find_triggers(ws: WindowScores, cfg: SearchConfig,
                  offset: float) -> tuple[Triggers, Triggers]:
    """(zero-lag triggers, background triggers of every slide), each clustered on its own;
    ``offset``: :meth:`infer.search.config.SearchConfig.offset`."""
    radius = max(1, round(cfg.cluster / ws.grid.stride_s))
    found = []
    for k in range(ws.scores.shape[0]):
        idx = cluster(ws.scores[k], radius)
        found.append(Triggers(trigger_times(ws, k, idx, cfg, offset), ws.scores[k, idx],
                              np.full(idx.size, k)))
    bg = found[1:] or [Triggers(np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64))]
    background = Triggers(np.concatenate([t.gps_time for t in bg]),
                          np.concatenate([t.score for t in bg]),
                          np.concatenate([t.slide for t in bg]))
    return found[0], background


def livetimes(ws: WindowScores) -> np.ndarray:
    """(slides + 1,) seconds each slide analysed: its scored windows x stride."""
    return np.isfinite(ws.scores).sum(axis=1) * ws.grid.stride_s


def false_alarm_rates(scores: np.ndarray, background: np.ndarray,
                      livetime_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(FAR per year, IFAR in years) of each score: the background triggers at least as loud
    per background year. FAR 0 (IFAR inf) when none is; all NaN without background livetime."""
    if livetime_s <= 0:
        nan = np.full(np.shape(scores), np.nan)
        return nan, nan.copy()
    louder = background.size - np.searchsorted(np.sort(background), scores, side="left")
    far = louder / (livetime_s / YEAR)
    with np.errstate(divide="ignore"):
        ifar = np.where(louder > 0, 1.0 / far, np.inf)
    return far, ifar
