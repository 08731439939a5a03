"""Detection statistics that know the truth, for the ceilings a detector is compared with: the
oracle (the matched filter with each sample's true template) and likelihood ratios of a
detector told all of a sample's source, all but the merger time, or all but the time and the
SNR (docs/quality.md, "bounds"). Numpy over ``(3, N_TIME)`` strain at 2048 Hz, with
:mod:`data.sim.physics`'s noise PSD.
"""

from __future__ import annotations

import math
from dataclasses import replace
from functools import lru_cache

import numpy as np
from scipy.signal.windows import tukey
from scipy.special import log_ndtr, logsumexp

from data.layout import DETECTORS, N_TIME, SAMPLE_RATE
from data.sim.physics import (
    DELTA_T,
    Source,
    antenna_patterns,
    band_bins,
    noise_psd,
    polarisations,
    project_waveform,
)

ORACLE_MAX_SHIFT = 0.05  # s; the oracle maximises over a common shift within +-this


ORACLE_TUKEY_ALPHA = 0.1


@lru_cache(maxsize=None)
def _oracle_window() -> np.ndarray:
    window = tukey(N_TIME, ORACLE_TUKEY_ALPHA)
    window.flags.writeable = False
    return window


def oracle_statistic(data: np.ndarray, template: np.ndarray) -> float:
    """Network matched-filter statistic of ``data`` for ``template``, both (3, N_TIME) strain.

    max over |t| <= ORACLE_MAX_SHIFT of sqrt(sum_i |z_i(t)|^2), z_i the complex matched filter
    of detector i normalised to unit variance per quadrature. A detector whose template is
    exactly zero contributes nothing.
    """
    band = band_bins(N_TIME, SAMPLE_RATE)
    window = _oracle_window()
    psd = noise_psd()[:, band]
    delta_f = 1.0 / (N_TIME * DELTA_T)
    data_f = np.fft.rfft(data * window, axis=-1)[:, band] * DELTA_T
    tmpl_f = np.fft.rfft(template * window, axis=-1)[:, band] * DELTA_T
    sigma = np.sqrt(4.0 * delta_f * np.sum(np.abs(tmpl_f) ** 2 / psd, axis=-1))
    # z_i(t) = 4 df sum_f d(f) h*(f) / S(f) exp(2 pi i f t): an inverse FFT over the positive
    # frequencies only, which makes z complex (its modulus is the max over the template's phase).
    full = np.zeros((data.shape[0], N_TIME), dtype=complex)
    full[:, band] = data_f * np.conj(tmpl_f) / psd
    z = np.fft.ifft(full, axis=-1) * (4.0 * delta_f * N_TIME)  # at lag * DELTA_T; negative wrap
    max_lag = int(round(ORACLE_MAX_SHIFT * SAMPLE_RATE))
    lags = np.r_[0 : max_lag + 1, N_TIME - max_lag : N_TIME]
    # |z_i| / sigma_i has unit variance per quadrature in noise (up to the window's effect on
    # the few percent of the template inside its tapers), and mean rho_i on the true signal.
    sigma = np.where(sigma > 0, sigma, np.inf)
    power = np.sum(np.abs(z[:, lags]) ** 2 / sigma[:, None] ** 2, axis=0)
    return float(np.sqrt(power.max()))


def _band_spectrum(x: np.ndarray) -> np.ndarray:
    """DFT (times dt) of (..., 3, N_TIME) windowed strain on the 20-1000 Hz band: (..., 3, K)."""
    return np.fft.rfft(x, axis=-1)[..., band_bins(N_TIME, SAMPLE_RATE)] * DELTA_T


