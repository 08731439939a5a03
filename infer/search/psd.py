"""The PSD that whitens each window in a search with ``psd.source=local``: per block of window
starts, the median of the Welch periodograms of the clean 2-s segments around it.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from preprocess.spectral import median_psd, periodograms, tukey


class LocalPSD:
    """Median-Welch PSDs of strain (3, n) around given centres, segments shared between calls.

    Segment j covers samples [j hop, j hop + n_time); it is used when clean (no non-finite
    sample in any detector). :meth:`psd` (centre) is the median PSD of the clean segments whose
    centres lie within span / 2 of ``centre`` (samples); each segment's periodogram is computed
    once while later centres still need it (centres must not decrease).
    """

    def __init__(self, data: np.ndarray, prefix: np.ndarray, alpha: float, sample_rate: int,
                 n_time: int, hop: int, span: float, min_segments: int):
        self.data = data
        self.window = tukey(n_time, alpha)
        self.sample_rate = sample_rate
        self.n_time = n_time
        self.hop = hop
        self.half_span = span * sample_rate / 2
        self.min_segments = min_segments
        n = data.shape[-1]
        self.n_segments = (n - n_time) // hop + 1 if n >= n_time else 0
        a = np.arange(self.n_segments, dtype=np.int64) * hop
        self.clean = prefix[a + n_time] == prefix[a]
        self._clean_prefix = np.concatenate([[0], np.cumsum(self.clean)])
        self._cache: dict[int, np.ndarray] = {}

    def segments(self, centre: float) -> tuple[int, int]:
        """[a, b): the segments whose centres are within span / 2 of ``centre`` (samples)."""
        half = self.n_time / 2
        a = math.ceil((centre - self.half_span - half) / self.hop)
        b = math.floor((centre + self.half_span - half) / self.hop) + 1
        return max(a, 0), min(max(b, 0), self.n_segments)

    def count(self, centre: float) -> int:
        """Clean segments around ``centre``: no FFT."""
        a, b = self.segments(centre)
        return int(self._clean_prefix[max(b, a)] - self._clean_prefix[a])

    def usable(self, centre: float) -> bool:
        return self.count(centre) >= self.min_segments

    def psd(self, centre: float) -> tuple[np.ndarray, int]:
        """(3, n_time // 2 + 1) float64 one-sided PSD in 1/Hz, and the segments it used."""
        a, b = self.segments(centre)
        for j in [j for j in self._cache if j < a]:
            del self._cache[j]
        used = [j for j in range(a, b) if self.clean[j]]
        todo = [j for j in used if j not in self._cache]
        if todo:
            view = sliding_window_view(self.data, self.n_time, axis=-1)[:, ::self.hop]
            p = periodograms(view[:, todo].transpose(1, 0, 2), self.window, self.sample_rate)
            self._cache.update(zip(todo, p))
        return median_psd(np.stack([self._cache[j] for j in used])), len(used)
