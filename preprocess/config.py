"""The preprocessing stage's config: whitening, CQT, the store, and how the job runs. Keys use
the libraries' own parameter names (gwpy, nnAudio). The two identities, :func:`transform_identity`
(what fixes a stored output) and :func:`run_identity` (what must match to resume a store), are
computed here and only here (docs/preprocessing.md, "Notes from the code").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from data.config import ConfigError, dict_diff, from_dict, load_config, to_dict
from data.layout import N_TIME, SAMPLE_RATE


@dataclass
class WhitenConfig:
    alpha: float = 0.25  # Tukey window shape (0 = rectangular, 1 = Hann), applied before the FFT
    highpass: float | None = 18.0  # Hz; smooth-edged high-pass in the frequency domain
    lowpass: float | None = None  # Hz; smooth-edged low-pass, None = up to Nyquist
    ramp: float = 4.0  # Hz; width of the raised-cosine band edges (full gain from highpass up)
    n_psd: int = 2000  # target-0 training samples averaged into the noise PSD


@dataclass
class CQTConfig:
    fmin: float = 20.0  # Hz; centre frequency of the lowest bin
    fmax: float = 1024.0  # Hz; nnAudio ignores n_bins when fmax is set
    hop_length: int = 32  # samples at 2048 Hz between frames
    bins_per_octave: int = 8  # frequency bins per octave (nnAudio)
    filter_scale: float = 1.0  # kernel length factor: < 1 shorter kernels, finer time
    window: str = "hann"  # kernel window (a scipy.signal.get_window name)
    # How the kernels are applied; all three give the same images (to float32 rounding),
    # "fft" is the fastest on a CPU.
    impl: Literal["grouped", "fft", "nnaudio"] = "fft"


@dataclass
class StoreConfig:
    chunk_size: int = 64  # samples per Zarr chunk: the unit of work, resume and shuffling
    codec: Literal["none", "lz4", "zstd"] = "lz4"  # compression (bit-shuffled Blosc)
    clevel: int = 5  # compression level, 1-9


@dataclass
class PreprocessConfig:
    whiten: WhitenConfig = field(default_factory=WhitenConfig)
    cqt: CQTConfig = field(default_factory=CQTConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    batch_size: int = 64  # samples per device batch
    device: str = "auto"  # "auto" = cuda when present, else cpu
    read_threads: int = 4  # threads reading .npy files
    write_threads: int = 2  # threads compressing and writing chunks
    on_bad: Literal["error", "skip"] = "error"  # a bad input file: stop, or record it and go on
    save_waves: bool = False  # also store the whitened time series (float16) for 1D models


PRESETS_DIR = Path(__file__).resolve().parents[1] / "configs" / "preprocess"


def load_preset(name: str, overrides: list[str] = ()) -> PreprocessConfig:
    """``configs/preprocess/NAME.yaml`` (``default``, ``seed``) with ``key=value`` overrides:
    what tests and benches use instead of copies of the presets' values."""
    return load_config(PreprocessConfig, PRESETS_DIR / f"{name}.yaml", list(overrides))


# Bumped whenever the code of preprocess/transforms.py changes a stored output for the same
# config (whitening, CQT kernels or their normalisation): stores and models made before the
# change are then refused instead of silently mixed with new ones.
TRANSFORM_VERSION = 1

# Keys that change how the job runs but not a byte of what it writes: a store may be resumed
# with other values (e.g. on_bad=skip after an on_bad=error run stopped at a bad file).
# batch_size and device are not among them: cqt.impl=fft batches rows through one matmul, and
# its float32 results (so, now and then, a float16 rounding) depend on the batch's size.
RUNTIME_KEYS = ("read_threads", "write_threads", "on_bad")

# The keys of the transform identity that a model reading ``waves`` (whitened strain) depends
# on; an ``images`` model depends on all of them.
WAVES_KEYS = ("transform_version", "sample_rate", "n_time", "whiten", "psd_sha256")


def transform_identity(cfg: PreprocessConfig, psd_sha256: str) -> dict:
    """What fixes the stored images and waves: a plain dict, equal for a cache's train and test.

    ``cqt.impl`` is left out (all three give the same images to float32 rounding), and so are
    the store's layout and the runtime keys. ``psd_sha256``: the training PSD's hash
    (:func:`data.store.psd_sha256`).
    """
    cqt = to_dict(cfg.cqt)
    cqt.pop("impl")
    return {
        "transform_version": TRANSFORM_VERSION,
        "sample_rate": SAMPLE_RATE,
        "n_time": N_TIME,
        "whiten": to_dict(cfg.whiten),
        "cqt": cqt,
        "psd_sha256": psd_sha256,
    }


def identity_for(identity: dict, input_kind: str) -> dict:
    """The part of a transform identity that a model reading ``input_kind`` depends on."""
    if input_kind == "waves":
        return {k: v for k, v in identity.items() if k in WAVES_KEYS}
    return dict(identity)


def run_identity(cfg: PreprocessConfig | dict) -> dict:
    """The config without RUNTIME_KEYS: what must match for a store to be resumed."""
    d = cfg if isinstance(cfg, dict) else to_dict(cfg)
    return {k: v for k, v in d.items() if k not in RUNTIME_KEYS}


def identity_drift(identity: dict, config: dict) -> list[tuple[str, Any, Any]]:
    """Where a recorded transform identity differs from the one this code makes from the
    recorded preprocessing ``config`` (a ``to_dict`` dict) and the same PSD hash.

    Empty for a store or model made by this code. Non-empty when the transform code changed
    since (``TRANSFORM_VERSION`` bumped, a key added) or the record was edited: a list of
    ``(key, recorded, this code)`` for :func:`data.config.format_diff`.
    """
    try:
        cfg = from_dict(PreprocessConfig, config)
    except ConfigError as e:  # a config from a newer version with keys this code lacks
        return [("config", str(e), "readable")]
    return dict_diff(identity, transform_identity(cfg, identity.get("psd_sha256", "")))
