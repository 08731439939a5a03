"""Loader throughput: block-shuffled training epochs and sequential evaluation from a Zarr store.

    python bench/bench_loader.py [--n 8192] [--shape 3 46 129] [--chunk-size 64] [--codec lz4]
                                 [--workers 0] [--batch-size 64] [--buffer-chunks 8]

Writes a store of random float16 images (the default preprocessing's native size, 3 x 46 x 129)
to a temporary directory, then times whole epochs of ``data.loader.StoreBlocks`` through a
``DataLoader`` and ``data.loader.batches`` on one core (torch and the reads single-threaded;
``--workers 0`` reads in the timing process itself). The goal is >= 10,000 samples/s per core,
far above what a GPU consumes at this size. Also times per-sample random reads for contrast.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from data import store as zstore
from data.loader import StoreBlocks, batches


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


def time_epoch(ds: StoreBlocks, workers: int, batch_size: int, epoch: int) -> tuple[float, int]:
    ds.set_epoch(epoch)
    loader = DataLoader(ds, batch_size=None, num_workers=workers)
    start, n = time.perf_counter(), 0
    for images, targets, index in batches(loader, batch_size):
        n += images.shape[0]
    return time.perf_counter() - start, n


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
    print(f"load: {os.getloadavg()[0]:.2f} (1-min average, {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
