"""Stage one end to end (files -> Zarr) against its compute alone, bytes on disk, and codecs.

    .venv/bin/python bench/bench_preprocess.py --data DIR --preset default|seed \
                                               [--codec none,lz4,zstd] [--cold] [key=value ...]
    .venv/bin/python bench/bench_preprocess.py --n 2000  # makes DIR first (data.sim.samples)

Rows:

- ``end to end``: ``preprocess.pipeline.run`` on both splits of DIR into a fresh cache
  (reader threads, the transform, writer threads), samples/s over the chunk loop and over the
  whole call (index, PSD estimate, store creation and finalize included).
- ``compute only``: the same ``Transform`` on the same device and threads, on in-memory
  batches of ``batch_size`` (float16 cast and copy back to the host included): the ceiling
  for the end-to-end figure.
- ``bytes per sample``: the cache on disk (every array of both stores) per sample, against
  the raw ``.npy`` file (98,432 bytes: 3 x 4096 float64 plus its 128-byte header).
- ``codecs``: the cache's own CQT images written to a fresh Zarr array with each codec, chunks
  of ``store.chunk_size`` samples: compression ratio, write MB/s and read MB/s (uncompressed
  bytes per second, best of 3).

Files just written are in the page cache; ``--cold`` evicts DIR's files from it first
(``posix_fadvise(DONTNEED)``, touching no other process's pages). The machine is shared: the
output starts with ``uptime``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data import devices, layout  # noqa: E402
from data import store as zstore  # noqa: E402
from data.config import load_config  # noqa: E402
from preprocess import pipeline  # noqa: E402
from preprocess.config import PreprocessConfig  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RAW_BYTES = 128 + 3 * layout.N_TIME * 8  # one G2Net .npy file
PRESETS = {name: REPO / "configs" / "preprocess" / f"{name}.yaml" for name in ("default", "seed")}


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def evict(data: Path) -> int:
    """Drop DIR's .npy files from the page cache; returns how many."""
    n = 0
    for p in data.rglob("*.npy"):
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        n += 1
    return n


def compute_only(data: Path, cache: Path, cfg: PreprocessConfig, n_max: int) -> tuple[int, float]:
    """(samples, samples/s) of the pipeline's transform on in-memory train batches."""
    import torch

    from data.devices import ieee_fp32
    from preprocess.transforms import Transform

    index = layout.build_index(data, "train")
    n = min(n_max, len(index))
    x = np.stack([layout.load_sample(index.path(i)) for i in range(n)])
    psd = zstore.read_psd(zstore.open_store(cache / "train.zarr"))
    device = devices.process_device(cfg.device)
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(devices.cpu_threads(spare=1))  # as the pipeline does, 1 process
    transform = Transform.from_config(cfg.whiten, cfg.cqt, psd).to(device).eval()
    try:
        with torch.inference_mode(), ieee_fp32():  # as the pipeline computes
            def one_pass():
                for s in range(0, n, cfg.batch_size):
                    images, _ = transform(torch.from_numpy(x[s : s + cfg.batch_size]).to(device))
                    images.to(torch.float16).cpu()

            transform(torch.from_numpy(x[: cfg.batch_size]).to(device))  # warm-up
            best = float("inf")
            for _ in range(2):
                start = time.perf_counter()
                one_pass()
                best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return n, n / best


