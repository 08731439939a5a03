"""The matched-filter search over long strain (``g2net-search --matched-filter``): the project's
template bank (:mod:`infer.matched_filter`) filtered over the whole strain, the network
statistic of :func:`infer.matched_filter.filter.bank_statistic` kept per bin of
``matched_filter.bin`` s at zero lag and in every time slide, then the neural search's
triggers, FARs and outputs (:func:`infer.search.pipeline.report`).

Per PSD block (``psd.block`` s of merger times), detector i and template h, one FFT of N =
``matched_filter.segment`` s holds the block's merger times and the filters' reach
(overlap-save, exact: the filters are finite, :data:`WHITEN`):

    rho_i^2(t) = 2 |sum_k X_i(k) conj(G H(k)) / S_i(k) e^{2 pi i k t / N}|^2
                 / ((N fs / 2) sum_k |G H(k)|^2 / S_i(k)),      k in the band (G > 0)

X_i the rFFT of the data (no window), S_i the block's median-Welch PSD with its inverse ASD
cut to 2 s (:func:`inverse_asd`), G H the bank's template (:func:`make_templates`).
E|X(k)|^2 = (N fs / 2) S(k) in stationary noise, so rho^2 is chi^2 with 2 degrees of freedom
at every kept t. Then, per bin b of merger times and template h:
H_b = max_{t in b} rho_H1^2(t), L_b = max_{t in b} max_{|d| <= T_HL} rho_L1^2(t + d) and V_b
likewise (T_HV), and slide k scores bin b with sqrt(max_h [H_b + L_src(b) + V_src(b)]), src
the circular shifts of :func:`infer.search.grid.slide_rows` (zero lag: src(b) = b). How this
differs from the 2-s statistic: docs/search.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from data import devices
from data.config import ConfigError, save_config, to_dict
from data.layout import DETECTORS, N_TIME, SAMPLE_RATE
from data.progress import progress_bar
from data.strain import Strain, parse_strain, read_strain
from infer.matched_filter.bank import (
    BAND,
    BAND_RAMP,
    DEFAULT_TIME_STEP,
    N_FFT,
    POST_MERGER_SECONDS,
    TEMPLATE_SECONDS,
    MatchedFilterError,
    _light_travel_samples,
    _template_spectra,
    place_templates,
)
from infer.search.config import (
    CONFIG_FILE,
    LIGHT_TRAVEL,
    POST_KEYS,
    SEARCH_VERSION,
    SUMMARY_FILE,
    WINDOWS_FILE,
    SearchConfig,
    SearchError,
)
from infer.search.grid import Grid, bad_prefix, rings_of, slide_rows, whole_multiple, whole_samples
from infer.search.injections import read_injections
from infer.search.pipeline import ranking_key, report
from infer.search.psd import LocalPSD
from infer.search.scoring import WindowScores
from preprocess.config import WhitenConfig
from preprocess.spectral import tukey
from preprocess.transforms import bandpass_gain

log = logging.getLogger(__name__)

BANK_FILE = "bank.npz"
STEP = DEFAULT_TIME_STEP  # samples between merger times: z is exact there, the iFFTs half long
PRE = round(TEMPLATE_SECONDS * SAMPLE_RATE)  # template samples before the merger
POST = round(POST_MERGER_SECONDS * SAMPLE_RATE)  # and from it on
# Samples either side of a lag that the whitening filter 1 / ASD reaches: its time response,
# cut to the PSD's own 2-s Welch segments (:func:`inverse_asd`). A kept merger time's z then
# depends on data within 2 WHITEN of its template only: overlap-save is exact, with no taper.
WHITEN = N_TIME // 2
# Tukey alpha of the PSD's 2-s Welch segments: the preprocess default (0.25), which the neural
# search's local PSD and the 2-s matched filter's PSD (preprocess.psd.training_psd) use too,
# so the three whiten with the same estimate. The bank's 0.1 is a data window, not a PSD's.
PSD_ALPHA = WhitenConfig().alpha


@dataclass(frozen=True)
class Layout:
    """Samples at 2048 Hz around the merger times one FFT keeps: ``before`` them its data
    starts (L1/V1's pooling reach, the template, the data's and the template's whitening
    filters), ``after`` them it ends."""

    n_fft: int
    bin: int  # samples per bin
    pool: tuple[int, ...]  # per detector, half-width in steps of the offset from H1

    @property
    def reach(self) -> int:
        return STEP * max(self.pool)

    @property
    def before(self) -> int:
        return 2 * WHITEN + PRE + self.reach

    @property
    def after(self) -> int:
        return POST + self.reach + 2 * WHITEN


@dataclass
class Templates:
    """The bank's templates on the rFFT grid of ``n_fft`` samples, band bins ``k0 .. k0 + K - 1``
    only: ``spectra`` (T, K) complex64 G H of unit norm, ``power`` (T, K) float64 |G H|^2."""

    params: np.ndarray  # (T, 3) mass1, mass2 (Msun), chi
    spectra: torch.Tensor
    power: torch.Tensor
    k0: int
    n_fft: int

    def __len__(self) -> int:
        return len(self.params)


def make_templates(params: np.ndarray, n_fft: int, device: torch.device,
                   chunk: int = 64) -> Templates:
    """The bank's templates (:func:`_template_spectra`: IMRPhenomD, 2 s before the merger and
    0.25 s after, merger at sample 0) laid into ``n_fft`` samples, times the band gain G;
    made ``chunk`` at a time (an hour's bank at 32 s: ~40 MB each)."""
    params = np.atleast_2d(np.asarray(params, dtype=np.float64))
    gain = bandpass_gain(np.fft.rfftfreq(n_fft, 1.0 / SAMPLE_RATE), *BAND, BAND_RAMP)
    gain[0] = gain[-1] = 0.0
    band = np.flatnonzero(gain > 0)
    k0, k1 = int(band[0]), int(band[-1]) + 1
    # A band of fewer than n_fft / 2 bins gives z at every other sample from an n_fft / 2-point
    # inverse FFT (infer.matched_filter.filter.snr2_series).
    assert k1 - k0 <= n_fft // STEP, (k0, k1, n_fft)
    spectra = np.empty((len(params), k1 - k0), dtype=np.complex64)
    power = np.empty((len(params), k1 - k0))
    for s in range(0, len(params), chunk):
        buffers = np.fft.irfft(_template_spectra(params[s:s + chunk]), n=N_FFT, axis=-1)
        long = np.zeros((len(buffers), n_fft))
        long[:, :POST] = buffers[:, :POST]
        long[:, n_fft - PRE:] = buffers[:, N_FFT - PRE:]
        part = np.fft.rfft(long, axis=-1)[:, k0:k1] * gain[k0:k1]
        part /= np.sqrt(np.sum(np.abs(part) ** 2, axis=-1, keepdims=True))
        spectra[s:s + chunk] = part
        power[s:s + chunk] = np.abs(part) ** 2
    return Templates(params=params, spectra=torch.from_numpy(spectra).to(device),
                     power=torch.from_numpy(power).to(device), k0=k0, n_fft=n_fft)


def inverse_asd(psd: np.ndarray, n_fft: int) -> np.ndarray:
    """(3, n_fft // 2 + 1) float64 1 / ASD on the rFFT grid of ``n_fft`` samples, its time
    response cut to the N_TIME samples of the PSD's Welch segments (+-1 s) by a Hann window:
    PyCBC's inverse_spectrum_truncation. The Hann smooths 1 / ASD over 3 bins of the PSD's
    0.5 Hz grid (weights 1/4, 1/2, 1/4) and makes the filter the same whatever n_fft.

    psd: (3, N_TIME // 2 + 1) one-sided PSD in 1/Hz on 0 .. fs/2 (:class:`LocalPSD`)."""
    if psd.shape[-1] != N_TIME // 2 + 1:
        raise ValueError(f"psd: expected (3, {N_TIME // 2 + 1}), got {psd.shape}")
    inv = np.zeros_like(psd)
    inv[:, 1:-1] = 1.0 / np.sqrt(psd[:, 1:-1])
    window = np.roll(tukey(N_TIME, 1.0), N_TIME // 2)  # its peak at lag 0
    response = np.fft.irfft(inv, n=N_TIME, axis=-1) * window
    long = np.zeros((psd.shape[0], n_fft))
    long[:, :WHITEN] = response[:, :WHITEN]
    long[:, n_fft - WHITEN:] = response[:, WHITEN:]  # response[WHITEN] = 0: the window's zero
    return np.fft.rfft(long, axis=-1).real  # an even response: a real spectrum


def block_filters(psd: np.ndarray, templates: Templates) -> tuple[torch.Tensor, torch.Tensor,
                                                                  torch.Tensor]:
    """What one PSD (3, 2049) float64 in 1/Hz makes of the templates, with S = 1 /
    :func:`inverse_asd`^2: ``data_weight`` (3, K) float64 1 / sqrt(S N fs / 2), which whitens
    X to unit variance; ``template_weight`` (3, K) float32 a / sqrt(S), a per detector such
    that its largest value is 1 (1 / S overflows float32); ``scale`` (T, 3) float32
    n_ifft / sqrt(sigma^2 / 2), sigma^2 = sum_k |G H|^2 template_weight^2: |z|^2 chi^2 2 dof."""
    psd = np.asarray(psd, dtype=np.float64)
    if not (np.isfinite(psd).all() and (psd[:, 1:-1] > 0).all()):
        raise SearchError("a local PSD is zero, negative or not finite")
    n, k = templates.n_fft, templates.spectra.shape[-1]
    inv_asd = inverse_asd(psd, n)[:, templates.k0:templates.k0 + k]
    device = templates.spectra.device
    data_weight = torch.from_numpy(inv_asd / math.sqrt(n * SAMPLE_RATE / 2.0)).to(device)
    relative = torch.from_numpy(inv_asd / inv_asd.max(axis=-1, keepdims=True)).to(device)
    sigma2 = templates.power @ (relative ** 2).T  # (T, 3)
    scale = (n // STEP) / torch.sqrt(sigma2 / 2.0)
    return data_weight, relative.to(torch.float32), scale.to(torch.float32)


def snr2_series(x: np.ndarray, psd: np.ndarray, templates: Templates,
                template_chunk: int = 16):
    """Yields ``(templates slice, rho^2 (tc, 3, n) float32)``: each template's chi^2 (2 dof)
    SNR^2 per detector at the merger times ``2 WHITEN + PRE + STEP j`` (samples from x's
    start), j < n = (L - 4 WHITEN - PRE - POST) // STEP: those whose template and whitening
    filters lie in x, where z is the linear correlation (no wrap-around).

    x: (3, L) float64 finite strain at 2048 Hz, L <= n_fft; psd as :func:`block_filters`."""
    data_weight, template_weight, scale = block_filters(psd, templates)
    n, k = templates.n_fft, templates.spectra.shape[-1]
    data = torch.from_numpy(np.asarray(x, dtype=np.float64)).to(templates.spectra.device)
    # Float64 until whitened: raw strain below 15 Hz is ~100x the in-band amplitude.
    spec = torch.fft.rfft(data, n=n, dim=-1)[:, templates.k0:templates.k0 + k]
    white = (spec * data_weight).to(torch.complex64)  # (3, K), unit variance per bin
    first = (2 * WHITEN + PRE) // STEP
    count = (x.shape[-1] - 4 * WHITEN - PRE - POST) // STEP
    for start in range(0, len(templates), template_chunk):
        chunk = slice(start, min(start + template_chunk, len(templates)))
        filters = (templates.spectra[chunk, None].conj() * template_weight
                   * scale[chunk, :, None])  # (tc, 3, K)
        z = torch.fft.ifft(white * filters, n=n // STEP, dim=-1)[..., first:first + count]
        yield chunk, z.real ** 2 + z.imag ** 2


def bin_maxima(snr2: torch.Tensor, layout: Layout) -> torch.Tensor:
    """(tc, 3, n) rho^2 at merger times from ``layout.reach`` samples before a bin edge ->
    (tc, 3, n_bins): per bin the max of H1's, and of L1's and V1's each max-pooled over their
    light-travel offsets from H1 (``layout.pool``, as :func:`bank_statistic`); the first and
    last ``reach`` samples only feed the pooling."""
    tc, _, n = snr2.shape
    skip, per_bin = layout.reach // STEP, layout.bin // STEP
    n_bins = (n - 2 * skip) // per_bin
    out = []
    for i, half in enumerate(layout.pool):
        series = snr2[:, i]
        if half:
            series = F.max_pool1d(series[:, None], 2 * half + 1, stride=1, padding=half)[:, 0]
        kept = series[:, skip:skip + n_bins * per_bin]
        out.append(kept.reshape(tc, n_bins, per_bin).amax(dim=-1))
    return torch.stack(out, dim=1)


def network_scores(binned: torch.Tensor, rows: np.ndarray, template_chunk: int) -> torch.Tensor:
    """(W,) float64 sqrt(max_h sum_i binned[h, i, rows[i, w]]) of one slide of a ring.

    binned: (T, 3, W) per-bin rho^2 of the ring; rows: (3, W) bin offsets within the ring
    (:func:`infer.search.grid.slide_rows`)."""
    idx = torch.from_numpy(rows).to(binned.device)
    moved = [not np.array_equal(r, np.arange(rows.shape[1])) for r in rows]
    best = None
    for start in range(0, binned.shape[0], template_chunk):
        part = binned[start:start + template_chunk]
        total = None
        for i, shift in enumerate(moved):
            term = part[:, i].index_select(-1, idx[i]) if shift else part[:, i]
            total = term.clone() if total is None else total.add_(term)
        top = total.amax(dim=0)
        best = top if best is None else torch.maximum(best, top)
    return best.double().sqrt()


@dataclass
class BinPlan:
    """Which bins of merger times are analysed, before any FFT: bin b holds merger times
    [b, b + 1) x ``layout.bin`` samples from the strain's sample 0; it is clean when the
    data its FFT reads (``layout.before`` .. ``layout.after`` around it) are, and analysed
    when also its PSD block (``block`` bins) has ``psd.min_segments`` clean Welch segments."""

    grid: Grid
    layout: Layout
    block: int
    analysed: np.ndarray  # (grid.n,) bool
    rings: list[tuple[int, int]]
    counts: dict
    local: LocalPSD

    def centre(self, j: int) -> float:
        """Centre (samples) of the data the templates of block j's merger times cover."""
        a, e = j * self.block, min((j + 1) * self.block, self.grid.n)
        return (a + e) * self.layout.bin / 2 + (POST - PRE) / 2

    def first_psd(self) -> np.ndarray:
        """(3, 2049) the PSD of the first analysed block: the one the bank is placed with."""
        return self.local.psd(self.centre(int(np.argmax(self.analysed)) // self.block))[0]


def check_config(cfg: SearchConfig) -> None:
    """ConfigError / SearchError naming the key for settings this search cannot use."""
    mf = cfg.matched_filter
    if cfg.psd.source != "local":
        raise SearchError(f"psd.source={cfg.psd.source}: the matched-filter search has no "
                          "model card, hence no training PSD; use psd.source=local")
    if cfg.hard_negatives:
        raise ConfigError("hard_negatives: the loudest background windows are for training a "
                          "model on (inject.hard_negatives); the matched-filter search's bins "
                          "are not 2-s windows: leave it 0")
    if cfg.integrate:
        raise ConfigError("integrate: averages a neural search's window logits over time; the "
                          "matched filter's statistic is a network SNR per bin: leave it 0")
    bin_samples = whole_samples(mf.bin, SAMPLE_RATE, "matched_filter.bin")
    if bin_samples % STEP:
        raise ConfigError(f"matched_filter.bin: {mf.bin:g} s is not a multiple of {STEP} "
                          f"samples ({STEP / SAMPLE_RATE:g} s), the filter's time step")
    whole_multiple(cfg.slide_step, mf.bin, "slide_step", "matched_filter.bin")
    whole_multiple(cfg.psd.block, mf.bin, "psd.block", "matched_filter.bin")
    whole_samples(cfg.psd.hop, SAMPLE_RATE, "psd.hop")
    if cfg.slides and cfg.slide_step <= LIGHT_TRAVEL:
        raise ConfigError(f"slide_step: {cfg.slide_step:g} s is not longer than the light travel "
                          f"time between the sites ({LIGHT_TRAVEL * 1e3:.0f} ms)")
    if not 0.0 < mf.min_match < 1.0:
        raise ConfigError(f"matched_filter.min_match: must be in (0, 1), got {mf.min_match}")
    if not 0.0 <= mf.spin_max < 1.0:
        raise ConfigError(f"matched_filter.spin_max: must be in [0, 1), got {mf.spin_max}")
    if mf.template_chunk < 1:
        raise ConfigError(f"matched_filter.template_chunk: must be at least 1, got "
                          f"{mf.template_chunk}")
    n_fft = whole_samples(mf.segment, SAMPLE_RATE, "matched_filter.segment")
    margin = 4 * WHITEN + PRE + POST + 2 * STEP * 32  # pooling reach: at most 32 steps (31 ms)
    need = round(cfg.psd.block * SAMPLE_RATE) + margin
    if n_fft < need or n_fft % STEP:
        raise ConfigError(f"matched_filter.segment: {mf.segment:g} s must be an even number of "
                          f"samples holding a PSD block (psd.block={cfg.psd.block:g} s) and "
                          f"{margin / SAMPLE_RATE:.2f} s of template and whitening filter: at "
                          f"least {need / SAMPLE_RATE:.2f} s")


def plan_bins(strain: Strain, cfg: SearchConfig) -> BinPlan:
    """The bins of ``strain`` (2048 Hz), which are analysed, and their rings; SearchError when
    none is."""
    try:
        pool = tuple(math.ceil(p / STEP) for p in _light_travel_samples())
    except MatchedFilterError as e:
        raise SearchError(str(e)) from None
    bin_samples = round(cfg.matched_filter.bin * SAMPLE_RATE)
    layout = Layout(round(cfg.matched_filter.segment * SAMPLE_RATE), bin_samples, pool)
    assert layout.reach <= STEP * 32, layout  # check_config's margin
    grid = Grid(strain.t0, SAMPLE_RATE, bin_samples, bin_samples, strain.n // bin_samples)
    prefix = bad_prefix(strain.data)
    lo = np.arange(grid.n, dtype=np.int64) * bin_samples - layout.before
    hi = lo + layout.before + bin_samples + layout.after
    inside = (lo >= 0) & (hi <= strain.n)
    clean = np.zeros(grid.n, dtype=bool)
    clean[inside] = prefix[hi[inside]] == prefix[lo[inside]]
    block = round(cfg.psd.block / cfg.matched_filter.bin)
    local = LocalPSD(strain.data, prefix, PSD_ALPHA, SAMPLE_RATE, N_TIME,
                     whole_samples(cfg.psd.hop, SAMPLE_RATE, "psd.hop"), cfg.psd.span,
                     cfg.psd.min_segments)
    plan = BinPlan(grid, layout, block, clean, [], {}, local)
    has_psd = np.array([local.usable(plan.centre(j)) for j in range(-(-grid.n // block))],
                       dtype=bool)
    analysed = clean & np.repeat(has_psd, block)[:grid.n]
    counts = {"grid": int(grid.n), "clean": int(clean.sum()),
              "no_psd": int((clean & ~analysed).sum()), "analysed": int(analysed.sum())}
    if not analysed.any():
        raise SearchError(
            f"no bin can be analysed: {grid.n} bins of {cfg.matched_filter.bin:g} s, "
            f"{grid.n - counts['clean']} within the filter's reach "
            f"({layout.before / SAMPLE_RATE:.2f} s before, {layout.after / SAMPLE_RATE:.2f} s "
            "after) of missing or non-finite data "
            f"or the strain's ends, {counts['no_psd']} in blocks with fewer than "
            f"psd.min_segments={cfg.psd.min_segments} clean PSD segments (psd.span="
            f"{cfg.psd.span:g} s); the strain has {strain.duration:g} s")
    rings = rings_of(analysed, max(1, int(cfg.ring / cfg.matched_filter.bin)))
    return dataclasses.replace(plan, analysed=analysed, rings=rings, counts=counts)


def ring_snr2(strain: Strain, plan: BinPlan, templates: Templates, ring: tuple[int, int],
              template_chunk: int = 16, psd_of=None) -> torch.Tensor:
    """(T, 3, W) float32 per-bin rho^2 of the W bins of ``ring`` (:func:`bin_maxima`), one FFT
    per PSD block it meets. ``psd_of(j)``: block j's PSD (default: ``plan.local`` at
    :meth:`BinPlan.centre`)."""
    psd_of = psd_of or (lambda j: plan.local.psd(plan.centre(j))[0])
    a, b = ring
    lay = plan.layout
    out = torch.empty((len(templates), len(DETECTORS), b - a), dtype=torch.float32,
                      device=templates.spectra.device)
    for j in range(a // plan.block, (b - 1) // plan.block + 1):
        p0, p1 = max(a, j * plan.block), min(b, (j + 1) * plan.block)
        x = strain.data[:, p0 * lay.bin - lay.before:p1 * lay.bin + lay.after]
        for chunk, snr2 in snr2_series(x, psd_of(j), templates, template_chunk):
            out[chunk, :, p0 - a:p1 - a] = bin_maxima(snr2, lay)
    return out


def score_bins(strain: Strain, plan: BinPlan, params: np.ndarray, cfg: SearchConfig,
               device: torch.device, progress: bool = True) -> WindowScores:
    """Every analysed bin's network SNR at zero lag and in slides 1..cfg.slides:
    :class:`WindowScores` on the bin grid, scores (slides + 1, n_bins) float64, NaN where not
    analysed or where a ring is too short for the slide. ``seconds``: templates, psd, filter
    (the FFTs, with the PSDs' time taken out), zero_lag and slides (the network statistic)."""
    mf = cfg.matched_filter
    seconds = dict.fromkeys(("templates", "psd", "filter", "zero_lag", "slides"), 0.0)
    t = time.perf_counter()
    templates = make_templates(params, plan.layout.n_fft, device)
    seconds["templates"] = time.perf_counter() - t
    m = round(cfg.slide_step / mf.bin)
    slid = [DETECTORS.index(d) for d in cfg.slide_detectors]
    scores = np.full((cfg.slides + 1, plan.grid.n), np.nan)
    psd_segments: list[int] = []
    last: dict[int, np.ndarray] = {}  # a block may span two rings: one PSD for both

    def psd_of(j: int) -> np.ndarray:
        if j not in last:
            t = time.perf_counter()
            psd, used = plan.local.psd(plan.centre(j))
            last.clear()
            last[j] = psd
            psd_segments.append(used)
            seconds["psd"] += time.perf_counter() - t
        return last[j]

    bars = {"disable": not progress, "dynamic_ncols": True, "unit": "bin"}
    filter_bar = progress_bar(total=plan.counts["analysed"], desc="filter", **bars)
    slide_bar = progress_bar(total=plan.counts["analysed"] * cfg.slides, desc="slides", **bars)
    with torch.inference_mode():
        for a, b in plan.rings:
            t = time.perf_counter()
            psd_before = seconds["psd"]
            binned = ring_snr2(strain, plan, templates, (a, b), mf.template_chunk, psd_of)
            _sync(device)
            seconds["filter"] += time.perf_counter() - t - (seconds["psd"] - psd_before)
            filter_bar.update(b - a)
            for k in range(cfg.slides + 1):
                t = time.perf_counter()
                rows = slide_rows(b - a, k, m, len(slid), slid)
                if rows is not None:
                    scores[k, a:b] = network_scores(binned, rows, mf.template_chunk).cpu().numpy()
                seconds["zero_lag" if k == 0 else "slides"] += time.perf_counter() - t
                if k:
                    slide_bar.update(b - a)
    filter_bar.close()
    slide_bar.close()
    return WindowScores(grid=plan.grid, scores=scores, rings=plan.rings,
                        counts={**plan.counts, "templates": len(templates)}, seconds=seconds,
                        duration=strain.duration, psd_segments=psd_segments,
                        sources=strain.sources)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def template_bank(psd: np.ndarray, cfg: SearchConfig, out: Path,
                  device: torch.device) -> np.ndarray:
    """(T, 3) params placed by :func:`place_templates` for H1 of ``psd`` with
    ``matched_filter`` min_match, spin_max, seed; reused from ``out/bank.npz`` when placed
    there with the same settings and PSD."""
    mf = cfg.matched_filter
    key = hashlib.sha256(json.dumps({
        "min_match": mf.min_match, "spin_max": mf.spin_max, "seed": mf.seed,
        "psd": hashlib.sha256(np.ascontiguousarray(psd, dtype=np.float64)).hexdigest(),
        "device": device.type}, sort_keys=True).encode()).hexdigest()
    path = out / BANK_FILE
    if path.is_file():
        try:
            with np.load(path) as f:
                if str(f["key"]) == key:
                    log.info("reusing the template bank in %s", path)
                    return f["params"]
        except (OSError, ValueError, KeyError) as e:
            log.warning("%s: unreadable (%s); placing the bank again", path, e)
    try:
        params = place_templates(psd, mf.min_match, mf.spin_max, mf.seed, device=device)
    except MatchedFilterError as e:
        raise SearchError(str(e)) from None
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, params=params, key=np.array(key))
    tmp.replace(path)
    return params


def load_bank(path: str | Path) -> np.ndarray:
    """(T, 3) template params of another search's bank.npz; SearchError naming the file."""
    try:
        with np.load(path) as f:
            params = np.asarray(f["params"], dtype=np.float64)
    except (OSError, ValueError, KeyError) as e:
        raise SearchError(f"matched_filter.bank_file: {path}: not a bank.npz ({e})") from None
    if params.ndim != 2 or params.shape[1] != 3 or not len(params):
        raise SearchError(f"matched_filter.bank_file: {path}: params of shape {params.shape}, "
                          "expected (templates, 3)")
    return params


def cache_key(paths: dict[str, list[Path]], cfg: SearchConfig, device: torch.device) -> str:
    """What a bin's score depends on: the files (path, size, mtime), the score-changing
    settings (``matched_filter`` but its template_chunk), the device kind, SEARCH_VERSION."""
    files = {ifo: [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in ps]
             for ifo, ps in paths.items()}
    settings = {k: v for k, v in to_dict(cfg).items() if k not in POST_KEYS}
    settings["matched_filter"] = {k: v for k, v in to_dict(cfg.matched_filter).items()
                                  if k != "template_chunk"}
    key = {"version": SEARCH_VERSION, "search": "matched_filter", "files": files,
           "settings": settings, "device": device.type}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def run(strain: list[str], out: str | Path, cfg: SearchConfig,
        injections: str | Path | None = None, rescore: bool = False, accelerator=None,
        progress: bool = True) -> dict:
    """The matched-filter search from end to end (docs/search.md); returns the summary written
    to summary.json. Bin scores are reused from ``out/windows.npz`` made with the same files,
    settings and device kind unless ``rescore``."""
    from accelerate import Accelerator

    start = time.perf_counter()
    out = Path(out)
    accelerator = accelerator or Accelerator()
    device = accelerator.device
    # Everything that can refuse the inputs does so before the strain is read.
    check_config(cfg)
    paths = parse_strain(strain)
    table = read_injections(injections) if injections is not None else None
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / CONFIG_FILE)

    key = cache_key(paths, cfg, device)
    ws = None if rescore else WindowScores.load(out / WINDOWS_FILE, key)
    cached = ws is not None
    if cached:
        log.info("reusing the bin scores in %s (same inputs and settings)", out / WINDOWS_FILE)
    else:
        t = time.perf_counter()
        data = read_strain(paths, SAMPLE_RATE, cfg.channels)
        read_seconds = time.perf_counter() - t
        # On a CPU, one core is left to the bookkeeping (scoring.py, cfg.threads).
        threads = (cfg.threads or devices.cpu_threads(spare=1)) if device.type == "cpu" else None
        with devices.torch_threads(threads):
            plan = plan_bins(data, cfg)
            t = time.perf_counter()
            params = (load_bank(cfg.matched_filter.bank_file) if cfg.matched_filter.bank_file
                      else template_bank(plan.first_psd(), cfg, out, device))
            bank_seconds = time.perf_counter() - t
            ws = score_bins(data, plan, params, cfg, device, progress)
        ws.seconds.update(read=read_seconds, bank=bank_seconds)
        del data
        if cfg.save_windows:
            ws.save(out / WINDOWS_FILE, key)

    # A bin's trigger time is its centre: its loudest merger time lies anywhere in it.
    offset = ws.grid.stride_s / 2
    # A slid bin whose L1 or V1 row holds an injection's template or whitening sidelobes is
    # louder than noise: the veto reaches as far as the filter reads, not just 1 s.
    reach = (PRE + POST + 2 * WHITEN) / SAMPLE_RATE
    post = dataclasses.replace(cfg, trigger_time="loudest", trigger_offset=offset,
                               injection_veto=max(cfg.injection_veto, reach)
                               if cfg.injection_veto > 0 else 0.0)
    mf = cfg.matched_filter
    counts = {k: v for k, v in ws.counts.items() if k != "templates"}  # summary["windows"]
    # The bank used: another search's (bank_file) or the one placed in out/ for this strain.
    params = load_bank(mf.bank_file or out / BANK_FILE)
    identity = {"search": "matched_filter",
                "bank": hashlib.sha256(np.ascontiguousarray(params)).hexdigest(),
                "matched_filter": {k: v for k, v in to_dict(mf).items()
                                   if k not in ("template_chunk", "bank_file")}}
    extra = {"search": "matched_filter", "templates": ws.counts.get("templates"),
             "bank": {"min_match": mf.min_match, "spin_max": mf.spin_max, "seed": mf.seed},
             "cached": cached}
    summary = report(dataclasses.replace(ws, counts=counts), post, out, table, offset,
                     ranking_key(cfg, identity), injections=injections, extra=extra,
                     statistic="network SNR (bank)")
    summary["speed"] = _speed(ws, summary["analysed_seconds"])
    summary["files"]["bank"] = str(out / BANK_FILE)
    summary["seconds"]["total"] = round(time.perf_counter() - start, 3)
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def _speed(ws: WindowScores, analysed_seconds: float) -> dict:
    """Bins and strain seconds per wall second: zero lag (reading to network statistic), the
    filtering alone, and the slides."""
    s = ws.seconds
    zero_lag = sum(s.get(k, 0.0) for k in ("read", "psd", "bank", "templates", "filter",
                                           "zero_lag"))
    n_zero = int(np.isfinite(ws.scores[0]).sum())
    n_slid = int(np.isfinite(ws.scores[1:]).sum())
    slides = s.get("slides", 0.0)
    return {
        "windows_per_s": n_zero / zero_lag if zero_lag > 0 else None,  # bins
        "strain_s_per_s": analysed_seconds / zero_lag if zero_lag > 0 else None,
        "filter_strain_s_per_s": analysed_seconds / s["filter"] if s.get("filter") else None,
        "slide_windows_per_s": n_slid / slides if slides > 0 else None,
        "slides_s": round(slides, 3),
        "background_s_per_s": n_slid * ws.grid.stride_s / slides if slides > 0 else None,
    }
