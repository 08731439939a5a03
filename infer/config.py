"""The inference stage's config: batching, test-time augmentation and how folds are combined.

Loaded with :func:`data.config.load_config` from ``configs/infer/default.yaml`` (or none) plus
``key=value`` overrides; the resolved config is written next to every submission.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

TTA_VIEWS = ("swap", "shift", "flip")


class InferError(ValueError):
    """Inputs that inference cannot use; the message names the file and the reason."""


@dataclass
class InferConfig:
    batch_size: int = 64  # samples per device batch
    num_workers: int = 0  # DataLoader worker processes reading the store or the .npy files
    # Test-time augmentation: every combination of the listed views is predicted and the
    # probabilities averaged ([] = the image alone; ["swap", "shift"] = 4 views).
    #   "swap":  H1 and L1 exchanged (3rd place's TTA: the two LIGO detectors are alike)
    #   "shift": the input rolled in time by ``tta_shift`` seconds (circularly)
    #   "flip":  whitened strain negated (training's augment.flip_p); for an image model the
    #            view is the image itself, |CQT(-x)| = |CQT(x)|
    # They act on the model input (normalised images or strain), as training's augment.swap_p /
    # shift_p / flip_p do (the same data.inputs.views ops).
    tta: list[str] = field(default_factory=list)
    # Seconds (images: in CQT frames of the model's input width; waves: in samples); negative
    # moves the merger (1.3-1.9 s into the sample) earlier, away from the edge.
    tta_shift: float = -0.125
    ensemble: Literal["mean", "rank"] = "mean"  # folds: mean probability, or mean rank in (0, 1]
    # Several runs (--runs A B ...): their mean probability, mean rank, or "stack": a logistic
    # regression over the runs' logits fitted on their out-of-fold predictions (oof.csv).
    members: Literal["mean", "rank", "stack"] = "mean"
    # Explicit checkpoints (``best.safetensors`` files or fold directories); empty = every
    # ``fold*/best.safetensors`` under ``--runs``.
    checkpoints: list[str] = field(default_factory=list)
    # SNR bin edges for ``--truth`` scoring; the last bin is open-ended.
    snr_bins: list[float] = field(default_factory=lambda: [0.0, 4.0, 6.0, 8.0, 10.0, 15.0])

    def __post_init__(self) -> None:
        from data.config import ConfigError

        for view in self.tta:
            if view not in TTA_VIEWS:
                raise ConfigError(f"tta: unknown view {view!r} (known: {', '.join(TTA_VIEWS)})")
        if len(set(self.tta)) != len(self.tta):
            raise ConfigError(f"tta: {self.tta} lists a view twice")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size: must be at least 1, got {self.batch_size}")
        if self.num_workers < 0:
            raise ConfigError(f"num_workers: must be 0 or more, got {self.num_workers}")
        if self.members == "stack" and self.ensemble != "mean":
            # The stack maps single models' logits to a probability (apply_stack): ranks of
            # folds are no input it was fitted on.
            raise ConfigError("members=stack needs ensemble=mean (the stack is fitted on "
                              "single models' logits, not on ranks)")
        if list(self.snr_bins) != sorted(set(self.snr_bins)) or len(self.snr_bins) < 1:
            raise ConfigError(f"snr_bins: must be increasing, got {self.snr_bins}")


# ---------------------------------------------------------------------------------------------
# The search over long strain (``python -m infer.search``)
