"""The preprocessing stage's config: whitening, CQT, the store, and how the job runs.

Keys use the libraries' own parameter names (gwpy: ``fftlength``, ``highpass``; nnAudio:
``fmin``, ``fmax``, ``hop_length``, ``bins_per_octave``, ``filter_scale``, ``window``), so a
reader maps config to call without a glossary. ``whiten`` and ``cqt`` together are the
*transform*: a model is only valid on images made with the same transform and PSD, and
inference checks this (``transform_dict``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from data.config import to_dict


@dataclass
class WhitenConfig:
    alpha: float = 0.25  # Tukey window shape (0 = rectangular, 1 = Hann), applied before the FFT
    highpass: float | None = 18.0  # Hz; smooth-edged high-pass in the frequency domain
    lowpass: float | None = None  # Hz; smooth-edged low-pass, None = up to Nyquist
    n_psd: int = 2000  # target-0 training samples averaged into the noise PSD


@dataclass
class CQTConfig:
    fmin: float = 20.0  # Hz
    fmax: float = 1024.0  # Hz; nnAudio ignores n_bins when fmax is set
    hop_length: int = 32  # samples at 2048 Hz between frames
    bins_per_octave: int = 8
    filter_scale: float = 1.0
    window: str = "hann"
    # All three give the same images (to float32 rounding); "fft" is the fastest on a CPU.
    impl: Literal["grouped", "fft", "nnaudio"] = "fft"


@dataclass
class StoreConfig:
    chunk_size: int = 64  # samples per Zarr chunk: the unit of work, resume and shuffling
    codec: Literal["none", "lz4", "zstd"] = "lz4"
    clevel: int = 5


@dataclass
class PreprocessConfig:
    whiten: WhitenConfig = field(default_factory=WhitenConfig)
    cqt: CQTConfig = field(default_factory=CQTConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    batch_size: int = 64  # samples per device batch
    device: str = "auto"  # "auto" = cuda when present, else cpu
    read_threads: int = 4
    write_threads: int = 2
    on_bad: Literal["error", "skip"] = "error"
    save_waves: bool = False  # also store the whitened time series (float16) for 1D models


def transform_dict(cfg: PreprocessConfig) -> dict:
    """The part of the config that determines the images (what models depend on).

    ``cqt.impl`` is left out: all three implementations give the same images.
    """
    cqt = to_dict(cfg.cqt)
    cqt.pop("impl")
    return {"whiten": to_dict(cfg.whiten), "cqt": cqt}
