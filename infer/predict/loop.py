"""The prediction loop: every fold, every TTA view, over one process's share of the inputs,
gathered across processes into one :class:`Prediction`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from accelerate.utils import send_to_device
from torch.utils.data import DataLoader

from data import devices
from data.inputs.loader import batches
from data.metrics import probability
from data.progress import progress_bar
from infer.config import InferConfig
from infer.predict.checkpoints import Fold
from infer.predict.ensemble import Stack, apply_stack, combine, combine_members
from infer.predict.inputs import InputSource
from infer.predict.submission import INVALID_TARGET
from infer.predict.tta import fold_views, tta_views

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    ids: list[str]  # in input (store or label-file) order
    logits: np.ndarray  # (n_folds, n_views, N) float64 of the float32 logits; NaN: unread
    probs: np.ndarray  # (n_folds, n_views, N) their sigmoid
    valid: np.ndarray  # (N,) bool
    target: np.ndarray  # (N,) float64: combined over the valid rows, INVALID_TARGET elsewhere
    views: list[tuple[str, ...]]
    folds: list[str]
    members: np.ndarray  # (n_members, N): each run's folds combined (INVALID_TARGET: invalid)


def predict(
    folds: list[Fold],
    inputs: InputSource,
    cfg: InferConfig,
    accelerator,
    transform: torch.nn.Module | None = None,
    progress: bool = True,
    stack: Stack | None = None,
) -> Prediction:
    """Predict every row of ``inputs`` with every fold and TTA view; complete on every process.

    Folds of one run (``Fold.member``) are combined by ``cfg.ensemble``; several runs by
    ``cfg.members`` (``stack``: the weights :func:`~infer.predict.ensemble.fit_member_stack`
    fitted, applied by :func:`~infer.predict.ensemble.apply_stack`).

    ``transform`` (whiten + CQT, :func:`build_transform`) is required for raw inputs and runs
    on the accelerator's device; its float32 images are rounded to float16 like the store's
    (so both paths feed the models the same numbers), and an image that does not fit float16
    makes the sample invalid, as in preprocessing. Each process reads its share of the rows
    (``inputs`` was made with this process's rank); predictions are gathered with their row
    index after every batch and the padding rows dropped.
    """
    n = len(inputs.ids)
    views = tta_views(cfg.tta)
    if inputs.raw and transform is None:
        raise ValueError("raw inputs need the transform")
    loader = DataLoader(inputs.dataset, batch_size=None, num_workers=cfg.num_workers)
    models = [accelerator.prepare_model(f.model, evaluation_mode=True) for f in folds]
    if transform is not None:
        # The transform is no model: kept out of mixed-precision autocast (it computes in
        # float64 where it must), placed on the accelerator's device once.
        transform = transform.to(accelerator.device).eval()

    all_logits = np.full((len(folds), len(views), n), np.nan, dtype=np.float64)
    valid = inputs.valid.copy()
    seen = np.zeros(n, dtype=bool)
    bar = progress_bar(total=int(valid.sum()), desc="infer", unit="sample", dynamic_ncols=True,
               disable=not (progress and accelerator.is_main_process))
    kinds = sorted({f.card.input for f in folds})
    with torch.inference_mode():
        blocks = (send_to_device(block, accelerator.device) for block in loader)
        for *xs, ok, index in batches(blocks, cfg.batch_size):
            if transform is not None:
                with devices.ieee_fp32():  # as preprocessing computes it
                    images, waves = transform(xs[0])
                # Rounded to float16 as the store holds them, so both paths feed the models
                # the same numbers; a value float16 cannot hold makes the sample invalid.
                arrays = {"images": images.to(torch.float16), "waves": waves.to(torch.float16)}
                for kind in kinds:
                    ok = ok & torch.isfinite(arrays[kind]).flatten(1).all(dim=1)
            else:
                arrays = dict(zip(inputs.arrays, xs))
            logits = []
            for fold, model in zip(folds, models):
                logits.append(torch.stack([
                    model(x).float().view(-1)
                    for x in fold_views(fold, arrays, views, cfg.tta_shift)
                ], dim=-1))
            logits = torch.stack(logits, dim=1)  # (B, n_folds, n_views)
            # bool tensors do not all-gather on every backend: send uint8.
            logits, ok, index = accelerator.gather((logits, ok.to(torch.uint8), index))
            keep = index >= 0
            rows = index[keep].cpu().numpy()
            all_logits[:, :, rows] = logits[keep].cpu().numpy().transpose(1, 2, 0)
            valid[rows] &= ok[keep].cpu().numpy().astype(bool)
            seen[rows] = True
            bar.update(rows.size)
    bar.close()
    missing = inputs.valid & ~seen
    if missing.any():
        raise RuntimeError(f"{int(missing.sum())} of {n} samples were not predicted")
    probs = probability(all_logits)
    target = np.full(n, INVALID_TARGET, dtype=np.float64)
    n_members = max(f.member for f in folds) + 1
    members = np.full((n_members, n), INVALID_TARGET, dtype=np.float64)
    if valid.any():
        for m in range(n_members):
            mine = [i for i, f in enumerate(folds) if f.member == m]
            members[m, valid] = combine(probs[mine][:, :, valid], cfg.ensemble)
        if n_members == 1:
            target[valid] = members[0, valid]
        elif cfg.members == "stack":
            if stack is None:
                raise ValueError("members=stack needs weights fitted on out-of-fold predictions")
            target[valid] = apply_stack(stack, folds, all_logits[:, :, valid])
        else:
            target[valid] = combine_members(members[:, valid], cfg.members)
    if (~valid).any() and accelerator.is_main_process:
        bad = [inputs.ids[i] for i in np.flatnonzero(~valid)[:5]]
        log.warning("%d invalid sample(s) predicted %s (skipped as bad input): %s%s",
                    int((~valid).sum()), INVALID_TARGET, ", ".join(bad),
                    " ..." if (~valid).sum() > 5 else "")
    return Prediction(ids=list(inputs.ids), logits=all_logits, probs=probs, valid=valid,
                      target=target,
                      views=views, folds=[f.name for f in folds], members=members)
