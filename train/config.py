"""The training stage's config: one dataclass, YAML + ``key=value`` overrides (data.config).

Flat where a key is set often from the command line (``fold=0 epochs=3 lr=1e-3``), sections
for the model, the augmentations and the loader. Names follow the libraries: timm's
``drop_rate``/``drop_path_rate``/``weight_decay``/``min_lr``/``warmup_epochs``/``clip_grad``,
torchvision RandomErasing's ``scale``/``ratio``/``value`` (as ``erase_*``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from data.config import ConfigError
from data.inject import INCOHERENT_KINDS, SWAP_DETECTORS


class TrainError(ValueError):
    """Input that training cannot use; found before training starts."""


@dataclass
class ModelConfig:
    name: str = "efficientnet_b0"  # any timm model name
    drop_rate: float = 0.0  # dropout before the classifier
    drop_path_rate: float = 0.0  # stochastic depth
    pretrained_file: str | None = None  # local weights (timm pretrained_cfg_overlay file=...)


@dataclass
class AugmentConfig:
    erase_p: float = 0.0  # probability that a sample gets erased patches
    erase_count: int = 18  # patches per erased sample
    erase_scale: tuple[float, float] = (0.001, 0.004)  # patch area / image area
    erase_ratio: tuple[float, float] = (0.3, 3.3)  # patch height / width, log-uniform
    erase_value: float = 0.0  # fill, in normalised units (0 = channel mean)
    swap_p: float = 0.0  # probability of exchanging the H1 and L1 rows (images and waves)
    shift_p: float = 0.0  # probability of a circular time shift (images and waves)
    max_shift: int = 0  # images: largest shift, CQT frames either way
    # Whitened strain (waves, 2048 Hz) only; train.augment.augment_waves says what each does.
    max_shift_samples: int = 0  # waves: largest common shift, samples either way
    flip_p: float = 0.0  # probability of negating a sample (all detectors together)
    detector_shift_p: float = 0.0  # probability of shifting L1 and V1 relative to H1
    # largest (H1-L1, V1-either) shift, samples: light travel 10.0 ms -> 20, 26.4 ms -> 54
    detector_shift_max: tuple[int, int] = (20, 54)
    mask_p: float = 0.0  # probability of zeroing one time span in every detector
    mask_max: int = 0  # longest zeroed span, samples (>= 1 when mask_p > 0)


@dataclass
class LoaderConfig:
    num_workers: int = 2  # DataLoader worker processes (0 = read in the training process)
    shuffle_buffer_chunks: int = 8  # store chunks whose samples are shuffled together


@dataclass
class InjectConfig:
    """Signals injected on the fly into noise (``source: inject`` or ``both``; docs/training.md,
    "Training with injections")."""

    bank: str | None = None  # waveform bank (python -m data.inject.bank)
    max_waveforms: int | None = None  # the bank's first N held in memory (38 KB each); null = all
    # Bank waveforms drawn with odds ~ (mass1 + mass2)^mass_power: 0 = alike (the bank's prior);
    # negative = more light chirps, which the search model otherwise misses (docs/search.md).
    mass_power: float = 0.0  # 0 = the bank's own prior; -2: M < 30 Msun 27 % of draws, not 7 %
    # Where the noise comes from: the store's target-0 whitened waves (the fold's training rows),
    # Gaussian noise from the generator's PSDs, or long strain (GWF / GWOSC HDF5).
    noise: Literal["store", "gaussian", "strain"] = "store"  # store | gaussian | strain
    shuffle_detectors: bool = True  # noise=store: each detector's noise from another sample
    strain: list[str] = field(default_factory=list)  # noise=strain: IFO=PATH, as g2net-search
    strain_psd: Literal["training", "local"] = "training"  # whitened by the store's PSD or own
    positive_fraction: float = 0.5  # samples with a signal (target 1)
    incoherent_fraction: float = 0.0  # samples with an incoherent signal, target 0
    # Their kinds, in equal shares: "single" (a signal in one detector only) and "swap" (one
    # detector's signal from another source), aframe's two (data/inject/__init__.py: what
    # leaving "single" out did).
    incoherent_kinds: list[str] = field(default_factory=lambda: ["single", "swap"])
    # Which detector a "swap" replaces: "uniform" (any) or "snr" (in proportion to its share of
    # the signal's SNR^2, so that it is rarely one too weak to tell; data/inject/injector.py).
    swap_detector: str = "uniform"
    # A swap's replacement rescaled to the SNR of the detector row it replaces, so that swaps
    # differ from signals in coherence only, never in how the SNR is shared (docs/search.md).
    swap_keep_snr: bool = False  # the replacement at the replaced row's SNR; false = its own
    # noise=strain: hard negatives, a g2net-search's hard_negatives.csv made on this same strain
    # with time slides (its loudest background windows, each detector's from its own time): a
    # hard_negative_fraction of every batch, in place of plain-noise samples, target 0.
    hard_negatives: str | None = None  # a g2net-search hard_negatives.csv of inject.strain
    hard_negative_fraction: float = 0.0  # of every batch, in place of plain noise; 0 = off
    # Hard positives: a python -m train.mine file (loud sources a model scored lowest, made
    # with this bank); a signal is one of them with the odds hard_positive_fraction, at its
    # mined SNR, the merger time and noise drawn afresh (train/mine.py says why).
    hard_positives: str | None = None  # a train.mine CSV of this inject.bank
    hard_positive_fraction: float = 0.0  # of the coherent signals; 0 = off
    # Forms: uniform:LO,HI  power-law:INDEX,LO,HI  normal:MU,SIGMA,MIN  fixed:X
    snr: str = "uniform:2,16"  # the network SNR's distribution
    curriculum_start: float | None = None  # SNR lower bound at step 0, falling to the spec's
    curriculum_steps: int = 0  # optimizer steps over which it falls
    merger_window: tuple[float, float] = (1.3, 1.9)  # s from the sample start (the generator's)
    samples_per_epoch: int = 32000  # source=inject: samples per epoch, all processes together
    # "store": the fold's labelled samples (AUCs compare with fixed-set runs); "injections": a
    # set frozen by validation_seed, for noise without labels.
    validation: Literal["store", "injections"] = "store"  # store | injections
    n_validation: int = 4096  # validation=injections: samples in the frozen set
    validation_seed: int = 12345  # validation=injections: its seed


@dataclass
class TrainConfig:
    store: str = "cache/train.zarr"  # the preprocessed training store
    # What training samples are: the store's labelled samples, signals injected on the fly into
    # noise (inject.*), or both (each step a labelled batch and an injected batch).
    source: Literal["store", "inject", "both"] = "store"
    inject: InjectConfig = field(default_factory=InjectConfig)
    # A trained fold (runs/NAME/fold0) whose weights start this run: pretrain on injections,
    # then fine-tune on the labelled folds. Same model and input transform, else an error.
    init_from: str | None = None
    name: str | None = None  # run name; None = the config file's name (tiny.yaml -> tiny)
    out: str = "runs"  # runs land in OUT/NAME/fold{k}/
    model: ModelConfig = field(default_factory=ModelConfig)
    image_size: tuple[int, int] | None = None  # (H, W) to resize to; None = native CQT size
    n_folds: int = 5  # stratified cross-validation folds
    fold: int | Literal["all"] = 0  # "all": every fold, one subprocess each, in turn
    fold_seed: int = 42  # seed of the stratified fold assignment
    epochs: int = 10  # passes over the fold's training samples
    batch_size: int = 64  # per process
    lr: float = 1e-3  # peak learning rate (AdamW)
    weight_decay: float = 1e-2  # AdamW decoupled weight decay
    warmup_epochs: float = 1.0  # linear warm-up from min_lr, in epochs (fractions allowed)
    min_lr: float = 1e-6  # cosine floor
    grad_accum: int = 1  # batches per optimizer step
    clip_grad: float | None = None  # max gradient norm; None = no clipping
    ema: bool = False  # keep an exponential moving average of the weights (timm ModelEmaV3)
    ema_decay: float = 0.999  # per optimizer step
    # Ramp the decay up from 0 (timm's 1 - (1 + step)^-3/4, capped at ema_decay); without it, at
    # decay 0.998 the average still holds 37% of the random initial weights after 500 steps.
    ema_warmup: bool = False
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    channels_last: bool = False  # NHWC memory format (faster convolutions on GPUs)
    compile: bool = False  # torch.compile the model (after Accelerate wraps it for DDP)
    # Deterministic algorithms (torch.use_deterministic_algorithms, cuDNN autotuning off,
    # CUBLAS_WORKSPACE_CONFIG): what exact resume needs on a GPU, where TF32-free cuDNN and
    # cuBLAS still pick kernels that sum in varying order. On the CPU runs are exact without
    # it. Its cost on a GPU is not measured yet (docs/training.md).
    deterministic: bool = False
    checkpoint_every_steps: int = 0  # also checkpoint every N optimizer steps; 0 = per epoch only
    checkpoint_total_limit: int | None = 2  # checkpoints kept per fold (oldest deleted); >= 2
    resume: Literal["auto"] | None = None  # "auto": continue from the newest checkpoint
    seed: int = 0  # model init, data order and augmentations
    progress: bool = True  # a progress bar per epoch on the main process (lines in a log)
    # Experiment trackers, by accelerate's names (tensorboard, wandb, mlflow, ...), each of which
    # must be installed; [] = none (history.csv is written either way).
    log_with: list[str] = field(default_factory=list)


def check(cfg: TrainConfig) -> None:
    """Value checks the types cannot express; ConfigError names the key."""

    def need(ok: bool, key: str, why: str) -> None:
        if not ok:
            raise ConfigError(f"{key}: {why}")

    need(cfg.n_folds >= 2, "n_folds", f"must be at least 2, got {cfg.n_folds}")
    if cfg.fold != "all":
        need(0 <= cfg.fold < cfg.n_folds, "fold",
             f"{cfg.fold} is not a fold of n_folds={cfg.n_folds} (0..{cfg.n_folds - 1} or all)")
    need(cfg.epochs >= 1, "epochs", f"must be at least 1, got {cfg.epochs}")
    need(cfg.batch_size >= 2, "batch_size", f"must be at least 2 (BatchNorm), got {cfg.batch_size}")
    need(cfg.grad_accum >= 1, "grad_accum", f"must be at least 1, got {cfg.grad_accum}")
    need(cfg.lr > 0, "lr", f"must be positive, got {cfg.lr}")
    need(0 <= cfg.min_lr <= cfg.lr, "min_lr", f"must be in [0, lr], got {cfg.min_lr}")
    need(cfg.warmup_epochs >= 0, "warmup_epochs", f"must be >= 0, got {cfg.warmup_epochs}")
    need(cfg.clip_grad is None or cfg.clip_grad > 0, "clip_grad", "must be positive or null")
    need(0 < cfg.ema_decay < 1, "ema_decay", f"must be in (0, 1), got {cfg.ema_decay}")
    need(cfg.checkpoint_every_steps >= 0, "checkpoint_every_steps", "must be >= 0")
    # accelerate deletes the oldest checkpoint *before* writing the new one: with a limit of 1
    # a kill during the save would leave nothing to resume from.
    need(cfg.checkpoint_total_limit is None or cfg.checkpoint_total_limit >= 2,
         "checkpoint_total_limit", f"must be at least 2 or null, got {cfg.checkpoint_total_limit}")
    need(cfg.image_size is None or min(cfg.image_size) >= 1, "image_size", "must be positive")
    need(cfg.loader.num_workers >= 0, "loader.num_workers", "must be >= 0")
    need(cfg.loader.shuffle_buffer_chunks >= 1, "loader.shuffle_buffer_chunks", "must be >= 1")
    a = cfg.augment
    for key in ("erase_p", "swap_p", "shift_p", "flip_p", "detector_shift_p", "mask_p"):
        p = getattr(a, key)
        need(0 <= p <= 1, f"augment.{key}", f"must be a probability, got {p}")
    need(a.erase_count >= 0, "augment.erase_count", "must be >= 0")
    need(0 < a.erase_scale[0] <= a.erase_scale[1] < 1, "augment.erase_scale",
         f"must be 0 < lo <= hi < 1, got {list(a.erase_scale)}")
    need(0 < a.erase_ratio[0] <= a.erase_ratio[1], "augment.erase_ratio",
         f"must be 0 < lo <= hi, got {list(a.erase_ratio)}")
    need(a.max_shift >= 0, "augment.max_shift", "must be >= 0")
    need(a.max_shift_samples >= 0, "augment.max_shift_samples", "must be >= 0")
    hl, v = a.detector_shift_max
    need(0 <= hl <= 2 * v, "augment.detector_shift_max",
         f"must be [H1-L1, V1] with 0 <= H1-L1 <= 2 * V1 (a V1 shift within V1 of both), got "
         f"{list(a.detector_shift_max)}")
    need(a.mask_max >= 0, "augment.mask_max", "must be >= 0")
    need(a.mask_p == 0 or a.mask_max >= 1, "augment.mask_max",
         f"must be at least 1 when augment.mask_p > 0, got {a.mask_max}")
    i = cfg.inject
    if cfg.source != "store":
        need(i.bank is not None, "inject.bank", f"source={cfg.source} needs a waveform bank "
             "(make one with python -m data.inject.bank)")
        need(0 <= i.positive_fraction <= 1, "inject.positive_fraction", "must be in [0, 1]")
        need(0 <= i.incoherent_fraction <= 1 - i.positive_fraction, "inject.incoherent_fraction",
             "must be in [0, 1 - positive_fraction]")
        need(bool(i.incoherent_kinds) and set(i.incoherent_kinds) <= set(INCOHERENT_KINDS),
             "inject.incoherent_kinds", f"must be some of {list(INCOHERENT_KINDS)}, got "
             f"{list(i.incoherent_kinds)}")
        need(i.swap_detector in SWAP_DETECTORS, "inject.swap_detector",
             f"must be one of {list(SWAP_DETECTORS)}, got {i.swap_detector!r}")
        plain = 1 - i.positive_fraction - i.incoherent_fraction
        need(0 <= i.hard_negative_fraction <= plain + 1e-12, "inject.hard_negative_fraction",
             f"must be in [0, 1 - positive_fraction - incoherent_fraction] = [0, {plain:g}] "
             f"(hard negatives take plain-noise samples' places), got "
             f"{i.hard_negative_fraction}")
        need((i.hard_negatives is None) == (i.hard_negative_fraction == 0),
             "inject.hard_negatives", "give both inject.hard_negatives (a g2net-search's "
             "hard_negatives.csv) and inject.hard_negative_fraction > 0, or neither")
        need(0 <= i.hard_positive_fraction <= 1, "inject.hard_positive_fraction",
             f"must lie in [0, 1], got {i.hard_positive_fraction}")
        need((i.hard_positives is None) == (i.hard_positive_fraction == 0),
             "inject.hard_positives", "give both inject.hard_positives (a python -m "
             "train.mine file) and inject.hard_positive_fraction > 0, or neither")
        need(i.hard_negatives is None or i.noise == "strain", "inject.hard_negatives",
             f"needs noise=strain (the strain the search's windows come from), got "
             f"noise={i.noise}")
        need(i.samples_per_epoch >= 1, "inject.samples_per_epoch", "must be >= 1")
        need(i.n_validation >= 2, "inject.n_validation", "must be >= 2")
        need(i.max_waveforms is None or i.max_waveforms >= 1, "inject.max_waveforms",
             "must be >= 1")
        need(math.isfinite(i.mass_power) and abs(i.mass_power) <= 10, "inject.mass_power",
             f"must be a finite power within [-10, 10], got {i.mass_power}")
        need(i.noise != "strain" or bool(i.strain), "inject.strain",
             "noise=strain needs strain files: inject.strain=[H1=...,L1=...,V1=...]")
        need(cfg.source == "inject" or i.validation == "store", "inject.validation",
             "source=both validates on the store's fold")
        try:
            from data.inject.snr import SNRPrior

            SNRPrior.parse(i.snr, i.curriculum_start, i.curriculum_steps)
        except ValueError as e:
            raise ConfigError(f"inject.snr: {e}") from None
    if cfg.name is not None:
        need(bool(cfg.name) and "/" not in cfg.name and cfg.name not in (".", ".."), "name",
             f"{cfg.name!r} is not a directory name")
