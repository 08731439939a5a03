"""The window grid over long strain: 2-s windows every ``stride`` s from the common span's first
sample, the clean ones (no NaN in any detector), and the rows a time slide pairs up, circularly
within rings of consecutive clean windows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data.config import ConfigError
from data.strain import Strain


def whole_samples(seconds: float, sample_rate: int, key: str) -> int:
    """``seconds`` as a whole number of samples; ConfigError naming ``key`` otherwise."""
    n = seconds * sample_rate
    if abs(n - round(n)) > 1e-6 or round(n) < 1:
        raise ConfigError(f"{key}: {seconds:g} s is not a whole number of samples at "
                          f"{sample_rate} Hz")
    return round(n)


def whole_multiple(value: float, unit: float, key: str, unit_name: str) -> int:
    """``value / unit`` as a whole number >= 1; ConfigError naming ``key`` otherwise."""
    n = value / unit
    if abs(n - round(n)) > 1e-6 or round(n) < 1:
        raise ConfigError(f"{key}: {value:g} s is not a multiple of the {unit_name} ({unit:g} s)")
    return round(n)


@dataclass
class Grid:
    """Windows of ``n_time`` samples starting every ``stride`` samples from the strain's sample
    0; window k starts at GPS ``t0 + k * stride / sample_rate``."""

    t0: float
    sample_rate: int
    n_time: int
    stride: int
    n: int  # windows that fit in the strain

    @classmethod
    def over(cls, strain: Strain, n_time: int, stride: int) -> Grid:
        n = (strain.n - n_time) // stride + 1 if strain.n >= n_time else 0
        return cls(strain.t0, strain.sample_rate, n_time, stride, n)

    def starts(self, k: np.ndarray) -> np.ndarray:
        """GPS start time of windows ``k``."""
        return self.t0 + np.asarray(k, dtype=np.float64) * (self.stride / self.sample_rate)

    @property
    def stride_s(self) -> float:
        return self.stride / self.sample_rate


def bad_prefix(data: np.ndarray) -> np.ndarray:
    """(n + 1,) int64 cumulative count of samples where any detector is non-finite: the samples
    [a, b) are clean when prefix[b] == prefix[a]."""
    bad = ~np.isfinite(data).all(axis=0)
    return np.concatenate([[0], np.cumsum(bad, dtype=np.int64)])


def clean_windows(grid: Grid, prefix: np.ndarray) -> np.ndarray:
    """(grid.n,) bool: windows that touch no non-finite sample in any detector."""
    a = np.arange(grid.n, dtype=np.int64) * grid.stride
    return prefix[a + grid.n_time] == prefix[a]


def runs_of(mask: np.ndarray) -> list[tuple[int, int]]:
    """[a, b) index ranges of the runs of True in ``mask``."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def rings_of(mask: np.ndarray, most: int) -> list[tuple[int, int]]:
    """Runs of consecutive True windows, each cut into equal rings of at most ``most``."""
    out = []
    for a, b in runs_of(mask):
        parts = -(-(b - a) // most)
        edges = np.linspace(a, b, parts + 1).round().astype(int)
        out += list(zip(edges[:-1].tolist(), edges[1:].tolist()))
    return out


def slide_rows(n_windows: int, k: int, m: int, n_slid: int, slid_rows: list[int],
               n_rows: int = 3) -> np.ndarray | None:
    """(n_rows, W) window offsets within a ring: row d of window w of slide k comes from window
    ``(w - (i + 1) k m) mod W`` for the i-th slid detector (row ``slid_rows[i]``), from w for
    the others. None when the ring is too short for the shifts to be distinct and non-zero
    (``n_slid * k * m >= W``). Slide 0 is the identity (zero lag)."""
    w = np.arange(n_windows)
    rows = np.tile(w, (n_rows, 1))
    if k == 0:
        return rows
    if n_slid * k * m >= n_windows:
        return None
    for i, row in enumerate(slid_rows):
        rows[row] = (w - (i + 1) * k * m) % n_windows
    return rows
