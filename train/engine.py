"""The training loop: :func:`train_one_epoch` and :func:`evaluate`, called from ``train.cli``.

Both take a prepared model and a prepared loader of blocks (``data.inputs.loader.StoreBlocks``
through accelerate, so the blocks arrive on the device) and cut the blocks into batches with
:func:`data.inputs.loader.batches`. Images become model input on the device: normalisation and
resizing (:func:`data.inputs.images.prepare_images`), then the training augmentations.
Accelerate decides device, precision (launch flags) and processes; nothing here does.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from data.inputs.images import model_input
from data.inputs.loader import batches
from data.metrics import roc_auc
from data.progress import progress_bar
from train.augment import augment, augment_waves
from train.config import AugmentConfig


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or Inf; the run stops without checkpointing."""


@dataclass
class TrainState:
    """Counters and history that a checkpoint carries (``accelerator.register_for_checkpointing``).

    Together with the model, optimizer, RNG states and EMA (saved by accelerate) they make a
    resumed run continue exactly: the data order is a pure function of (seed, epoch) and the
    batches done (``data.inputs.loader.plan_epoch``).
    """

    epoch: int = 0  # completed epochs
    batches_done: int = 0  # batches of the current epoch already trained on
    num_updates: int = 0  # optimizer steps so far
    loss_sum: float = 0.0  # training loss summed over the current epoch's samples (all ranks)
    loss_count: int = 0
    best_auc: float = -math.inf
    best_epoch: int = 0
    history: list[dict] = field(default_factory=list)

    def state_dict(self) -> dict:
        return dict(self.__dict__)

    def load_state_dict(self, state: dict) -> None:
        self.__dict__.update(state)


