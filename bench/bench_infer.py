"""Inference throughput here: samples/s of ``infer.predict.loop.predict`` at the native image size.

    python bench/bench_infer.py [--n 512] [--batch-size 64] [--models NAME ...]
                                [--raw] [--tta swap shift]

For each model (random weights; the numbers do not depend on them) it makes a run directory
and a store of ``--n`` random float16 images of the default preprocessing config's shape
(3, n_bins, n_frames) in a temporary directory, then times ``infer.predict.loop.predict`` over
the store: Zarr reads, normalisation, the model and the gather included. ``--raw`` also times the
raw-data path (``.npy`` files of white noise, whitened and CQT'd on the fly) for each model.
One untimed forward pass of a batch of zeros warms each model up.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import timm
import torch
from accelerate import Accelerator

from data import layout
from data import store as zstore
from data.config import to_dict
from data.rundir import ModelCard, write_fold
from infer.config import InferConfig
from infer.predict.checkpoints import find_checkpoints, load_fold
from infer.predict.inputs import build_transform, raw_inputs, store_inputs
from infer.predict.loop import predict
from preprocess.config import PreprocessConfig, transform_identity
from preprocess.spectral import estimate_psd
from preprocess.transforms import Transform


def make_inputs(root: Path, n: int, raw: bool):
    cfg = PreprocessConfig()
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1e-21, size=(64, 3, layout.N_TIME))
    psd = estimate_psd(noise, cfg.whiten.alpha)
    transform = transform_identity(cfg, zstore.psd_sha256(psd))
    shape = Transform.from_config(cfg.whiten, cfg.cqt, psd).image_shape
    ids = sorted(f"{int(v):010x}" for v in rng.choice(16**10, n, replace=False))
    g = zstore.create(root / "test.zarr", split="test", ids=layout.id_to_int(ids),
                      targets=np.full(n, -1), image_shape=shape, chunk_size=64, codec="lz4",
                      attrs={"transform": transform, "config": to_dict(cfg)})
    for k in range(zstore.n_chunks(n, 64)):
        sl = zstore.chunk_slice(k, n, 64)
        images = rng.gamma(2.0, 1.0, size=(sl.stop - sl.start, *shape)).astype(np.float16)
        zstore.write_chunk(g, k, images, np.ones(len(images), dtype=bool))
    stats = zstore.finalize(g)
    if raw:
        for sid in ids:
            path = layout.sample_path(root / "data", "test", sid)
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, rng.normal(0, 1e-21, size=(3, layout.N_TIME)))
        layout.write_labels(root / "data" / "sample_submission.csv", ids, [0.5] * n)
    return cfg, transform, stats, psd, shape


def make_run(fold_dir: Path, model_name: str, cfg, transform, stats, psd) -> None:
    """An untrained fold of ``model_name`` whose card describes the bench's store."""
    model = timm.create_model(model_name, pretrained=False, num_classes=1, in_chans=3)
    card = ModelCard(
        model_name=model_name, model_kwargs={"num_classes": 1, "in_chans": 3}, input="images",
        image_size=None, channel_stats=stats, transform=transform,
        preprocess_config=to_dict(cfg), psd=psd.tolist(),
        psd_df=layout.SAMPLE_RATE / layout.N_TIME, store_schema_version=zstore.SCHEMA_VERSION,
        weights_sha256="", fold=0, best_epoch=0, best_auc=0.5, n_folds=5, fold_seed=42)
    write_fold(fold_dir, card, model.state_dict())


def time_predict(folds, inputs, cfg, shape, transform=None) -> float:
    accelerator = Accelerator()
    with torch.inference_mode():  # warm-up: first-call allocations and kernel selection
        for fold in folds:
            fold.model(torch.zeros(cfg.batch_size, *shape))
    start = time.perf_counter()
    predict(folds, inputs, cfg, accelerator, transform=transform, progress=False)
    return len(inputs.ids) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=512, help="samples to predict")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--models", nargs="+", default=["test_efficientnet", "efficientnet_b0"])
    ap.add_argument("--raw", action="store_true", help="also time the raw-data path")
    ap.add_argument("--tta", nargs="*", default=[], help="TTA views (swap, shift)")
    args = ap.parse_args()
    cfg = InferConfig(batch_size=args.batch_size, tta=args.tta)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.2f}; n={args.n}, batch {args.batch_size}, "
          f"tta {args.tta or 'none'}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pcfg, transform, stats, psd, shape = make_inputs(root, args.n, args.raw)
        print(f"image {shape} (default preprocessing config)")
        for name in args.models:
            make_run(root / name / "fold0", name, pcfg, transform, stats, psd)
            folds = [load_fold(d) for d in find_checkpoints(root / name)]
            params = sum(p.numel() for p in folds[0].model.parameters()) / 1e6
            rate = time_predict(folds, store_inputs(root / "test.zarr", cfg.batch_size), cfg, shape)
            line = f"{name:>20} ({params:5.2f} M params): store {rate:7.1f} samples/s"
            if args.raw:
                raw = raw_inputs(root / "data", "test", cfg.batch_size)
                raw_rate = time_predict(folds, raw, cfg, shape, transform=build_transform(folds[0]))
                line += f", raw .npy (whiten + CQT on the fly) {raw_rate:7.1f} samples/s"
            print(line)


if __name__ == "__main__":
    main()
