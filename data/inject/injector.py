"""Signals from a waveform bank injected into whitened noise, a batch at a time, on the training
device: a source drawn from the bank, an isotropic sky position and polarisation angle, a
merger time in a window, the projection onto H1, L1 and V1 with fractional delays
(:mod:`data.inject.projection`), the network SNR rescaled to a draw from an
:class:`~data.inject.snr.SNRPrior` against the training PSD, and whitening by the same
transform that whitened the noise.

Why the sum is exact: whitening (mean removal, window, division by the ASD, band-pass) is
linear, so whitened noise + whitened signal is the whitening of noise + signal, which is what
stage one would have stored for a sample holding that signal. The noise can therefore be the
whitened strain a training store already keeps.

Every draw comes from the ``torch.Generator`` the caller passes: a batch is a pure function of
its generator's seed (training seeds one per (seed, epoch, batch, process), so a resumed run
draws exactly what the uninterrupted run would have, and each process draws its own).

Shapes: whitened strain (B, 3, T) float32, T = 4096 at 2048 Hz; SNRs (B,) float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from data.inject import INCOHERENT_KINDS, SWAP_DETECTORS
from data.inject.bank import PARAMS, Bank
from data.inject.projection import Detectors, antenna_patterns, geocentre_delays, gmst, project
from data.inject.snr import SNRPrior, rescale
from data.layout import N_TIME, SAMPLE_RATE
from data.sim.physics import GPS_REFERENCE


def psd_on_grid(psd: np.ndarray, n_time: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A (3, n_freq) one-sided PSD on a grid from 0 to fs / 2, interpolated (linearly, as an
    ASD, the way :class:`preprocess.transforms.Whiten` does) onto ``rfftfreq(n_time)``."""
    psd = np.asarray(psd, dtype=np.float64)
    grid = np.linspace(0.0, sample_rate / 2, psd.shape[-1])
    freqs = np.fft.rfftfreq(n_time, 1.0 / sample_rate)
    return np.stack([np.interp(freqs, grid, np.sqrt(p)) ** 2 for p in psd])


@dataclass
class Injected:
    """One batch: ``x`` whitened strain (B, 3, T) float32, ``target`` (B,) float32 (1 for a
    coherent signal), ``snr`` (B,) float64 network SNR injected (0 for pure noise; an
    incoherent negative keeps the SNR it was drawn at), ``kind`` (B,) int8: 0 noise,
    1 signal, 2 signal in one detector only, 3 one detector's signal from another source."""

    x: torch.Tensor
    target: torch.Tensor
    snr: torch.Tensor
    kind: torch.Tensor


@dataclass
class Sources:
    """What a signal is drawn from, (n,) each: ``row`` the bank row (int64), ``ra``, ``dec``
    (rad), ``psi`` (the polarisation angle, rad), ``merger`` (geocentre merger time, s from
    the window's start), ``snr`` (the network optimal SNR it is rescaled to)."""

    row: torch.Tensor
    ra: torch.Tensor
    dec: torch.Tensor
    psi: torch.Tensor
    merger: torch.Tensor
    snr: torch.Tensor

    def __len__(self) -> int:
        return int(self.row.shape[0])

    def take(self, idx: torch.Tensor) -> Sources:
        """The sources at ``idx``."""
        return Sources(*(getattr(self, f)[idx] for f in SOURCE_FIELDS))

    def put(self, mask: torch.Tensor, other: Sources) -> Sources:
        """These sources with those where ``mask`` is true replaced by ``other`` (one per true
        entry, in order), the merger times kept: where the window falls stays a fresh draw."""
        out = {f: getattr(self, f).clone() for f in SOURCE_FIELDS}
        for f in SOURCE_FIELDS:
            if f != "merger":
                out[f][mask] = getattr(other, f).to(out[f].device, out[f].dtype)
        return Sources(**out)


SOURCE_FIELDS = ("row", "ra", "dec", "psi", "merger", "snr")


