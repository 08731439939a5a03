"""Stored arrays in blocks of whole chunks, for training and evaluation.

A chunk is the unit of reading (a per-sample read would decode a whole chunk for one sample);
shuffling is two-level, chunks across ranks and samples inside blocks of chunks; every rank
yields the same number of batches; and the order is a function of (seed, epoch) alone, whatever
the number of DataLoader workers (docs/training.md, "Notes from the code").
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from data import store as zstore

PAD_INDEX = -1
T = TypeVar("T")


@dataclass(frozen=True)
class EpochPlan:
    """What one rank yields in one epoch."""

    blocks: list[np.ndarray]  # store rows per block, in yield order; PAD_INDEX = padding
    n_samples: int  # rows this rank yields (padding included), after ``start_batch``
    n_batches: int  # batches this rank yields, after ``start_batch``


def _chunk_runs(indices: np.ndarray, chunk_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For sorted unique ``indices``: (chunk ids, start, end) of each chunk's run of indices."""
    chunk_of = indices // chunk_size
    chunks, starts = np.unique(chunk_of, return_index=True)
    ends = np.r_[starts[1:], indices.size].astype(np.int64)
    return chunks, starts.astype(np.int64), ends


def _trim(blocks: list[np.ndarray], start: int, stop: int) -> list[np.ndarray]:
    """The rows ``start:stop`` of the concatenated blocks, keeping the block structure."""
    out, pos = [], 0
    for block in blocks:
        lo, hi = pos, pos + block.size
        pos = hi
        a, b = max(start, lo), min(stop, hi)
        if a < b:
            out.append(block[a - lo:b - lo])
    return out


