"""From stored float16 arrays to model input: one function, shared by training and inference.

Runs on whatever device the batch is on (after the host-to-device copy), never in loader
workers: the store holds raw |CQT| magnitudes (``images``) and whitened strain (``waves``),
and the normalisation statistics travel with the store and with every model card
(``channel_stats``). :func:`model_input` is what training's ``BatchTransform`` and inference call.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms.v2 import functional as TF


def prepare_images(
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    image_size: Sequence[int] | None = None,
) -> torch.Tensor:
    """Normalise per channel and resize.

    images: (B, 3, n_bins, n_frames), float16 or float32 |CQT| magnitudes.
    mean, std: per-channel statistics from the store (3 values each).
    image_size: (H, W) to resize to (bilinear, antialiased), or None to keep the native size.
    Returns (B, 3, H, W) float32.
    """
    x = images.float()
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    x = (x - m) / s
    if image_size is not None and tuple(image_size) != tuple(x.shape[-2:]):
        x = TF.resize(x, list(image_size), antialias=True)
    return x


def model_input(
    x: torch.Tensor,
    kind: str,
    mean: Sequence[float],
    std: Sequence[float],
    image_size: Sequence[int] | None = None,
) -> torch.Tensor:
    """Stored arrays of one input kind -> float32 model input.

    kind "images": x (B, 3, n_bins, n_frames) |CQT| -> :func:`prepare_images` (normalised,
    resized to ``image_size``). kind "waves": x (B, 3, T) whitened strain -> float32,
    ``(x - mean) / std`` per detector (whitening already gives Gaussian noise unit variance;
    the card's statistics say what was used, identity for the models trained here).
    """
    if kind == "images":
        return prepare_images(x, mean, std, image_size)
    if kind == "waves":
        w = x.float()
        m = torch.as_tensor(mean, dtype=w.dtype, device=w.device).view(1, -1, 1)
        s = torch.as_tensor(std, dtype=w.dtype, device=w.device).view(1, -1, 1)
        return (w - m) / s
    raise ValueError(f"unknown input kind {kind!r}; expected images or waves")
