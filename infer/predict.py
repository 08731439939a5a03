"""Batch prediction with fold ensembles and test-time augmentation.

A *fold directory* (``runs/NAME/fold{k}/``, written by training) holds ``best.safetensors``
(the timm model's state_dict) and ``model.json``, its model card (:mod:`data.modelcard`):
the model, its input kind, channel statistics, the transform identity and config of the
store it was trained on, the training PSD and the weights' SHA-256.

Inputs are either a finished image store (:func:`store_inputs`) or the raw ``.npy`` files of a
Kaggle-layout split (:func:`raw_inputs`), which are whitened and CQT'd on the device with the
transform recorded in ``model.json`` and never written to disk. Either way every model sees
float16 |CQT| images, normalised by :func:`data.images.prepare_images` exactly as in training;
TTA views act on the normalised images, where training's augmentations act.

A model is only used on images made the way its training images were: :func:`load_fold`
refuses a card whose transform this code would not make from its config (another transform
version) and weights whose hash is not the card's; :func:`check_store` and :func:`check_folds`
raise :class:`MismatchError` naming every key that differs, e.g. ``cqt.hop_length: model 32,
store 16``.

Invalid samples (``valid`` False in the store: skipped as bad input by preprocessing; a raw
file that :func:`data.layout.load_sample` rejects; an image that overflows float16) get the
target :data:`INVALID_TARGET` = 0.5, "no opinion", and a warning naming them: the Kaggle
format needs a number for every id, and a model's output on the all-zero placeholder image
would be an arbitrary guess. The ensemble ranks (``ensemble=rank``) cover valid rows only.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import send_to_device
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm

from data import layout
from data import store as zstore
from data.config import dict_diff, format_diff, from_dict
from data.images import prepare_images
from data.loader import StoreBlocks, batches, plan_epoch
from data.metrics import average_ranks
from data.modelcard import (
    CARD_FILE,
    INPUT_KINDS,
    WEIGHTS_FILE,
    ModelCard,
    read_card,
    verify_weights,
)
from infer.config import InferConfig
from preprocess.config import PreprocessConfig, identity_drift, identity_for

log = logging.getLogger(__name__)

INVALID_TARGET = 0.5


class InferError(ValueError):
    """Inputs that inference cannot use; the message names the file and the reason."""


class MismatchError(InferError):
    """A model used on images made another way than its training images, or folds that disagree."""


# ---------------------------------------------------------------------------------------------
# Checkpoints


@dataclass
class Fold:
    """One trained model of the ensemble and what it needs to see its inputs as in training."""

    path: Path  # the fold directory
    card: ModelCard
    model: torch.nn.Module = field(repr=False)

    @property
    def name(self) -> str:
        return str(self.path)

    @property
    def identity(self) -> dict:
        """The part of the training store's transform identity this model's input depends on,
        with the store's schema version."""
        return {"store_schema_version": self.card.store_schema_version,
                **identity_for(self.card.transform, self.card.input)}


def _fold_number(path: Path) -> int:
    m = re.fullmatch(r"fold(\d+)", path.name)
    return int(m.group(1)) if m else -1


def find_checkpoints(runs: str | Path | None, checkpoints: list[str] = ()) -> list[Path]:
    """Fold directories to ensemble: the ``checkpoints`` named, else every ``fold*`` under ``runs``.

    ``runs`` may also be a single fold directory. A checkpoint is a fold directory or the
    ``best.safetensors`` inside one. Raises InferError when nothing usable is found.
    """
    if checkpoints and runs is not None:
        raise InferError("give either --runs or checkpoints=[...], not both")
    if checkpoints:
        dirs = []
        for c in checkpoints:
            p = Path(c)
            d = p.parent if p.suffix == ".safetensors" else p
            if p.suffix == ".safetensors" and p.name != WEIGHTS_FILE:
                raise InferError(f"{p}: a checkpoint is a {WEIGHTS_FILE} or a fold directory")
            if not (d / WEIGHTS_FILE).is_file():
                raise InferError(f"{d / WEIGHTS_FILE}: checkpoint not found")
            dirs.append(d)
        return dirs
    if runs is None:
        raise InferError("no models: give --runs runs/NAME or checkpoints=[...]")
    runs = Path(runs)
    if (runs / WEIGHTS_FILE).is_file():
        return [runs]
    if not runs.is_dir():
        raise InferError(f"{runs}: run directory does not exist")
    folds = sorted((d for d in runs.glob("fold*") if d.is_dir()), key=_fold_number)
    unfinished = [d for d in folds if not (d / WEIGHTS_FILE).is_file()]
    if unfinished:
        log.warning("skipping fold directories without %s: %s", WEIGHTS_FILE,
                    ", ".join(str(d) for d in unfinished))
    found = [d for d in folds if (d / WEIGHTS_FILE).is_file()]
    if not found:
        raise InferError(f"{runs}: no fold*/{WEIGHTS_FILE} found (has training finished?)")
    return found


