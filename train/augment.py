"""Batch augmentations on the device: CQT images (:func:`augment`) and whitened strain
(:func:`augment_waves`).

Images are ``(B, 3, H, W)`` float tensors after :func:`data.inputs.images.prepare_images`; waves are
``(B, 3, T)`` float whitened strain at 2048 Hz (the store's ``waves``); rows H1, L1, V1 in
both. :func:`swap_detectors` and :func:`time_shift` take either. Every function draws from
torch's generator of the tensor's device, so they run in the training process on the
accelerator, never in loader workers, and are restored exactly by a resumed run (accelerate
checkpoints the RNG states). The deterministic ops they apply are :mod:`data.inputs.views`', which
inference's TTA views call too.
"""

from __future__ import annotations

import math

import torch

from data.inputs import views
from train.config import AugmentConfig


def _per_sample(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, ...) broadcastable against x."""
    return mask.view(-1, *([1] * (x.ndim - 1)))


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
    """With probability ``p`` per sample, exchange the H1 and L1 rows (channels 0 and 1).

    x: (B, 3, ...) images or waves."""
    swap = torch.rand(x.shape[0], device=x.device) < p
    return torch.where(_per_sample(swap, x), views.swap_detectors(x), x)


def time_shift(x: torch.Tensor, p: float, max_shift: int) -> torch.Tensor:
    """With probability ``p`` per sample, roll along time (last axis) by up to ``max_shift``
    steps either way, all detectors together (circular: what leaves one edge enters at the
    other). x: (B, 3, H, W) images (steps are columns) or (B, 3, T) waves (samples)."""
    b = x.shape[0]
    shift = torch.randint(-max_shift, max_shift + 1, (b,), device=x.device)
    shift = shift * (torch.rand(b, device=x.device) < p)
    return views.roll_time(x, shift)


def augment(x: torch.Tensor, cfg: AugmentConfig, frames_to_columns: float = 1.0) -> torch.Tensor:
    """The training augmentations of ``cfg`` for images in order: detector swap, time shift,
    erasing. The waveform-only keys (``flip_p``, ``detector_shift_*``, ``max_shift_samples``,
    ``mask_*``) are not used.

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


# ---------------------------------------------------------------------------------------------
# Whitened strain, (B, 3, T) at 2048 Hz

def flip_sign(x: torch.Tensor, p: float) -> torch.Tensor:
    """With probability ``p`` per sample, negate it, all detectors together (x: (B, 3, T)).

    -h is the same source at polarisation angle psi + pi/2 (:func:`data.inputs.views.flip_sign`).
    """
    flip = torch.rand(x.shape[0], device=x.device) < p
    return torch.where(_per_sample(flip, x), views.flip_sign(x), x)


def detector_shift(x: torch.Tensor, p: float, max_hl: int, max_v: int) -> torch.Tensor:
    """With probability ``p`` per sample, roll L1 and V1 in time relative to H1 (x: (B, 3, T)).

    Draws, per sample, an L1 shift ``s_L`` uniform on the integers of [-max_hl, max_hl] and a
    V1 shift ``s_V`` uniform on those within ``max_v`` of both H1's (0) and L1's shift; H1 is
    not moved (the common shift, :func:`time_shift`, moves all three). Shifts are circular,
    in samples at 2048 Hz: what leaves one end enters at the other, from the ends that the
    whitening's Tukey window tapers.

    Physical meaning: a signal reaches the detectors at times that differ by at most the
    light travel time between them (H1-L1 10.0 ms = 20.5 samples; H1-V1 27.3 ms = 55.9;
    L1-V1 26.4 ms = 54.2), which depends on the sky position. Moving the detectors by
    ``max_hl=20, max_v=54`` (the defaults of ``augment.detector_shift_max``) imitates another
    sky position. It does not rotate the antenna patterns (the relative amplitudes and phases
    stay those of the original sky position), and the new delays are the old ones plus the
    drawn shifts, so they can exceed the physical bounds by up to the shift. Integer shifts
    quantise delays to 0.49 ms; whitened strain is band-limited below 1024 Hz, so an integer
    roll is an exact delay of that band-limited signal, only on a coarser grid than the
    continuous true delays (sub-sample delays would need a frequency-domain phase shift, as
    ``data.sim.samples`` applies).
    """
    if max_hl < 0 or max_v < 0 or max_hl > 2 * max_v:
        raise ValueError(f"detector_shift: need 0 <= max_hl <= 2 * max_v (a V1 shift within "
                         f"max_v of both H1 and L1), got max_hl={max_hl}, max_v={max_v}")
    b, dev = x.shape[0], x.device
    s_l = torch.randint(-max_hl, max_hl + 1, (b,), device=dev)
    lo = s_l.clamp(min=0) - max_v  # within max_v of both 0 (H1) and s_l (L1)
    hi = s_l.clamp(max=0) + max_v
    # clamp: float32 rounding can turn u * n into n for u just below 1
    s_v = lo + (torch.rand(b, device=dev) * (hi - lo + 1)).floor().long().clamp(max=hi - lo)
    apply = torch.rand(b, device=dev) < p
    shift = torch.stack([torch.zeros_like(s_l), s_l, s_v], dim=1) * apply[:, None]
    return views.roll_time(x, shift)


def time_mask(x: torch.Tensor, p: float, max_len: int) -> torch.Tensor:
    """With probability ``p`` per sample, zero one span of ``1..max_len`` samples (uniform) at
    a uniform position inside the sample, in every detector (x: (B, 3, T)).

    0 is the mean of whitened strain; the span never wraps around.
    """
    b, t, dev = x.shape[0], x.shape[-1], x.device
    length = torch.randint(1, max_len + 1, (b,), device=dev).clamp(max=t)
    start = (torch.rand(b, device=dev) * (t - length + 1)).floor().long().clamp(max=t - length)
    apply = torch.rand(b, device=dev) < p
    pos = torch.arange(t, device=dev)
    span = (pos >= start[:, None]) & (pos < (start + length)[:, None]) & apply[:, None]
    return x.masked_fill(span[:, None, :], 0.0)


def augment_waves(x: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """The training augmentations of ``cfg`` for whitened strain (B, 3, T), in order: sign flip
    (``flip_p``), H1<->L1 swap (``swap_p``), detector shifts (``detector_shift_p``,
    ``detector_shift_max``), common time shift (``shift_p``, ``max_shift_samples``), time mask
    (``mask_p``, ``mask_max``). The image-only keys (``erase_*``, ``max_shift``) are not used.
    """
    if cfg.flip_p > 0:
        x = flip_sign(x, cfg.flip_p)
    if cfg.swap_p > 0:
        x = swap_detectors(x, cfg.swap_p)
    if cfg.detector_shift_p > 0:
        x = detector_shift(x, cfg.detector_shift_p, *cfg.detector_shift_max)
    if cfg.shift_p > 0 and cfg.max_shift_samples > 0:
        x = time_shift(x, cfg.shift_p, cfg.max_shift_samples)
    if cfg.mask_p > 0 and cfg.mask_max > 0:
        x = time_mask(x, cfg.mask_p, cfg.mask_max)
    return x
