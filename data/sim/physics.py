"""Physics of the synthetic generator: detector noise (the O3 curves with a low-frequency wall),
precessing BBH signals projected onto H1, L1 and V1, and their SNR. Pure functions over numpy
arrays: strain float64 at ``SAMPLE_RATE`` (2048 Hz), rows in ``DETECTORS`` order; PSDs
one-sided, 1/Hz, float64 (docs/synthetic-data.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import lal
import lalsimulation
import numpy as np

from data.layout import DETECTORS, N_TIME, SAMPLE_RATE

DELTA_T = 1.0 / SAMPLE_RATE

PSD_CURVES = {
    "H1": "SimNoisePSDaLIGOaLIGOO3LowT1800545",
    "L1": "SimNoisePSDaLIGOaLIGOO3LowT1800545",
    "V1": "SimNoisePSDAdVO3LowT1800545",
}
# (f_join in Hz, alpha): below f_join the PSD is S(f_join) * (max(f, F_FLOOR) / f_join) ** -alpha.
LOW_FREQUENCY_MODEL = {"H1": (15.0, 5.0), "L1": (15.0, 5.0), "V1": (17.0, -4.0)}
F_FLOOR = 3.0  # Hz; the red wall is flat below this, so its power stays finite
NOISE_OVERSAMPLE = 4  # noise is drawn over 4 x N_TIME and cropped to the middle N_TIME

APPROXIMANT = "IMRPhenomPv2"
F_REF = 20.0  # Hz; spins and phase are defined at this frequency
F_START_MIN = 15.0  # Hz; lowest waveform start frequency (below it the red wall hides everything)
START_MARGIN = 0.5  # s; the chirp starts this long (Newtonian) before the sample does
GPS_REFERENCE = 1238166018.0  # 2019-04-01 15:00:00 UTC, start of O3
REFERENCE_DISTANCE_MPC = 1000.0  # waveforms are made at this distance and then rescaled

F_LOW, F_HIGH = 20.0, 1000.0  # Hz; band of the SNR and of the oracle

_PAD = 256  # samples of room either side of the sample window while projecting


@dataclass(frozen=True)
class Source:
    """One binary black hole and where it sits on the sky and in the sample.

    Masses in solar masses (detector frame, ``mass1 >= mass2``); spins are dimensionless
    vectors at ``F_REF`` in lalsimulation's source frame; angles in radians; ``merger_time`` in
    seconds from the start of the sample, at the geocentre.
    """

    mass1: float
    mass2: float
    spin1: tuple[float, float, float]
    spin2: tuple[float, float, float]
    inclination: float
    phase: float
    ra: float
    dec: float
    psi: float
    merger_time: float


def _lal_curve(name: str, f0: float, delta_f: float, n_freq: int) -> np.ndarray:
    # The lalsimulation tabulated curves always leave the last bin 0 (they take it for
    # Nyquist), so ask for one more and drop it.
    series = lal.CreateREAL8FrequencySeries(
        "psd", 0, f0, delta_f, lal.DimensionlessUnit, n_freq + 1
    )
    getattr(lalsimulation, name)(series, 0.0)
    return series.data.data[:n_freq].copy()


@lru_cache(maxsize=None)
def _lal_psd_cached(detector: str, n_time: int, sample_rate: int) -> np.ndarray:
    curve = _lal_curve(PSD_CURVES[detector], 0.0, sample_rate / n_time, n_time // 2 + 1)
    curve[-1] = 0.0  # Nyquist: the curve is undefined there
    curve.flags.writeable = False
    return curve


def lal_psd(detector: str, n_time: int = N_TIME, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The published curve on ``np.fft.rfftfreq(n_time, 1 / sample_rate)``: (n_time // 2 + 1,)
    1/Hz.

    0 below the curve's lowest tabulated frequency (9 Hz aLIGO, 10 Hz AdV) and at Nyquist.
    """
    if detector not in PSD_CURVES:
        raise ValueError(f"unknown detector {detector!r}; expected one of {DETECTORS}")
    return _lal_psd_cached(detector, int(n_time), int(sample_rate))


@lru_cache(maxsize=None)
def _noise_psd_cached(n_time: int, sample_rate: int) -> np.ndarray:
    freqs = np.fft.rfftfreq(n_time, 1.0 / sample_rate)
    out = np.empty((len(DETECTORS), freqs.size))
    for i, det in enumerate(DETECTORS):
        f_join, alpha = LOW_FREQUENCY_MODEL[det]
        s_join = _lal_curve(PSD_CURVES[det], f_join, 1.0, 1)[0]
        psd = lal_psd(det, n_time, sample_rate).copy()
        low = freqs < f_join
        psd[low] = s_join * (np.maximum(freqs[low], F_FLOOR) / f_join) ** -alpha
        psd[-1] = psd[-2]  # Nyquist: repeat the neighbour so dividing by the PSD is safe
        out[i] = psd
    out.flags.writeable = False
    return out


