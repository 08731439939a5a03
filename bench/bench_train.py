"""Training speed with the Zarr store as input vs the same model fed from memory.

    python bench/bench_train.py [--model test_efficientnet] [--n 1024] [--shape 3 46 129]
                                [--batch-size 32] [--workers 1] [--epochs 3]

Both sides run :func:`train.engine.train_one_epoch` (same model, optimizer, schedule,
augmentations off) in one process with accelerate on whatever device is present: once over
``data.inputs.loader.StoreBlocks`` through a prepared DataLoader with ``--workers`` reader
processes, once over the same blocks already in memory (on the device). The ratio of their
steps/s is the cost of reading; the goal is >= 0.95. Epochs alternate between the two so
that load from other programs hits both alike; the median and the fastest epoch of each are
reported.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from data.inputs.loader import StoreBlocks


def main() -> None:
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from bench_loader import make_store  # this directory, run as a script
    from timm.optim import create_optimizer_v2
    from timm.scheduler import CosineLRScheduler

    from train.config import AugmentConfig, ModelConfig
    from train.engine import BatchTransform, TrainState, train_one_epoch
    from train.fold import device_loader
    from train.model import build_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="test_efficientnet")
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--shape", type=int, nargs=3, default=(3, 46, 129))
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()

    accelerator = Accelerator()
    set_seed(0)
    net = build_model(ModelConfig(name=args.model))
    optimizer = create_optimizer_v2(net, opt="adamw", lr=1e-4)
    model, optimizer = accelerator.prepare(net, optimizer)
    scheduler = CosineLRScheduler(optimizer, t_initial=10**6, t_in_epochs=False)
    to_input = BatchTransform(mean=(2.0,) * 3, std=(1.4,) * 3, image_size=None,
                              n_frames=args.shape[-1])

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.zarr"
        make_store(path, args.n, tuple(args.shape), 64, "lz4")
        ds = StoreBlocks(path, None, batch_size=args.batch_size, shuffle=True, buffer_chunks=8)
        n_batches = ds.plan().n_batches
        zarr_loader = device_loader(ds, accelerator, args.workers)
        # The same epoch's blocks, read once and moved to the device: input at no cost.
        memory = [tuple(t.to(accelerator.device) for t in ds.read_block(rows))
                  for rows in ds.plan().blocks]

        def epoch(loader) -> float:
            state = TrainState()
            start = time.perf_counter()
            train_one_epoch(model, loader, optimizer, scheduler, accelerator, state,
                            to_input=to_input, aug=AugmentConfig(), batch_size=args.batch_size,
                            n_batches=n_batches, progress=False)
            if accelerator.device.type == "cuda":
                torch.cuda.synchronize()
            return n_batches / (time.perf_counter() - start)

        epoch(memory)  # warm-up: allocator, kernels
        rates = {"zarr": [], "memory": []}
        for _ in range(args.epochs):
            zarr_loader.set_epoch(0)
            rates["zarr"].append(epoch(zarr_loader))
            rates["memory"].append(epoch(memory))

    zarr_rate, mem_rate = np.median(rates["zarr"]), np.median(rates["memory"])
    zarr_best, mem_best = max(rates["zarr"]), max(rates["memory"])
    print(f"{args.model}, {args.n} samples {tuple(args.shape)}, batch {args.batch_size}, "
          f"{accelerator.device}, {accelerator.mixed_precision} precision, "
          f"{torch.get_num_threads()} torch threads, {args.workers} loader workers")
    for name in rates:
        print(f"  {name:6s}: {np.median(rates[name]):6.2f} steps/s "
              f"({np.median(rates[name]) * args.batch_size:,.0f} samples/s; epochs: "
              + ", ".join(f"{r:.2f}" for r in rates[name]) + ")")
    # The fastest epoch of each is the one least disturbed by other programs.
    print(f"  zarr / memory = {zarr_rate / mem_rate:.3f} (medians), "
          f"{zarr_best / mem_best:.3f} (fastest epochs); goal >= 0.95")
    print(f"load: {os.getloadavg()[0]:.2f} (1-min average, {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