def load_fold(fold_dir: str | Path) -> Fold:
    """Read the model card, check the weights' hash, build the timm model and load the weights
    strictly; eval mode. CardError / MismatchError / InferError name the file and the cause."""
    import timm
    from safetensors.torch import load_file

    fold_dir = Path(fold_dir)
    card = read_card(fold_dir / CARD_FILE)
    card_path = fold_dir / CARD_FILE
    if card.store_schema_version != zstore.SCHEMA_VERSION:
        raise MismatchError(
            f"{card_path}: store_schema_version: model {card.store_schema_version}, this code "
            f"{zstore.SCHEMA_VERSION}; re-train or use the matching code version"
        )
    drift = identity_drift(card.transform, card.preprocess_config)
    if drift:
        raise MismatchError(f"{card_path}: trained on inputs made by another version of the "
                            f"transform: {format_diff(drift, 'model', 'this code')}; re-train")
    # One logit from the 3 detector rows is the contract.
    kwargs = card.model_kwargs
    if (kwargs.get("num_classes"), kwargs.get("in_chans")) != (1, 3):
        raise InferError(f"{card_path}: model_kwargs must give num_classes 1 and in_chans 3, "
                         f"got {kwargs.get('num_classes')} and {kwargs.get('in_chans')}")
    weights = fold_dir / WEIGHTS_FILE
    verify_weights(card, weights)
    model = timm.create_model(card.model_name, pretrained=False, **kwargs)
    try:
        model.load_state_dict(load_file(weights, device="cpu"), strict=True)
    except RuntimeError as e:
        raise InferError(f"{weights}: weights do not fit {card.model_name}: {e}") from None
    model.eval()
    return Fold(path=fold_dir, card=card, model=model)


# ---------------------------------------------------------------------------------------------
# Consistency checks

def check_folds(folds: list[Fold]) -> None:
    """All folds must read the same inputs: the same transform identity (the PSD's hash
    included) and store schema, as far as each model's input kind depends on them.

    Folds may differ in architecture, input kind, image size and channel statistics: each
    model gets its own input preparation.
    """
    first = folds[0]
    for other in folds[1:]:
        keys = set(first.identity) & set(other.identity)
        diff = dict_diff({k: first.identity[k] for k in keys},
                         {k: other.identity[k] for k in keys})
        if diff:
            names = ((first.path.name, other.path.name) if first.path.name != other.path.name
                     else (first.name, other.name))
            raise MismatchError(
                f"checkpoints disagree on their inputs ({first.name} vs {other.name}): "
                + format_diff(diff, *names)
            )


def check_store(folds: list[Fold], attrs: dict, store_path: str | Path) -> None:
    """The store's arrays must be made exactly like the models' training inputs, by this code."""
    made = attrs.get("transform", {})
    drift = identity_drift(made, attrs.get("config", {}))
    if drift:
        raise MismatchError(f"{store_path}: made by another version of the transform: "
                            f"{format_diff(drift, 'store', 'this code')}; re-run preprocessing")
    for fold in folds:
        store = {"store_schema_version": attrs.get("schema_version"),
                 **identity_for(made, fold.card.input)}
        diff = dict_diff(fold.identity, store)
        if diff:
            raise MismatchError(
                f"{store_path} was made differently from the training inputs of {fold.name}: "
                + format_diff(diff, "model", "store")
            )


# ---------------------------------------------------------------------------------------------
# Inputs
#
# Both inputs are read in blocks by ``data.loader``'s sequential plan (the one training's
# evaluation uses): each process reads a contiguous share of the rows, padded with rows of
# index PAD_INDEX (-1) so that every process runs the same batches; the padding is dropped
# after gathering.


@dataclass
class Inputs:
    """What :func:`predict` reads: blocks of this process's share, and every row's id."""

    dataset: IterableDataset  # yields (x, ok, index) blocks; index PAD_INDEX = padding
    ids: list[str]  # every row, in input order
    valid: np.ndarray  # (N,) False for rows known to be invalid before reading (store)
    source: str
    attrs: dict | None = None  # the store's attributes (store input only)
    raw: bool = False  # x is strain to transform (True) or stored images (False)


