"""What inference reads: a finished store (:func:`store_inputs`) or the raw ``.npy`` files of a
Kaggle-layout split (:func:`raw_inputs`), whitened and CQT'd on the device by the transform a
model card records (:func:`build_transform`) and never written to disk.

Both are read in blocks by :mod:`data.inputs.loader`'s sequential plan (the one training's
evaluation uses): each process reads a contiguous share of the rows, padded with rows of index
``PAD_INDEX`` (-1) so that every process runs the same batches; the padding is dropped after
gathering.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset

from data import layout
from data import store as zstore
from data.config import format_diff, from_dict
from data.inputs.loader import StoreBlocks, plan_epoch, worker_share
from data.rundir import CARD_FILE
from infer.config import InferError
from infer.predict.checkpoints import Fold, MismatchError
from infer.predict.submission import INVALID_TARGET
from preprocess.config import PreprocessConfig

log = logging.getLogger(__name__)


@dataclass
class InputSource:
    """What :func:`infer.predict.loop.predict` reads: blocks of this process's share, and every
    row's id."""

    dataset: IterableDataset  # yields (x, ok, index) blocks; index PAD_INDEX = padding
    ids: list[str]  # every row, in input order
    valid: np.ndarray  # (N,) False for rows known to be invalid before reading (store)
    source: str
    attrs: dict | None = None  # the store's attributes (store input only)
    raw: bool = False  # x is strain to transform (True) or stored arrays (False)
    arrays: tuple[str, ...] = ()  # the stored arrays each block holds, in order (store only)


class _StoreRows(IterableDataset):
    """A sequential :class:`data.inputs.loader.StoreBlocks` as (*arrays, ok, index) blocks."""

    def __init__(self, blocks: StoreBlocks):
        self.blocks = blocks

    def __iter__(self):
        for *arrays, _, index in self.blocks:
            yield *arrays, torch.ones(index.shape, dtype=torch.bool), index


def store_inputs(path: str | Path, batch_size: int, rank: int = 0, world_size: int = 1,
                 arrays: tuple[str, ...] = ("images",)) -> InputSource:
    """A finished store; ``arrays`` the ones the models read (``images``, ``waves``). Rows
    marked invalid are not read (the loader skips them)."""
    g = zstore.require_complete(path)
    valid = np.asarray(g["valid"][:], dtype=bool)
    if not valid.any():
        raise InferError(f"{path}: every sample is marked invalid")
    blocks = StoreBlocks(path, batch_size=batch_size, shuffle=False, rank=rank,
                         world_size=world_size, arrays=arrays)
    return InputSource(dataset=_StoreRows(blocks), ids=layout.int_to_id(g["ids"][:]), valid=valid,
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
        for rows in worker_share(self.blocks()):
            yield self.read_block(rows)


def raw_inputs(root: str | Path, split: str, batch_size: int, rank: int = 0,
               world_size: int = 1) -> InputSource:
    """The ``.npy`` files of ``split`` under ``root``, in label-file order."""
    index = layout.build_index(root, split)
    if len(index) == 0:
        raise InferError(f"{root}: split {split} has no samples")
    return InputSource(dataset=RawStrain(index, batch_size, rank, world_size), ids=index.ids,
                       valid=np.ones(len(index), dtype=bool), source=str(Path(root) / split),
                       raw=True)


def card_psd(fold: Fold) -> np.ndarray:
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


def ensemble_transform(folds: list[Fold], psd: np.ndarray | None = None) -> torch.nn.Module:
    """The whiten + CQT that makes every fold's input from raw strain: an images fold's (any:
    :func:`~infer.predict.checkpoints.check_folds` made them agree), else the first fold's (a
    waves-only card's CQT settings are not part of what its model depends on)."""
    return build_transform(next((f for f in folds if f.card.input == "images"), folds[0]), psd)


def build_transform(fold: Fold, psd: np.ndarray | None = None) -> torch.nn.Module:
    """The whiten + CQT transform recorded with ``fold``, with its training PSD, or with
    ``psd`` ((3, n_freq) float64, 1/Hz, on a grid from 0 to fs / 2) in its place (a search
    whitens long strain with the PSD of the data around each window).

    :func:`infer.predict.checkpoints.load_fold` has checked that this code makes the recorded
    transform from the recorded config, so the config alone rebuilds it.
    """
    from preprocess.transforms import Transform

    cfg = from_dict(PreprocessConfig, fold.card.preprocess_config)
    return Transform.from_config(cfg.whiten, cfg.cqt, card_psd(fold) if psd is None else psd)
