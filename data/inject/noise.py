"""Noise to inject into, whitened, a batch at a time on the training device:

- :class:`StoreNoise`: the whitened strain (``waves``) a training store keeps for its target-0
  samples, each detector's row optionally from a different sample. Valid because the
  detectors' noises are independent of each other (separate sites, separate instruments):
  a triple made of three samples' rows has the same joint distribution as a recorded triple,
  and each row keeps its own PSD. It turns n noise samples into n^3 noise triples.
- :class:`GaussianNoise`: stationary Gaussian noise with the generator's PSDs
  (:func:`data.sim.physics.noise_psd`), whitened: pure simulation.
- :class:`StrainNoise`: windows of long strain (what the search reads: GWF or GWOSC HDF5),
  each detector's window from its own random time, windows that touch a gap never drawn,
  whitened with the training PSD or with the strain's own (median Welch) PSD.

Each ``batch(n, gen)`` returns (n, 3, T) float32 whitened strain and takes all its randomness
from ``gen`` (see :mod:`data.inject.injector`). The whitening transform is passed in (training
builds stage one's :class:`preprocess.transforms.Whiten`), so this package imports no stage.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from data import store as zstore
from data.inputs.loader import StoreBlocks
from data.layout import N_TIME, SAMPLE_RATE
from data.sim import physics

Whitener = Callable[[torch.Tensor], torch.Tensor]


def _randint(hi: int, shape: tuple[int, ...], gen: torch.Generator, device) -> torch.Tensor:
    return torch.randint(0, hi, shape, generator=gen, device=gen.device).to(device)


class StoreNoise:
    """The ``waves`` of rows ``rows`` (target-0 samples) of the store at ``path``, held in
    memory on ``device`` as float16: 24 KB a sample (6.9 GB for G2Net's ~280,000 noise
    samples). ``shuffle_detectors``: draw each detector's row independently."""

    def __init__(self, path: str, rows: np.ndarray, device: torch.device | str = "cpu",
                 shuffle_detectors: bool = True):
        if "waves" not in zstore.open_store(path):
            raise zstore.StoreError(f"{path}: injection into a store's noise needs its whitened "
                                    "strain: preprocess with save_waves=true")
        # Whole chunks, each decoded once: the loader's own reader (invalid rows dropped).
        try:
            blocks = StoreBlocks(path, np.sort(np.asarray(rows, dtype=np.int64)), batch_size=1,
                                 shuffle=False, arrays=("waves",))
        except ValueError:  # no valid row among them
            raise ValueError(f"{path}: no noise samples to inject into") from None
        self.waves = blocks.read_block(blocks.indices)[0].to(device)
        self.device = torch.device(device)
        self.shuffle_detectors = shuffle_detectors

    def __len__(self) -> int:
        return self.waves.shape[0]

    def batch(self, n: int, gen: torch.Generator) -> torch.Tensor:
        n_det = self.waves.shape[1]
        if not self.shuffle_detectors:
            return self.waves[_randint(len(self), (n,), gen, self.device)].float()
        idx = _randint(len(self), (n_det, n), gen, self.device)
        return torch.stack([self.waves[idx[d], d] for d in range(n_det)], dim=1).float()


class GaussianNoise:
    """Gaussian noise with :func:`data.sim.physics.noise_psd`, drawn as the generator draws it
    (:func:`data.sim.physics.coloured_noise`: 4x the window, the middle kept, so the window's
    edges are not periodic), then whitened by ``whiten``."""

    def __init__(self, whiten: Whitener, device: torch.device | str = "cpu", n_time: int = N_TIME):
        n = physics.NOISE_OVERSAMPLE * n_time
        amp = np.sqrt(physics.noise_psd(n) * n / (4.0 * physics.DELTA_T))
        amp[:, 0] = amp[:, -1] = 0.0  # no DC; the Nyquist bin of a real series is real
        self.amp = torch.from_numpy(amp).to(device)
        self.whiten = whiten
        self.n, self.n_time, self.device = n, n_time, torch.device(device)

    def batch(self, n: int, gen: torch.Generator) -> torch.Tensor:
        shape = (2, n, *self.amp.shape)
        re_im = torch.randn(shape, generator=gen, dtype=torch.float64,
                            device=gen.device).to(self.device)
        series = torch.fft.irfft(self.amp * torch.complex(re_im[0], re_im[1]), n=self.n, dim=-1)
        start = (self.n - self.n_time) // 2
        return self.whiten(series[..., start:start + self.n_time]).float()


