"""Scoring every window of long strain, at zero lag and in every time slide: the strain is
whitened and transformed once per window and detector, each model scores its batches, and a
worker thread (``transform_thread``) may run the transform beside the models.

The score is the ensemble's **logit**, never a probability: a probability saturates at exactly
1.0 for loud signals, so many windows tie, the loudest window is arbitrary among them and
every loud trigger gets FAR 0 (Schaefer et al. 2021 fixed the same in CNN searches by ranking
on the unbounded output). Folds of a run average their logits, and several runs average their
runs' logits (the log of the geometric mean of their odds; runs should be calibrated alike,
which models trained on the same data with the same loss roughly are).

A model that splits where the detectors meet (``forward_detectors`` and ``forward_fusion``,
e.g. ``g2net_1d_coinc``) has each window's per-detector features computed once; a time slide
then pairs features of different windows and runs only the fusion head. Other models get the
slid rows of the transformed strain and run whole.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import queue
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from data import devices
from data.config import from_dict
from data.layout import DETECTORS
from data.progress import progress_bar
from data.strain import Strain
from infer.predict.checkpoints import Fold
from infer.predict.inputs import ensemble_transform
from infer.predict.tta import fold_views
from infer.search.config import (
    SearchConfig,
    SearchError,
)
from infer.search.grid import (
    Grid,
    bad_prefix,
    clean_windows,
    rings_of,
    slide_rows,
    whole_multiple,
    whole_samples,
)
from infer.search.psd import LocalPSD
from preprocess.config import PreprocessConfig
from preprocess.transforms import Whiten

log = logging.getLogger(__name__)


@dataclass
class Blocks:
    """Windows grouped by ``size`` consecutive grid indices; block b holds [b size, (b+1) size)."""

    size: int
    n_windows: int

    @property
    def n(self) -> int:
        return -(-self.n_windows // self.size)

    def span(self, b: int) -> tuple[int, int]:
        return b * self.size, min((b + 1) * self.size, self.n_windows)

    def centre(self, b: int, grid: Grid) -> float:
        """Centre (samples) of the data the block's windows cover."""
        a, e = self.span(b)
        return a * grid.stride + ((e - 1 - a) * grid.stride + grid.n_time) / 2


@dataclass
class WindowScores:
    """Every window's ranking statistic (the ensemble's logit) per slide: what the expensive
    part produces."""

    grid: Grid
    scores: np.ndarray  # (slides + 1, grid.n) float64; row 0 zero lag; NaN: not scored
    rings: list[tuple[int, int]]
    counts: dict  # window counts: grid, clean, no_psd, overflow, analysed
    seconds: dict  # stage -> wall seconds
    duration: float  # s of strain the three detectors share
    psd_segments: list[int] = field(default_factory=list)  # segments per block PSD (local)
    sources: dict = field(default_factory=dict)  # data.strain.Strain.sources

    def save(self, path: Path, key: str) -> None:
        meta = {"key": key, "grid": dataclasses.asdict(self.grid), "rings": self.rings,
                "counts": self.counts, "seconds": self.seconds, "duration": self.duration,
                "psd_segments": self.psd_segments, "sources": self.sources}
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, scores=self.scores, meta=np.array(json.dumps(meta)))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path, key: str | None) -> WindowScores | None:
        """The saved scores if ``path`` holds ones made with ``key`` (None: whatever made
        them), else None."""
        if not path.is_file():
            return None
        try:
            with np.load(path) as f:
                meta = json.loads(str(f["meta"]))
                if key is not None and meta.get("key") != key:
                    return None
                scores = f["scores"]
        except (OSError, ValueError, KeyError) as e:
            log.warning("%s: unreadable (%s); scoring again", path, e)
            return None
        return cls(grid=Grid(**meta["grid"]), scores=scores,
                   rings=[tuple(r) for r in meta["rings"]], counts=meta["counts"],
                   seconds=meta["seconds"], duration=meta["duration"],
                   psd_segments=meta["psd_segments"], sources=meta["sources"])


