"""data.inputs.loader: block plans (determinism, sharding, coverage, skipping) and the
dataset's reads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from data import store as zstore
from data.inputs.loader import PAD_INDEX, StoreBlocks, batches, plan_epoch

CHUNK = 32


def _rows(plan) -> np.ndarray:
    return np.concatenate(plan.blocks) if plan.blocks else np.zeros(0, np.int64)


@pytest.fixture
def indices():
    # A fold-like subset: about 80% of 1000 rows, so chunks hold different counts.
    rng = np.random.default_rng(3)
    return np.sort(rng.choice(1000, size=800, replace=False))


def test_plan_is_a_function_of_seed_and_epoch(indices):
    kw = dict(shuffle=True, batch_size=16, buffer_chunks=4)
    a = plan_epoch(indices, CHUNK, seed=1, epoch=2, **kw)
    b = plan_epoch(indices, CHUNK, seed=1, epoch=2, **kw)
    assert np.array_equal(_rows(a), _rows(b))
    for other in (dict(seed=1, epoch=3), dict(seed=2, epoch=2)):
        c = plan_epoch(indices, CHUNK, **other, **kw)
        assert not np.array_equal(_rows(a), _rows(c))
        assert np.array_equal(np.sort(_rows(a)), np.sort(_rows(c)))  # single rank: same set


def test_block_shuffle_reads_whole_chunks(indices):
    plan = plan_epoch(indices, CHUNK, shuffle=True, batch_size=16, buffer_chunks=4, seed=0)
    for block in plan.blocks[:-1]:  # the last may be trimmed
        chunks = np.unique(block // CHUNK)
        assert chunks.size <= 4
        # every selected row of those chunks is in the block: a chunk is read once per epoch
        assert block.size == np.isin(indices // CHUNK, chunks).sum()
    assert not np.array_equal(_rows(plan), np.sort(_rows(plan)))  # shuffled


@pytest.mark.parametrize("world", [1, 2, 3])
def test_training_shards_are_disjoint_and_even(indices, world):
    batch = 16
    plans = [plan_epoch(indices, CHUNK, shuffle=True, batch_size=batch, seed=0, epoch=1,
                        rank=r, world_size=world, buffer_chunks=2, batch_multiple=2)
             for r in range(world)]
    rows = [_rows(p) for p in plans]
    assert len({p.n_batches for p in plans}) == 1  # DDP: every rank the same number
    n_batches = plans[0].n_batches
    assert n_batches % 2 == 0  # whole accumulation cycles
    for p, r in zip(plans, rows):
        assert r.size == p.n_samples == n_batches * batch
    everything = np.concatenate(rows)
    assert np.unique(everything).size == everything.size  # no sample on two ranks
    assert np.isin(everything, indices).all()
    # cut at most: the per-rank imbalance (under one chunk) plus one accumulation cycle
    assert indices.size - everything.size < world * (CHUNK + 2 * batch)
    # ranks own whole chunks
    owners = [set(np.unique(r // CHUNK)) for r in rows]
    for i in range(world):
        for j in range(i + 1, world):
            assert not owners[i] & owners[j]


@pytest.mark.parametrize("world", [1, 2, 3, 7])
def test_sequential_covers_each_sample_once(indices, world):
    batch = 16
    plans = [plan_epoch(indices, CHUNK, shuffle=False, batch_size=batch, rank=r,
                        world_size=world, buffer_chunks=3) for r in range(world)]
    rows = [_rows(p) for p in plans]
    assert len({r.size for r in rows}) == 1  # padded to the same length
    assert len({p.n_batches for p in plans}) == 1
    real = np.concatenate([r[r != PAD_INDEX] for r in rows])
    assert np.array_equal(np.sort(real), indices)  # each exactly once
    assert np.array_equal(real, indices)  # and in store order, rank after rank
    assert sum((r == PAD_INDEX).sum() for r in rows) < world * CHUNK


def test_start_batch_skips_without_changing_the_order(indices):
    kw = dict(shuffle=True, batch_size=16, seed=5, epoch=4, buffer_chunks=4, rank=1, world_size=2)
    full = plan_epoch(indices, CHUNK, **kw)
    for skip in (0, 1, 7, full.n_batches):
        part = plan_epoch(indices, CHUNK, start_batch=skip, **kw)
        assert part.n_batches == full.n_batches - skip
        assert np.array_equal(_rows(part), _rows(full)[skip * 16:])


def test_batches_recuts_blocks():
    blocks = [(torch.arange(a, b), torch.arange(a, b) * 10) for a, b in [(0, 5), (5, 6), (6, 17)]]
    out = list(batches(blocks, 4))
    assert [len(x) for x, _ in out] == [4, 4, 4, 4, 1]
    assert torch.equal(torch.cat([x for x, _ in out]), torch.arange(17))
    assert torch.equal(torch.cat([y for _, y in out]), torch.arange(17) * 10)


def _stream(ds, num_workers, context=None):
    loader = DataLoader(ds, batch_size=None, num_workers=num_workers,
                        multiprocessing_context=context if num_workers else None)
    return [tuple(t.clone() for t in block) for block in loader]


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
@pytest.mark.parametrize("num_workers, context",
                         [(0, None), (1, "fork"), (3, "fork"), (2, "spawn")])
def test_dataset_order_and_content_for_any_workers(train_store, num_workers, context):
    g = zstore.open_store(train_store)
    images = np.asarray(g["images"][:])
    targets = np.asarray(g["targets"][:])
    valid = np.asarray(g["valid"][:])
    subset = np.arange(0, 384, 2)  # includes invalid row 40, not row 5
    ds = StoreBlocks(train_store, subset, batch_size=8, shuffle=True, seed=1, buffer_chunks=2)
    ds.set_epoch(3)
    expected = _rows(ds.plan())
    assert 40 not in ds.indices and not np.isin(ds.indices, np.flatnonzero(~valid)).any()
    blocks = _stream(ds, num_workers, context)
    index = torch.cat([b[2] for b in blocks]).numpy()
    assert np.array_equal(index, expected)  # plan order, whatever the number of workers
    x = torch.cat([b[0] for b in blocks])
    assert x.dtype == torch.float16 and x.shape[1:] == images.shape[1:]
    assert np.array_equal(x.numpy(), images[index])
    y = torch.cat([b[1] for b in blocks])
    assert y.dtype == torch.float32 and np.array_equal(y.numpy(), targets[index])


def test_dataset_sequential_shards_with_padding(train_store):
    world, seen = 3, []
    for rank in range(world):
        ds = StoreBlocks(train_store, None, batch_size=16, shuffle=False, rank=rank,
                         world_size=world, buffer_chunks=2)
        blocks = _stream(ds, 2, "fork")
        index = torch.cat([b[2] for b in blocks])
        pad = index == PAD_INDEX
        assert (torch.cat([b[0] for b in blocks])[pad] == 0).all()
        assert (torch.cat([b[1] for b in blocks])[pad] == 0).all()
        seen.append(index[~pad])
    seen = torch.cat(seen).numpy()
    assert np.array_equal(seen, np.setdiff1d(np.arange(384), [5, 40]))


def test_dataset_rejects_bad_indices(train_store):
    with pytest.raises(ValueError, match="outside"):
        StoreBlocks(train_store, [0, 384], batch_size=4, shuffle=False)
    with pytest.raises(ValueError, match="no valid samples"):
        StoreBlocks(train_store, [5, 40], batch_size=4, shuffle=False)
