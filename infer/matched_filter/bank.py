"""The template bank, placed once per data set: IMRPhenomD templates (aligned spins; by
default non-spinning) placed stochastically over the generator's mass prior to a minimum
match, whitened and laid out for :mod:`infer.matched_filter.filter`. Why this placement and
what the bank misses: docs/search.md, "Notes from the code".
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

from data.layout import DETECTORS, N_TIME, SAMPLE_RATE
from preprocess.spectral import tukey
from preprocess.transforms import bandpass_gain

log = logging.getLogger(__name__)


N_FFT = N_TIME + N_TIME // 2  # 6144 = 3 s: the data (2 s) and 1 s of zero padding


TEMPLATE_SECONDS = 2.0  # of inspiral before the merger kept in each template


TEMPLATE_TAPER = 0.05  # s; half-Hann ramp at the template's (truncated) start


WINDOW_ALPHA = 0.1  # Tukey window of the data; data.sim.likelihood.ORACLE_TUKEY_ALPHA


BAND = (20.0, 1000.0)  # Hz: the generator's SNR band (data.sim.physics.F_LOW, F_HIGH)


BAND_RAMP = 4.0  # Hz; raised-cosine edges outside BAND


MERGER_TIMES = (1.3, 1.9)  # s; the generator's geocentre merger times (data.sim.samples)


MASS_RANGE = (7.0, 50.0)  # Msun; the generator's component masses (data.sim.samples)


TIME_MARGIN = 0.02  # s; a template of other masses peaks a few ms off the signal's peak


POST_MERGER_SECONDS = 0.25  # s of template kept after the merger


STOP_WINDOW = 2048  # candidates over which placement's acceptance rate is judged


MATCH_MAX_LAG = 0.025  # s; templates' peaks are this close when they match (placement)


# Chosen by AUC on 1,000 test samples of the moderate set (400 + 2,000, seed 1, SNR uniform
# 1-11; oracle 0.889): min match 0.80 / 0.85 / 0.90 / 0.95 (77 / 103 / 168 / 319 templates)
# 0.791 / 0.803 / 0.804 / 0.802; aligned spins within +-0.5 at 0.90 (568 templates) 0.797.
# Past ~100 templates the trials factor eats what a finer or spinning bank gains in fit.
DEFAULT_MIN_MATCH = 0.9


DEFAULT_SPIN_MAX = 0.0


# z at every other sample (1,024 Hz), exact there: half the inverse-FFT work, and the same AUC
# (0.804 against 0.803 at every sample on the comparison above).
DEFAULT_TIME_STEP = 2


APPROXIMANT = "IMRPhenomD"


class MatchedFilterError(ValueError):
    """Inputs the matched filter cannot use; the message names the file or the setting."""


def lal_modules():
    """(lal, lalsimulation, data.sim.physics), or a MatchedFilterError naming the extra."""
    try:
        import lal
        import lalsimulation

        from data.sim import physics
    except ImportError as e:
        raise MatchedFilterError(
            f"the template bank needs lalsuite ({e}); install the synth extra: "
            "pip install -e '.[synth]'"
        ) from None
    return lal, lalsimulation, physics


def _band_gain() -> tuple[np.ndarray, int, int]:
    """The band gain G on the rFFT grid of ``N_FFT`` (DC and Nyquist 0) and the bins [k0, k1)
    where it is nonzero."""
    freqs = np.fft.rfftfreq(N_FFT, 1.0 / SAMPLE_RATE)
    gain = bandpass_gain(freqs, BAND[0], BAND[1], BAND_RAMP)
    gain[0] = gain[-1] = 0.0
    bins = np.flatnonzero(gain > 0)
    return gain, int(bins[0]), int(bins[-1]) + 1


def _template_spectra(params: np.ndarray) -> np.ndarray:
    """rFFT of each template's buffer: (T, N_FFT // 2 + 1) complex128, arbitrary scale.

    params: (T, 3) mass1, mass2 (Msun), chi (the aligned spin of both components). The
    template is IMRPhenomD's plus polarisation (face-on, phase 0), made in the frequency domain
    on the grid of ``N_FFT`` (10x faster than lalsimulation's time-domain path) from the
    frequency that leaves ``TEMPLATE_SECONDS`` + 0.5 s to the merger (the generator's rule,
    :func:`data.sim.physics.polarisations`), so it spans < N_FFT samples; its merger is at
    t = 0 (index 0) and its inspiral wraps to the end of the buffer. Back in the time domain
    everything earlier than ``TEMPLATE_SECONDS`` before the merger is cut, with a half-Hann
    ramp of ``TEMPLATE_TAPER``, and so is what follows the merger by more than
    ``POST_MERGER_SECONDS`` (nothing: IMRPhenomD rings down in milliseconds).
    """
    lal, lalsimulation, physics = lal_modules()
    approximant = lalsimulation.GetApproximantFromString(APPROXIMANT)
    n_freq = N_FFT // 2 + 1
    delta_f = SAMPLE_RATE / N_FFT
    n_pre = round(TEMPLATE_SECONDS * SAMPLE_RATE)
    n_post = round(POST_MERGER_SECONDS * SAMPLE_RATE)
    n_taper = round(TEMPLATE_TAPER * SAMPLE_RATE)
    ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(n_taper) + 0.5) / n_taper)
    keep = np.zeros(N_FFT)
    keep[:n_post] = 1.0
    keep[N_FFT - n_pre :] = 1.0
    keep[N_FFT - n_pre : N_FFT - n_pre + n_taper] = ramp
    spectra = np.zeros((len(params), n_freq), dtype=np.complex128)
    for j, (m1, m2, chi) in enumerate(np.asarray(params, dtype=np.float64)):
        f_start = max(physics.F_START_MIN,
                      physics.start_frequency(m1, m2, TEMPLATE_SECONDS + physics.START_MARGIN))
        hp, _ = lalsimulation.SimInspiralChooseFDWaveform(
            m1 * lal.MSUN_SI, m2 * lal.MSUN_SI, 0.0, 0.0, chi, 0.0, 0.0, chi,
            1e6 * lal.PC_SI, 0.0, 0.0, 0.0, 0.0, 0.0,
            delta_f, f_start, SAMPLE_RATE / 2, physics.F_REF, None, approximant,
        )  # fmt: skip
        h = np.zeros(n_freq, dtype=np.complex128)
        n = min(n_freq, hp.data.length)
        h[:n] = hp.data.data[:n]
        x = np.fft.irfft(h, n=N_FFT) * keep
        spectra[j] = np.fft.rfft(x)
    return spectra


def _whiten(spectra: np.ndarray, gain: np.ndarray, asd: np.ndarray) -> np.ndarray:
    """Whitened analytic templates 2 G H / ASD on the band bins, scaled to unit norm in time
    (sum_t |h_c(t)|^2 = sum_k |.|^2 / N_FFT = 1).

    spectra: (T, K); gain: (K,); asd: (..., K) broadcasting against (T, 1.., K)."""
    white = 2.0 * gain * spectra / asd
    return white / np.sqrt(np.sum(np.abs(white) ** 2, axis=-1, keepdims=True) / N_FFT)


def _chirp_coordinates(params: np.ndarray) -> np.ndarray:
    """(log tau0, log tau3) at 20 Hz and chi: where nearby templates are looked for, (T, 3)."""
    m1, m2, chi = params[:, 0], params[:, 1], params[:, 2]
    msun_s = 4.925490947641267e-06  # G Msun / c^3 in s (lal.MTSUN_SI)
    m = (m1 + m2) * msun_s
    eta = m1 * m2 / (m1 + m2) ** 2
    x = np.pi * m * 20.0
    tau0 = 5.0 / (256.0 * np.pi * 20.0 * eta) * x ** (-5.0 / 3.0)
    tau3 = 1.0 / (8.0 * 20.0 * eta) * x ** (-2.0 / 3.0)
    return np.stack([np.log(tau0), np.log(tau3), chi], axis=-1)


def _match(a: torch.Tensor, b: torch.Tensor, max_lag: int) -> torch.Tensor:
    """Match of unit-norm whitened templates, maximised over phase and over even lags
    |lag| <= max_lag samples: a (C, K), b (C, k, K) -> (C, k).

    K < N_FFT / 2, so an N_FFT / 2-point inverse FFT gives the correlation at every other
    lag, exactly: half the work of the full one, for a match at most ~2 % low (median 0.06 %)
    where the peak falls between two even lags. Placement only decides "matched or not"."""
    z = torch.fft.ifft(a[:, None] * b.conj(), n=N_FFT // 2, dim=-1) * 0.5
    h = max_lag // 2
    near = torch.cat([z[..., : h + 1], z[..., N_FFT // 2 - h :]], dim=-1)
    return near.abs().amax(dim=-1)


def _draw_candidates(rng: np.random.Generator, n: int, spin_max: float) -> np.ndarray:
    masses = np.sort(rng.uniform(*MASS_RANGE, size=(n, 2)), axis=1)[:, ::-1]
    chi = rng.uniform(-spin_max, spin_max, size=(n, 1)) if spin_max > 0 else np.zeros((n, 1))
    return np.concatenate([masses, chi], axis=1)


def check_placement(min_match: float, spin_max: float) -> None:
    if not 0.0 < min_match < 1.0:
        raise MatchedFilterError(f"min_match must be in (0, 1), got {min_match}")
    if not 0.0 <= spin_max < 1.0:
        raise MatchedFilterError(f"spin_max must be in [0, 1), got {spin_max}")


def place_templates(
    psd: np.ndarray,
    min_match: float = DEFAULT_MIN_MATCH,
    spin_max: float = 0.0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    batch: int = 256,
    neighbours: int = 32,
    stop_rate: float = 0.01,
    stop_window: int | None = None,
    max_candidates: int = 200_000,
) -> np.ndarray:
    """Stochastic placement: (T, 3) mass1, mass2, chi of a bank covering the generator's prior.

    Candidates are drawn uniformly in component masses (``MASS_RANGE``) and, with
    ``spin_max`` > 0, in an aligned spin chi (both components) within +-spin_max; a candidate
    joins the bank when its match with every template already there (max over time and phase,
    whitened by H1's ``psd``) is below ``min_match``. It stops when fewer than ``stop_rate``
    of the last ``stop_window`` (default ``STOP_WINDOW``) candidates were accepted, i.e. when
    ~99 % of the prior already has a template within ``min_match``. Each candidate is compared
    with its ``neighbours`` nearest templates in (log tau0, log tau3, chi), not the whole bank:
    a miss only adds a spare template. Deterministic for a given seed and PSD.
    """
    check_placement(min_match, spin_max)
    stop_window = STOP_WINDOW if stop_window is None else int(stop_window)
    gain, k0, k1 = _band_gain()
    asd = np.sqrt(_psd_on_grid(np.asarray(psd, dtype=np.float64), N_FFT)[0, k0:k1])
    max_lag = round(MATCH_MAX_LAG * SAMPLE_RATE)
    rng = np.random.default_rng(seed)
    params = np.zeros((0, 3))
    coords = np.zeros((0, 3))
    white = torch.zeros((0, k1 - k0), dtype=torch.complex64, device=device)
    history: list[tuple[int, int]] = []  # (candidates, accepted) per batch
    drawn = 0
    while drawn < max_candidates:
        # Small batches while the bank is small: the candidates of one batch are compared
        # with each other one by one.
        n = int(np.clip(len(params), 16, batch))
        cand = _draw_candidates(rng, n, spin_max)
        drawn += n
        w = torch.from_numpy(_whiten(_template_spectra(cand)[:, k0:k1], gain[k0:k1], asd))
        w = w.to(torch.complex64).to(device)
        covered = np.zeros(n, dtype=bool)
        if len(params):
            k = min(neighbours, len(params))
            c = _chirp_coordinates(cand)
            dist = np.sum((c[:, None] - coords[None]) ** 2, axis=-1)
            near = torch.from_numpy(np.argpartition(dist, k - 1, axis=1)[:, :k]).to(device)
            for s in range(0, n, 16):
                m = _match(w[s : s + 16], white[near[s : s + 16]], max_lag)
                covered[s : s + 16] = (m.amax(dim=1) >= min_match).cpu().numpy()
        accepted: list[int] = []
        for j in np.flatnonzero(~covered):
            if accepted:
                m = _match(w[j : j + 1], w[accepted][None], max_lag)
                if m.max().item() >= min_match:
                    continue
            accepted.append(int(j))
        params = np.concatenate([params, cand[accepted]])
        coords = np.concatenate([coords, _chirp_coordinates(cand[accepted])])
        white = torch.cat([white, w[accepted]])
        history.append((n, len(accepted)))
        recent, total = [], 0
        for h in reversed(history):  # the last >= stop_window candidates
            recent.append(h)
            total += h[0]
            if total >= stop_window:
                break
        if total >= stop_window and sum(a for _, a in recent) < stop_rate * total:
            break
    else:
        log.warning("template placement stopped at %d candidates (max_candidates) with %d "
                    "templates; the bank may have holes", drawn, len(params))
    log.info("placed %d templates (min match %.3g, spin_max %.2g) from %d candidates",
             len(params), min_match, spin_max, drawn)
    return params


@dataclass
class Bank:
    """Whitened templates and everything the filter needs; made by :func:`build_bank`.

    Frequencies are the bins ``k0 .. k0 + K - 1`` of an ``N_FFT``-point FFT (df = 1/3 Hz)
    where the band gain is nonzero; lags are merger times from the data's start in units of
    ``time_step`` samples, ``lag0 .. lag0 + n_lag - 1``.
    """

    params: np.ndarray  # (T, 3) mass1, mass2 (Msun), chi (aligned spin of both components)
    filters: torch.Tensor  # (T, 3, K) complex64: conj(2 G H / ASD_i), unit norm in time
    sigma2: torch.Tensor  # (T, 3, n_lag) float32: noise variance per quadrature at each lag
    data_weight: torch.Tensor  # (3, K) float64: 1 / (ASD_i sqrt(fs / 4)) on the band bins
    gain: torch.Tensor  # (K,) float64: the band gain G on the band bins
    window: torch.Tensor  # (N_TIME,) float64: the data window
    k0: int
    lag0: int
    pool: tuple[int, ...]  # half-widths (lags) of each detector's offset from H1
    search: slice  # H1 merger times searched, as positions in the lag range
    time_step: int = DEFAULT_TIME_STEP  # samples between lags: 1, or 2 (half the FFT work)

    def __len__(self) -> int:
        return len(self.params)

    @property
    def device(self) -> torch.device:
        return self.filters.device

    def to(self, device) -> Bank:
        for name in ("filters", "sigma2", "data_weight", "gain", "window"):
            setattr(self, name, getattr(self, name).to(device))
        return self


def _psd_on_grid(psd: np.ndarray, n_fft: int) -> np.ndarray:
    """A (3, n_freq) PSD on 0 .. fs/2, interpolated as an ASD (like ``Whiten``) onto the
    rFFT grid of ``n_fft``: (3, n_fft // 2 + 1) float64."""
    grid = np.linspace(0.0, SAMPLE_RATE / 2, psd.shape[-1])
    freqs = np.fft.rfftfreq(n_fft, 1.0 / SAMPLE_RATE)
    return np.stack([np.interp(freqs, grid, np.sqrt(p)) ** 2 for p in psd])


def _light_travel_samples() -> tuple[int, ...]:
    """Half-widths in samples of each detector's offset from H1: light travel + 1 sample."""
    lal, _, _ = lal_modules()
    sites = [lal.cached_detector_by_prefix[d] for d in DETECTORS]
    dt = [lal.LightTravelTime(sites[0], s) * 1e-9 for s in sites]  # ns -> s
    return tuple(math.ceil(t * SAMPLE_RATE) + 1 if t > 0 else 0 for t in dt)


def _geocentre_reach() -> float:
    """The largest light-travel time (s) from the geocentre to any of the detectors."""
    lal, _, _ = lal_modules()
    return max(float(np.linalg.norm(lal.cached_detector_by_prefix[d].location)) / lal.C_SI
               for d in DETECTORS)


def _check_psd(psd) -> np.ndarray:
    psd = np.asarray(psd, dtype=np.float64)
    if psd.ndim != 2 or psd.shape[0] != len(DETECTORS) or psd.shape[1] < 2:
        raise MatchedFilterError(f"psd must be (3, n_freq), got shape {psd.shape}")
    return psd


def build_bank(
    psd: np.ndarray,
    params: np.ndarray | None = None,
    device: str | torch.device = "cpu",
    time_step: int = DEFAULT_TIME_STEP,
    **placement,
) -> Bank:
    """Generate and whiten the templates ``params`` (T, 3) (mass1, mass2, chi), or those
    :func:`place_templates` places for ``psd`` with ``placement`` (min_match, spin_max, seed).

    psd: (3, n_freq) one-sided noise PSD in 1/Hz on a grid from 0 to fs/2 (e.g. (3, 2049) from
    :func:`preprocess.psd.training_psd`). Returns the :class:`Bank` on ``device``.
    """
    psd = _check_psd(psd)
    if time_step not in (1, 2):
        raise MatchedFilterError(f"time_step must be 1 or 2, got {time_step}")
    gain, k0, k1 = _band_gain()
    s = _psd_on_grid(psd, N_FFT)[:, k0:k1]
    if not (np.isfinite(s).all() and (s > 0).all()):
        raise MatchedFilterError("psd is zero, negative or not finite inside the band")
    asd = np.sqrt(s)
    if params is None:
        params = place_templates(psd, device=device, **placement)
    params = np.atleast_2d(np.asarray(params, dtype=np.float64))
    if params.shape[1:] != (3,):
        raise MatchedFilterError(f"params must be (T, 3) mass1, mass2, chi; got {params.shape}")
    white = _whiten(_template_spectra(params)[:, None, k0:k1], gain[k0:k1], asd)  # (T, 3, K)

    # sigma_i(t)^2 = sum_u W(u)^2 |h_c(u - t)|^2: the window-weighted template power at lag t,
    # a correlation done by FFT once per template.
    full = np.zeros((len(params), len(DETECTORS), N_FFT), dtype=np.complex128)
    full[..., k0:k1] = white
    power = np.abs(np.fft.ifft(full, axis=-1)) ** 2  # |h_c(u)|^2, sums to 1
    w2 = np.zeros(N_FFT)
    w2[:N_TIME] = tukey(N_TIME, WINDOW_ALPHA) ** 2
    sigma2_all = np.fft.ifft(np.fft.fft(w2) * np.conj(np.fft.fft(power, axis=-1)), axis=-1).real

    # Lags: every time_step-th sample from before the earliest to after the latest merger
    # time searched, widened by the largest offset of L1 and V1 from H1.
    pool = tuple(math.ceil(p / time_step) for p in _light_travel_samples())
    reach = _geocentre_reach() + TIME_MARGIN
    first = math.floor((MERGER_TIMES[0] - reach) * SAMPLE_RATE / time_step)
    last = math.ceil((MERGER_TIMES[1] + reach) * SAMPLE_RATE / time_step)
    lag0, lag1 = first - max(pool), last + max(pool) + 1  # in units of time_step samples
    sigma2 = sigma2_all[..., lag0 * time_step : lag1 * time_step : time_step]
    if (sigma2 <= 0).any():
        raise MatchedFilterError("a template has no power inside the data at some lag")

    data_weight = 1.0 / (asd * math.sqrt(SAMPLE_RATE / 4.0))
    return Bank(
        params=params,
        filters=torch.from_numpy(np.conj(white)).to(torch.complex64).to(device),
        sigma2=torch.from_numpy(sigma2).to(torch.float32).to(device),
        data_weight=torch.from_numpy(data_weight).to(device),
        gain=torch.from_numpy(gain[k0:k1].copy()).to(device),
        window=torch.from_numpy(tukey(N_TIME, WINDOW_ALPHA)).to(device),
        k0=k0,
        lag0=lag0,
        pool=pool,
        search=slice(first - lag0, last + 1 - lag0),
        time_step=time_step,
    )
