"""Search throughput on this machine: windows and seconds of strain per second end to end, next
to the compute-only ceiling, and the cost of time slides.

    python bench/bench_search.py [--duration 600] [--slides 10]
                                 [--variants 1:on,1:on:nchw+eager,1:off,2:off]
                                 [--repeat 2] [--batch-size 64] [--work DIR] [--runs RUN]
                                 [--models images,waves]

- **Model**: the demo's (``configs/train/tiny.yaml``: timm ``test_efficientnet`` at the default
  preset's native 3 x 46 x 129 images) with random weights (the speed does not depend on them)
  and a model card made from a 64-sample store of the default preprocessing; or ``--runs``.
- **Strain**: ``data.sim.long_strain``, ``--duration`` s of HDF5 with an injection every 32 s, made
  once in ``--work`` (default: a temporary directory).
- Measured side by side, everything alternating ``--repeat`` times:

  - *compute only*: whitening (the training PSD) + CQT + float16 + model input + model on
    in-memory batches of ``--batch-size`` windows, one thread: no reading, PSD, slides or
    bookkeeping, no second thread;
  - per variant ``THREADS:on|off[:FLAGS]`` (torch threads per op; the transform in its own
    thread or not; FLAGS joined by ``+``: ``nchw``, CQT models on NCHW images
    (``channels_last=false``); ``eager``, CQT models not frozen (``freeze=false``)):
    *search, zero lag*: ``infer.search.pipeline.run`` (``--rescore``, stride 0.25 s, local
    PSD), the wall time of the whole call: reading, PSD, transform, model, clustering, files and
    plots (gwpy and the file readers imported beforehand); *search, K slides*: the same with
    ``--slides K``; a slide costs (wall(K) - wall(0)) / K.

- ``--models``: ``images`` (the tiny CQT model; ``--runs`` replaces it) and ``waves``, the
  1D CNN ``g2net_1d_small`` (data.models.g2net1d) on whitened strain, with random weights too.

Prints one line per measurement and a table of medians.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import timm
import torch

from data.config import load_config
from data.rundir import card_from_store, write_fold
from infer.predict.checkpoints import load_fold
from infer.predict.inputs import build_transform
from infer.predict.tta import fold_views
from infer.search.config import SearchConfig


def make_run(root: Path, model_name: str = "test_efficientnet", input_kind: str = "images"):
    """A fold directory with random weights and a card from a small default-config store."""
    import data.models  # noqa: F401  (registers the 1D CNNs with timm)
    from data import store as zstore
    from data.sim.samples import generate
    from preprocess import pipeline
    from preprocess.config import PreprocessConfig

    if not (root / "cache" / "train.zarr").exists():
        generate(root / "data", 64, 0, seed=0, progress=False, overwrite=True)
        pipeline.run(root / "data", root / "cache", PreprocessConfig(), splits=("train",),
                     progress=False)
    g = zstore.require_complete(root / "cache" / "train.zarr")
    kwargs = {"num_classes": 1, "in_chans": 3}
    card = card_from_store(g, model_name=model_name, model_kwargs=kwargs, input=input_kind)
    if input_kind == "waves":
        card.channel_stats = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
    torch.manual_seed(0)
    model = timm.create_model(model_name, pretrained=False, **kwargs)
    run = root / f"run_{model_name}"
    write_fold(run / "fold0", card, model.state_dict())
    return run


def compute_only(run: Path, n: int, batch_size: int, threads: int) -> float:
    """Windows per second of transform + model alone on in-memory white noise."""
    fold = load_fold(run / "fold0")
    transform = build_transform(fold).eval()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    x = torch.from_numpy(np.random.default_rng(0).normal(0, 1e-21, (batch_size, 3, 4096)))
    try:
        with torch.inference_mode():
            fold.model(fold_views(fold, _outputs(transform, x, fold), [()], 0.0)[0])  # warm
            start = time.perf_counter()
            for _ in range(0, n, batch_size):
                fold.model(fold_views(fold, _outputs(transform, x, fold), [()], 0.0)[0])
            return n / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)


def _outputs(transform, x, fold) -> dict:
    waves = transform.whiten(x)
    if fold.card.input == "waves":
        return {"waves": waves.to(torch.float16)}
    return {"images": transform.cqt(waves).to(torch.float16)}


def search(run: Path, strain: Path, out: Path, slides: int, variant: str,
           batch_size: int) -> tuple[float, dict]:
    from infer.search.pipeline import run as search_run

    threads, thread, *rest = variant.split(":")
    flags = set(rest[0].split("+")) if rest else set()
    cfg = load_config(SearchConfig, None, [
        f"slides={slides}", f"threads={threads}", f"batch_size={batch_size}",
        f"channels_last={'false' if 'nchw' in flags else 'true'}",
        f"freeze={'false' if 'eager' in flags else 'true'}",
        f"transform_thread={'true' if thread == 'on' else 'false'}"])
    args = [f"{d}={strain}/{d[0]}-{d}_SYNTH-*.hdf5" for d in ("H1", "L1", "V1")]
    start = time.perf_counter()
    summary = search_run(run, args, out, cfg, rescore=True, progress=False)
    return time.perf_counter() - start, summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=int, default=600, help="s of strain")
    ap.add_argument("--slides", type=int, default=10)
    ap.add_argument("--variants", default="1:on,1:on:nchw+eager,1:off,2:off",
                    help="THREADS:on|off[:nchw+eager] (torch threads per op : transform "
                         "thread [: NCHW images, no TorchScript freeze]), comma-separated")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--work", type=Path, help="keep data here (default: a temporary directory)")
    ap.add_argument("--runs", type=Path, help="a trained run instead of random weights")
    ap.add_argument("--models", default="images,waves",
                    help="images (the tiny CQT model), waves (the 1D CNN g2net_1d_small)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_search_"))
    work.mkdir(parents=True, exist_ok=True)

    from data.sim.long_strain import generate

    strain = work / f"strain{args.duration}"
    if not (strain / "synth_long.yaml").exists():
        generate(strain, args.duration, 1, injections_every=32, fmt="hdf5", progress=False,
                 overwrite=True)
    runs = {}
    kinds = args.models.split(",")
    if "images" in kinds:
        runs["images (test_efficientnet)"] = args.runs or make_run(work)
    if "waves" in kinds:
        runs["waves (g2net_1d_small)"] = make_run(work, "g2net_1d_small", "waves")
    variants = args.variants.split(",")
    for module in ("gwpy.timeseries", "gwpy.io.gwf", "matplotlib.pyplot"):
        importlib.import_module(module)  # imported here, not inside the first timed search

    print(f"torch {torch.__version__}, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}; {args.duration} s of strain, stride 0.25 s, "
          f"batch {args.batch_size}")
    results: dict[tuple, list[float]] = {}
    n_windows = None
    for _ in range(args.repeat):
        for name, run in runs.items():
            rate = compute_only(run, 1024, args.batch_size, 1)
            results.setdefault((name, "compute"), []).append(rate)
            print(f"{name}: compute only, 1 thread: {rate:.0f} windows/s "
                  f"({rate / 4:.0f} s of strain per s); load {os.getloadavg()[0]:.1f}")
            for v in variants:
                wall0, s0 = search(run, strain, work / "out", 0, v, args.batch_size)
                n_windows = s0["windows"]["analysed"]
                analysed = s0["analysed_seconds"]
                wall_k = (search(run, strain, work / "out", args.slides, v, args.batch_size)[0]
                          if args.slides else wall0)
                per_slide = (wall_k - wall0) / max(args.slides, 1)
                for key, value in (("search", n_windows / wall0),
                                   ("strain_s_per_s", analysed / wall0),
                                   ("slide_s", per_slide), ("slide_rel", per_slide / wall0)):
                    results.setdefault((name, v, key), []).append(value)
                print(f"{name}, {v}: search {n_windows / wall0:.0f} windows/s "
                      f"({analysed / wall0:.0f} s of strain per s; stages "
                      f"{ {k: round(x, 2) for k, x in s0['seconds'].items()} }); "
                      f"{args.slides} slides {wall_k - wall0:.1f} s more ({per_slide:.2f} s a "
                      f"slide, {per_slide / wall0:.2f} x zero lag); load "
                      f"{os.getloadavg()[0]:.1f}", flush=True)

    print(f"\nmedians over {args.repeat} repeat(s), {n_windows} windows "
          f"({args.duration} s of strain):")
    print("| model | threads : transform thread | search windows/s | strain s per s | "
          "compute-only windows/s (1 thread) | search / compute | one slide (s) | "
          "slide / zero lag |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in runs:
        compute = statistics.median(results[(name, "compute")])
        for v in variants:
            m = {k: statistics.median(results[(name, v, k)]) for k in
                 ("search", "strain_s_per_s", "slide_s", "slide_rel")}
            print(f"| {name} | {v} | {m['search']:.0f} | {m['strain_s_per_s']:.0f} | "
                  f"{compute:.0f} | {m['search'] / compute:.2f} | {m['slide_s']:.2f} | "
                  f"{m['slide_rel']:.2f} |")


if __name__ == "__main__":
    main()
