"""Throughput of stage one's transform (whiten + CQT) against the seed's per-sample path.

    .venv/bin/python bench/bench_transform.py --preset seed --n 2000
    .venv/bin/python bench/bench_transform.py --preset default --n 2000
    .venv/bin/python bench/bench_transform.py --preset baseline --n 2000  # bpo 12
    .venv/bin/python bench/bench_transform.py --sweep          # candidate default CQT settings

Compute only: the input is synthetic G2Net-like noise (float64 (n, 3, 4096), red below
15 Hz) already in memory; no file reading, no storing. Rows:

- ``Transform[impl] threads=t``: batches of ``--batch`` through ``Transform`` in one process
  with ``torch.set_num_threads(t)``.
- ``Transform[impl] 2 procs``: the same in two processes of one thread each (one per core),
  aggregate rate. conv1d and FFTs gain little from a second thread; processes scale better.
- ``seed path``: what the seed did per sample: for each detector gwpy
  ``TimeSeries.whiten(asd=<average ASD>, window=('tukey', alpha))`` then ``.highpass(18)``
  (gwpy defaults otherwise), then nnAudio ``CQT1992v2`` on the (3, 4096) sample; one sample at
  a time, one thread; and in two processes for the aggregate.

The machine is shared; the table starts with ``uptime`` so the load is on record. Each rate
is the best of ``--repeats`` timed passes over the data (after one warm-up batch), the
paths taking turns so that drifting load hits them alike.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.layout import N_TIME, SAMPLE_RATE  # noqa: E402
from preprocess.config import CQTConfig, load_preset  # noqa: E402

# configs/preprocess/*.yaml; "baseline": the default with the public Nakama CQT baseline's
# settings (nnAudio's default bpo 12): image (3, 69, 129).
PRESETS = {name: (cfg.whiten, cfg.cqt) for name, cfg in (
    ("seed", load_preset("seed")),
    ("default", load_preset("default")),
    ("baseline", load_preset("default", ["cqt.bins_per_octave=12"])),
)}
N_TOTAL = 786_000  # G2Net train + test samples


def synthetic_noise(n: int, seed: int) -> np.ndarray:
    """(n, 3, 4096) float64 Gaussian noise: flat ~1e-23/sqrt(Hz) in band, red below 15 Hz."""
    rng = np.random.default_rng(seed)
    length = 16 * N_TIME
    f = np.maximum(np.fft.rfftfreq(length, 1.0 / SAMPLE_RATE), 2.0)
    psd = 1e-46 * ((f / 15.0) ** -8 + 1.0 + (f / 200.0) ** 2)
    amp = np.sqrt(psd * length * SAMPLE_RATE / 4)
    n_long = -(-n // 16)
    rows = []
    for _ in range(3):
        shape = (n_long, f.size)
        spec = amp * (rng.standard_normal(shape) + 1j * rng.standard_normal(shape))
        spec[:, 0] = 0
        rows.append(np.fft.irfft(spec, n=length).reshape(-1, N_TIME)[:n])
    return np.stack(rows, axis=1)


# ------------------------------------------------------------------------------ workers


def _time_transform(x, psd, whiten_cfg, cqt_cfg, batch, threads, repeats):
    """Best-of-repeats samples/s of Transform over x; returns (n, seconds of the best)."""
    import torch

    from preprocess.transforms import Transform

    torch.set_num_threads(threads)
    transform = Transform.from_config(whiten_cfg, cqt_cfg, psd)
    xt = torch.from_numpy(x)
    best = float("inf")
    with torch.inference_mode():
        transform(xt[:batch])  # warm-up: allocator, MKL plans
        for _ in range(repeats):
            t0 = time.perf_counter()
            for i in range(0, len(xt), batch):
                transform(xt[i : i + batch])
            best = min(best, time.perf_counter() - t0)
    return len(x), best


def _seed_path(x, asd, whiten_cfg, cqt_cfg):
    """The seed's per-sample whitening + CQT over x, one sample at a time; returns images."""
    import torch
    from gwpy.frequencyseries import FrequencySeries
    from gwpy.timeseries import TimeSeries

    from preprocess.transforms import _nnaudio_cqt

    cqt = _nnaudio_cqt(SAMPLE_RATE, cqt_cfg.fmin, cqt_cfg.fmax, cqt_cfg.hop_length,
                       cqt_cfg.bins_per_octave, cqt_cfg.filter_scale, cqt_cfg.window)
    asds = [FrequencySeries(a, f0=0, df=SAMPLE_RATE / N_TIME) for a in asd]
    window = ("tukey", whiten_cfg.alpha)
    out = None
    for sample in x:
        waves = np.stack([
            TimeSeries(sample[d], sample_rate=SAMPLE_RATE)
            .whiten(asd=asds[d], window=window)
            .highpass(whiten_cfg.highpass)
            .value
            for d in range(3)
        ])
        with torch.inference_mode():
            out = cqt(torch.from_numpy(waves).float())
    return out


