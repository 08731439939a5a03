"""Test-time augmentation: the views of a batch each model sees, made by the same
:mod:`data.inputs.views` ops as training's augmentations, on the model input.
"""

from __future__ import annotations

import itertools

import torch

from data.inputs import views
from data.inputs.images import model_input
from data.rundir import ModelCard
from infer.predict.checkpoints import Fold


def tta_views(tta: list[str]) -> list[tuple[str, ...]]:
    """Every combination of the listed views, identity first: ["swap"] -> [(), ("swap",)]."""
    return [combo for r in range(len(tta) + 1) for combo in itertools.combinations(tta, r)]


def apply_view(x: torch.Tensor, view: tuple[str, ...], shift: int) -> torch.Tensor:
    """One TTA view of model input, where training augments too: images (B, 3, H, W) after
    :func:`data.inputs.images.model_input`, or whitened strain (B, 3, T). The ops are those of
    :mod:`data.inputs.views`, which training's augmentations apply: "swap" exchanges the H1 and
    L1 rows, "shift" rolls the time axis by ``shift`` (circularly; columns of an image, samples
    of strain), "flip" negates strain. An image's "flip" view is the image itself:
    |CQT(-x)| = |CQT(x)|, so a mixed ensemble can ask for it."""
    if "flip" in view and x.ndim == 3:
        x = views.flip_sign(x)
    if "swap" in view:
        x = views.swap_detectors(x)
    if "shift" in view:
        x = views.roll_time(x, shift)
    return x


def tta_shift_steps(card: ModelCard, native: int, width: int, seconds: float) -> int:
    """``seconds`` of time shift in steps of a model input ``width`` steps wide made from a
    stored array ``native`` steps wide: samples of strain, or columns of an image (CQT frames
    of ``hop_length`` samples, times ``width / native`` when the model reads resized images,
    as training's ``augment.max_shift`` is rescaled)."""
    rate = card.transform["sample_rate"]
    if card.input == "waves":
        return round(seconds * rate)
    hop = card.preprocess_config["cqt"]["hop_length"]
    return round(seconds * rate / hop * width / native)


def fold_views(fold: Fold, arrays: dict[str, torch.Tensor], views: list[tuple[str, ...]],
               tta_shift: float) -> list[torch.Tensor]:
    """The model input of ``fold`` from the batch's stored arrays (float16, as in the store),
    one tensor per TTA view: what training fed the model, then each view."""
    card = fold.card
    stats = card.channel_stats
    x = arrays[card.input]
    base = model_input(x, card.input, stats["mean"], stats["std"], card.image_size)
    shift = tta_shift_steps(card, x.shape[-1], base.shape[-1], tta_shift)
    return [apply_view(base, view, shift) for view in views]