def plan_epoch(
    indices: np.ndarray,
    chunk_size: int,
    *,
    shuffle: bool,
    batch_size: int,
    seed: int = 0,
    epoch: int = 0,
    rank: int = 0,
    world_size: int = 1,
    buffer_chunks: int = 8,
    batch_multiple: int = 1,
    start_batch: int = 0,
) -> EpochPlan:
    """The blocks rank ``rank`` of ``world_size`` reads in ``epoch`` (docs/training.md, Notes
    from the code).

    indices: sorted unique store rows to draw from (a fold's valid training rows, say).
    """
    if batch_size < 1 or buffer_chunks < 1 or batch_multiple < 1:
        raise ValueError("batch_size, buffer_chunks and batch_multiple must be >= 1")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world size {world_size}")
    chunks, starts, ends = _chunk_runs(indices, chunk_size)
    counts = ends - starts

    if shuffle:
        order = np.random.default_rng([seed, epoch]).permutation(chunks.size)
        per_rank = [int(counts[order[r::world_size]].sum()) for r in range(world_size)]
        step = batch_size * batch_multiple
        n_batches = (min(per_rank) // step) * batch_multiple
        length = n_batches * batch_size
        mine = order[rank::world_size]
        blocks = []
        for b in range(0, mine.size, buffer_chunks):
            group = mine[b:b + buffer_chunks]
            rows = np.concatenate([indices[starts[c]:ends[c]] for c in group])
            shuffler = np.random.default_rng([seed, epoch, rank, b // buffer_chunks])
            blocks.append(rows[shuffler.permutation(rows.size)])
    else:
        # Contiguous runs of chunks per rank, cut where the cumulative count crosses
        # rank * total / world_size (each chunk goes to the side its midpoint falls on).
        midpoints = np.cumsum(counts) - counts / 2.0
        total = int(counts.sum())
        cuts = np.searchsorted(midpoints, total * np.arange(world_size + 1) / world_size)
        cuts[0], cuts[-1] = 0, chunks.size
        per_rank = [int(counts[cuts[r]:cuts[r + 1]].sum()) for r in range(world_size)]
        length = max(per_rank)
        n_batches = -(-length // batch_size)
        mine = np.arange(cuts[rank], cuts[rank + 1])
        blocks = [
            np.concatenate([indices[starts[c]:ends[c]] for c in mine[b:b + buffer_chunks]])
            for b in range(0, mine.size, buffer_chunks)
        ]
        n_pad = length - per_rank[rank]
        if n_pad:
            blocks.append(np.full(n_pad, PAD_INDEX, dtype=np.int64))

    first = min(start_batch * batch_size, length)
    blocks = _trim(blocks, first, length)
    return EpochPlan(blocks=blocks, n_samples=length - first,
                     n_batches=max(n_batches - start_batch, 0))


class StoreBlocks(IterableDataset):
    """Blocks ``(*arrays, targets, index)`` of one rank's share of ``indices`` for one epoch.

    path: the store (``data.store`` format). indices: store rows to use; rows marked invalid
    in the store are dropped. arrays: which per-sample arrays to read, in order (``images``
    (n, 3, n_bins, n_frames), ``waves`` (n, 3, 4096); both float16); a missing one is a
    StoreError naming it. ``set_epoch(e)`` before iterating (accelerate's prepared
    DataLoader calls it); ``start_batch`` skips that many batches of the epoch without
    reading them (set it for the first epoch after a mid-epoch resume, then back to 0).
    """

    def __init__(
        self,
        path: str | Path,
        indices: np.ndarray | None = None,
        *,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        buffer_chunks: int = 8,
        rank: int = 0,
        world_size: int = 1,
        batch_multiple: int = 1,
        arrays: tuple[str, ...] = ("images",),
    ):
        g = zstore.open_store(path)
        self.path = str(path)
        self.n = int(g.attrs["n"])
        self.chunk_size = int(g.attrs["chunk_size"])
        missing = [a for a in arrays if a not in g]
        if missing:
            hint = " (preprocess with save_waves=true to store them)" if "waves" in missing else ""
            raise zstore.StoreError(f"{path}: has no {', '.join(missing)} array{hint}")
        self.arrays = tuple(arrays)
        self.shapes = {a: tuple(g[a].shape[1:]) for a in self.arrays}
        self.targets = np.asarray(g["targets"][:], dtype=np.float32)
        valid = np.asarray(g["valid"][:], dtype=bool)
        rows = np.arange(self.n) if indices is None else np.unique(np.asarray(indices, np.int64))
        if rows.size and (rows[0] < 0 or rows[-1] >= self.n):
            raise ValueError(f"{path}: indices outside 0..{self.n - 1}")
        self.indices = rows[valid[rows]]
        if self.indices.size == 0:
            raise ValueError(f"{path}: no valid samples selected")
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.buffer_chunks = buffer_chunks
        self.rank = rank
        self.world_size = world_size
        self.batch_multiple = batch_multiple
        self.epoch = 0
        self.start_batch = 0
        self._open = None  # {array name: zarr array}, opened lazily per process
        self._pid = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def plan(self) -> EpochPlan:
        return plan_epoch(
            self.indices, self.chunk_size, shuffle=self.shuffle, batch_size=self.batch_size,
            seed=self.seed, epoch=self.epoch, rank=self.rank, world_size=self.world_size,
            buffer_chunks=self.buffer_chunks, batch_multiple=self.batch_multiple,
            start_batch=self.start_batch,
        )

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_open"] = state["_pid"] = None  # each process opens its own
        return state

    def _array(self, name: str):
        if self._open is None or self._pid != os.getpid():
            g = zstore.open_store(self.path)
            self._open = {a: g[a] for a in self.arrays}
            self._pid = os.getpid()
        return self._open[name]

    def read_block(self, rows: np.ndarray) -> tuple[torch.Tensor, ...]:
        """Rows (store indices, PAD_INDEX for padding) -> (*arrays, targets, index) tensors."""
        cs = self.chunk_size
        real = rows >= 0
        chunk_of = np.where(real, rows // cs, -1)
        blocks = []
        for name in self.arrays:
            block = torch.zeros((rows.size, *self.shapes[name]), dtype=torch.float16)
            if get_worker_info() is not None:
                # Filled in shared memory, the block crosses to the main process without the
                # copy that sending an ordinary tensor makes (torch moves its storage to shm).
                block.share_memory_()
            out = block.numpy()
            array = self._array(name)
            for c in np.unique(chunk_of[real]):
                pos = np.flatnonzero(chunk_of == c)
                lo = int(c) * cs
                data = array[lo:min(lo + cs, self.n)]  # one whole chunk: one decode
                out[pos] = data[rows[pos] - lo]
            blocks.append(block)
        targets = np.where(real, self.targets[np.maximum(rows, 0)], 0).astype(np.float32)
        index = rows.astype(np.int64)
        return (*blocks, torch.from_numpy(targets), torch.from_numpy(index))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        for rows in worker_share(self.plan().blocks):
            yield self.read_block(rows)


def worker_share(blocks: list[T]) -> Iterator[T]:
    """The blocks this DataLoader worker reads: block ``b`` goes to worker ``b % num_workers``
    (all of them outside a worker). The DataLoader asks workers 0, 1, ..., n-1, 0, ... in turn
    and returns their results in that order, so the blocks arrive in the plan's order."""
    info = get_worker_info()
    worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
    return itertools.islice(blocks, worker, None, n_workers)


def batches(
    blocks: Iterable[tuple[torch.Tensor, ...]], batch_size: int
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Cut a stream of blocks (tuples of tensors sharing the first dimension) into batches.

    Every batch has ``batch_size`` rows except possibly the last. Batches inside a block are
    views; one that spans two blocks is concatenated (on the blocks' device).
    """
    pending: list[tuple[torch.Tensor, ...]] = []
    n_pending = 0
    for block in blocks:
        n = block[0].shape[0]
        pos = 0
        if n_pending:
            take = min(batch_size - n_pending, n)
            pending.append(tuple(t[:take] for t in block))
            n_pending += take
            pos = take
            if n_pending == batch_size:
                yield tuple(torch.cat(parts) for parts in zip(*pending))
                pending, n_pending = [], 0
        while n - pos >= batch_size:
            yield tuple(t[pos:pos + batch_size] for t in block)
            pos += batch_size
        if pos < n:
            pending.append(tuple(t[pos:] for t in block))
            n_pending += n - pos
    if n_pending:
        yield tuple(torch.cat(parts) for parts in zip(*pending))
