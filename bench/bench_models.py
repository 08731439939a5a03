"""Training cost per sample of the CPU models, side by side in one run: what "at equal
training time" means when two models are compared by AUC.

    .venv/bin/python bench/bench_models.py [--models resnet18 g2net_1d_small resnet18@HxW ...]
                                           [--threads 1] [--rounds 5] [--steps 8]

Each model takes training steps (forward, backward, AdamW step; batch 64, from memory, no
loader) on its own input: a default-preset CQT image (3, 46, 129) for an image model, the
whitened strain (3, 4096) for a 1D model (``data.models.g2net1d``). Rounds alternate between the
models so that load from other programs hits them alike; prints each round's samples/s, the
median per model and each model's time per sample relative to the first model's.

An image model takes another image size as ``NAME@HxW``: the CQT presets' costs side by side,
    bench_models.py --models resnet18 resnet18@69x129 resnet18@91x257 resnet18@232x257
(default, 12 bins per octave, 16 bins per octave and hop 16, the seed's preset).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import timm  # noqa: E402

from data.models import g2net1d  # noqa: E402  (registers the 1D models with timm)

IMAGE = (3, 46, 129)  # the default preset's CQT image
WAVE = (3, 4096)  # 2 s of whitened strain at 2048 Hz


def samples_per_s(model: torch.nn.Module, x: torch.Tensor, steps: int) -> float:
    """Samples per second over ``steps`` training steps (after one untimed warm-up step)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    y = torch.rand(x.shape[0], 1)
    model.train()
    for i in range(steps + 1):
        if i == 1:
            start = time.perf_counter()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * x.shape[0] / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet18", "g2net_1d_small"])
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=8, help="timed steps per round")
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models, inputs = {}, {}
    for spec in args.models:
        name, _, size = spec.partition("@")  # resnet18@91x257: that image size
        models[spec] = timm.create_model(name, pretrained=False, num_classes=1, in_chans=3)
        if name in g2net1d.WAVE_MODELS:
            shape = WAVE
        else:
            shape = (3, *map(int, size.split("x"))) if size else IMAGE
        inputs[spec] = torch.randn(args.batch_size, *shape)
        n_params = sum(p.numel() for p in models[spec].parameters())
        print(f"{spec}: {n_params / 1e6:.2f} M parameters, input {shape}")
    rates: dict[str, list[float]] = {name: [] for name in args.models}
    for r in range(args.rounds):
        order = args.models if r % 2 == 0 else args.models[::-1]
        for name in order:
            rates[name].append(samples_per_s(models[name], inputs[name], args.steps))
        print(f"round {r + 1}: " + ", ".join(f"{n} {rates[n][-1]:.1f}/s" for n in args.models),
              flush=True)
    first = statistics.median(rates[args.models[0]])
    for name in args.models:
        median = statistics.median(rates[name])
        print(f"{name}: median {median:.1f} samples/s ({args.threads} thread(s)); time per "
              f"sample {first / median:.2f} x {args.models[0]}'s")


if __name__ == "__main__":
    main()