class _StoreRows(IterableDataset):
    """A sequential :class:`data.loader.StoreBlocks` as (images, ok, index) blocks."""

    def __init__(self, blocks: StoreBlocks):
        self.blocks = blocks

    def __iter__(self):
        for images, _, index in self.blocks:
            yield images, torch.ones(index.shape, dtype=torch.bool), index


def store_inputs(path: str | Path, batch_size: int, rank: int = 0, world_size: int = 1) -> Inputs:
    """A finished image store. Rows marked invalid are not read (the loader skips them)."""
    g = zstore.require_complete(path)
    valid = np.asarray(g["valid"][:], dtype=bool)
    if not valid.any():
        raise InferError(f"{path}: every sample is marked invalid")
    blocks = StoreBlocks(path, batch_size=batch_size, shuffle=False, rank=rank,
                         world_size=world_size)
    return Inputs(dataset=_StoreRows(blocks), ids=layout.int_to_id(g["ids"][:]), valid=valid,
                  source=str(path), attrs=g.attrs.asdict())


class RawStrain(IterableDataset):
    """Blocks ``(strain (n, 3, 4096) float64, ok (n,) bool, index (n,) int64)`` of one process's
    share of a Kaggle-layout split, read with :func:`data.layout.load_sample`.

    A file that ``load_sample`` rejects becomes zeros with ``ok`` False (and a warning).
    """

    def __init__(self, index: layout.Index, block_size: int, rank: int = 0, world_size: int = 1):
        self.index = index
        self.block_size = block_size
        self.rank = rank
        self.world_size = world_size

    def blocks(self) -> list[np.ndarray]:
        rows = np.arange(len(self.index), dtype=np.int64)
        return plan_epoch(rows, self.block_size, shuffle=False, batch_size=self.block_size,
                          rank=self.rank, world_size=self.world_size, buffer_chunks=1).blocks

    def read_block(self, rows: np.ndarray):
        x = np.zeros((rows.size, len(layout.DETECTORS), layout.N_TIME), dtype=np.float64)
        ok = rows >= 0
        for k in np.flatnonzero(ok):
            try:
                x[k] = layout.load_sample(self.index.path(int(rows[k])))
            except layout.BadSample as e:
                log.warning("bad sample, predicted %s: %s", INVALID_TARGET, e)
                ok[k] = False
        return torch.from_numpy(x), torch.from_numpy(ok), torch.from_numpy(rows)

    def __iter__(self):
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for b, rows in enumerate(self.blocks()):
            if b % n_workers == worker:  # the DataLoader collects from workers in turn
                yield self.read_block(rows)


def raw_inputs(root: str | Path, split: str, batch_size: int, rank: int = 0,
               world_size: int = 1) -> Inputs:
    """The ``.npy`` files of ``split`` under ``root``, in label-file order."""
    index = layout.build_index(root, split)
    if len(index) == 0:
        raise InferError(f"{root}: split {split} has no samples")
    return Inputs(dataset=RawStrain(index, batch_size, rank, world_size), ids=index.ids,
                  valid=np.ones(len(index), dtype=bool), source=str(Path(root) / split),
                  raw=True)


def training_psd(fold: Fold) -> np.ndarray:
    """The noise PSD the model's training inputs were whitened with: (3, n_freq) float64, 1/Hz,
    from its model card; its hash must equal the recorded ``psd_sha256``."""
    psd = np.asarray(fold.card.psd, dtype=np.float64)
    want = fold.card.transform.get("psd_sha256")
    got = zstore.psd_sha256(psd)
    if got != want:
        raise MismatchError(
            f"{fold.path / CARD_FILE}: {format_diff([('psd_sha256', want, got)], 'transform', 'psd')}"
            " (the card's PSD is not the one its transform names: the card is damaged)"
        )
    return psd


def build_transform(fold: Fold, psd: np.ndarray | None = None) -> torch.nn.Module:
    """The whiten + CQT transform recorded with ``fold``, with its training PSD, or with
    ``psd`` ((3, n_freq) float64, 1/Hz, on a grid from 0 to fs / 2) in its place (a search
    whitens long strain with the PSD of the data around each window).

    :func:`load_fold` has checked that this code makes the recorded transform from the
    recorded config, so the config alone rebuilds it.
    """
    from preprocess.transforms import Transform

    cfg = from_dict(PreprocessConfig, fold.card.preprocess_config)
    return Transform.from_config(cfg.whiten, cfg.cqt, training_psd(fold) if psd is None else psd)


