"""Training samples with signals injected on the fly (``source: inject`` or ``both``): the noise
source, the waveform bank and the injector of :mod:`data.inject` put together with stage one's
own whitening and CQT, built from the training store's recorded config and PSD, so that an
injected sample reaches the model exactly as a stored sample holding the same strain would.

Each batch is drawn from a generator seeded by (seed, epoch, batch, process): no state to
checkpoint, a resumed run draws what the uninterrupted run drew, and every process draws its
own. The 2D models get the CQT computed per batch on the device (float16, as stage one stores
it); the 1D models the whitened strain (float16, likewise). With ``inject.hard_negatives`` (noise
from long strain), a share of the plain-noise samples are the windows a search of that strain
ranked loudest in its time slides (its ``hard_negatives.csv``), cut and whitened as the noise is.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from data import store as zstore
from data.config import from_dict
from data.inject.bank import PARAMS, BankError, open_bank
from data.inject.injector import Injector, Sources, batch_generator, mass_weights
from data.inject.noise import GaussianNoise, StoreNoise, StrainNoise, local_psd
from data.inject.snr import SNRPrior
from data.inputs.loader import PAD_INDEX
from data.layout import DETECTORS, SAMPLE_RATE
from preprocess.config import PreprocessConfig
from preprocess.spectral import median_psd, periodograms, tukey
from preprocess.transforms import CQT, Whiten
from train.config import TrainConfig, TrainError

log = logging.getLogger("train")

# Keys of the generators' seeds, so that training and validation draws never coincide.
_TRAIN, _VALIDATION = 1, 2


def stored_form(g, kind: str, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """Whitened strain (B, 3, T) -> what the store holds for ``kind``: the CQT magnitude
    (B, 3, n_bins, n_frames) by the store's own CQT settings, or the strain itself; float16
    either way, as stage one writes them."""
    if kind == "waves":
        return lambda x: x.to(torch.float16)
    cfg = from_dict(PreprocessConfig, g.attrs["config"])
    cqt = CQT.from_config(cfg.cqt).to(device)
    return lambda x: cqt(x).to(torch.float16)


@dataclass
class Injection:
    """Everything a run needs to make injected batches (:func:`build`)."""

    injector: Injector
    noise: object  # StoreNoise | GaussianNoise | StrainNoise
    to_stored: Callable[[torch.Tensor], torch.Tensor]
    positive_fraction: float
    incoherent_fraction: float
    incoherent_kinds: tuple[str, ...]
    swap_detector: str
    swap_keep_snr: bool
    seed: int
    rank: int
    record: dict  # what the model card says the model was trained on
    hard: torch.Tensor | None = None  # (n, 3) int64 sample starts of the hard negatives
    hard_fraction: float = 0.0  # of every batch
    hard_positives: Sources | None = None  # mined sources (train/mine.py)
    hard_positive_fraction: float = 0.0  # of the coherent signals

    def _inject(self, noise: torch.Tensor, gen: torch.Generator, step: int,
                training: bool = True):
        """The injector's batch from ``noise`` with this run's fractions and kinds (and its
        hard positives when ``training``: the frozen validation set measures the prior)."""
        hard = self.hard_positives if training else None
        return self.injector.inject(noise, gen, positive_fraction=self.positive_fraction,
                                    incoherent_fraction=self.incoherent_fraction,
                                    incoherent_kinds=self.incoherent_kinds,
                                    swap_detector=self.swap_detector,
                                    swap_keep_snr=self.swap_keep_snr, step=step, hard=hard,
                                    hard_fraction=self.hard_positive_fraction)

    def batch(self, n: int, gen: torch.Generator, step: int = 0):
        """(stored-form x, targets (n,) float32) for one batch of ``n``."""
        out = self._inject(self.noise.batch(n, gen), gen, step)
        x = out.x
        if self.hard is not None:
            # A plain-noise sample (kind 0) becomes a hard negative with the odds that make
            # hard_fraction of the batch on average; positives and incoherent samples stay.
            plain = 1 - self.positive_fraction - self.incoherent_fraction
            u = torch.rand(n, generator=gen, device=gen.device).to(x.device)
            pick = torch.randint(0, self.hard.shape[0], (n,), generator=gen,
                                 device=gen.device).cpu()
            rows = torch.nonzero((out.kind == 0) & (u < self.hard_fraction / plain)).flatten()
            if rows.numel():
                x[rows] = self.noise.windows(self.hard[pick[rows.cpu()]])
        return self.to_stored(x), out.target

    def train_batches(self, epoch: int, start: int, stop: int, batch_size: int,
                      step: Callable[[], int]) -> Iterator[tuple[torch.Tensor, ...]]:
        """Batches ``start..stop-1`` of ``epoch`` on this process: (x, targets, index) with
        index -1 (no store row). ``step()`` is read as each batch is made (the curriculum)."""
        for b in range(start, stop):
            gen = batch_generator(self.seed, _TRAIN, epoch, b, self.rank,
                                  device=self.injector.device)
            x, target = self.batch(batch_size, gen, step())
            yield x, target, torch.full((batch_size,), PAD_INDEX, device=x.device)

    def validation_set(self, n: int, seed: int, batch_size: int, rank: int, world: int,
                       noise=None) -> list[tuple[torch.Tensor, ...]]:
        """A frozen set of ``n`` injections (the same for every run with ``seed``, whatever the
        number of processes), this process's share as batches (x, targets, index), padded
        with index -1 so every process has as many batches."""
        noise = noise or self.noise
        per_rank = -(-n // world)
        blocks = []
        for first in range(0, n, batch_size):
            m = min(batch_size, n - first)
            gen = batch_generator(seed, _VALIDATION, first, device=self.injector.device)
            # At the curriculum's end: validation measures the distribution trained for, not
            # the easy one a curriculum starts with.
            out = self._inject(noise.batch(m, gen), gen, self.injector.snr.curriculum_steps,
                               training=False)
            idx = torch.arange(first, first + m, device=out.x.device)
            blocks.append((self.to_stored(out.x), out.target, idx))
        x, t, i = (torch.cat(parts) for parts in zip(*blocks))
        mine = torch.arange(rank, n, world, device=x.device)
        pad = per_rank - mine.numel()
        x, t, i = x[mine], t[mine], i[mine]
        if pad:
            x = torch.cat([x, x[:pad]])
            t = torch.cat([t, t[:pad]])
            i = torch.cat([i, torch.full((pad,), PAD_INDEX, device=x.device)])
        return [(x[k:k + batch_size], t[k:k + batch_size], i[k:k + batch_size])
                for k in range(0, per_rank, batch_size)]


def _whitener(g, psd: np.ndarray, device: torch.device) -> Whiten:
    cfg = from_dict(PreprocessConfig, g.attrs["config"])
    return Whiten.from_config(cfg.whiten, psd).to(device)


def _noise(cfg: TrainConfig, g, rows: np.ndarray, device: torch.device):
    """The noise source of ``cfg.inject`` and the whitening it was (or is) whitened with, which
    the injector applies to its signals; ``rows``: the store rows whose target-0 samples it may
    use (noise=store)."""
    i = cfg.inject
    psd = zstore.read_psd(g)
    if i.noise == "store":
        targets = np.asarray(g["targets"][:])
        rows = rows[targets[rows] == 0]
        noise = StoreNoise(cfg.store, rows, device, i.shuffle_detectors)
        return noise, _whitener(g, psd, device)
    if i.noise == "gaussian":
        whiten = _whitener(g, psd, device)
        return GaussianNoise(whiten, device), whiten
    from data.strain import StrainError, parse_strain, read_strain

    try:
        strain = read_strain(parse_strain(i.strain), sample_rate=int(g.attrs["transform"]
                                                                      ["sample_rate"]))
    except StrainError as e:
        raise TrainError(f"inject.strain: {e}") from None
    if i.strain_psd == "local":
        alpha = from_dict(PreprocessConfig, g.attrs["config"]).whiten.alpha
        n_time = int(g.attrs["transform"]["n_time"])
        window = tukey(n_time, alpha)
        psd = local_psd(strain.data, lambda segs: median_psd(periodograms(segs, window)), n_time)
    whiten = _whitener(g, psd, device)
    noise = StrainNoise(strain.data, whiten, device, t0=strain.t0)
    log.info("inject: strain noise, %s s of clean windows per detector, whitened with the %s "
             "PSD", ", ".join(f"{s:.0f}" for s in noise.clean_seconds), i.strain_psd)
    return noise, whiten


def build(cfg: TrainConfig, g, kind: str, rows: np.ndarray, device: torch.device, rank: int
          ) -> Injection:
    """The run's injection: bank, noise from ``rows`` (the fold's training rows), injector,
    stored form. TrainError for a bank, noise or window that cannot serve."""
    i = cfg.inject
    try:
        bank = open_bank(i.bank, i.max_waveforms)
    except BankError as e:
        raise TrainError(f"inject.bank: {e}") from None
    try:
        noise, whiten = _noise(cfg, g, rows, device)
        snr = SNRPrior.parse(i.snr, i.curriculum_start, i.curriculum_steps)
        injector = Injector(bank, whiten, whiten.psd.cpu().numpy(), snr,
                            merger_window=tuple(i.merger_window), device=device,
                            weights=mass_weights(bank.params, i.mass_power))
    except (ValueError, zstore.StoreError) as e:
        raise TrainError(f"inject: {e}") from None
    hard = _hard_negatives(i.hard_negatives, noise) if i.hard_negatives else None
    if hard is not None:
        log.info("inject: %d hard negatives from %s, %.0f%% of each batch", hard.shape[0],
                 i.hard_negatives, 100 * i.hard_negative_fraction)
    hard_pos = (_hard_positives(i.hard_positives, injector) if i.hard_positives else None)
    if hard_pos is not None:
        log.info("inject: %d hard positives from %s (SNR %.1f-%.1f), %.0f%% of the signals",
                 len(hard_pos), i.hard_positives, float(hard_pos.snr.min()),
                 float(hard_pos.snr.max()), 100 * i.hard_positive_fraction)
    record = {"bank": bank.describe(), "noise": i.noise, "snr": i.snr,
              "curriculum": ([i.curriculum_start, i.curriculum_steps]
                             if i.curriculum_start is not None else None),
              "positive_fraction": i.positive_fraction,
              "incoherent_fraction": i.incoherent_fraction,
              "incoherent_kinds": list(i.incoherent_kinds),
              "swap_detector": i.swap_detector,
              "swap_keep_snr": i.swap_keep_snr,
              "mass_power": i.mass_power,
              "merger_window": list(i.merger_window),
              "shuffle_detectors": i.shuffle_detectors if i.noise == "store" else None,
              "strain": list(i.strain) if i.noise == "strain" else None,
              "strain_psd": i.strain_psd if i.noise == "strain" else None,
              "validation": i.validation,
              "hard_negatives": ({"file": i.hard_negatives, "n": int(hard.shape[0]),
                                  "fraction": i.hard_negative_fraction}
                                 if hard is not None else None),
              "hard_positives": ({"file": i.hard_positives, "n": len(hard_pos),
                                  "fraction": i.hard_positive_fraction}
                                 if hard_pos is not None else None)}
    log.info("inject: %d waveforms from %s (%.0f MB in memory), noise=%s, SNR %s, %.0f%% "
             "positives, %.0f%% incoherent negatives", len(bank.params), i.bank,
             bank.polarisations.nbytes / 1e6, i.noise, i.snr, 100 * i.positive_fraction,
             100 * i.incoherent_fraction)
    return Injection(injector, noise, stored_form(g, kind, device), i.positive_fraction,
                     i.incoherent_fraction, tuple(i.incoherent_kinds), i.swap_detector,
                     i.swap_keep_snr, cfg.seed,
                     rank, record, hard, i.hard_negative_fraction, hard_pos,
                     i.hard_positive_fraction)


def _hard_positives(path: str, injector: Injector) -> Sources:
    """The sources of a ``python -m train.mine`` file on the injector's device (merger times
    0: each use draws its own); TrainError for a file that is not one, or one mined with
    another bank (a row past this bank's end, or whose masses differ from the row's)."""
    from train.mine import COLUMNS

    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        cols = {c: np.array([float(r[c]) for r in rows], dtype=np.float64) for c in COLUMNS}
        masses = np.array([[float(r[p]) for p in ("mass1", "mass2")] for r in rows])
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise TrainError(f"inject.hard_positives: {path}: not a python -m train.mine file "
                         f"(columns {', '.join(COLUMNS)}, mass1, mass2, ...): {e}") from None
    if not rows:
        raise TrainError(f"inject.hard_positives: {path} holds no sources")
    row = cols["row"].astype(np.int64)
    n_bank = injector.bank_params.shape[0]
    if (row < 0).any() or (row >= n_bank).any() or (row != cols["row"]).any():
        raise TrainError(f"inject.hard_positives: {path}: bank rows {row.min()}-{row.max()} do "
                         f"not all lie in inject.bank's {n_bank} (mined with another bank, or "
                         "a larger inject.max_waveforms?)")
    own = injector.bank_params[row][:, [PARAMS.index("mass1"), PARAMS.index("mass2")]]
    if not np.allclose(own, masses, rtol=1e-5):
        raise TrainError(f"inject.hard_positives: {path}: its sources' masses differ from "
                         "inject.bank's rows of the same index: mined with another bank")
    if not (np.isfinite(cols["snr"]).all() and (cols["snr"] > 0).all()):
        raise TrainError(f"inject.hard_positives: {path}: SNRs must be finite and positive")
    dev = injector.device
    as_t = lambda a: torch.as_tensor(a, dtype=torch.float64, device=dev)  # noqa: E731
    return Sources(torch.as_tensor(row, device=dev), as_t(cols["ra"]), as_t(cols["dec"]),
                   as_t(cols["psi"]), torch.zeros(len(row), dtype=torch.float64, device=dev),
                   as_t(cols["snr"]))


def _hard_negatives(path: str, noise) -> torch.Tensor:
    """The (n, 3) sample starts of a g2net-search's hard_negatives.csv (slide, score, H1, L1,
    V1: each detector's window start, GPS) in the strain noise; TrainError for a file that is
    not one or whose windows all lie outside the strain (a search of other strain)."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        gps = np.array([[float(r[d]) for d in DETECTORS] for r in rows], dtype=np.float64)
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise TrainError(f"inject.hard_negatives: {path}: not a g2net-search hard_negatives.csv "
                         f"(columns slide, score, {', '.join(DETECTORS)}): {e}") from None
    if gps.shape[0] == 0:
        raise TrainError(f"inject.hard_negatives: {path} holds no windows")
    starts, ok = noise.starts_at(gps)
    if not ok.any():
        end = noise.t0 + noise.data.shape[1] / SAMPLE_RATE
        raise TrainError(f"inject.hard_negatives: none of the {ok.size} windows of {path} lies "
                         f"on a clean stretch of inject.strain (GPS {noise.t0:.3f}-{end:.3f}): "
                         f"made by a search of other strain?")
    if not ok.all():
        log.warning("inject.hard_negatives: %d of %d windows of %s are not on inject.strain's "
                    "clean samples; left out", int((~ok).sum()), ok.size, path)
    return starts


def validation_noise(cfg: TrainConfig, g, val_rows: np.ndarray, injection: Injection,
                     device: torch.device):
    """The noise of the frozen validation injections: the validation rows' target-0 samples
    for noise=store (never a training sample's), the training source otherwise."""
    if cfg.inject.noise != "store":
        return injection.noise
    return _noise(cfg, g, val_rows, device)[0]