def _time_seed_path(x, asd, whiten_cfg, cqt_cfg, repeats):
    import torch

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    _seed_path(x[:2], asd, whiten_cfg, cqt_cfg)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        _seed_path(x, asd, whiten_cfg, cqt_cfg)
        best = min(best, time.perf_counter() - t0)
    return len(x), best


def _worker(kind, n, seed, psd, preset, batch, repeats, barrier, queue):
    """One process of a two-process run: own data (same recipe), one thread, timed after a
    barrier so both processes overlap; reports (n, start, end) of each timed pass."""
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    whiten_cfg, cqt_cfg = preset
    x = synthetic_noise(n, seed)
    spans = []
    if kind == "seed":
        warnings.simplefilter("ignore")
        _seed_path(x[:2], np.sqrt(psd), whiten_cfg, cqt_cfg)
        for _ in range(repeats):
            barrier.wait()
            t0 = time.perf_counter()
            _seed_path(x, np.sqrt(psd), whiten_cfg, cqt_cfg)
            spans.append((t0, time.perf_counter()))
    else:
        from preprocess.transforms import Transform

        transform = Transform.from_config(whiten_cfg, cqt_cfg, psd)
        xt = torch.from_numpy(x)
        with torch.inference_mode():
            transform(xt[:batch])
            for _ in range(repeats):
                barrier.wait()
                t0 = time.perf_counter()
                for i in range(0, n, batch):
                    transform(xt[i : i + batch])
                spans.append((t0, time.perf_counter()))
    queue.put((n, spans))


def _two_processes(kind, n, psd, preset, batch, repeats):
    """Aggregate samples/s of two single-threaded processes, best pass."""
    ctx = mp.get_context("spawn")  # fork after torch's thread pools start can deadlock
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(kind, n, 100 + i, psd, preset, batch, repeats,
                                          barrier, queue))
        for i in range(2)
    ]
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode:
            raise RuntimeError(f"benchmark worker failed with exit code {p.exitcode}")
    best = 0.0
    for rep in range(repeats):
        starts = [spans[rep][0] for _, spans in results]
        ends = [spans[rep][1] for _, spans in results]
        best = max(best, sum(k for k, _ in results) / (max(ends) - min(starts)))
    return best


# ------------------------------------------------------------------------------ main


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return f"load average {os.getloadavg()}"


def bench_preset(args) -> None:
    import torch

    from preprocess.spectral import estimate_psd
    from preprocess.transforms import CQT

    whiten_cfg, cqt_cfg = PRESETS[args.preset]
    cqt_cfg = CQTConfig(**{**cqt_cfg.__dict__})
    shape = (3, *CQT(**_cqt_kwargs(cqt_cfg), impl="grouped").output_shape(N_TIME))
    print(f"# {_uptime()}")
    settings = {k: v for k, v in cqt_cfg.__dict__.items() if k != "impl"}
    print(f"# torch {torch.__version__}, {os.cpu_count()} CPUs, preset {args.preset}: "
          f"{whiten_cfg}, cqt {settings} -> image {shape}")
    x = synthetic_noise(args.n, seed=0)
    psd = estimate_psd(x[: min(args.n, 500)], whiten_cfg.alpha)
    # Each job times one pass and returns samples/s. Jobs run round-robin, --repeats rounds,
    # best per job: on a shared machine load drifts over minutes, and interleaving keeps the
    # seed path and ours under comparable load.
    n_seed = min(args.n, args.n_seed)
    preset = (whiten_cfg, cqt_cfg)
    jobs = [
        ("seed path (gwpy whiten + highpass + nnAudio), 1 proc",
         lambda: _rate(_time_seed_path(x[:n_seed], np.sqrt(psd), whiten_cfg, cqt_cfg, 1))),
        ("seed path, 2 procs",
         lambda: _two_processes("seed", n_seed, psd, preset, args.batch, 1)),
    ]
    for impl in args.impls:
        cfg = CQTConfig(**{**cqt_cfg.__dict__, "impl": impl})
        n = args.n if impl != "nnaudio" else min(args.n, args.n_nnaudio)
        for threads in (1, 2):
            plural = "s" if threads > 1 else ""
            jobs.append((
                f"Transform[{impl}] batch {args.batch}, 1 proc x {threads} thread{plural}",
                lambda n=n, cfg=cfg, threads=threads: _rate(
                    _time_transform(x[:n], psd, whiten_cfg, cfg, args.batch, threads, 1)),
            ))
        jobs.append((
            f"Transform[{impl}] batch {args.batch}, 2 procs x 1 thread",
            lambda n=n, cfg=cfg: _two_processes(
                "transform", n, psd, (whiten_cfg, cfg), args.batch, 1),
        ))
    best = {label: 0.0 for label, _ in jobs}
    for _ in range(args.repeats):
        for label, job in jobs:
            best[label] = max(best[label], job())
    rows = list(best.items())
    seed_both = best["seed path, 2 procs"]
    width = max(len(r[0]) for r in rows)
    print(f"{'path':<{width}}  {'samples/s':>10}  {'vs seed 2 procs':>15}")
    for label, rate in rows:
        print(f"{label:<{width}}  {rate:>10.1f}  {rate / seed_both:>14.1f}x")
    print(f"# {_uptime()}")


