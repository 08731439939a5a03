"""Power spectral densities of detector strain: Tukey-windowed periodograms, their running
average over a data set (:class:`PSDAccumulator`, stage one's training PSD) and their median
(a Welch estimate robust to loud transients, the search's local PSD). One-sided, in 1/Hz,
float64 (strain PSDs are ~1e-46 and underflow float32); checked against scipy and gwpy.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import get_window

from data.layout import SAMPLE_RATE


def tukey(n: int, alpha: float) -> np.ndarray:
    """The periodic Tukey window of ``n`` samples, float64: what gwpy and scipy's ``welch`` use
    for ``window=('tukey', alpha)`` (``scipy.signal.get_window``, ``fftbins=True``)."""
    return get_window(("tukey", float(alpha)), n, fftbins=True)


class PSDAccumulator:
    """Streaming average of the one-sided PSD of (n, 3, T) strain batches.

    Each sample and detector is detrended (mean removed), Tukey(``alpha``)-windowed and
    turned into a one-sided periodogram in 1/Hz on the rFFT grid of T samples (df = fs / T;
    2049 bins from 0 to 1024 Hz for T = 4096). This is exactly scipy/gwpy's
    ``psd(fftlength=T / fs, window=('tukey', alpha))`` of a single segment, averaged over
    samples.

    We average PSDs, not ASDs (the seed averaged gwpy ASDs). The mean periodogram is the
    unbiased estimate of the noise power, so data whitened by its square root has unit
    variance; the mean of ASDs estimates E[sqrt(P)], which for Gaussian noise (each
    periodogram bin ~ exponential) is sqrt(pi/4) = 0.886 of the true ASD, whitened variance
    1.27, and for non-Gaussian noise a level that depends on the glitch population. The
    shapes agree, so only the scale of the images would differ. Everything is float64:
    PSDs are ~1e-46 and underflow float32.
    """

    def __init__(self, alpha: float, sample_rate: int = SAMPLE_RATE):
        self.alpha = float(alpha)
        self.sample_rate = sample_rate
        self._sum: np.ndarray | None = None
        self.count = 0
        self._window: np.ndarray | None = None

    def update(self, batch) -> None:
        """Add a batch of samples: array (n, n_detector, T) or (n_detector, T), any float."""
        x = np.asarray(batch, dtype=np.float64)
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3:
            raise ValueError(f"expected (n, detector, time) strain, got shape {x.shape}")
        if self._sum is not None and x.shape[1:] != self._shape:
            raise ValueError(f"batch shape {x.shape[1:]} differs from earlier {self._shape}")
        n_time = x.shape[-1]
        if self._window is None:
            self._shape = x.shape[1:]
            self._window = tukey(n_time, self.alpha)
            self._sum = np.zeros((x.shape[1], n_time // 2 + 1))
        self._sum += _power(x, self._window).sum(axis=0)
        self.count += x.shape[0]

    def psd(self) -> np.ndarray:
        """The average one-sided PSD, float64 (n_detector, T // 2 + 1), 1/Hz."""
        if self.count == 0:
            raise ValueError("no samples were added to the PSD accumulator")
        return _to_density(self._sum / self.count, self._window, self.sample_rate)


def _power(x: np.ndarray, window: np.ndarray) -> np.ndarray:
    """|rFFT|^2 of each segment of x (..., T), its mean removed, times ``window``."""
    x = (x - x.mean(axis=-1, keepdims=True)) * window
    return np.abs(np.fft.rfft(x, axis=-1)) ** 2


def _to_density(power: np.ndarray, window: np.ndarray, sample_rate: int) -> np.ndarray:
    """|X|^2 (..., T // 2 + 1) -> one-sided density in 1/Hz: / (fs * sum w^2), doubled except
    at DC and (even T) Nyquist, as scipy.signal.welch(scaling='density') does."""
    scale = 2.0 / (sample_rate * np.sum(window**2))
    psd = power * scale
    psd[..., 0] /= 2
    if len(window) % 2 == 0:
        psd[..., -1] /= 2
    return psd


def periodograms(x: np.ndarray, window: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """One-sided periodograms (1/Hz) of segments x (..., T), float64 (..., T // 2 + 1): each
    segment's mean removed (``detrend='constant'``), times ``window`` (T,): what
    scipy.signal.welch(scaling='density') computes for each of its segments, and what
    :class:`PSDAccumulator` averages."""
    return _to_density(_power(np.asarray(x, dtype=np.float64), window), window, sample_rate)


def median_bias(n: int) -> float:
    """The expected median of n periodogram values over their mean (scipy.signal.welch's
    ``_median_bias``, which it divides out for ``average='median'``).

    A periodogram bin of Gaussian noise is exponential (chi^2 with 2 degrees of freedom / 2):
    its median is ln 2 = 0.693 of its mean. The sample median of n such values has the exact
    expectation 1 - 1/2 + 1/3 - ... up to the ((n - 1) // 2)-th pair, which tends to ln 2.
    """
    ii_2 = 2.0 * np.arange(1.0, (n - 1) // 2 + 1)
    return float(1.0 + np.sum(1.0 / (ii_2 + 1.0) - 1.0 / ii_2))


def median_psd(periodograms_: np.ndarray) -> np.ndarray:
    """Median average of periodograms (n, ..., F) over axis 0, divided by
    :func:`median_bias` (n): scipy.signal.welch(average='median') given the same segments.

    The median ignores the few segments that hold a loud transient (a glitch, a chirp), which
    the mean would carry into the noise estimate; in stationary Gaussian noise the bias
    correction makes it estimate the same PSD as the mean.
    """
    n = periodograms_.shape[0]
    if n == 0:
        raise ValueError("median PSD of no segments")
    # np.median's numbers from one partition along a contiguous axis (a search takes a median
    # PSD every 16 s of strain: 4 against 10 ms for 65 segments): below the k-th value lie the
    # k smaller ones, so for even n the (k - 1)-th is their maximum.
    k = n // 2
    part = np.partition(np.moveaxis(np.asarray(periodograms_, dtype=np.float64), 0, -1), k,
                        axis=-1)
    median = part[..., k] if n % 2 else (part[..., :k].max(axis=-1) + part[..., k]) / 2
    return median / median_bias(n)


def estimate_psd(x: np.ndarray, alpha: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Average one-sided noise PSD of a stack of target-0 samples.

    x: (n, 3, T) strain; alpha: Tukey window shape. Returns float64 (3, T // 2 + 1) in 1/Hz
    on the rFFT grid (df = sample_rate / T = 0.5 Hz for T = 4096). See :class:`PSDAccumulator`
    for the streaming form and why PSDs (not ASDs) are averaged.
    """
    acc = PSDAccumulator(alpha, sample_rate)
    acc.update(x)
    return acc.psd()