class Injector:
    """Draws and injects signals from ``bank``.

    whiten: the transform that whitened the noise ((B, 3, T) strain -> (B, 3, T) float32),
    applied to each projected signal. psd: (3, n_freq) float64 1/Hz on a grid from 0 to fs/2,
    the PSD SNRs are measured against (the training PSD the whitening divides by).
    merger_window: (earliest, latest) geocentre merger time in s from the window's start; the
    bank must hold enough inspiral for the latest. gps: the time whose sidereal angle the
    antenna patterns use (with right ascension uniform, any fixed time gives the same
    distribution of responses). weights: (n_bank,) relative odds of drawing each bank row
    (:func:`mass_weights`); None = every row alike, the bank's own prior.
    """

    def __init__(self, bank: Bank, whiten: Callable[[torch.Tensor], torch.Tensor],
                 psd: np.ndarray, snr: SNRPrior, *, merger_window: tuple[float, float] = (1.3, 1.9),
                 device: torch.device | str = "cpu", n_time: int = N_TIME,
                 gps: float = GPS_REFERENCE, weights: np.ndarray | None = None):
        lo, hi = merger_window
        latest = float(bank.attrs["bank"]["max_merger_time"])
        if not 0 <= lo <= hi <= latest:
            raise ValueError(
                f"merger_window {list(merger_window)}: need 0 <= earliest <= latest <= "
                f"{latest:g} s, the latest merger time bank {bank.path} holds inspiral for "
                "(make a bank with a larger --max-merger-time)")
        if bank.sample_rate != SAMPLE_RATE:
            raise ValueError(f"bank {bank.path} is at {bank.sample_rate} Hz, not {SAMPLE_RATE}")
        self.device = torch.device(device)
        pol = torch.from_numpy(bank.polarisations)
        # Each waveform scaled to unit peak: its amplitude is set by the SNR anyway, and
        # strain of ~1e-21 would lose float32 range when squared.
        peak = pol.abs().amax(dim=(1, 2)).clamp_min(torch.finfo(torch.float32).tiny)
        self.polarisations = (pol / peak[:, None, None]).to(self.device)
        self.offset = torch.from_numpy(bank.merger_offset.copy()).to(self.device)
        self.bank_params = np.asarray(bank.params)  # (n_bank, len(PARAMS)): each row's source
        self.merger_index = bank.merger_index
        self.whiten = whiten
        self.snr_psd = torch.from_numpy(psd_on_grid(psd, n_time)).to(self.device)
        self.snr = snr
        self.merger_window = (float(lo), float(hi))
        self.n_time = n_time
        self.detectors = Detectors.from_lal().to(self.device)
        self.gmst = gmst(gps)
        self.weights = None
        if weights is not None:
            w = np.asarray(weights, dtype=np.float64)
            if w.shape != (len(bank.params),) or not np.isfinite(w).all() or (w < 0).any() \
                    or w.sum() <= 0:
                raise ValueError(f"weights: need {len(bank.params)} finite, non-negative odds, "
                                 "not all zero")
            self.weights = torch.from_numpy(w / w.sum())

    def rows(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """(n,) bank rows drawn with the injector's weights (uniformly without them)."""
        if self.weights is None:
            idx = torch.randint(0, self.polarisations.shape[0], (n,), generator=gen,
                                device=gen.device)
        else:
            idx = torch.multinomial(self.weights.to(gen.device), n, replacement=True,
                                    generator=gen)
        return idx.to(self.device)

    def _uniform(self, n: int, gen: torch.Generator, lo: float = 0.0, hi: float = 1.0):
        u = torch.rand(n, generator=gen, dtype=torch.float64, device=gen.device)
        return (lo + (hi - lo) * u).to(self.device)

    def draw(self, n: int, gen: torch.Generator, step: int = 0) -> Sources:
        """``n`` sources from the priors at training step ``step`` (:class:`Sources`)."""
        idx = self.rows(n, gen)
        ra = self._uniform(n, gen, 0.0, 2 * math.pi)
        dec = torch.asin(self._uniform(n, gen, -1.0, 1.0))
        psi = self._uniform(n, gen, 0.0, math.pi)
        merger = self._uniform(n, gen, *self.merger_window)
        snr = self.snr.sample(n, gen, step, device=self.device)
        return Sources(idx, ra, dec, psi, merger, snr)

    def render(self, src: Sources) -> torch.Tensor:
        """The whitened signals (n, 3, T) float32 of ``src``: projected onto the detectors,
        their network SNR rescaled to ``src.snr`` against the training PSD, whitened."""
        if src.row.numel() == 0:
            return torch.zeros(0, 3, self.n_time, device=self.device)
        fplus, fcross = antenna_patterns(src.ra, src.dec, src.psi, self.gmst, self.detectors)
        delay = geocentre_delays(src.ra, src.dec, self.gmst, self.detectors)
        first = src.merger * SAMPLE_RATE - self.merger_index - self.offset[src.row]
        pol = self.polarisations[src.row]
        strain = project(pol[:, 0], pol[:, 1], first, self.n_time, fplus.float(),
                         fcross.float(), delay.float())
        strain, _ = rescale(strain, self.snr_psd, src.snr)
        return self.whiten(strain).float()

    def signals(self, n: int, gen: torch.Generator, step: int = 0
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` whitened signals (n, 3, T) float32 at network SNRs drawn from the prior at
        training step ``step``, and those SNRs (n,)."""
        src = self.draw(n, gen, step)
        return self.render(src), src.snr

    def inject(self, noise: torch.Tensor, gen: torch.Generator, *, positive_fraction: float,
               incoherent_fraction: float = 0.0, step: int = 0,
               incoherent_kinds: tuple[str, ...] = INCOHERENT_KINDS,
               swap_detector: str = "uniform", swap_keep_snr: bool = False,
               hard: Sources | None = None, hard_fraction: float = 0.0) -> Injected:
        """``noise`` (B, 3, T) whitened, with a coherent signal added to a ``positive_fraction``
        of the samples (target 1) and an incoherent one to ``incoherent_fraction`` (target 0),
        of the ``incoherent_kinds`` in equal shares: ``single``, a signal in one detector only;
        ``swap``, a signal whose one detector's strain comes from another source (both as
        ML4GW's aframe trains against). ``swap_detector``: which detector a swap replaces,
        ``uniform`` (any, equal odds) or ``snr`` (drawn in proportion to its share of the
        signal's SNR^2).

        Why ``snr``: with three detectors a signal often has one weak detector (V1, or one
        whose antenna pattern nearly vanishes). Its strain replaced, the sample is labelled
        incoherent yet looks like a coherent signal, which could teach a model to doubt loud
        signals with a weak detector, the search model's misses at SNR 20-45. Trained with
        ``snr``, the search model missed the same ones, and reached 0.79 and 0.80 of the
        matched filter's sensitive distance at 1/month (two seeds) against 0.75 and 0.74 with
        ``uniform`` (docs/search.md, "More levers").

        ``swap_keep_snr``: the other source's row is rescaled to the SNR of the row it replaces,
        so a swap keeps the coherent signal's per-detector SNRs and differs from it in
        coherence alone. Without it the replacement brings its own SNR: a loud row beside weak
        ones then means "incoherent" in training, and a real signal whose SNR sits in one
        detector (antenna patterns allow it) scores like noise (docs/search.md, "Swaps that
        keep the SNR").

        ``hard``: hard positives (:func:`train.mine.mine_positives`: loud sources a model
        scored lowest); a coherent signal is one of them, drawn uniformly, with the odds
        ``hard_fraction``: its bank row, sky position, polarisation angle and SNR, its merger
        time still drawn. Left out (None), the batch's draws are those of a run without."""
        unknown = set(incoherent_kinds) - set(INCOHERENT_KINDS)
        if unknown or not incoherent_kinds:
            raise ValueError(f"incoherent kinds must be some of {list(INCOHERENT_KINDS)}, got "
                             f"{list(incoherent_kinds)}")
        if swap_detector not in SWAP_DETECTORS:
            raise ValueError(f"swap_detector must be one of {list(SWAP_DETECTORS)}, got "
                             f"{swap_detector!r}")
        b = noise.shape[0]
        u = self._uniform(b, gen)
        kind = torch.zeros(b, dtype=torch.int8, device=self.device)
        kind[u < positive_fraction] = 1
        incoherent = (u >= positive_fraction) & (u < positive_fraction + incoherent_fraction)
        # Drawn whatever the kinds, so that a batch's other draws do not depend on them.
        split = self._uniform(b, gen) < 0.5
        if "swap" not in incoherent_kinds:
            split[:] = True
        elif "single" not in incoherent_kinds:
            split[:] = False
        kind[incoherent & split] = 2
        kind[incoherent & ~split] = 3
        has = kind > 0
        k = kind[has]
        src = self.draw(int(has.sum()), gen, step)
        if hard is not None and hard_fraction > 0 and len(src):
            u = self._uniform(len(src), gen)
            pick = torch.randint(0, len(hard), (len(src),), generator=gen,
                                 device=gen.device).to(self.device)
            mask = (k == 1) & (u < hard_fraction)
            src = src.put(mask, hard.take(pick[mask].to(hard.row.device)))
        sig, snr = self.render(src), src.snr
        det = torch.randint(0, 3, (b,), generator=gen, device=gen.device).to(self.device)[has]
        one = torch.nn.functional.one_hot(det, 3).to(sig.dtype)[..., None]  # (m, 3, 1)
        swap = k == 3
        if bool(swap.any()):
            # Whitened by the PSD the SNRs are measured against: power per detector ~ SNR^2.
            power = sig[swap].double().square().sum(dim=-1)  # (s, 3)
            if swap_detector == "snr":
                cdf = power.cumsum(dim=1) / power.sum(dim=1, keepdim=True)
                u = self._uniform(int(swap.sum()), gen)
                det[swap] = (u[:, None] > cdf).sum(dim=1).clamp(max=2)
                one = torch.nn.functional.one_hot(det, 3).to(sig.dtype)[..., None]
            other, _ = self.signals(int(swap.sum()), gen, step)
            if swap_keep_snr:  # SNR ratio = sqrt(power ratio)
                rows, d = torch.arange(other.shape[0], device=other.device), det[swap]
                kept = power[rows, d]
                own = other[rows, d].double().square().sum(dim=-1).clamp_min(1e-30)
                other[rows, d] = other[rows, d] * torch.sqrt(kept / own).float()[:, None]
            sig[swap] = sig[swap] * (1 - one[swap]) + other * one[swap]
        single = k == 2
        sig[single] = sig[single] * one[single]
        x = noise.to(torch.float32).clone()
        x[has] += sig
        full_snr = torch.zeros(b, dtype=torch.float64, device=self.device)
        full_snr[has] = snr
        return Injected(x=x, target=(kind == 1).float(), snr=full_snr, kind=kind)


def mass_weights(params: np.ndarray, power: float) -> np.ndarray | None:
    """(n,) odds of drawing each bank row ∝ (mass1 + mass2)^power (``params`` (n, len(PARAMS))
    as :class:`~data.inject.bank.Bank` holds them); None for power 0 (every row alike).

    Why: drawn uniformly in each component mass (the bank's prior, and the generators'), a
    total mass under 30 Msun is 7 % of the signals; the search model trained so found at
    1/month 0 of 16 of them at SNR 8-12 where the matched filter found 13 (docs/search.md,
    "Where the rest is lost"). power -2 makes them 27 % of the draws."""
    if power == 0:
        return None
    total = params[:, PARAMS.index("mass1")] + params[:, PARAMS.index("mass2")]
    return total ** float(power)


def batch_generator(seed: int, *keys: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on ``device`` seeded by ``(seed, *keys)`` (numpy's SeedSequence mixes them):
    one per batch, so every batch's draws are a pure function of where it falls."""
    state = np.random.SeedSequence([int(seed), *map(int, keys)]).generate_state(2, np.uint64)
    gen = torch.Generator(device=device)
    gen.manual_seed(int(state[0] >> np.uint64(1)))
    return gen
