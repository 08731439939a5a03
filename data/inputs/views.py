"""Deterministic views of a batch of detector data: the ops behind augmentation and TTA.

Training's random augmentations (``train.augment``) and inference's test-time views
(``infer.predict.tta.apply_view``) both call these, so a view seen at test time is exactly a
transformation the model was trained on. They live on the shared floor because ``infer``
may not import ``train``.

Every op takes ``(B, 3, ...)`` tensors whose rows are the detectors H1, L1, V1 and whose
last axis is time: whitened strain ``(B, 3, T)`` (T samples at 2048 Hz) or normalised CQT
images ``(B, 3, H, W)`` (W frames). They return new tensors and never draw random numbers.
"""

from __future__ import annotations

import torch

# Rows of the detector axis (dim 1).
H1, L1, V1 = 0, 1, 2


def swap_detectors(x: torch.Tensor) -> torch.Tensor:
    """H1 and L1 exchanged (rows 0 and 1 of dim 1), V1 kept.

    The two LIGO detectors are nearly co-aligned and have alike noise, so the swapped sample
    is a plausible one (3rd place's training augmentation and TTA).
    """
    return x[:, [L1, H1, V1]]


def flip_sign(x: torch.Tensor) -> torch.Tensor:
    """-x: every detector of the sample negated together.

    Physical for strain: rotating the polarisation angle psi by pi/2 negates both antenna
    patterns F+ and Fx of every detector, so -h is the same source seen at another psi, and
    Gaussian noise is symmetric. Meaningless for |CQT| images (|CQT(-x)| = |CQT(x)|).
    """
    return -x


def roll_time(x: torch.Tensor, shift: int | torch.Tensor) -> torch.Tensor:
    """Roll along the last (time) axis, circularly: what leaves one edge enters at the other.

    shift: an int (the whole batch, as ``torch.roll(x, shift, dims=-1)``), or an integer
    tensor of shape (B,) (one shift per sample, all detectors together) or (B, 3) (one per
    sample and detector). Positive moves the data later (towards the end). Units are the
    last axis's: samples for strain, frames (columns) for images.
    """
    if isinstance(shift, int):
        return torch.roll(x, shifts=shift, dims=-1)
    if shift.shape != x.shape[: shift.ndim] or shift.ndim > x.ndim - 1:
        raise ValueError(f"roll_time: shift of shape {tuple(shift.shape)} does not match the "
                         f"leading axes of x {tuple(x.shape)}")
    t = x.shape[-1]
    s = shift.to(device=x.device, dtype=torch.long)
    s = s.reshape(*s.shape, *([1] * (x.ndim - s.ndim)))  # broadcast over the trailing axes
    idx = (torch.arange(t, device=x.device) - s) % t
    return x.gather(-1, idx.expand_as(x))