def codec_table(cache: Path, codecs: list[str], chunk_size: int, work: Path, n_max: int,
                clevel: int) -> list[tuple]:
    import zarr

    images = np.asarray(zarr.open_group(str(cache / "train.zarr"), mode="r")["images"][:n_max])
    raw = images.nbytes
    rows = []
    for codec in codecs:
        path = work / f"codec-{codec}.zarr"
        writes, reads = [], []
        for _ in range(3):
            shutil.rmtree(path, ignore_errors=True)
            a = zarr.create_array(str(path), shape=images.shape,
                                  chunks=(chunk_size, *images.shape[1:]), dtype="float16",
                                  compressors=zstore.compressors(codec, clevel), fill_value=0)
            start = time.perf_counter()
            a[:] = images
            writes.append(time.perf_counter() - start)
            start = time.perf_counter()
            back = zarr.open_array(str(path), mode="r")[:]
            reads.append(time.perf_counter() - start)
            assert np.array_equal(back, images)
        on_disk = du(path)
        shutil.rmtree(path)
        rows.append((codec, raw / on_disk, raw / min(writes) / 1e6, raw / min(reads) / 1e6))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, help="Kaggle-layout data set (default: synthesize --n)")
    ap.add_argument("--n", type=int, default=2000, help="samples to synthesize without --data "
                    "(80%% train, 20%% test)")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="default")
    ap.add_argument("--codec", default="none,lz4,zstd", help="codecs for the table")
    ap.add_argument("--work", type=Path, default=Path("/tmp/g2net-bench-preprocess"))
    ap.add_argument("--cold", action="store_true", help="evict DIR from the page cache first")
    ap.add_argument("--compute-n", type=int, default=1024,
                    help="train samples for the compute-only and codec rows")
    ap.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    args = ap.parse_args()

    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    args.work.mkdir(parents=True, exist_ok=True)
    data = args.data
    if data is None:
        from data.sim.samples import generate

        data = args.work / f"data-{args.n}"
        if not (data / "training_labels.csv").is_file():
            n_train = max(2, round(0.8 * args.n))
            generate(data, n_train, args.n - n_train, seed=0, jobs=os.cpu_count() or 1,
                     overwrite=True, progress=False)
    cfg = load_config(PreprocessConfig, PRESETS[args.preset], args.overrides)
    codecs = [c.strip() for c in args.codec.split(",") if c.strip()]
    if args.cold:
        print(f"evicted {evict(data):,} files from the page cache")

    cache = args.work / f"cache-{args.preset}"
    start = time.perf_counter()
    summary = pipeline.run(data, cache, cfg, overwrite=True, progress=False)
    wall = time.perf_counter() - start
    splits = summary["splits"]
    n = sum(s["n"] for s in splits.values())
    loop_rate = n / sum(s["n"] / s["samples_per_s"] for s in splits.values() if s["n"])
    n_compute, compute_rate = compute_only(data, cache, cfg, args.compute_n)
    disk = sum(du(cache / f"{split}.zarr") for split in splits)

    shape = "x".join(map(str, summary["image_shape"]))
    print(f"preset {args.preset}: image {shape} float16, codec {cfg.store.codec}, chunk "
          f"{cfg.store.chunk_size}, batch {cfg.batch_size}, device {summary['device']}, "
          f"{cfg.read_threads} readers, {cfg.write_threads} writers; data {data} "
          f"({'cold' if args.cold else 'warm page cache'})")
    print(f"{'row':<34}{'samples':>9}{'samples/s':>11}")
    print(f"{'end to end, chunk loop':<34}{n:>9,}{loop_rate:>11.0f}")
    print(f"{'end to end, whole call':<34}{n:>9,}{n / wall:>11.0f}")
    print(f"{'compute only (in memory)':<34}{n_compute:>9,}{compute_rate:>11.0f}")
    print(f"end to end / compute only: {loop_rate / compute_rate:.2f}")
    waits = {k: sum(s["main_thread_seconds"][k] for s in splits.values())
             for k in ("read_wait", "transform", "write_wait")}
    print(f"main thread: {waits['read_wait']:.1f} s waiting for reads, {waits['transform']:.1f} s "
          f"transforming, {waits['write_wait']:.1f} s waiting for writes")
    print(f"bytes per sample on disk: {disk / n:,.0f} = {disk / n / RAW_BYTES:.2f} x the raw "
          f".npy file ({RAW_BYTES:,})")
    print(f"{'codec':<8}{'ratio':>7}{'write MB/s':>12}{'read MB/s':>11}"
          f"   ({min(args.compute_n, splits['train']['n'])} images, chunks of "
          f"{cfg.store.chunk_size})")
    for codec, ratio, write, read in codec_table(cache, codecs, cfg.store.chunk_size, args.work,
                                                 args.compute_n, cfg.store.clevel):
        print(f"{codec:<8}{ratio:>7.2f}{write:>12.0f}{read:>11.0f}")


if __name__ == "__main__":
    main()
