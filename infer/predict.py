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

import itertools
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import send_to_device
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm

from data import devices, layout, views
from data import store as zstore
from data.config import dict_diff, format_diff, from_dict
from data.images import model_input
from data.loader import StoreBlocks, batches, plan_epoch
from data.metrics import average_ranks, probability
from data.modelcard import (
    CARD_FILE,
    OOF_FILE,
    WEIGHTS_FILE,
    ModelCard,
    read_card,
    read_oof,
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
    member: int = 0  # which run of the ensemble (``--runs A B ...``) the fold belongs to

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

    import data.models1d  # noqa: F401  (registers the 1D CNNs with timm)

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
    raw: bool = False  # x is strain to transform (True) or stored arrays (False)
    arrays: tuple[str, ...] = ()  # the stored arrays each block holds, in order (store only)


class _StoreRows(IterableDataset):
    """A sequential :class:`data.loader.StoreBlocks` as (*arrays, ok, index) blocks."""

    def __init__(self, blocks: StoreBlocks):
        self.blocks = blocks

    def __iter__(self):
        for *arrays, _, index in self.blocks:
            yield *arrays, torch.ones(index.shape, dtype=torch.bool), index


def store_inputs(path: str | Path, batch_size: int, rank: int = 0, world_size: int = 1,
                 arrays: tuple[str, ...] = ("images",)) -> Inputs:
    """A finished store; ``arrays`` the ones the models read (``images``, ``waves``). Rows
    marked invalid are not read (the loader skips them)."""
    g = zstore.require_complete(path)
    valid = np.asarray(g["valid"][:], dtype=bool)
    if not valid.any():
        raise InferError(f"{path}: every sample is marked invalid")
    blocks = StoreBlocks(path, batch_size=batch_size, shuffle=False, rank=rank,
                         world_size=world_size, arrays=arrays)
    return Inputs(dataset=_StoreRows(blocks), ids=layout.int_to_id(g["ids"][:]), valid=valid,
                  source=str(path), attrs=g.attrs.asdict(), arrays=tuple(arrays))


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
            f"{fold.path / CARD_FILE}: "
            f"{format_diff([('psd_sha256', want, got)], 'transform', 'psd')}"
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


# ---------------------------------------------------------------------------------------------
# Test-time augmentation and ensembling


def tta_views(tta: list[str]) -> list[tuple[str, ...]]:
    """Every combination of the listed views, identity first: ["swap"] -> [(), ("swap",)]."""
    return [combo for r in range(len(tta) + 1) for combo in itertools.combinations(tta, r)]


def apply_view(x: torch.Tensor, view: tuple[str, ...], shift: int) -> torch.Tensor:
    """One TTA view of model input, where training augments too: images (B, 3, H, W) after
    :func:`data.images.model_input`, or whitened strain (B, 3, T). The ops are
    :mod:`data.views`', which training's augmentations apply: "swap" exchanges the H1 and L1
    rows, "shift" rolls the time axis by ``shift`` (circularly; columns of an image, samples
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


def combine(probs: np.ndarray, ensemble: str) -> np.ndarray:
    """(n_folds, n_views, N) probabilities -> (N,) targets.

    Views are always averaged as probabilities. Folds: ``"mean"`` averages the probabilities;
    ``"rank"`` averages each fold's ranks scaled to (0, 1] (ties share their mean rank), which
    ignores folds' differing calibration and keeps only their orderings.
    """
    return combine_members(probs.mean(axis=1, dtype=np.float64), ensemble)


def combine_members(p: np.ndarray, how: str, stack: "Stack | None" = None) -> np.ndarray:
    """(n_members, N) probabilities -> (N,): their mean, mean rank in (0, 1], or the fitted
    logistic ``stack`` (:func:`fit_stack`) applied to their logits."""
    if how == "mean":
        return p.mean(axis=0)
    if how == "rank":
        n = p.shape[1]
        return np.mean([average_ranks(q) / n for q in p], axis=0)
    if how == "stack":
        if stack is None:
            raise ValueError("ensemble=stack needs weights fitted on out-of-fold predictions")
        return stack.apply(p)
    raise ValueError(f"unknown ensemble {how!r}; expected mean, rank or stack")


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


@dataclass
class Stack:
    """A logistic regression over the members' logits: p = sigmoid(weights . logit(p_i) + bias),
    fitted on out-of-fold predictions (``n_fit`` samples)."""

    weights: np.ndarray  # (n_members,)
    bias: float
    n_fit: int

    def apply(self, p: np.ndarray) -> np.ndarray:
        return probability(self.weights @ _logit(p) + self.bias)


def fit_stack(p: np.ndarray, target: np.ndarray, l2: float = 1e-3) -> Stack:
    """Fit :class:`Stack` to (n_members, M) out-of-fold probabilities and (M,) 0/1 targets by
    minimising the mean logistic loss + ``l2`` * |weights|^2 (scipy's L-BFGS; the loss is convex,
    the gradient exact). Members are the runs of an ensemble: a handful of weights, so a few
    thousand out-of-fold samples fit them without overfitting."""
    from scipy.optimize import minimize

    z = _logit(p)  # (k, M)
    y = np.asarray(target, dtype=np.float64)
    k, m = z.shape

    def loss(theta):
        w, b = theta[:k], theta[k]
        s = w @ z + b
        # log(1 + e^s) - y s, computed stably; its gradient is (sigmoid(s) - y).
        value = np.mean(np.logaddexp(0.0, s) - y * s) + l2 * w @ w
        r = probability(s) - y
        grad = np.concatenate([z @ r / m + 2 * l2 * w, [r.mean()]])
        return value, grad

    theta0 = np.concatenate([np.full(k, 1.0 / k), [0.0]])
    res = minimize(loss, theta0, jac=True, method="L-BFGS-B")
    return Stack(weights=res.x[:k], bias=float(res.x[k]), n_fit=m)


def read_member_oof(run: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """A run's out-of-fold predictions: ``RUN/oof.csv`` (every fold joined), else the
    ``oof.csv`` of each fold directory found. (ids, target, probability)."""
    joined = Path(run) / OOF_FILE
    files = [joined] if joined.is_file() else sorted(Path(run).glob(f"fold*/{OOF_FILE}"))
    if not files:
        raise InferError(f"{run}: no oof.csv (ensemble=stack fits its weights on the runs' "
                         "out-of-fold predictions, written by training)")
    ids, target, pred = [], [], []
    for f in files:
        i, t, p = read_oof(f)
        ids += i
        target.append(t)
        pred.append(p)
    return ids, np.concatenate(target), np.concatenate(pred)


def fit_member_stack(runs: list[Path], folds: list[Fold]) -> Stack:
    """:func:`fit_stack` on the out-of-fold predictions that every run has, after checking that
    the runs were trained on the same fold assignment (else an out-of-fold prediction of one
    run may come from a model that trained on that sample in another)."""
    assign = {(f.card.n_folds, f.card.fold_seed) for f in folds}
    if len(assign) > 1:
        raise MismatchError("ensemble=stack: the runs were trained on different fold "
                            f"assignments (n_folds, fold_seed): {sorted(assign)}")
    oofs = [read_member_oof(r) for r in runs]
    common = set(oofs[0][0]).intersection(*(set(o[0]) for o in oofs[1:]))
    if len(common) < 50:  # a few weights, but not fitted on a handful of samples
        raise InferError(f"ensemble=stack: the runs share only {len(common)} out-of-fold "
                         "samples; train the same folds of each run")
    order = sorted(common)
    p, target = [], None
    for ids, t, q in oofs:
        pos = {sid: i for i, sid in enumerate(ids)}
        rows = np.array([pos[sid] for sid in order])
        p.append(q[rows])
        if target is None:
            target = t[rows]
        elif not np.array_equal(target, t[rows]):
            raise MismatchError("ensemble=stack: the runs' out-of-fold targets disagree")
    return fit_stack(np.stack(p), target)


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
    members: np.ndarray  # (n_members, N): each run's folds combined (INVALID_TARGET: invalid)


def predict(
    folds: list[Fold],
    inputs: Inputs,
    cfg: InferConfig,
    accelerator,
    transform: torch.nn.Module | None = None,
    progress: bool = True,
    stack: Stack | None = None,
) -> Prediction:
    """Predict every row of ``inputs`` with every fold and TTA view; complete on every process.

    Folds of one run (``Fold.member``) are combined by ``cfg.ensemble``; several runs by
    ``cfg.members`` (``stack``: the weights :func:`fit_member_stack` fitted).

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
            p = probability(logits[keep].cpu().numpy())
            probs[:, :, rows] = p.transpose(1, 2, 0)
            valid[rows] &= ok[keep].cpu().numpy().astype(bool)
            seen[rows] = True
            bar.update(rows.size)
    bar.close()
    missing = inputs.valid & ~seen
    if missing.any():
        raise RuntimeError(f"{int(missing.sum())} of {n} samples were not predicted")
    target = np.full(n, INVALID_TARGET, dtype=np.float64)
    n_members = max(f.member for f in folds) + 1
    members = np.full((n_members, n), INVALID_TARGET, dtype=np.float64)
    if valid.any():
        for m in range(n_members):
            mine = [i for i, f in enumerate(folds) if f.member == m]
            members[m, valid] = combine(probs[mine][:, :, valid], cfg.ensemble)
        target[valid] = (members[0, valid] if n_members == 1
                         else combine_members(members[:, valid], cfg.members, stack))
    if (~valid).any() and accelerator.is_main_process:
        bad = [inputs.ids[i] for i in np.flatnonzero(~valid)[:5]]
        log.warning("%d invalid sample(s) predicted %s (skipped as bad input): %s%s",
                    int((~valid).sum()), INVALID_TARGET, ", ".join(bad),
                    " ..." if (~valid).sum() > 5 else "")
    return Prediction(ids=list(inputs.ids), probs=probs, valid=valid, target=target,
                      views=views, folds=[f.name for f in folds], members=members)


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