def _rate(result: tuple[int, float]) -> float:
    n, seconds = result
    return n / seconds


def _cqt_kwargs(cfg: CQTConfig) -> dict:
    return dict(sample_rate=SAMPLE_RATE, fmin=cfg.fmin, fmax=cfg.fmax, hop_length=cfg.hop_length,
                bins_per_octave=cfg.bins_per_octave, filter_scale=cfg.filter_scale,
                window=cfg.window)


def sweep(args) -> None:
    """Image size, store size and single-thread speed of candidate default CQT settings."""
    import torch

    from preprocess.spectral import estimate_psd

    print(f"# {_uptime()}")
    whiten_cfg = PRESETS["default"][0]
    x = synthetic_noise(args.n, seed=0)
    psd = estimate_psd(x[: min(args.n, 500)], whiten_cfg.alpha)
    candidates = [
        dict(fmin=20.0, fmax=1024.0, hop_length=32, bins_per_octave=8, filter_scale=1.0),
        dict(fmin=20.0, fmax=1024.0, hop_length=32, bins_per_octave=12, filter_scale=1.0),
        dict(fmin=20.0, fmax=1024.0, hop_length=32, bins_per_octave=16, filter_scale=1.0),
        dict(fmin=20.0, fmax=1024.0, hop_length=16, bins_per_octave=8, filter_scale=1.0),
        dict(fmin=20.0, fmax=1024.0, hop_length=16, bins_per_octave=12, filter_scale=1.0),
        dict(fmin=20.0, fmax=1024.0, hop_length=16, bins_per_octave=16, filter_scale=1.0),
        dict(fmin=20.0, fmax=500.0, hop_length=32, bins_per_octave=12, filter_scale=1.0),
        dict(fmin=18.0, fmax=1000.0, hop_length=16, bins_per_octave=40, filter_scale=0.25),
    ]
    print(f"{'fmin':>5} {'fmax':>5} {'hop':>4} {'bpo':>4} {'fs':>5} {'image':>15} "
          f"{'KB/sample f16':>13} {'GB all 786k':>11} {'fft 1 thr/s':>11} {'grouped 1 thr/s':>15}")
    torch.set_num_threads(1)
    from preprocess.transforms import CQT

    for c in candidates:
        rates = []
        for impl in ("fft", "grouped"):
            cfg = CQTConfig(**c, impl=impl)
            k, t = _time_transform(x, psd, whiten_cfg, cfg, args.batch, 1, args.repeats)
            rates.append(k / t)
        shape = (3, *CQT(**_cqt_kwargs(CQTConfig(**c))).output_shape(N_TIME))
        nbytes = 2 * np.prod(shape)
        print(f"{c['fmin']:>5g} {c['fmax']:>5g} {c['hop_length']:>4} {c['bins_per_octave']:>4} "
              f"{c['filter_scale']:>5g} {str(shape):>15} {nbytes / 1024:>13.1f} "
              f"{nbytes * N_TOTAL / 1e9:>11.1f} {rates[0]:>11.0f} {rates[1]:>15.0f}", flush=True)
    print(f"# {_uptime()}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="default")
    p.add_argument("--n", type=int, default=2000, help="samples per timed pass")
    p.add_argument("--n-seed", type=int, default=200,
                   help="samples for the (slow) seed path, per process")
    p.add_argument("--n-nnaudio", type=int, default=500,
                   help="samples for Transform[nnaudio], per process")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3,
                   help="rounds over all paths; each path's best round is reported")
    p.add_argument("--impls", type=lambda s: s.split(","), default=["fft", "grouped", "nnaudio"])
    p.add_argument("--sweep", action="store_true", help="compare candidate default settings")
    args = p.parse_args()
    warnings.simplefilter("ignore", SyntaxWarning)  # nnAudio: "fmax is given, n_bins ignored"
    if args.sweep:
        sweep(args)
    else:
        bench_preset(args)


if __name__ == "__main__":
    main()