@dataclass(frozen=True)
class BatchTransform:
    """How stored arrays become model input: the input kind, its channel statistics, the size."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: tuple[int, int] | None
    n_frames: int  # native width of images, to express time shifts in frames
    channels_last: bool = False
    kind: str = "images"  # "images" (|CQT|) or "waves" (whitened strain)

    def __call__(self, x: torch.Tensor, aug: AugmentConfig | None = None) -> torch.Tensor:
        """images (B, 3, n_bins, n_frames) float16 -> (B, 3, H, W) float32, or waves
        (B, 3, T) float16 -> (B, 3, T) float32; augmented if ``aug``."""
        x = model_input(x, self.kind, self.mean, self.std, self.image_size)
        if aug is not None:
            x = (augment(x, aug, x.shape[-1] / self.n_frames) if self.kind == "images"
                 else augment_waves(x, aug))
        if self.channels_last and self.kind == "images":
            x = x.contiguous(memory_format=torch.channels_last)
        return x


CHECK_EVERY = 10  # batches between the collective checks of the loss (and the bar's figures)


def _check_finite(accelerator, nonfinite: torch.Tensor, state: TrainState, since: int) -> None:
    """NonFiniteLoss on every process when any process saw a NaN or Inf loss since batch
    ``since`` (a collective: every process calls it at the same batch)."""
    bad = int(accelerator.reduce(nonfinite.clone(), reduction="sum").item())
    if bad:
        raise NonFiniteLoss(
            f"training loss is nan or inf at epoch {state.epoch + 1} between batch {since + 1} "
            f"and {state.batches_done} ({bad} non-finite batch loss(es) over all processes); "
            "every process stopped without saving: the last checkpoint and best.safetensors "
            "are from before it"
        )


def _sum_across(accelerator, *values: float) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=accelerator.device)
    return accelerator.reduce(t, reduction="sum").tolist()


def train_one_epoch(
    model: torch.nn.Module,
    loader,
    optimizer,
    scheduler,
    accelerator,
    state: TrainState,
    *,
    to_input: BatchTransform,
    aug: AugmentConfig,
    batch_size: int,
    n_batches: int,
    clip_grad: float | None = None,
    ema=None,
    ema_target: torch.nn.Module | None = None,
    checkpoint_every_steps: int = 0,
    save_checkpoint: Callable[[], None] | None = None,
    progress: bool = True,
) -> dict:
    """One pass over ``loader`` (which starts at ``state.batches_done``); updates ``state``.

    n_batches: batches of the whole epoch on this rank (for progress and checkpoint timing).
    ema / ema_target: a ``timm.utils.ModelEmaV3`` updated from the unwrapped model after
    every optimizer step. progress: a progress bar on the main process. Raises NonFiniteLoss
    on every process within CHECK_EVERY batches of a NaN/Inf loss on any process, and before
    any checkpoint is saved after it.
    Returns ``{"train_loss", "samples_per_s", "lr"}``.
    """
    model.train()
    # The loss stays on the device (no host sync per micro-batch); every CHECK_EVERY batches,
    # before a checkpoint and at the epoch's end, all processes add up their non-finite
    # losses in one collective, so a NaN on any rank stops every rank at the same batch
    # (a rank that raised alone would leave the others waiting in DDP's all-reduce).
    local_sum = torch.zeros((), dtype=torch.float64, device=accelerator.device)
    nonfinite = torch.zeros((), dtype=torch.float64, device=accelerator.device)
    local_count, checked = 0, state.batches_done
    seen, start = 0, time.perf_counter()
    bar = progress_bar(total=n_batches, initial=state.batches_done,
                       desc=f"epoch {state.epoch + 1}",
                       disable=not (progress and accelerator.is_main_process),
                       dynamic_ncols=True, leave=False)
    for images, targets, _ in batches(loader, batch_size):
        x = to_input(images, aug)
        with accelerator.accumulate(model):
            with accelerator.autocast():
                logits = model(x).squeeze(1)
            loss = F.binary_cross_entropy_with_logits(logits.float(), targets)
            detached = loss.detach()
            nonfinite += (~torch.isfinite(detached)).double()
            accelerator.backward(loss)
            if clip_grad is not None and accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), clip_grad)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        n = targets.shape[0]
        local_sum += detached.double() * n
        local_count += n
        seen += n
        state.batches_done += 1
        bar.update(1)
        save_now = False
        if accelerator.sync_gradients:
            state.num_updates += 1
            scheduler.step_update(num_updates=state.num_updates)
            if ema is not None:
                ema.update(ema_target, step=state.num_updates)
            save_now = bool(checkpoint_every_steps
                            and state.num_updates % checkpoint_every_steps == 0
                            and state.batches_done < n_batches and save_checkpoint is not None)
        if (save_now or state.batches_done % CHECK_EVERY == 0
                or state.batches_done == n_batches):
            _check_finite(accelerator, nonfinite, state, checked)
            checked = state.batches_done
            rate = seen * accelerator.num_processes / max(time.perf_counter() - start, 1e-9)
            bar.set_postfix(loss=f"{detached.item():.4f}",
                            lr=f"{optimizer.param_groups[0]['lr']:.2e}",
                            samples_per_s=f"{rate:.0f}")
        if save_now:
            # Fold this rank's running loss into the global sum first: only the main
            # process's copy of `state` is saved.
            s, c = _sum_across(accelerator, local_sum.item(), local_count)
            state.loss_sum += s
            state.loss_count += int(c)
            local_sum.zero_()
            local_count = 0
            save_checkpoint()
    bar.close()
    _check_finite(accelerator, nonfinite, state, checked)  # an epoch shorter than its plan
    elapsed = time.perf_counter() - start
    s, c = _sum_across(accelerator, local_sum.item(), local_count)
    state.loss_sum += s
    state.loss_count += int(c)
    return {
        "train_loss": state.loss_sum / max(state.loss_count, 1),
        "samples_per_s": seen * accelerator.num_processes / max(elapsed, 1e-9),
        "lr": optimizer.param_groups[0]["lr"],
    }


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, accelerator, *, to_input: BatchTransform,
             batch_size: int) -> dict:
    """Predict the held-out samples of ``loader`` (sequential ``StoreBlocks``) on every rank.

    Predictions are gathered with their store rows on every batch; padding rows (index < 0)
    are dropped, so each held-out sample counts once. Returns ``{"loss", "auc", "index",
    "target", "logit"}`` with numpy arrays sorted by store row (identical on every rank).
    """
    model.eval()
    logits_all, target_all, index_all = [], [], []
    for images, targets, index in batches(loader, batch_size):
        with accelerator.autocast():
            logits = model(to_input(images)).squeeze(1)
        logits, targets, index = accelerator.gather_for_metrics(
            (logits.float(), targets, index)
        )
        keep = index >= 0
        logits_all.append(logits[keep].cpu())
        target_all.append(targets[keep].cpu())
        index_all.append(index[keep].cpu())
    logits = torch.cat(logits_all)
    target = torch.cat(target_all)
    index = torch.cat(index_all).numpy()
    order = np.argsort(index, kind="stable")
    loss = F.binary_cross_entropy_with_logits(logits, target).item()
    logits, target = logits.numpy()[order], target.numpy()[order]
    # AUC from the logits: the sigmoid of a confident float32 logit rounds to 1.0 and ties.
    return {"loss": loss, "auc": roc_auc(target, logits), "index": index[order],
            "target": target, "logit": logits}
