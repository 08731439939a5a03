"""Batch augmentations on the device, after :func:`data.images.prepare_images`.

All take and return ``(B, 3, H, W)`` float tensors (normalised images, rows H1, L1, V1) and
draw from torch's generator of the tensor's device, so they run in the training process on
the accelerator, never in loader workers, and are restored exactly by a resumed run
(accelerate checkpoints the RNG states).
"""

from __future__ import annotations

import math

import torch

from train.config import AugmentConfig


def random_erasing(
    x: torch.Tensor,
    p: float,
    count: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    value: float = 0.0,
) -> torch.Tensor:
    """With probability ``p`` per sample, set ``count`` rectangles to ``value`` (all channels).

    Each rectangle covers a fraction of the image drawn uniformly from ``scale`` with an
    aspect ratio (height / width) log-uniform in ``ratio``, as torchvision's RandomErasing
    draws one; the seed solution used 18 small ones at p = 0.5. ``value`` 0 is the channel
    mean after normalisation.
    """
    b, _, h, w = x.shape
    dev = x.device
    area = torch.empty(b, count, device=dev).uniform_(*scale) * (h * w)
    aspect = torch.exp(torch.empty(b, count, device=dev).uniform_(math.log(ratio[0]),
                                                                   math.log(ratio[1])))
    eh = torch.sqrt(area * aspect).round().clamp(1, h)
    ew = torch.sqrt(area / aspect).round().clamp(1, w)
    top = (torch.rand(b, count, device=dev) * (h - eh + 1)).floor()
    left = (torch.rand(b, count, device=dev) * (w - ew + 1)).floor()
    apply = torch.rand(b, device=dev) < p
    rows = torch.arange(h, device=dev).view(1, 1, h, 1)
    cols = torch.arange(w, device=dev).view(1, 1, 1, w)
    in_rows = (rows >= top[..., None, None]) & (rows < (top + eh)[..., None, None])
    in_cols = (cols >= left[..., None, None]) & (cols < (left + ew)[..., None, None])
    mask = (in_rows & in_cols).any(dim=1, keepdim=True) & apply.view(b, 1, 1, 1)
    return x.masked_fill(mask, value)


def swap_detectors(x: torch.Tensor, p: float) -> torch.Tensor:
    """With probability ``p`` per sample, exchange the H1 and L1 rows (channels 0 and 1)."""
    swap = torch.rand(x.shape[0], device=x.device) < p
    return torch.where(swap.view(-1, 1, 1, 1), x[:, [1, 0, 2]], x)


def time_shift(x: torch.Tensor, p: float, max_shift: int) -> torch.Tensor:
    """With probability ``p`` per sample, roll along time (last axis) by up to ``max_shift``
    columns either way (circular: what leaves one edge enters at the other)."""
    b, w = x.shape[0], x.shape[-1]
    shift = torch.randint(-max_shift, max_shift + 1, (b,), device=x.device)
    shift = shift * (torch.rand(b, device=x.device) < p)
    idx = (torch.arange(w, device=x.device) - shift[:, None]) % w
    return x.gather(-1, idx.view(b, 1, 1, w).expand_as(x))


def augment(x: torch.Tensor, cfg: AugmentConfig, frames_to_columns: float = 1.0) -> torch.Tensor:
    """The training augmentations of ``cfg`` in order: detector swap, time shift, erasing.

    frames_to_columns: image columns per CQT frame (image width / native n_frames), to turn
    ``cfg.max_shift`` (frames) into columns of a resized image.
    """
    if cfg.swap_p > 0:
        x = swap_detectors(x, cfg.swap_p)
    max_cols = int(round(cfg.max_shift * frames_to_columns))
    if cfg.shift_p > 0 and max_cols > 0:
        x = time_shift(x, cfg.shift_p, max_cols)
    if cfg.erase_p > 0 and cfg.erase_count > 0:
        x = random_erasing(x, cfg.erase_p, cfg.erase_count, cfg.erase_scale, cfg.erase_ratio,
                           cfg.erase_value)
    return x