class StrainNoise:
    """Random windows of ``data`` (3, N) float64 strain at 2048 Hz (NaN where a detector has no
    data: :class:`data.strain.Strain`'s ``data``), each detector's window start drawn
    independently among the starts whose window holds no NaN, whitened by ``whiten``."""

    def __init__(self, data: np.ndarray, whiten: Whitener, device: torch.device | str = "cpu",
                 n_time: int = N_TIME, t0: float = 0.0):
        data = np.asarray(data, dtype=np.float64)
        if data.ndim != 2 or data.shape[1] < n_time:
            raise ValueError(f"strain of shape {data.shape}: need (3, >= {n_time}) samples")
        self.starts = []
        for row, x in enumerate(data):
            bad = np.concatenate([[0], np.cumsum(~np.isfinite(x))])
            ok = np.flatnonzero(bad[n_time:] - bad[:-n_time] == 0)  # window [s, s+T) clean
            if ok.size == 0:
                raise ValueError(f"detector row {row}: no {n_time}-sample window without a gap")
            self.starts.append(torch.from_numpy(ok))
        self.data = torch.from_numpy(np.nan_to_num(data)).to(device)
        self.whiten = whiten
        self.n_time, self.device = n_time, torch.device(device)
        self.t0 = t0  # GPS time of sample 0
        self.offsets = torch.arange(n_time, device=self.device)

    @property
    def clean_seconds(self) -> list[float]:
        """Per detector, the seconds of strain a window may start in."""
        return [s.numel() / SAMPLE_RATE for s in self.starts]

    def batch(self, n: int, gen: torch.Generator) -> torch.Tensor:
        picks = [starts[torch.randint(0, starts.numel(), (n,), generator=gen,
                                      device=gen.device).cpu()] for starts in self.starts]
        return self.windows(torch.stack(picks, dim=1))

    def windows(self, starts: torch.Tensor) -> torch.Tensor:
        """(n, 3, T) float32 whitened windows, detector d's starting at sample ``starts[:, d]``
        ((n, 3) int64)."""
        starts = starts.to(self.device)
        rows = [self.data[d][starts[:, d, None] + self.offsets] for d in range(len(self.starts))]
        return self.whiten(torch.stack(rows, dim=1)).float()

    def starts_at(self, gps: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """GPS window starts (n, 3), detector d's in column d -> ((m, 3) int64 sample starts of
        the m windows that lie on a sample and hold no gap in any detector, (n,) bool: which)."""
        x = (np.asarray(gps, dtype=np.float64) - self.t0) * SAMPLE_RATE
        s = np.round(x).astype(np.int64)
        ok = (np.abs(x - s) < 1e-3).all(axis=1)
        for d, starts in enumerate(self.starts):
            ok &= np.isin(s[:, d], starts.numpy())
        return torch.from_numpy(s[ok]), ok


def local_psd(data: np.ndarray, estimate: Callable[[np.ndarray], np.ndarray],
              n_time: int = N_TIME) -> np.ndarray:
    """The strain's own PSD, (3, n_time // 2 + 1) 1/Hz: per detector, ``estimate`` ((n, T)
    segments -> (T // 2 + 1,) PSD; training passes stage one's median of Tukey periodograms,
    the search's local estimate) over its gap-free, non-overlapping ``n_time``-sample
    segments."""
    out = []
    for row, x in enumerate(np.asarray(data, dtype=np.float64)):
        n_seg = x.size // n_time
        segs = x[:n_seg * n_time].reshape(n_seg, n_time)
        segs = segs[np.isfinite(segs).all(axis=1)]
        if segs.shape[0] == 0:
            raise ValueError(f"detector row {row}: no gap-free {n_time}-sample segment")
        out.append(estimate(segs))
    return np.stack(out)
