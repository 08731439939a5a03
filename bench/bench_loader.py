"""Loader throughput: block-shuffled training epochs and sequential evaluation from a Zarr store.

    python bench/bench_loader.py [--n 8192] [--shape 3 46 129] [--chunk-size 64] [--codec lz4]
                                 [--workers 0] [--batch-size 64] [--buffer-chunks 8]
                                 [--epochs 3] [--rounds 5]

Writes a store of random float16 images (the default preprocessing's native size, 3 x 46 x 129)
to a temporary directory, then times whole epochs of ``data.inputs.loader.StoreBlocks`` through a
``DataLoader`` and ``data.inputs.loader.batches`` on one core (torch and the reads single-threaded;
``--workers 0`` reads in the timing process itself). The goal is >= 10,000 samples/s per core,
far above what a GPU consumes at this size. Also times per-sample random reads for contrast.

Then what the integrity checks cost (goal: <= 10 % of samples/s): the same images read with the
checks (the store as ``data.store.create`` makes it: crc32c on every chunk, read through
``data.store.CheckedStore``, which checks each chunk's existence and checksum) and without them
(a copy whose ``images`` has the old codec chain, Blosc alone, read through a plain Zarr
``LocalStore`` as before the checks existed). The two are timed in alternation, ``--rounds``
sequential epochs each, so that a busy machine slows both alike; medians and their ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zarr
from torch.utils.data import DataLoader

from data import store as zstore
from data.inputs.loader import StoreBlocks, batches


def make_store(path: Path, n: int, shape: tuple[int, int, int], chunk_size: int,
               codec: str) -> None:
    rng = np.random.default_rng(0)
    g = zstore.create(path, split="train", ids=np.arange(n, dtype=np.uint64),
                      targets=rng.integers(0, 2, n), image_shape=shape, chunk_size=chunk_size,
                      codec=codec, attrs={"transform": {}, "config": {}})
    for k in range(zstore.n_chunks(n, chunk_size)):
        sl = zstore.chunk_slice(k, n, chunk_size)
        x = rng.gamma(2.0, 1.0, size=(sl.stop - sl.start, *shape)).astype(np.float16)
        zstore.write_chunk(g, k, x, np.ones(len(x), dtype=bool))
    zstore.finalize(g)


def copy_without_checksums(path: Path, copy: Path, codec: str) -> None:
    """``copy``: the store at ``path`` with ``images`` rewritten in the old codec chain (the
    compressor alone, no crc32c), same data."""
    shutil.copytree(path, copy)
    images = zarr.open_array(str(path / "images"), mode="r")
    g = zarr.open_group(str(copy), mode="r+")
    old = g.create_array("images", shape=images.shape, chunks=images.chunks, dtype="float16",
                         compressors=zstore.compressors(codec)[:-1], fill_value=0,
                         overwrite=True)
    old[:] = images[:]


@contextlib.contextmanager
def unchecked_reads():
    """``data.store`` opens stores through a plain Zarr LocalStore: no existence or checksum
    check (what reading cost before they existed)."""
    checked = zstore._open_group
    zstore._open_group = lambda path, mode: zarr.open_group(str(path), mode=mode)
    try:
        yield
    finally:
        zstore._open_group = checked


def time_epoch(ds: StoreBlocks, workers: int, batch_size: int, epoch: int,
               clock=time.perf_counter) -> tuple[float, int]:
    ds.set_epoch(epoch)
    loader = DataLoader(ds, batch_size=None, num_workers=workers)
    start, n = clock(), 0
    for images, targets, index in batches(loader, batch_size):
        n += images.shape[0]
    return clock() - start, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=8192)
    ap.add_argument("--shape", type=int, nargs=3, default=(3, 46, 129))
    ap.add_argument("--chunk-size", type=int, default=64)
    ap.add_argument("--codec", default="lz4", choices=["none", "lz4", "zstd"])
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--buffer-chunks", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=5,
                    help="epochs each of the with/without-checks comparison")
    args = ap.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.zarr"
        t = time.perf_counter()
        make_store(path, args.n, tuple(args.shape), args.chunk_size, args.codec)
        mb = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6
        print(f"store: {args.n} x {tuple(args.shape)} float16, chunks of {args.chunk_size}, "
              f"{args.codec}: {mb:.0f} MB on disk, written in {time.perf_counter() - t:.1f} s")
        train = StoreBlocks(path, None, batch_size=args.batch_size, shuffle=True,
                            buffer_chunks=args.buffer_chunks)
        rates = []
        for epoch in range(args.epochs):
            dt, n = time_epoch(train, args.workers, args.batch_size, epoch)
            rates.append(n / dt)
        print(f"train (block shuffle, {args.buffer_chunks} chunks/buffer, {args.workers} workers): "
              f"{np.median(rates):,.0f} samples/s (median of {args.epochs} epochs: "
              + ", ".join(f"{r:,.0f}" for r in rates) + ")")
        seq = StoreBlocks(path, None, batch_size=args.batch_size, shuffle=False,
                          buffer_chunks=args.buffer_chunks)
        dt, n = time_epoch(seq, args.workers, args.batch_size, 0)
        print(f"evaluation (sequential, {args.workers} workers): {n / dt:,.0f} samples/s")

        images = zstore.open_store(path)["images"]
        rows = np.random.default_rng(1).permutation(args.n)[:256]
        t = time.perf_counter()
        for i in rows:
            images[int(i)]
        rate = len(rows) / (time.perf_counter() - t)
        print(f"per-sample random reads (for contrast): {rate:,.0f} samples/s")

        plain = Path(tmp) / "plain.zarr"
        copy_without_checksums(path, plain, args.codec)
        # Wall clock, and this process's CPU time (zarr's I/O thread included): on a busy
        # machine the CPU rate is the steadier measure of what the checks cost.
        clocks = {"wall": time.perf_counter, "cpu": time.process_time}
        rates = {(name, c): [] for name in ("checked", "plain") for c in clocks}
        for r in range(args.rounds):
            for name in ("checked", "plain") if r % 2 == 0 else ("plain", "checked"):
                for c, clock in clocks.items():
                    cm = unchecked_reads() if name == "plain" else contextlib.nullcontext()
                    with cm:
                        ds = StoreBlocks(path if name == "checked" else plain, None,
                                         batch_size=args.batch_size, shuffle=False,
                                         buffer_chunks=args.buffer_chunks)
                        dt, n = time_epoch(ds, args.workers, args.batch_size, 0, clock)
                    rates[name, c].append(n / dt)
        print(f"integrity checks: sequential epochs, with and without alternated, {args.rounds} "
              "each:")
        # The best epoch is the one least disturbed by other work on the machine.
        for c in clocks:
            for stat, fn in (("median", np.median), ("best", np.max)):
                checked, unchecked = (fn(rates[name, c]) for name in ("checked", "plain"))
                print(f"  {c:4s} {stat:6s}: with {checked:,.0f} samples/s, without "
                      f"{unchecked:,.0f} samples/s, ratio {checked / unchecked:.3f} "
                      f"(cost {100 * (1 - checked / unchecked):.1f} %)")
            for name in ("checked", "plain"):
                print(f"    {name:7s}: " + ", ".join(f"{x:,.0f}" for x in rates[name, c]))
    print(f"load: {os.getloadavg()[0]:.2f} (1-min average, {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