def model_input(fold: Fold, images: torch.Tensor | None = None,
                waves: torch.Tensor | None = None) -> torch.Tensor:
    """What ``fold``'s model reads, made as in training, from float16 transform outputs.

    images: (B, 3, n_bins, n_frames) float16 |CQT| (the store's ``images``); waves: (B, 3, T)
    float16 whitened strain (the store's ``waves``). A model card's ``input`` says which one
    the model reads: "images" -> :func:`data.images.prepare_images` (normalised by the card's
    channel statistics, resized to its ``image_size``): (B, 3, H, W) float32; "waves" -> the
    strain normalised per channel by the card's statistics: (B, 3, T) float32.
    """
    card = fold.card
    if card.input not in INPUT_KINDS:
        raise InferError(f"{fold.path / CARD_FILE}: input {card.input!r} is not one of "
                         f"{INPUT_KINDS}")
    x = images if card.input == "images" else waves
    if x is None:
        raise InferError(f"{fold.name} reads {card.input}, which this input does not provide")
    mean, std = card.channel_stats["mean"], card.channel_stats["std"]
    if card.input == "images":
        return prepare_images(x, mean, std, card.image_size)
    x = x.float()
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1)
    return (x - m) / s


# ---------------------------------------------------------------------------------------------
# Test-time augmentation and ensembling


def tta_views(tta: list[str]) -> list[tuple[str, ...]]:
    """Every combination of the listed views, identity first: ["swap"] -> [(), ("swap",)]."""
    return [combo for r in range(len(tta) + 1) for combo in itertools.combinations(tta, r)]


def apply_view(x: torch.Tensor, view: tuple[str, ...], shift_columns: int) -> torch.Tensor:
    """One TTA view of model input (B, 3, H, W), i.e. after :func:`prepare_images`, where
    training augments too: "swap" exchanges the H1 and L1 rows (channels 0 and 1), "shift"
    rolls the time axis by ``shift_columns`` (circularly, as training's time shift does)."""
    if "swap" in view:
        x = x[:, [1, 0, 2]]
    if "shift" in view:
        x = torch.roll(x, shifts=shift_columns, dims=-1)
    return x


def combine(probs: np.ndarray, ensemble: str) -> np.ndarray:
    """(n_folds, n_views, N) probabilities -> (N,) targets.

    Views are always averaged as probabilities. Folds: ``"mean"`` averages the probabilities;
    ``"rank"`` averages each fold's ranks scaled to (0, 1] (ties share their mean rank), which
    ignores folds' differing calibration and keeps only their orderings.
    """
    per_fold = probs.mean(axis=1, dtype=np.float64)
    if ensemble == "mean":
        return per_fold.mean(axis=0)
    if ensemble == "rank":
        n = per_fold.shape[1]
        return np.mean([average_ranks(p) / n for p in per_fold], axis=0)
    raise ValueError(f"unknown ensemble {ensemble!r}; expected mean or rank")


@contextlib.contextmanager
def _ieee_fp32():
    """IEEE float32 for the transform's convolutions and matmuls, as preprocessing computes
    them (cuDNN defaults to TF32 on Ampere and later, coarser than the float16 images)."""
    conv = torch.backends.cudnn.conv.fp32_precision
    matmul = torch.backends.cuda.matmul.fp32_precision
    torch.backends.cudnn.conv.fp32_precision = "ieee"
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    try:
        yield
    finally:
        torch.backends.cudnn.conv.fp32_precision = conv
        torch.backends.cuda.matmul.fp32_precision = matmul


# ---------------------------------------------------------------------------------------------
# The loop


@dataclass
class Prediction:
    ids: list[str]  # in input (store or label-file) order
    probs: np.ndarray  # (n_folds, n_views, N) float64 sigmoid of the float32 logits; NaN: unread
    valid: np.ndarray  # (N,) bool
    target: np.ndarray  # (N,) float64: combined over the valid rows, INVALID_TARGET elsewhere
    views: list[tuple[str, ...]]
    folds: list[str]