def _inner(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """<a_i, b_i> = 4 Re sum_f a b* / S_i df over the band of :func:`_band_spectrum` outputs
    (..., 3, K): (..., 3)."""
    psd = noise_psd()[:, band_bins(N_TIME, SAMPLE_RATE)]
    delta_f = 1.0 / (N_TIME * DELTA_T)
    return 4.0 * delta_f * np.sum((a * np.conj(b)).real / psd, axis=-1)


def log_likelihood_ratio(data: np.ndarray, templates: np.ndarray) -> np.ndarray:
    """ln L of "data = noise + template" against "data = noise", for each template: (L,).

    data: (3, N_TIME) strain; templates: (L, 3, N_TIME) strain, every detector's signal as it
    would lie in the sample. ln L = sum_i <d_i, h_i> - <h_i, h_i> / 2 with the oracle's
    Tukey window on both, over 20-1000 Hz against :func:`data.sim.physics.noise_psd` (Whittle's
    approximation; <h, h> is the template's optimal SNR squared, up to the window).
    """
    window = _oracle_window()
    d = _band_spectrum(data * window)
    h = _band_spectrum(np.asarray(templates, dtype=np.float64) * window)
    return np.sum(_inner(d, h) - 0.5 * _inner(h, h), axis=-1)


def shifted_inner_products(
    data: np.ndarray,
    source: Source,
    scale: float,
    merger_times: tuple[float, float],
    norm_step: int = 8,
) -> tuple[np.ndarray, np.ndarray, int]:
    """<d, h> and <h, h> (summed over detectors, as in :func:`log_likelihood_ratio`) of
    ``source`` at amplitude ``scale`` (the factor :func:`data.sim.physics.snr_scale` gave it)
    merging at every whole-sample shift of its own merger time that stays inside
    ``merger_times`` (s): ``(inner (n_lags,), norm (n_lags,), k)``. Entry j merges ``k - j``
    samples after the source's own merger; entry k is the source unshifted.

    One waveform covers every shift: made from the start frequency the latest merger needs
    and projected into a window ``n_lags - 1`` samples longer than the sample, so a shifted
    template is a slice of it, with the inspiral a later merger brings into the sample (not a
    circular wrap). <d, h> at every shift is one correlation of the whitened data with that
    waveform; <h, h> changes slowly with the shift (the window's tapers), so it is computed
    every ``norm_step`` shifts and at both ends, and interpolated linearly between.
    """
    t = source.merger_time
    k_min = math.ceil((merger_times[0] - t) * SAMPLE_RATE)
    k_max = math.floor((merger_times[1] - t) * SAMPLE_RATE)
    if k_min > 0 or k_max < 0:
        raise ValueError(f"merger time {t} s is outside {merger_times}")
    n_lags = k_max - k_min + 1
    hp, hc, t_first = polarisations(replace(source, merger_time=t + k_max * DELTA_T))
    fplus, fcross, delay = antenna_patterns(source.ra, source.dec, source.psi)
    # Window j .. j + N_TIME of the long one holds the template merging (k_max - j) samples
    # after t; window k_max is the sample itself.
    first = (t + t_first) * SAMPLE_RATE + k_max
    long = project_waveform(hp, hc, first, N_TIME + n_lags - 1, fplus, fcross, delay) * scale

    window = _oracle_window()
    band = band_bins(N_TIME, SAMPLE_RATE)
    delta_f = 1.0 / (N_TIME * DELTA_T)
    # <d, g> = sum_n g(n) q(n) for any real g: q = Re ifft of 4 df D(f) / S(f), times dt.
    spec = np.zeros((len(DETECTORS), N_TIME), dtype=complex)
    spec[:, band] = 4.0 * delta_f * _band_spectrum(data * window) / noise_psd()[:, band]
    q = (np.fft.ifft(spec, axis=-1) * N_TIME).real * DELTA_T * window
    n_fft = 1 << (N_TIME + long.shape[-1]).bit_length()
    corr = np.fft.irfft(np.conj(np.fft.rfft(q, n_fft)) * np.fft.rfft(long, n_fft), n_fft)
    inner = corr[:, :n_lags].sum(axis=0)  # sum_i sum_n q_i(n) long_i(n + j)

    at = np.unique(np.r_[np.arange(0, n_lags, norm_step), n_lags - 1, k_max])
    h_at = _band_spectrum(np.stack([long[:, j : j + N_TIME] for j in at]) * window)
    norm = np.interp(np.arange(n_lags), at, _inner(h_at, h_at).sum(axis=-1))
    return inner, norm, k_max


def snr_marginal_log_likelihood_ratio(
    inner: np.ndarray, norm: np.ndarray, network_snr: float, snr_range: tuple[float, float]
) -> np.ndarray:
    """ln L of a template whose network SNR is unknown, uniform in ``snr_range``, its shape
    known: the mean over rho of exp(rho a - rho^2 b / 2), in closed form.

    inner, norm: <d, h> and <h, h> (any shape) of the template ``h`` at ``network_snr``; with
    u = h / network_snr, a = <d, u> and b = <u, u>, and
    int exp(rho a - rho^2 b / 2) d rho = sqrt(2 pi / b) exp(a^2 / 2b) [Phi(sqrt(b) (hi - a/b))
    - Phi(sqrt(b) (lo - a/b))].
    """
    lo, hi = snr_range
    a = np.asarray(inner) / network_snr
    b = np.asarray(norm) / network_snr**2
    mean = a / b
    upper = log_ndtr(np.sqrt(b) * (hi - mean))
    lower = log_ndtr(np.sqrt(b) * (lo - mean))
    log_mass = upper + np.log1p(-np.exp(lower - upper))
    return a**2 / (2 * b) + 0.5 * np.log(2 * np.pi / b) + log_mass - np.log(hi - lo)


def time_marginal_log_likelihood_ratio(
    data: np.ndarray,
    source: Source,
    scale: float,
    merger_times: tuple[float, float],
    snr_range: tuple[float, float] | None = None,
    network_snr: float | None = None,
) -> float:
    """ln L of ``source`` at ``scale`` with its merger time unknown, uniform over
    ``merger_times`` (s): the mean of L over every whole-sample shift there
    (:func:`shifted_inner_products`). With ``snr_range``, its network SNR is unknown too,
    uniform there (:func:`snr_marginal_log_likelihood_ratio`); ``network_snr`` is then the
    template's at ``scale`` (:func:`data.sim.physics.snr_scale`'s)."""
    inner, norm, _ = shifted_inner_products(data, source, scale, merger_times)
    if snr_range is None:
        ln_l = inner - 0.5 * norm
    elif network_snr is None:
        raise ValueError("snr_range needs the template's network_snr")
    else:
        ln_l = snr_marginal_log_likelihood_ratio(inner, norm, network_snr, snr_range)
    return float(logsumexp(ln_l) - np.log(ln_l.size))
