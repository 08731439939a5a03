"""From window scores to triggers: clustering, the trigger's time, and false-alarm rates from
the background of the time slides.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import maximum_filter1d

from data.layout import DETECTORS
from infer.search.config import (
    YEAR,
    SearchConfig,
)
from infer.search.scoring import WindowScores


def cluster(scores: np.ndarray, radius: int) -> np.ndarray:
    """Indices of the windows whose score is the highest within +-``radius`` windows (ties: the
    earliest), NaN (unscored) windows never; so triggers are more than ``radius`` apart.
    Linear in the windows whatever the radius (scipy's running maximum)."""
    s = np.where(np.isfinite(scores), scores, -np.inf)
    pad = np.full(radius, -np.inf)
    padded = np.concatenate([pad, s, pad])
    # run[j] = max(padded[j : j + radius]): origin -(radius // 2) puts the window there.
    run = maximum_filter1d(padded, size=radius, origin=-(radius // 2), mode="constant",
                           cval=-np.inf)
    before = run[: s.size]  # windows i - radius .. i - 1
    after = run[radius + 1: radius + 1 + s.size]  # i + 1 .. i + radius
    return np.flatnonzero(np.isfinite(scores) & (s > before) & (s >= after))


def integrate(scores: np.ndarray, half: int) -> np.ndarray:
    """(slides + 1, n) window scores -> the same shape: each scored window's score replaced by
    the mean of the scored windows within +-``half`` grid steps of it in its slide (a centred
    boxcar of 2 ``half`` + 1 windows, shorter at the ends and where windows are unscored);
    unscored (NaN) windows stay NaN. ``half`` 0 returns ``scores`` itself.

    Why: a chirp keeps a CNN's score high for as long as its merger sits in the flat part of
    the window (about a second: the plateau that ``half_max_centres`` reads the clock from),
    while a noise fluctuation need not; aframe ranks on its network's output integrated over
    1 s for this reason. A centred boxcar leaves a symmetric plateau's centre where it was.
    Measured on the search model over synthetic Gaussian noise, the loudest background
    windows plateau as long as signals do, and it gained nothing (docs/search.md).
    """
    if half <= 0:
        return scores
    finite = np.isfinite(scores)
    n = scores.shape[-1]
    # Running sums from a leading zero: the sum over [a, b) is c[b] - c[a].
    c = np.concatenate([np.zeros(scores.shape[:-1] + (1,)),
                        np.cumsum(np.where(finite, scores, 0.0), axis=-1)], axis=-1)
    k = np.concatenate([np.zeros(scores.shape[:-1] + (1,), dtype=np.int64),
                        np.cumsum(finite, axis=-1)], axis=-1)
    i = np.arange(n)
    lo, hi = np.maximum(i - half, 0), np.minimum(i + half + 1, n)
    total, count = c[..., hi] - c[..., lo], k[..., hi] - k[..., lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(finite, total / np.maximum(count, 1), np.nan)


@dataclass
class Triggers:
    gps_time: np.ndarray  # (n,) float64
    score: np.ndarray  # (n,) float64
    slide: np.ndarray  # (n,) int: 0 zero lag
    window: np.ndarray  # (n,) int: the grid index of the trigger's loudest window


def half_max_centres(scores: np.ndarray, idx: np.ndarray, reach: int) -> np.ndarray:
    """(n,) fractional grid positions of the centres of the peaks at windows ``idx``: the
    middle of the run of windows around each whose score is at least halfway from the lowest
    score within +-``reach`` windows (the baseline) to the peak, each end interpolated linearly
    to the half-height crossing. A run stops at an unscored window and at ``reach``.

    Why: a CNN scores a chirp about as high wherever its merger lies in the window's flat
    part, so the loudest window is a noisy clock on a plateau; the plateau's centre is not.
    Halfway heights make it independent of the score's offset and scale (logits of any run).
    """
    s = np.where(np.isfinite(scores), scores, np.nan)
    n = s.size
    out = np.empty(idx.size, dtype=np.float64)
    for i, j in enumerate(np.asarray(idx)):
        near = s[max(j - reach, 0):j + reach + 1]
        half = (np.nanmin(near) + s[j]) / 2
        ends = []
        for step in (-1, 1):
            e = j
            while 0 <= e + step < n and abs(e + step - j) <= reach and s[e + step] >= half:
                e += step
            nxt = e + step
            # The crossing between the run's last window e and the next one below half.
            if 0 <= nxt < n and np.isfinite(s[nxt]) and s[e] > s[nxt]:
                e = e + step * (s[e] - half) / (s[e] - s[nxt])
            ends.append(e)
        out[i] = (ends[0] + ends[1]) / 2
    return out


def trigger_times(ws: WindowScores, k: int, idx: np.ndarray, cfg: SearchConfig,
                  offset: float) -> np.ndarray:
    """GPS times of the triggers ``idx`` of slide ``k``: with ``cfg.trigger_time`` "centre",
    the start of the window at the centre of the peak (:func:`half_max_centres`) + ``offset``;
    with "loudest", the loudest window's start + ``offset``."""
    if cfg.trigger_time == "centre":
        pos = half_max_centres(ws.scores[k], idx, ws.grid.n_time // ws.grid.stride)
        return ws.grid.t0 + pos * ws.grid.stride_s + offset
    return ws.grid.starts(idx) + offset


def find_triggers(ws: WindowScores, cfg: SearchConfig,
                  offset: float) -> tuple[Triggers, Triggers]:
    """(zero-lag triggers, background triggers of every slide), each clustered on its own;
    ``offset``: s from a window's start to its trigger time (``trigger_offset``)."""
    radius = max(1, round(cfg.cluster / ws.grid.stride_s))
    found = []
    for k in range(ws.scores.shape[0]):
        idx = cluster(ws.scores[k], radius)
        found.append(Triggers(trigger_times(ws, k, idx, cfg, offset), ws.scores[k, idx],
                              np.full(idx.size, k), idx))
    empty = np.zeros(0, dtype=np.int64)
    bg = found[1:] or [Triggers(np.zeros(0), np.zeros(0), empty, empty)]
    background = Triggers(np.concatenate([t.gps_time for t in bg]),
                          np.concatenate([t.score for t in bg]),
                          np.concatenate([t.slide for t in bg]),
                          np.concatenate([t.window for t in bg]))
    return found[0], background


def loudest_background_windows(ws: WindowScores, background: Triggers, cfg: SearchConfig,
                               n: int) -> dict:
    """The ``n`` loudest of ``background`` (:func:`find_triggers`'), loudest first, and where
    each detector's row of its slid window came from: {"slide": (m,) int, "score": (m,),
    "H1"/"L1"/"V1": (m,) GPS start of the detector's 2-s window}, m <= n. Slide k takes the
    i-th slid detector's row from the window (i + 1) k slide_step earlier, circularly within
    the window's ring (grid.slide_rows)."""
    step = round(cfg.slide_step / ws.grid.stride_s)
    slid = [DETECTORS.index(d) for d in cfg.slide_detectors]
    top = np.argsort(-background.score, kind="stable")[:n]
    k, w = background.slide[top], background.window[top]
    a = np.zeros_like(w)
    size = np.ones_like(w)
    for lo, hi in ws.rings:
        inside = (w >= lo) & (w < hi)
        a[inside], size[inside] = lo, hi - lo
    out = {"slide": k, "score": background.score[top]}
    for d, name in enumerate(DETECTORS):
        row = w.copy()
        if d in slid:
            row = a + (w - a - (slid.index(d) + 1) * k * step) % size
        out[name] = ws.grid.starts(row)
    return out


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
