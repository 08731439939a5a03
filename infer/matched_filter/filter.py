"""Filtering samples with the bank: per-detector SNR time series and the network statistic.

The noise PSD is the average periodogram of the first ``n_psd`` target-0 training samples
(:func:`preprocess.psd.training_psd`, which averages with
:class:`preprocess.spectral.PSDAccumulator`; Tukey alpha of the default preprocess config),
exactly stage one's whitening PSD. Each sample is Tukey(0.1)-windowed (the oracle's window:
flat up to 1.9 s, the latest merger; stage one's 0.25 would taper it), zero-padded to
``N_FFT`` and correlated in the frequency domain with every template, per detector:

    z_i(t) = sum_k X_i(k) conj(G(k) H(k)) / S_i(k) exp(2 pi i k t / N_FFT),  k > 0

(positive frequencies only, so |z| is maximised over the template's phase), G the 20-1000 Hz
band of the generator's SNR with 4 Hz raised-cosine edges outside it
(:func:`preprocess.transforms.bandpass_gain`; a hard edge would ring across the buffer).
z_i(t) is divided by sigma_i(t), the standard deviation that stationary noise of PSD S_i
gives it *at that lag*: the whitened template weighted by the data window, so the parts of
the template in the padding or the taper count for nothing. Then |z_i(t)|^2 / sigma_i(t)^2
is chi^2 with 2 degrees of freedom in Gaussian noise, at every lag and for every template.

Network statistic (:func:`bank_statistic`):
max over templates and merger times t in H1 of
sqrt(|z_H1(t)|^2 + max_{|d| <= T_HL} |z_L1(t + d)|^2 + max_{|d| <= T_HV} |z_V1(t + d)|^2),
T_HL and T_HV the light-travel times between the sites (lal: 10.0 and 27.3 ms) plus about
one sample. H1 is the reference, so the H1-L1 and H1-V1 constraints are exact and L1-V1
(26.4 ms) is relaxed to 37 ms. t covers the generator's geocentre merger times (1.3-1.9 s)
widened by H1's light-travel time from the geocentre (21.2 ms) and ``TIME_MARGIN`` (20 ms),
on every other sample by default (``time_step`` 2: z is exact there, the FFTs half as long).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from data.layout import DETECTORS, N_TIME
from infer.matched_filter.bank import N_FFT, Bank, MatchedFilterError


def _data_spectrum(strain, bank: Bank) -> torch.Tensor:
    """Windowed, zero-padded, whitened spectra on the bank's band: (B, 3, K) complex64.

    Float64 until the division by the ASD: raw strain is dominated by noise below 15 Hz at
    ~100x the in-band amplitude (see ``preprocess.transforms.Whiten``)."""
    x = torch.as_tensor(strain, dtype=torch.float64, device=bank.device)
    if x.ndim != 3 or x.shape[1:] != (len(DETECTORS), N_TIME):
        raise MatchedFilterError(f"expected strain (B, 3, {N_TIME}), got {tuple(x.shape)}")
    x = (x - x.mean(dim=-1, keepdim=True)) * bank.window
    k = bank.data_weight.shape[-1]
    spec = torch.fft.rfft(x, n=N_FFT, dim=-1)[..., bank.k0 : bank.k0 + k] * bank.data_weight
    return spec.to(torch.complex64)


def snr2_series(spec: torch.Tensor, bank: Bank, templates: slice) -> torch.Tensor:
    """|z_i(t)|^2 / sigma_i(t)^2 for ``templates``: (B, T, 3, n_lag) float32, chi^2 with 2
    degrees of freedom in Gaussian noise of the bank's PSD.

    spec: (B, 3, K) from :func:`_data_spectrum`. The band starts at bin k0, so the inverse
    FFT of the band alone is z times exp(-2 pi i k0 t / N_FFT): the same modulus. With
    ``time_step`` 2 an N_FFT / 2-point inverse FFT gives z at the even lags exactly (the band
    holds fewer than N_FFT / 2 bins).
    """
    prod = spec[:, None] * bank.filters[None, templates]  # (B, T, 3, K)
    n_lag = bank.sigma2.shape[-1]
    z = torch.fft.ifft(prod, n=N_FFT // bank.time_step, dim=-1)
    z = z[..., bank.lag0 : bank.lag0 + n_lag] * (1.0 / bank.time_step)
    return (z.real**2 + z.imag**2) / bank.sigma2[None, templates]


def _network(snr2: torch.Tensor, bank: Bank) -> torch.Tensor:
    """(B, T, 3, n_lag) -> (B, T, n_search): H1 at t plus L1 and V1 maximised over their
    offsets from t within the light-travel bounds."""
    b, t, _, n = snr2.shape
    total = snr2[:, :, 0]
    for i in range(1, snr2.shape[2]):
        half = bank.pool[i]
        pooled = F.max_pool1d(snr2[:, :, i].reshape(b * t, 1, n), 2 * half + 1, stride=1,
                              padding=half)
        total = total + pooled.reshape(b, t, n)
    return total[..., bank.search]


@torch.no_grad()
def bank_statistic(
    strain, bank: Bank, template_chunk: int = 64, return_best: bool = False
):
    """Network matched-filter SNR of each sample, maximised over the bank and merger times.

    strain: (B, 3, 4096) float64 array or tensor, H1 L1 V1 at 2048 Hz. Returns (B,) float64
    numpy; with ``return_best`` also the index of the loudest template (B,) int64.
    """
    spec = _data_spectrum(strain, bank)
    best = torch.full((spec.shape[0],), -1.0, dtype=torch.float32, device=bank.device)
    best_idx = torch.zeros(spec.shape[0], dtype=torch.int64, device=bank.device)
    for start in range(0, len(bank), template_chunk):
        chunk = slice(start, min(start + template_chunk, len(bank)))
        net = _network(snr2_series(spec, bank, chunk), bank).amax(dim=-1)  # (B, T)
        value, idx = net.max(dim=1)
        better = value > best
        best = torch.where(better, value, best)
        best_idx = torch.where(better, idx + start, best_idx)
    stat = best.double().sqrt().cpu().numpy()
    return (stat, best_idx.cpu().numpy()) if return_best else stat


@torch.no_grad()
def fitting_factors(signals, bank: Bank, template_chunk: int = 64) -> dict[str, np.ndarray]:
    """How much of noise-free signals' SNR the bank recovers.

    signals: (n, 3, 4096) strain without noise. Returns ``detector`` (n, 3): per detector, the
    max over templates, time and phase of the normalised match with the signal (the fitting
    factor), and ``network`` (n,): :func:`bank_statistic` of the signal over the SNR the exact
    template gets through the same filter (window, band, PSD).

    The exact template's SNR is sum_k G |Y_k|^2 / sqrt(N_FFT sum_k G^2 |Y_k|^2), Y the
    whitened windowed signal: the template G Y, which the band gain G does not let us beat.
    """
    spec = _data_spectrum(signals, bank)
    power = spec.real.double() ** 2 + spec.imag.double() ** 2  # (n, 3, K)
    g = bank.gain
    exact = (power * g).sum(-1) / torch.sqrt(N_FFT * (power * g**2).sum(-1))  # (n, 3)
    best = torch.zeros(exact.shape, dtype=torch.float32, device=bank.device)
    for start in range(0, len(bank), template_chunk):
        chunk = slice(start, min(start + template_chunk, len(bank)))
        s2 = snr2_series(spec, bank, chunk).amax(dim=-1).amax(dim=1)  # (n, 3)
        best = torch.maximum(best, s2)
    detector = (best.double().sqrt() / exact).cpu().numpy()
    network = bank_statistic(signals, bank, template_chunk) / np.sqrt(
        (exact**2).sum(-1).cpu().numpy())
    return {"detector": detector, "network": network}