def predict(
    folds: list[Fold],
    inputs: Inputs,
    cfg: InferConfig,
    accelerator,
    transform: torch.nn.Module | None = None,
    progress: bool = True,
) -> Prediction:
    """Predict every row of ``inputs`` with every fold and TTA view; complete on every process.

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

    probs = np.full((len(folds), len(views), n), np.nan, dtype=np.float64)
    valid = inputs.valid.copy()
    seen = np.zeros(n, dtype=bool)
    bar = tqdm(total=int(valid.sum()), desc="infer", unit="sample", dynamic_ncols=True,
               disable=not (progress and accelerator.is_main_process))
    with torch.inference_mode():
        blocks = (send_to_device(block, accelerator.device) for block in loader)
        for x, ok, index in batches(blocks, cfg.batch_size):
            if transform is not None:
                with _ieee_fp32():
                    x = transform(x)[0].to(torch.float16)
                ok = ok & torch.isfinite(x).flatten(1).all(dim=1)
            logits = []
            for fold, model in zip(folds, models):
                base = model_input(fold, images=x)
                # Training's time shift is in CQT frames of the native image; so is tta_shift.
                shift = round(cfg.tta_shift * base.shape[-1] / x.shape[-1])
                logits.append(torch.stack([
                    model(apply_view(base, view, shift)).float().view(-1) for view in views
                ], dim=-1))
            logits = torch.stack(logits, dim=1)  # (B, n_folds, n_views)
            # bool tensors do not all-gather on every backend: send uint8.
            logits, ok, index = accelerator.gather((logits, ok.to(torch.uint8), index))
            keep = index >= 0
            rows = index[keep].cpu().numpy()
            # Probabilities from float32 logits in float64: a float32 sigmoid rounds every
            # logit above ~17 to 1.0, and ties among confident samples would cost AUC.
            p = 1.0 / (1.0 + np.exp(-logits[keep].cpu().numpy().astype(np.float64)))
            probs[:, :, rows] = p.transpose(1, 2, 0)
            valid[rows] &= ok[keep].cpu().numpy().astype(bool)
            seen[rows] = True
            bar.update(rows.size)
    bar.close()
    missing = inputs.valid & ~seen
    if missing.any():
        raise RuntimeError(f"{int(missing.sum())} of {n} samples were not predicted")
    target = np.full(n, INVALID_TARGET, dtype=np.float64)
    if valid.any():
        target[valid] = combine(probs[:, :, valid], cfg.ensemble)
    if (~valid).any() and accelerator.is_main_process:
        bad = [inputs.ids[i] for i in np.flatnonzero(~valid)[:5]]
        log.warning("%d invalid sample(s) predicted %s (skipped as bad input): %s%s",
                    int((~valid).sum()), INVALID_TARGET, ", ".join(bad),
                    " ..." if (~valid).sum() > 5 else "")
    return Prediction(ids=list(inputs.ids), probs=probs, valid=valid, target=target,
                      views=views, folds=[f.name for f in folds])


# ---------------------------------------------------------------------------------------------
# Submission


def submission_order(ids: list[str], reference: list[str], what: str, ref_name: str) -> np.ndarray:
    """Positions into ``ids`` that put them in ``reference`` order; InferError unless the two
    hold the same ids."""
    pos = {sid: i for i, sid in enumerate(ids)}
    if len(pos) != len(ids):
        raise InferError(f"{what}: duplicate ids")
    missing = [sid for sid in reference if sid not in pos]
    if missing:
        raise InferError(
            f"{len(missing)} id(s) of {ref_name} are not in {what} (first: {missing[0]})"
        )
    ref = set(reference)
    extra = [sid for sid in ids if sid not in ref]
    if extra:
        raise InferError(
            f"{len(extra)} id(s) of {what} are not in {ref_name} (first: {extra[0]})"
        )
    return np.array([pos[sid] for sid in reference], dtype=np.int64)


def find_sample_submission(store_attrs: dict | None, data_root: str | Path | None) -> Path | None:
    """``sample_submission.csv`` next to the data: in ``data_root``, or in the data set a test
    store was made from (its ``source`` attribute), if it exists there."""
    root = data_root
    if root is None and store_attrs is not None and store_attrs.get("split") == "test":
        source = store_attrs.get("source")
        root = source
    if root is None:
        return None
    path = Path(root) / layout.LABEL_FILES["test"]
    return path if path.is_file() else None


def write_submission(path: str | Path, ids: list[str], target: np.ndarray) -> None:
    """``id,target`` CSV; each target as the shortest decimal that reads back to the same
    float64, so no two different predictions tie in the file (the AUC sees only their order)."""
    layout.write_labels(path, ids, [repr(float(t)) for t in target])