class _Timer:
    def __init__(self):
        self.seconds: dict[str, float] = {}

    def add(self, name: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - since
        return now


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def score_windows(strain: Strain, folds: list[Fold], cfg: SearchConfig, accelerator=None,
                  progress: bool = True) -> WindowScores:
    """Transform every clean window of ``strain`` once and score it at zero lag and in every
    slide (docs/search.md, Notes from the code, steps 4-6). ``strain`` must be at the models'
    rate. On a CPU, torch runs ``cfg.threads`` threads meanwhile."""
    from accelerate import Accelerator

    accelerator = accelerator or Accelerator()
    threads = None
    if accelerator.device.type == "cpu":
        # With the transform thread, two threads call torch at once: half the cores each;
        # without, one core is left to the strain reading and bookkeeping.
        threads = cfg.threads or (devices.cpu_threads(sharers=2, spare=0) if cfg.transform_thread
                                  else devices.cpu_threads(spare=1))
    with devices.torch_threads(threads):
        return _score_windows(strain, folds, cfg, accelerator, progress)


def _score_windows(strain: Strain, folds: list[Fold], cfg: SearchConfig, accelerator,
                   progress: bool) -> WindowScores:
    device = accelerator.device
    card = folds[0].card
    fs, n_time = int(card.transform["sample_rate"]), int(card.transform["n_time"])
    if strain.sample_rate != fs:
        raise SearchError(f"strain at {strain.sample_rate} Hz, the models read {fs} Hz")
    grid = Grid.over(strain, n_time, whole_samples(cfg.stride, fs, "stride"))
    prefix = bad_prefix(strain.data)
    clean = clean_windows(grid, prefix)
    pcfg = from_dict(PreprocessConfig, card.preprocess_config)
    timer = _Timer()

    # Which blocks have a PSD: decided before any FFT, so every window's fate is known first.
    if cfg.psd.source == "local":
        blocks = Blocks(whole_multiple(cfg.psd.block, grid.stride_s, "psd.block", "stride"),
                        grid.n)
        local = LocalPSD(strain.data, prefix, pcfg.whiten.alpha, fs, n_time,
                         whole_samples(cfg.psd.hop, fs, "psd.hop"), cfg.psd.span,
                         cfg.psd.min_segments)
        has_psd = np.array([local.usable(blocks.centre(b, grid)) for b in range(blocks.n)],
                           dtype=bool)
        window_psd = np.repeat(has_psd, blocks.size)[:grid.n]
    else:
        blocks = Blocks(max(grid.n, 1), grid.n)  # one block: the training PSD for all
        local = None
        window_psd = np.ones(grid.n, dtype=bool)
    analysed = clean & window_psd
    counts = {"grid": int(grid.n), "clean": int(clean.sum()),
              "no_psd": int((clean & ~window_psd).sum()), "overflow": 0}
    if not analysed.any():
        raise SearchError(
            f"no window can be analysed: {grid.n} windows of {n_time / fs:g} s, "
            f"{grid.n - counts['clean']} touch missing or non-finite data, {counts['no_psd']} "
            f"lie in blocks with fewer than psd.min_segments={cfg.psd.min_segments} clean PSD "
            "segments")

    ring_most = max(1, int(cfg.ring / grid.stride_s))
    rings = rings_of(analysed, ring_most)
    m = whole_multiple(cfg.slide_step, grid.stride_s, "slide_step", "stride")
    slid = [DETECTORS.index(d) for d in cfg.slide_detectors]
    scores = np.full((cfg.slides + 1, grid.n), np.nan)

    base = ensemble_transform(folds).to(device).eval()
    images = [f.card.input == "images" for f in folds]
    nhwc = [cfg.channels_last and im for im in images]
    models = [accelerator.prepare_model(
        f.model.to(memory_format=torch.channels_last) if cl else f.model, evaluation_mode=True)
        for f, cl in zip(folds, nhwc)]
    # Folds whose model splits at the detectors keep features, the others transformed rows.
    split = [f.card.input == "waves" and splits_at_detectors(accelerator.unwrap_model(m))
             for f, m in zip(folds, models)]
    whole = [f for f, sp in zip(folds, split) if not sp]
    need_images = any(images)
    need_waves = any(f.card.input == "waves" for f in folds)
    cqt = base.cqt if need_images else None
    keep = {f.card.input for f in whole}  # transformed rows a ring keeps for its slides
    statistic = Statistic(folds, models, split, accelerator, nhwc,
                          freeze=[im and cfg.freeze and device.type == "cpu" for im in images])
    slide_batch = cfg.slide_batch_size if not whole else cfg.batch_size

    n_scored = sum((b - a) * sum(slide_rows(b - a, k, m, len(slid), slid) is not None
                                 for k in range(cfg.slides + 1)) for a, b in rings)
    bars = {"disable": not progress, "dynamic_ncols": True, "unit": "window"}
    transform_bar = progress_bar(total=int(analysed.sum()), desc="transform", **bars)
    score_bar = progress_bar(total=n_scored, desc="score", **bars)
    strided = sliding_window_view(strain.data, n_time, axis=-1)[:, ::grid.stride]  # no copy
    psd_segments: list[int] = []

    def transform_batches():
        """Yields ``(ring, s, e, outputs, ok)`` for every batch of windows [s, e) of every ring,
        in order. outputs: float16 "images" and/or "waves"; ok: (e - s,) bool, False where a
        value overflowed float16."""
        whiten, whiten_block = None, -1
        with torch.inference_mode():
            for r, (a, b) in enumerate(rings):
                for blk in range(a // blocks.size, (b - 1) // blocks.size + 1):
                    if blk != whiten_block:  # a block may span two rings: one PSD for both
                        t = time.perf_counter()
                        if local is None:
                            whiten = base.whiten
                        else:
                            psd, n_used = local.psd(blocks.centre(blk, grid))
                            psd_segments.append(n_used)
                            whiten = Whiten.from_config(pcfg.whiten, psd).to(device)
                        whiten_block = blk
                        timer.add("psd", t)
                    s0, e0 = blocks.span(blk)
                    for s in range(max(s0, a), min(e0, b), cfg.batch_size):
                        e = min(s + cfg.batch_size, e0, b)
                        t = time.perf_counter()
                        x = torch.from_numpy(np.ascontiguousarray(
                            strided[:, s:e].transpose(1, 0, 2))).to(device)
                        white = whiten(x)
                        outs = {}
                        if need_waves:
                            outs["waves"] = white.to(torch.float16)
                        if need_images:
                            outs["images"] = cqt(white).to(torch.float16)
                        ok = torch.ones(e - s, dtype=torch.bool, device=device)
                        for half in outs.values():
                            ok &= torch.isfinite(half).flatten(1).all(dim=1)
                        _sync(device)
                        timer.add("transform", t)
                        yield r, s, e, outs, ok

    def score_slides(a: int, rows_of: dict, feats_of: dict, ok: torch.Tensor) -> None:
        """Slides 1..K of the ring starting at window a, from its rows ``rows_of`` and its
        per-detector features ``feats_of`` (fold index -> (W, 3, C, T'))."""
        w = ok.shape[0]
        for k in range(1, cfg.slides + 1):
            rows = slide_rows(w, k, m, len(slid), slid)
            if rows is None:
                continue
            rows_t = torch.from_numpy(rows).to(device)
            t = time.perf_counter()
            for s in range(0, w, slide_batch):
                e = min(s + slide_batch, w)
                idx = rows_t[:, s:e]
                # Each detector's row from its own (shifted) window of the ring.
                batch = {name: torch.stack([arr[idx[d], d] for d in range(len(DETECTORS))],
                                           dim=1) for name, arr in rows_of.items()}
                feats = {i: torch.stack([f[idx[d], d] for d in range(len(DETECTORS))], dim=1)
                         for i, f in feats_of.items()}
                good = (ok[idx[0]] & ok[idx[1]] & ok[idx[2]]).cpu().numpy()
                scores[k, a + s:a + e] = np.where(good, statistic(batch, feats), np.nan)
                score_bar.update(e - s)
            timer.add("model_slides", t)

    # With transform_thread the transform runs in a worker thread while this one runs the
    # models: two threads of single-threaded torch ops use two cores without OpenMP's spinning
    # barriers (and, on busy cores, get two shares of them). Zero lag is scored batch by batch
    # as the rows arrive; a ring's slides once all its rows are in.
    worker = _Worker(transform_batches) if cfg.transform_thread else contextlib.nullcontext(
        transform_batches())
    # IEEE float32 for the transform as preprocessing computes it (no TF32 on a GPU).
    with torch.inference_mode(), devices.ieee_fp32(), worker as batches:
        ring, a, rows_of, feats_of, ok = -1, 0, {}, {}, None
        for r, s, e, outs, ok_batch in batches:
            t = time.perf_counter()
            feats = statistic.features(outs)
            if r != ring:
                if ring >= 0:
                    score_slides(a, rows_of, feats_of, ok)
                ring, (a, b) = r, rings[r]
                rows_of = {name: torch.empty((b - a, *half.shape[1:]), dtype=half.dtype,
                                             device=device)
                           for name, half in outs.items() if name in keep}
                feats_of = {i: torch.empty((b - a, *f.shape[1:]), dtype=f.dtype, device=device)
                            for i, f in feats.items()}
                ok = torch.ones(b - a, dtype=torch.bool, device=device)
            for name in rows_of:
                rows_of[name][s - a:e - a] = outs[name]
            for i, f in feats.items():
                feats_of[i][s - a:e - a] = f
            ok[s - a:e - a] = ok_batch
            counts["overflow"] += int((~ok_batch).sum())
            transform_bar.update(e - s)
            scores[0, s:e] = np.where(ok_batch.cpu().numpy(), statistic(outs, feats), np.nan)
            timer.add("model", t)
            score_bar.update(e - s)
        if ring >= 0:
            score_slides(a, rows_of, feats_of, ok)
    transform_bar.close()
    score_bar.close()
    counts["analysed"] = int(np.isfinite(scores[0]).sum())
    return WindowScores(grid=grid, scores=scores, rings=rings, counts=counts,
                        seconds=timer.seconds, duration=strain.duration,
                        psd_segments=psd_segments, sources=strain.sources)


def splits_at_detectors(model: torch.nn.Module) -> bool:
    """Whether ``model`` has ``forward_detectors`` (per-detector features, each row from its
    own detector only) and ``forward_fusion`` (the rest), as ``g2net_1d_coinc``."""
    return callable(getattr(model, "forward_detectors", None)) and callable(
        getattr(model, "forward_fusion", None))


class Statistic:
    """The ranking statistic of a batch: each fold's logit, averaged over the folds of a run,
    then over runs (``fold.member``). Folds in ``split`` are scored from per-detector features
    (:meth:`features` at zero lag, rows of other windows in a slide); the others from the
    float16 "images" / "waves" rows, through infer.predict's own input preparation."""

    def __init__(self, folds: list[Fold], models: list, split: list[bool], accelerator,
                 channels_last: list[bool] | None = None, freeze: list[bool] | None = None):
        self.folds, self.models, self.split = folds, list(models), split
        self.accelerator = accelerator
        self.channels_last = channels_last or [False] * len(folds)
        self.freeze = list(freeze or [False] * len(folds))  # not yet frozen, to freeze
        self.members = np.array([f.member for f in folds])

    def features(self, outs: dict) -> dict[int, torch.Tensor]:
        """fold index -> (B, 3, C, T') per-detector features of the split folds' models."""
        feats = {}
        for i, (fold, model, sp) in enumerate(zip(self.folds, self.models, self.split)):
            if sp:
                x = fold_views(fold, outs, [()], 0.0)[0]
                with self.accelerator.autocast():
                    feats[i] = self.accelerator.unwrap_model(model).forward_detectors(x)
        return feats

    def __call__(self, rows: dict, feats: dict) -> np.ndarray:
        """(B,) float64 ensemble logit from the rows and the split folds' features."""
        logits = []
        for i, (fold, model, sp) in enumerate(zip(self.folds, self.models, self.split)):
            if sp:
                with self.accelerator.autocast():
                    z = self.accelerator.unwrap_model(model).forward_fusion(feats[i])
            else:
                x = fold_views(fold, rows, [()], 0.0)[0]
                if self.channels_last[i]:
                    x = x.contiguous(memory_format=torch.channels_last)
                if self.freeze[i]:
                    self.models[i] = model = frozen(model, x, fold.path)
                    self.freeze[i] = False
                z = model(x)
            logits.append(z.float().view(-1))
        z = torch.stack(logits).double().cpu().numpy()  # (n_folds, B)
        return np.mean([z[self.members == m].mean(axis=0) for m in np.unique(self.members)],
                       axis=0)


def frozen(model: torch.nn.Module, x: torch.Tensor, name: object = "model") -> torch.nn.Module:
    """``model`` (in eval mode) traced on the batch ``x`` and frozen by TorchScript, or
    ``model`` itself, with a warning, where tracing fails or the frozen model's outputs on
    ``x`` and on a smaller batch differ from the model's (a trace bakes in any branch the
    model's Python code took, on the batch size for instance)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            fast = torch.jit.freeze(torch.jit.trace(model, x, check_trace=False))
        for batch in (x, x[: x.shape[0] // 2 + 1]):
            want, got = model(batch).float(), fast(batch).float()
            if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-3, atol=1e-3):
                raise ValueError("its outputs differ from the model's")
        return fast
    except Exception as e:  # noqa: BLE001  (any model a user brings: run it unfrozen)
        log.warning("%s: not frozen (%s: %s); scored unfrozen", name, type(e).__name__, e)
        return model


class _Worker:
    """Iterates the generator ``produce()`` in a thread; iterating the worker yields its items
    in order and re-raises its exception. At most PREFETCH items wait; leaving the ``with``
    block early stops the thread."""

    PREFETCH = 8

    def __init__(self, produce):
        self.produce = produce
        self.queue: queue.Queue = queue.Queue(maxsize=self.PREFETCH)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="search-transform", daemon=True)

    def _put(self, item) -> None:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise _Stopped

    def _run(self) -> None:
        try:
            for item in self.produce():
                self._put(item)
            self._put(_DONE)
        except _Stopped:
            pass
        except Exception as e:  # noqa: BLE001  (handed to the consumer, which raises it)
            with contextlib.suppress(_Stopped):
                self._put(e)

    def __enter__(self):
        self.thread.start()
        return self

    def __iter__(self):
        while True:
            item = self.queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


class _Stopped(Exception):
    pass


_DONE = object()