def noise_psd(n_time: int = N_TIME, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The noise model (docs/synthetic-data.md, Notes from the code) on
    ``rfftfreq(n_time, 1 / sample_rate)``.

    Returns (3, n_time // 2 + 1) float64 in 1/Hz, rows H1, L1, V1, nonzero everywhere up to
    the curves' end (~40 kHz, far above any sample rate used here; the value at 0 Hz is the
    flat floor; the noise itself has no DC component). Cached per (n_time, sample_rate): ask
    for few distinct lengths.
    """
    return _noise_psd_cached(int(n_time), int(sample_rate))


@lru_cache(maxsize=None)
def _noise_amplitude(n: int) -> np.ndarray:
    # With numpy's irfft (1/n normalisation) a stationary series of one-sided PSD S has
    # E|X_k|^2 = n S(f_k) / (2 dt); real and imaginary parts each carry half of that.
    amp = np.sqrt(noise_psd(n) * n / (4.0 * DELTA_T))
    amp[:, 0] = 0.0  # zero mean
    amp[:, -1] = 0.0  # the Nyquist bin of a real series is real; leave it out
    amp.flags.writeable = False
    return amp


def coloured_noise(rng: np.random.Generator, n_time: int = N_TIME) -> np.ndarray:
    """Gaussian noise with PSD :func:`noise_psd`: (3, n_time) float64 strain."""
    n = NOISE_OVERSAMPLE * n_time
    amp = _noise_amplitude(n)
    re_im = rng.standard_normal((2, len(DETECTORS), n // 2 + 1))
    spectrum = amp * (re_im[0] + 1j * re_im[1])
    series = np.fft.irfft(spectrum, n=n, axis=-1)
    start = (n - n_time) // 2
    return np.ascontiguousarray(series[:, start : start + n_time])


def start_frequency(mass1: float, mass2: float, time_to_merger: float) -> float:
    """Newtonian GW frequency (Hz) at which a binary has ``time_to_merger`` s left."""
    m_total = mass1 + mass2
    chirp_mass_s = (mass1 * mass2) ** 0.6 / m_total**0.2 * lal.MTSUN_SI
    # tau = 5/256 (pi f)^(-8/3) Mc^(-5/3), inverted for f.
    return (256.0 * time_to_merger / 5.0) ** -0.375 * chirp_mass_s**-0.625 / np.pi


def polarisations(
    source: Source,
    distance_mpc: float = REFERENCE_DISTANCE_MPC,
    sample_rate: int = SAMPLE_RATE,
    approximant: str = APPROXIMANT,
) -> tuple[np.ndarray, np.ndarray, float]:
    """h+ and hx from ``approximant`` at ``sample_rate``, and the time (s) of their first sample.

    The time is relative to the merger (``t = 0`` of the waveform, ≈ peak amplitude), so
    negative. The waveform starts early enough to cover the sample from its first sample when
    the source is light enough to chirp for that long above ``F_START_MIN``. An approximant
    lalsimulation does not know is a ValueError naming it.
    """
    f_start = max(
        F_START_MIN,
        start_frequency(source.mass1, source.mass2, source.merger_time + START_MARGIN),
    )
    try:
        approx = lalsimulation.GetApproximantFromString(approximant)
    except RuntimeError:
        raise ValueError(f"lalsimulation knows no approximant {approximant!r}") from None
    hp, hc = lalsimulation.SimInspiralChooseTDWaveform(
        source.mass1 * lal.MSUN_SI,
        source.mass2 * lal.MSUN_SI,
        *source.spin1,
        *source.spin2,
        distance_mpc * 1e6 * lal.PC_SI,
        source.inclination,
        source.phase,
        0.0,  # longAscNodes
        0.0,  # eccentricity
        0.0,  # meanPerAno
        1.0 / sample_rate,
        f_start,
        F_REF,
        None,
        approx,
    )
    return hp.data.data, hc.data.data, float(hp.epoch)


def antenna_patterns(
    ra: float, dec: float, psi: float, gps: float = GPS_REFERENCE
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """F+, Fx and the arrival delay after the geocentre (s) for each detector, each (3,)."""
    gmst = lal.GreenwichMeanSiderealTime(lal.LIGOTimeGPS(gps))
    fplus, fcross, delay = np.empty(3), np.empty(3), np.empty(3)
    for i, det in enumerate(DETECTORS):
        site = lal.cached_detector_by_prefix[det]
        fplus[i], fcross[i] = lal.ComputeDetAMResponse(site.response, ra, dec, psi, gmst)
        delay[i] = lal.TimeDelayFromEarthCenter(site.location, ra, dec, gps)
    return fplus, fcross, delay


@lru_cache(maxsize=None)
def _edge_ramp() -> np.ndarray:
    # Half-Hann ramp over the outer half of the padding: the waveform is cut at the buffer's
    # edges, and a hard cut would ring through the fractional-delay phase factor.
    n = _PAD // 2
    ramp = 0.5 * (1.0 - np.cos(np.pi * (np.arange(n) + 0.5) / n))
    ramp.flags.writeable = False
    return ramp


def project(source: Source, distance_mpc: float = REFERENCE_DISTANCE_MPC) -> np.ndarray:
    """The signal of ``source`` as it lies in each detector's 2 s sample: (3, N_TIME) strain."""
    hp, hc, t_first = polarisations(source, distance_mpc)
    fplus, fcross, delay = antenna_patterns(source.ra, source.dec, source.psi)
    first = (source.merger_time + t_first) * SAMPLE_RATE
    return project_waveform(hp, hc, first, N_TIME, fplus, fcross, delay)


def project_waveform(
    hp: np.ndarray,
    hc: np.ndarray,
    first: float,
    n_time: int,
    fplus: np.ndarray,
    fcross: np.ndarray,
    delay: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """``F+ h+ + Fx hx`` per detector, delayed, in a window of ``n_time`` samples: (3, n_time).

    ``hp``, ``hc``: (n,) polarisations at ``sample_rate``, their first sample at (fractional)
    index ``first`` of the window at the geocentre; ``fplus``, ``fcross``, ``delay`` (s): (3,)
    from :func:`antenna_patterns`. The waveform is placed at whole-sample precision in a buffer
    with ``_PAD`` samples of room either side of the window, cut (with a half-Hann ramp) where
    it leaves the buffer; the remaining fractional sample and each detector's delay (at most
    21 ms = 44 samples at 2048 Hz) are one phase factor in the frequency domain.
    """
    n_buf = n_time + 2 * _PAD
    first = first + _PAD  # buffer index of hp[0]
    whole = int(np.floor(first + 0.5))
    frac = first - whole
    k0, k1 = max(0, -whole), min(hp.size, n_buf - whole)
    buf = np.zeros((2, n_buf))
    if k1 > k0:
        buf[0, whole + k0 : whole + k1] = hp[k0:k1]
        buf[1, whole + k0 : whole + k1] = hc[k0:k1]
    ramp = _edge_ramp()
    buf[:, : ramp.size] *= ramp
    buf[:, -ramp.size :] *= ramp[::-1]

    spectrum = np.fft.rfft(buf, axis=-1)
    dt = 1.0 / sample_rate
    freqs = np.fft.rfftfreq(n_buf, dt)
    shift = np.exp(-2j * np.pi * freqs * (frac * dt + delay[:, None]))
    det_spectrum = (fplus[:, None] * spectrum[0] + fcross[:, None] * spectrum[1]) * shift
    strain = np.fft.irfft(det_spectrum, n=n_buf, axis=-1)
    return np.ascontiguousarray(strain[:, _PAD : _PAD + n_time])


@lru_cache(maxsize=None)
def band_bins(n_time: int, sample_rate: int) -> np.ndarray:
    freqs = np.fft.rfftfreq(n_time, 1.0 / sample_rate)
    band = np.flatnonzero((freqs >= F_LOW) & (freqs <= F_HIGH))
    band.flags.writeable = False
    return band


def optimal_snr(signal: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Per-detector optimal SNR of ``signal`` (3, n) against :func:`noise_psd`: (3,).

    The 2 s samples have n = N_TIME (a 0.5 Hz grid); a longer signal gets a finer grid, and
    the PSD is taken on it (cached per length, so keep the lengths few).
    """
    n_time = signal.shape[-1]
    dt = 1.0 / sample_rate
    band = band_bins(n_time, sample_rate)
    spectrum = np.fft.rfft(signal, axis=-1)[:, band] * dt
    delta_f = 1.0 / (n_time * dt)
    psd = noise_psd(n_time, sample_rate)[:, band]
    rho2 = 4.0 * delta_f * np.sum(np.abs(spectrum) ** 2 / psd, axis=-1)
    return np.sqrt(rho2)


def snr_scale(signal: np.ndarray, network_snr: float, sample_rate: int = SAMPLE_RATE):
    """The factor that brings ``signal`` (3, n) to network optimal SNR ``network_snr``, and the
    per-detector SNRs (3,) after scaling: ``(scale, snr_i)``."""
    snr_i = optimal_snr(signal, sample_rate)
    reference_snr = float(np.sqrt(np.sum(snr_i**2)))
    scale = network_snr / reference_snr
    return scale, snr_i * scale
