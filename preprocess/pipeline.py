"""Stage one's job: the Kaggle ``.npy`` files -> whitened |CQT| images in the Zarr cache.

    run(data, out, cfg) writes  out/train.zarr   images, ids, targets, valid, ..., psd
                                out/test.zarr    the same, whitened with the *train* PSD
                                out/preprocess.yaml   the resolved config

The unit of work is one store chunk (``store.chunk_size`` samples). Per process::

    reader threads  -(bounded)->  main thread: transform on the device  -(bounded)->  writers
    load_sample x chunk           batches of <= batch_size, float16 on device        write_chunk

so reading, computing and compressing overlap while at most a few chunks are in memory.
Under ``accelerate launch`` / ``torchrun`` every process takes chunks ``rank, rank + world,
...``; the main process creates (or checks) the store first and finalizes it last. The processes
talk over gloo (a few small messages), so more processes than GPUs may share them: each computes
on ``cuda:(LOCAL_RANK % n_gpus)`` (:func:`data.devices.pick_device`). A device
batch never spans two chunks (``batch_size`` above ``chunk_size`` acts as ``chunk_size``), so
every chunk goes through the same computations whatever the number of processes or restarts:
the arrays are byte-identical to a single uninterrupted run.

Crash safety rests on the store format (data/store.py): a chunk counts only once its ``done``
flag is written, after its data. A rerun deletes the ``*.partial`` files a killed writer left,
skips done chunks and computes the rest; it refuses a store made with another config or from
other samples (``StoreError`` naming the difference) unless ``overwrite``.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from accelerate import PartialState

from data import devices, layout
from data import store as zstore
from data.cli import RUNTIME_FAILURE, error_exit
from data.config import ConfigError, save_config
from data.layout import BadSample
from data.progress import progress_bar
from data.store import StoreError
from preprocess.config import (
    PreprocessConfig,
)
from preprocess.psd import training_psd
from preprocess.stores import check_resumable, create_store, train_store_psd

log = logging.getLogger(__name__)

T = TypeVar("T")

CONFIG_FILE = "preprocess.yaml"
FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65504


ABORT_FILE = ".abort"  # in the cache directory: a process of a multi-process run failed


class RankError(RuntimeError):
    """Raised on the processes whose own work went well when another process failed: its
    message, and the exit status (``code``) that process's error has."""

    def __init__(self, message: str, code: int = RUNTIME_FAILURE):
        super().__init__(message)
        self.code = code


class _Stopped(Exception):
    """This process stopped early because another one failed (``ABORT_FILE`` appeared)."""


def _verdict(e: BaseException) -> tuple[int, str]:
    """(exit status, one-line message) of an error, as the command line would report it."""
    return error_exit(e) or (RUNTIME_FAILURE, f"{type(e).__name__}: {e}")


@dataclass
class _Chunk:
    """One chunk's raw strain as read: ``x`` (n, 3, 4096) float64, zeros where a file was bad."""

    index: int
    x: np.ndarray
    bad: list[BadSample]
    bad_rows: list[int]


# ---------------------------------------------------------------------------------------------
# Entry point


