"""What injecting on the fly costs beside a training step (issue 18's speed goal: at most 10 %
of a ``g2net_1d_small`` step and 5 % of a resnet18 step on this CPU; never the bottleneck on a
GPU).

    python bench/bench_inject.py --store CACHE/train.zarr --bank BANK [--batch-size 64]
        [--repeats 20] [--max-waveforms 20000] [--json OUT.json]

For each model, side by side in one process, alternating so that load from other programs hits
both alike: (a) one training step (forward, backward, AdamW) on a batch from memory, as the
fixed-set loop runs it; (b) one injected batch as training makes it: noise from the store's
target-0 waves with the detectors shuffled, projection with fractional delays, SNR rescaling,
whitening, and for resnet18 the CQT on the device, then the float16 stored form. Reports the
median of each and their ratio. On a GPU add ``torch.cuda.synchronize`` timing (done here when
CUDA is present): the injection runs on the device, so it costs a fraction of a step there too.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    from data import store as zstore
    from train import inject
    from train.config import InjectConfig, ModelConfig, TrainConfig
    from train.engine import BatchTransform
    from train.model import build_model, input_kind

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--bank", required=True)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--max-waveforms", type=int, default=20000)
    ap.add_argument("--models", nargs="+", default=["g2net_1d_small", "resnet18"])
    ap.add_argument("--json", help="write the figures here too")
    args = ap.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    g = zstore.require_complete(args.store)
    rows = np.arange(int(g.attrs["n"]))
    b = args.batch_size
    results = {"machine": platform.processor() or platform.machine(), "device": str(device),
               "threads": torch.get_num_threads(), "batch_size": b, "models": {}}
    for name in args.models:
        kind = input_kind(name)
        cfg = TrainConfig(store=args.store, source="inject",
                          inject=InjectConfig(bank=args.bank, max_waveforms=args.max_waveforms),
                          model=ModelConfig(name=name))
        inj = inject.build(cfg, g, kind, rows, device, rank=0)
        net = build_model(cfg.model).to(device)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
        stats = (g.attrs["channel_stats"] if kind == "images"
                 else {"mean": [0.0] * 3, "std": [1.0] * 3})
        to_input = BatchTransform(mean=tuple(stats["mean"]), std=tuple(stats["std"]),
                                  image_size=None, n_frames=g["images"].shape[-1], kind=kind)
        stored = torch.from_numpy(np.asarray(g[kind][:b])).to(device)
        target = torch.from_numpy((np.arange(b) % 2).astype(np.float32)).to(device)

        def step() -> None:
            logits = net(to_input(stored)).squeeze(1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        def injected(k: int) -> None:
            gen = inject.batch_generator(0, 1, k, device=device)
            x, t = inj.batch(b, gen)

        parts = {"noise": lambda k: inj.noise.batch(b, inject.batch_generator(0, 2, k,
                                                                               device=device))}
        step(), injected(0)  # warm-up
        times = {"step": [], "inject": [], "noise": []}
        for k in range(args.repeats):
            for key, fn in (("step", lambda: step()), ("inject", lambda: injected(k + 1)),
                            ("noise", lambda: parts["noise"](k))):
                _sync(device)
                t0 = time.perf_counter()
                fn()
                _sync(device)
                times[key].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        results["models"][name] = {
            "kind": kind, "step_s": med["step"], "inject_s": med["inject"],
            "noise_s": med["noise"], "ratio": med["inject"] / med["step"],
        }
        print(f"{name} ({kind}), batch {b} on {device} with {torch.get_num_threads()} "
              f"thread(s): step {1e3 * med['step']:.1f} ms, injected batch "
              f"{1e3 * med['inject']:.1f} ms (noise {1e3 * med['noise']:.1f} ms): "
              f"{100 * med['inject'] / med['step']:.1f} % of a step (medians of "
              f"{args.repeats})", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