def run(
    data: str | Path,
    out: str | Path,
    cfg: PreprocessConfig,
    splits: Iterable[str] = ("train", "test"),
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Preprocess ``splits`` of the Kaggle-layout data set at ``data`` into the cache ``out``.

    Train is always done before test; test alone needs ``out/train.zarr`` (its PSD) made with
    the same config. Returns a summary: device, world size, image shape and per split ``n``,
    ``n_chunks``, ``chunks_done_before``, ``chunks_computed`` (by this process), ``n_invalid``,
    ``skipped`` (the store was already complete), ``seconds`` and ``samples_per_s``.

    Raises DataError / BadSample (the input), StoreError (an existing store that cannot be
    resumed), ConfigError (a bad setting); on other processes than the main one, a failure of
    the main process's part surfaces as RankError.
    """
    data, out = Path(data), Path(out)
    splits = _check_splits(splits)
    _check_config(cfg)
    device = devices.process_device(cfg.device)
    # The process group only carries the main process's few messages (the done flags, an
    # error, barriers): gloo on the CPU whatever the device, so that several processes can
    # share a GPU (NCCL refuses two ranks on one GPU).
    with devices.cpu_process_group() as state:
        out.mkdir(parents=True, exist_ok=True)
        log.info("preprocess %s -> %s: splits %s, device %s, %d process(es)", data, out,
                 ",".join(splits), device, state.num_processes)
        if cfg.batch_size > cfg.store.chunk_size:
            log.info("batch_size %d > store.chunk_size %d: a device batch is one chunk",
                     cfg.batch_size, cfg.store.chunk_size)
        summary: dict[str, Any] = {"out": str(out), "device": str(device),
                                   "world_size": state.num_processes, "splits": {}}
        with _device_settings(device, state):
            for split in splits:
                summary["splits"][split] = _run_split(state, device, split, data, out, cfg,
                                                      overwrite, progress)
    summary["image_shape"] = list(zstore.open_store(out / f"{splits[-1]}.zarr")["images"].shape[1:])
    return summary


# ---------------------------------------------------------------------------------------------
# One split


def _run_split(
    state: PartialState,
    device: torch.device,
    split: str,
    data: Path,
    out: Path,
    cfg: PreprocessConfig,
    overwrite: bool,
    progress: bool,
) -> dict:
    start = time.perf_counter()
    index = layout.build_index(data, split)
    path = out / f"{split}.zarr"
    ids = layout.id_to_int(index.ids)
    targets = index.targets if split == "train" else np.full(len(index), -1, dtype=np.int8)

    # Test images are whitened with the train PSD, never their own.
    train_psd = None if split == "train" else train_store_psd(out / "train.zarr", cfg)

    def prepare() -> np.ndarray:
        """Create the store, or check it can be resumed; returns the ``done`` flags."""
        (out / ABORT_FILE).unlink(missing_ok=True)  # a failed run's: this one starts clean
        if path.exists() and not overwrite:
            g = zstore.open_store(path, mode="r+")
            check_resumable(g, path, cfg, ids, targets, train_psd, data, split, device)
            removed = zstore.remove_partials(path)
            if removed:
                log.info("%s: removed %d leftover .partial file(s) of a killed run",
                         path.name, len(removed))
        else:
            psd = train_psd
            if split == "train":
                psd, _ = training_psd(index, cfg.whiten.n_psd, cfg.whiten.alpha,
                                      on_bad=cfg.on_bad, read_threads=cfg.read_threads)
            create_store(path, split, cfg, ids, targets, psd, data, device, replace=overwrite)
        # Only now: a refused run must not leave a config that describes no store.
        save_config(cfg, out / CONFIG_FILE)
        return zstore.done_chunks(zstore.open_store(path))

    done = _on_main(state, prepare)
    g = zstore.open_store(path, mode="r+")
    nc = done.size
    base = {"n": len(index), "n_chunks": nc, "chunks_done_before": int(done.sum()),
            "chunks_computed": 0}
    if g.attrs.get("complete"):
        log.info("%s: complete (%d samples, %d chunks): nothing to do", path, len(index), nc)
        if g.attrs["n_invalid"]:
            log.warning("%s: holds %d bad sample(s) skipped when it was made, listed in %s",
                        path.name, g.attrs["n_invalid"], out / f"{split}_bad.csv")
        return {**base, "n_invalid": int(g.attrs["n_invalid"]), "skipped": True, "seconds": 0.0,
                "samples_per_s": 0.0}
    if done.any():
        log.info("%s: resuming, %d of %d chunks already done", path.name, int(done.sum()), nc)

    psd = zstore.read_psd(g) if split == "train" else train_psd
    mine = [c for c in range(nc) if c % state.num_processes == state.process_index and not done[c]]
    n_mine = sum(_chunk_len(c, len(index), cfg) for c in mine)
    compute_start = time.perf_counter()
    abort = out / ABORT_FILE
    failure, stopped = None, False
    try:
        from preprocess.transforms import Transform

        # Inside the exchange: a process that cannot build its transform (CUDA out of memory
        # on a GPU shared by several) fails like one that meets a bad file.
        transform = Transform.from_config(cfg.whiten, cfg.cqt, psd).to(device).eval()
        if tuple(g["images"].shape[1:]) != tuple(transform.image_shape):
            raise StoreError(f"{path}: images of shape {g['images'].shape[1:]}, the transform "
                             f"makes {transform.image_shape}; re-run with --overwrite")
        with progress_bar(total=n_mine, desc=split, unit="sample", dynamic_ncols=True,
                          disable=not (progress and state.is_main_process)) as bar:
            waits = _process_chunks(g, index, mine, transform, device, cfg, bar,
                                    stop=abort.exists if state.num_processes > 1 else None)
    except _Stopped:
        stopped = True  # another process failed; the exchange below says which
    except Exception as e:
        if state.num_processes == 1:
            raise
        # Tell the others now: they stop after their current chunk, on every machine that
        # shares the cache directory, instead of finishing their share and then waiting.
        failure = e
        try:
            abort.write_text(f"process {state.process_index}: {_verdict(e)[1]}\n")
        except OSError:
            pass  # a full disk: the exchange below still reports the original error
    if state.num_processes > 1:
        _exchange_failures(state, failure, abort)
    if stopped:  # an abort file, yet nobody failed: a stale one (a shared filesystem's cache)
        raise RankError(f"{abort} appeared but no process reported a failure; delete it and "
                        "re-run: the run resumes")
    compute_seconds = time.perf_counter() - compute_start
    state.wait_for_everyone()
    n_invalid = _on_main(state, lambda: _finalize(g, path, split, out))
    state.wait_for_everyone()
    seconds = time.perf_counter() - start
    log.info("%s: %d samples in %.1f s (this process: %d chunks, %.0f samples/s; waited "
             "%.1f s for reads, %.1f s transforming, waited %.1f s for writes)", path.name,
             len(index), seconds, len(mine), n_mine / max(compute_seconds, 1e-9),
             waits["read_wait"], waits["transform"], waits["write_wait"])
    return {**base, "chunks_computed": len(mine), "n_invalid": n_invalid, "skipped": False,
            "seconds": round(seconds, 3),
            "samples_per_s": round(n_mine / max(compute_seconds, 1e-9), 1),
            "main_thread_seconds": {k: round(v, 3) for k, v in waits.items()}}


def _chunk_len(chunk: int, n: int, cfg: PreprocessConfig) -> int:
    sl = zstore.chunk_slice(chunk, n, cfg.store.chunk_size)
    return sl.stop - sl.start


def _finalize(g, path: Path, split: str, out: Path) -> int:
    """Channel statistics, ``complete``, the bad list and its CSV; returns the invalid count."""
    zstore.finalize(g)
    bad = zstore.bad_samples(g)
    csv_path = out / f"{split}_bad.csv"
    if bad:
        with csv_path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "reason"])
            w.writerows([b["id"], b["reason"]] for b in bad)
        shown = ", ".join(f"{b['id']} ({b['reason']})" for b in bad[:5])
        log.warning("%s: %d bad sample(s) skipped (valid=False, zero image), listed in %s: %s%s",
                    path.name, len(bad), csv_path, shown, " ..." if len(bad) > 5 else "")
    elif csv_path.exists():
        csv_path.unlink()  # from an earlier run of this cache with other data
    log.info("%s: complete; channel mean %s, std %s", path.name,
             _fmt(g.attrs["channel_stats"]["mean"]), _fmt(g.attrs["channel_stats"]["std"]))
    return len(bad)


def _fmt(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


# ---------------------------------------------------------------------------------------------
# The overlapped loop: readers -> transform -> writers


def _process_chunks(g, index: layout.Index, chunks: list[int], transform, device: torch.device,
                    cfg: PreprocessConfig, bar,
                    stop: Callable[[], bool] | None = None) -> dict[str, float]:
    """Read, transform and write ``chunks`` (in order); at most ~2 x threads chunks in flight.

    Returns the main thread's seconds waiting for reads, transforming and waiting for writes:
    whichever of ``read_wait`` / ``write_wait`` is large names the bottleneck.

    on_bad=error: the first bad sample raises BadSample once the chunks before it are written,
    so a rerun resumes after them. ``stop()`` true after a chunk: raise :class:`_Stopped`
    (another process failed).
    """
    n, cs = len(index), cfg.store.chunk_size

    def read(chunk: int) -> _Chunk:
        sl = zstore.chunk_slice(chunk, n, cs)
        x = np.zeros((sl.stop - sl.start, len(layout.DETECTORS), layout.N_TIME))
        bad, rows = [], []
        for row, i in enumerate(range(sl.start, sl.stop)):
            try:
                x[row] = layout.load_sample(index.path(i))
            except BadSample as e:
                bad.append(e)
                rows.append(row)
        return _Chunk(chunk, x, bad, rows)

    readers = ThreadPoolExecutor(cfg.read_threads, thread_name_prefix="read")
    writers = ThreadPoolExecutor(cfg.write_threads, thread_name_prefix="write")
    writes: deque[Future] = deque()
    seconds = {"read_wait": 0.0, "transform": 0.0, "write_wait": 0.0}
    clock = time.perf_counter()

    def lap(key: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[key] += now - clock
        clock = now

    try:
        for item in _prefetch(readers, read, chunks, depth=2 * cfg.read_threads):
            lap("read_wait")
            sl = zstore.chunk_slice(item.index, n, cs)
            if item.bad and cfg.on_bad == "error":
                raise item.bad[0]
            images, waves, overflow = _transform(transform, item.x, cfg.batch_size, device,
                                                 cfg.save_waves)
            reasons = [""] * len(item.x)
            for row, e in zip(item.bad_rows, item.bad):
                reasons[row] = e.reason
            for row, reason in overflow.items():
                if reasons[row]:
                    continue  # a bad file's zeros: already recorded
                if cfg.on_bad == "error":
                    raise BadSample(index.path(sl.start + row), reason)
                reasons[row] = reason
            valid = np.array([not r for r in reasons])
            images[~valid] = 0
            if waves is not None:
                waves[~valid] = 0
            lap("transform")
            while len(writes) > cfg.write_threads:
                writes.popleft().result()
            writes.append(writers.submit(zstore.write_chunk, g, item.index, images, valid,
                                         waves, reasons if not valid.all() else None))
            bar.update(len(item.x))
            lap("write_wait")
            if stop is not None and stop():
                raise _Stopped
        while writes:
            writes.popleft().result()
        lap("write_wait")
        return seconds
    finally:
        readers.shutdown(wait=True, cancel_futures=True)
        # Chunks already computed still reach the disk (and count as done) when we stop early.
        writers.shutdown(wait=True)


def _prefetch(pool: ThreadPoolExecutor, fn: Callable[[Any], T], items: Iterable,
              depth: int) -> Iterator[T]:
    """``fn(item)`` for each item, computed on ``pool`` with ``depth`` in flight, in order."""
    items = iter(items)
    pending: deque[Future] = deque(pool.submit(fn, i) for i in itertools.islice(items, depth))
    try:
        while pending:
            result = pending.popleft().result()
            pending.extend(pool.submit(fn, i) for i in itertools.islice(items, 1))
            yield result
    finally:
        for f in pending:
            f.cancel()


def _transform(transform, x: np.ndarray, batch_size: int, device: torch.device,
               save_waves: bool) -> tuple[np.ndarray, np.ndarray | None, dict[int, str]]:
    """(n, 3, 4096) float64 strain -> float16 images (n, 3, n_bins, n_frames), waves or None,
    and {row: reason} for samples with a non-finite float16 value (NaN, or |x| > 65504)."""
    n = len(x)
    images = np.empty((n, *transform.image_shape), dtype=np.float16)
    waves = np.empty(x.shape, dtype=np.float16) if save_waves else None
    bad: dict[int, str] = {}
    with torch.inference_mode():
        for s in range(0, n, batch_size):
            e = min(s + batch_size, n)
            img32, wav32 = transform(torch.from_numpy(x[s:e]).to(device))
            # The cast happens on the device so only half the bytes cross back to the host.
            outputs = [("image", img32, img32.to(torch.float16))]
            if save_waves:
                outputs.append(("whitened strain", wav32, wav32.to(torch.float16)))
            for name, full, half in outputs:
                ok = torch.isfinite(half).flatten(1).all(dim=1)
                if not bool(ok.all()):
                    for row in torch.nonzero(~ok).flatten().tolist():
                        peak = float(full[row].abs().max())
                        bad.setdefault(s + row, (
                            f"non-finite {name} after the transform (max |value| {peak:.3g} "
                            f"exceeds float16's {FLOAT16_MAX:.0f})" if np.isfinite(peak)
                            else f"NaN or Inf in the {name} after the transform"))
            images[s:e] = outputs[0][2].cpu().numpy()
            if save_waves:
                waves[s:e] = outputs[1][2].cpu().numpy()
    return images, waves, bad


@contextlib.contextmanager
def _device_settings(device: torch.device, state: PartialState):
    """Torch threads on the CPU; on CUDA, ``device`` as the current device (so that nothing
    makes a context on cuda:0 in every process) and IEEE float32
    (:func:`data.devices.ieee_fp32`: no TF32, so GPU images equal CPU ones); restored on exit."""
    # On the CPU: this process's share of the cores, one left to the reader and writer threads.
    threads = (devices.cpu_threads(sharers=devices.local_world_size(state.num_processes),
                                   spare=1) if device.type == "cpu" else None)
    current = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    with devices.torch_threads(threads), current, devices.ieee_fp32():
        yield


# ---------------------------------------------------------------------------------------------
# Processes


def _on_main(state: PartialState, fn: Callable[[], T]) -> T:
    """Run ``fn`` on the main process only; every process returns its result (or fails).

    A collective: all processes must call it. The others wait for the main one, so nothing
    reads a store while it is being created.
    """
    result, error = None, None
    if state.is_main_process:
        try:
            result = fn()
        except Exception as e:  # re-raised below, after the others have heard of it
            error = e
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        box = [result, None if error is None else _verdict(error)]
        broadcast_object_list(box, from_process=0)
        result, verdict = box
        if verdict is not None and not state.is_main_process:
            raise RankError(f"the main process failed: {verdict[1]}", verdict[0])
    if error is not None:
        raise error
    return result


def _exchange_failures(state: PartialState, failure: BaseException | None, abort: Path) -> None:
    """After the chunks: every process learns whether any failed (a collective). A process
    that failed re-raises its own error; the others raise :class:`RankError` with the first
    failed process's message and status. Nothing happens when all went well."""
    from accelerate.utils import gather_object

    mine = None if failure is None else (state.process_index, *_verdict(failure))
    reports = sorted(r for r in gather_object([mine]) if r is not None)
    if not reports:
        return
    if state.is_main_process:
        abort.unlink(missing_ok=True)  # every process is past its last look at it
    if failure is not None:
        raise failure
    rank, code, message = reports[0]
    raise RankError(f"process {rank} failed: {message}", code)


def _check_splits(splits: Iterable[str]) -> tuple[str, ...]:
    if isinstance(splits, str):
        splits = [s.strip() for s in splits.split(",") if s.strip()]
    splits = list(splits)
    unknown = [s for s in splits if s not in layout.SPLITS]
    if unknown or not splits:
        raise ConfigError(f"splits: {unknown or splits!r}; expected some of {layout.SPLITS}")
    return tuple(s for s in layout.SPLITS if s in splits)  # train first: test needs its PSD


def _check_config(cfg: PreprocessConfig) -> None:
    for key, value in (("batch_size", cfg.batch_size), ("read_threads", cfg.read_threads),
                       ("write_threads", cfg.write_threads),
                       ("store.chunk_size", cfg.store.chunk_size),
                       ("whiten.n_psd", cfg.whiten.n_psd)):
        if value < 1:
            raise ConfigError(f"{key}: must be at least 1, got {value}")
    if not cfg.whiten.ramp > 0:
        raise ConfigError(f"whiten.ramp: must be a positive width in Hz, got {cfg.whiten.ramp}")
