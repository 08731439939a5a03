"""Search long strain with a trained fold ensemble: triggers, their false-alarm rates from time
slides, and, given the injections, which were found.

    python -m infer.search --runs RUN --strain H1=PATH L1=PATH V1=PATH --out OUTDIR
        [--channel IFO=NAME] [--stride 0.25] [--slides K] [--injections CSV]
        [--psd local|training] [--config YAML] [--rescore] [--quiet] [key=value ...]

(``g2net-search``; key=value overrides are :class:`infer.config.SearchConfig` keys; an item
right after ``--strain`` whose name is not a detector is taken as one.)

1. **Strain** (:mod:`infer.strain`): each detector's GWF / HDF5 files read with gwpy,
   resampled to the model's rate (the card's ``transform.sample_rate``, 2048 Hz), laid on one
   grid over the span the three share; missing or non-finite samples are NaN.
2. **Windows**: 2-s windows (the card's ``n_time`` = 4096 samples) start every ``stride`` s
   from the common span's first sample. A window that touches a NaN in any detector is
   dropped, and nothing else is (but see ``psd.min_segments``).
3. **PSD** (``psd.source``): ``local`` (default) whitens each window with the PSD of the data
   around it. Windows are grouped in blocks of ``psd.block`` s of starts; a block's PSD is the
   median of the one-sided periodograms of the 2-s segments (every ``psd.hop`` s, Tukey(alpha)
   windowed with the model's own ``whiten.alpha``, mean removed) whose centres lie within
   ``psd.span`` / 2 of the block's centre and which touch no NaN, divided by the median's bias
   (:func:`preprocess.transforms.median_psd`: exactly scipy's ``welch(average='median')`` on
   those segments). A block with fewer than ``psd.min_segments`` clean segments is skipped.
   The training PSD (the card's) is the *mean* of Tukey(alpha) periodograms of 2-s noise
   samples: same window, same 0.5 Hz grid (3, 2049), same density scaling, so in stationary
   Gaussian noise the two estimate the same window-smoothed PSD. A periodogram bin is
   exponential (chi^2_2 / 2), whose median is ln 2 = 0.69 of its mean; scipy's bias (-> ln 2
   for many segments) restores the mean's scale for independent segments. Measured on
   data.synth_long noise against a card's PSD: 0.4-1.8 % high over 20-1000 Hz, within 6 % in
   octave bands (the bias assumes independent segments; 50 %-overlapping ones are correlated,
   which leaves the median ~1 % high). A loud chirp in a few of the 65 segments raises the
   median a few % in the band it fills (the mean would rise more). ``training`` uses the
   card's PSD for every window.
4. **Transform**: each window goes through the model's own transform from its card
   (:class:`preprocess.transforms.Whiten` built with the block's PSD, the card's CQT), rounded
   to float16 as the store holds it, then :func:`infer.predict.model_input` (normalisation and
   resizing exactly as inference does; whitened strain for ``waves`` models, for which no CQT
   is computed). Windows share the reading and resampling, each Welch segment's periodogram
   (computed once for every block whose span holds it), a block's PSD and whitening filter,
   and, across time slides, every detector's whitened and CQT rows (below). They cannot share
   their FFTs or CQTs: the model's transform removes each window's mean and tapers it with its
   own Tukey window before the FFT, so overlapping windows hold different numbers, and a
   stream-whitened series would make images the model never saw in training.
5. **Scores**: every fold under RUN (or ``checkpoints``), logits -> probabilities in float64,
   averaged over folds (:func:`infer.predict.combine`, ``mean``). With ``transform_thread``
   the transform runs in a worker thread beside the models; ``threads`` is torch's threads
   per op on a CPU (default one less than the cores: OpenMP teams spinning on shared cores
   made the transform and model several times slower).
6. **Time slides** (``slides`` = K): the analysed windows form stretches of consecutive windows
   (cut by gaps), split into *rings* of at most ``ring`` s (a ring's rows are held in memory:
   ~35 KB a window for the default images). In slide k, ``slide_detectors[i]`` (L1, V1 by
   default; H1 stays) is shifted by (i + 1) k ``slide_step`` s circularly within the ring:
   window w of slide k is H1's row of window w, L1's row of window w - k m and V1's of window
   w - 2 k m (modulo the ring's W windows; m = slide_step / stride). The whitening and CQT act
   on each detector's row alone, so a slide reuses the zero-lag rows and costs the models
   only; every row is real, continuous data whitened with its own time's PSD, and no window is
   lost at the wrap. A ring takes slide k only when the shifts stay distinct and non-zero
   (n_slid k m < W). Zero lag and slides are scored into separate rows of one array from
   separate index arrays: no slid window is scored as zero lag, nor the reverse.
7. **Triggers** (for zero lag and each slide on its own): a window is a trigger when its score
   is the highest within +-``cluster`` s (ties: the earliest), so triggers are more than
   ``cluster`` s apart. A trigger's **time** (``trigger_time``): ``onset`` (default) is the
   start of the earliest window of its peak (the run of windows up to the loudest that score
   at least half as much, at most one window length back) + ``trigger_offset``, by default
   where the flat part of the model's Tukey window ends (2 s x (1 - alpha / 2) = 1.75 s): the
   first window that sees the merger. ``loudest`` is the loudest window's start + 1.6 s, the
   middle of data.synth's merger prior (1.3-1.9 s into a training sample). A CNN classifier
   answers for a merger anywhere from ~0.3 s to ~1.9 s into a window and saturates for loud
   signals, so the loudest window of the plateau is a poor clock: with the demo's tiny model
   (injections at network SNR >= 11, four runs) ``onset`` put 68 of 69 triggers within 0.5 s
   of the injected merger (median error -0.05 s), ``loudest`` 46 of 69.
   **Livetime**: each scored window stands for ``stride`` s: the zero-lag (analysed) time is
   the zero-lag windows x stride, the background livetime the slid windows x stride (K x the
   analysed time when every ring takes every slide and nothing is vetoed). **FAR** of a
   zero-lag trigger: the number of background triggers with a score >= its score / the
   background livetime (per year; 0 when none is as loud, i.e. below 1 / livetime, which
   ``summary.json`` states as ``far_resolution_per_year``); IFAR = 1 / FAR (inf).
8. **Injections** (``--injections`` CSV with ``gps_time`` (geocentre) and ``snr``): analysed
   when the window whose trigger time would be nearest was scored; found at a FAR threshold
   when the loudest zero-lag trigger within +-``match_window`` s has a FAR at or below it. The
   injections are in the slid data too, one detector at a time, and the model fires on a loud
   one in H1 alone: slid windows any of whose rows come from within ``injection_veto`` s of an
   injection's merger are left out of the background (and of its livetime). Unknown real
   signals would still make background, as in any slide-based search.

Outputs in OUTDIR: ``triggers.csv`` (gps_time, score, far_per_year, ifar_years),
``background.csv`` (slide, gps_time (H1's time), score), ``found.csv`` (with injections:
gps_time, snr, analysed, found at each threshold, the matched trigger), ``summary.json``
(span, window counts, livetimes, slides, trigger and found counts, speed, each stage's seconds
(with the transform thread, the transform's and the models' overlap), sources),
``search.yaml`` (the resolved config), ``timeline.png``, ``efficiency.png`` (with injections)
and ``windows.npz``: every window's score per slide with a key of the files, models and
settings that made them. A re-run with the same key reuses it (re-clusters, re-computes FARs,
matches injections in seconds); ``--rescore`` ignores it.

Bad input (missing detectors, unreadable files, unknown channels, rates that cannot be
resampled, data that do not overlap or are shorter than a window + the PSD span, a model card
the search cannot use, a bad config key or injections file) stops before any scoring with a
message naming the file, detector or key: ``g2net-search: error: ...``, exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import hashlib
import json
import logging
import math
import os
import queue
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
from tqdm import tqdm

from data import devices
from data.cli import cli_errors
from data.config import ConfigError, config_help, from_dict, load_config, save_config, to_dict
from data.layout import DETECTORS
from data.metrics import probability
from data.modelcard import CARD_FILE, INPUT_KINDS, read_card
from infer.config import YEAR, SearchConfig, far_per_year
from infer.predict import (
    Fold,
    InferError,
    build_transform,
    check_folds,
    combine,
    find_checkpoints,
    fold_views,
    load_fold,
)
from infer.strain import Strain, StrainError, parse_strain, read_strain
from preprocess.config import PreprocessConfig
from preprocess.transforms import Whiten, median_psd, periodograms, tukey

log = logging.getLogger(__name__)

# Bumped when a change here changes a window's score for the same inputs and settings, so that
# windows.npz files written before are not reused.
SEARCH_VERSION = 1
WINDOWS_FILE = "windows.npz"
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "search.yaml"
# Settings that do not change a window's score: a cached windows.npz is reused across them.
POST_KEYS = ("trigger_time", "trigger_offset", "cluster", "match_window", "injection_veto",
             "far_thresholds", "snr_bins", "threads", "transform_thread")
LIGHT_TRAVEL = 0.0273  # s: Hanford-Virgo, the longest baseline of the three


class SearchError(InferError):
    """A search the inputs or settings do not allow; the message names the file or key."""


# ---------------------------------------------------------------------------------------------
# Models


def check_card(fold_dir: Path, card) -> None:
    """SearchError unless the search can feed this model: a known input kind and 2-s windows of
    a whole sample rate, with a PSD on the rFFT grid of a window (n_time // 2 + 1 points)."""
    where = fold_dir / CARD_FILE
    if card.input not in INPUT_KINDS:
        raise SearchError(f"{where}: input {card.input!r} is not one of {INPUT_KINDS}")
    n_time, rate = card.transform.get("n_time"), card.transform.get("sample_rate")
    if n_time != 4096:
        raise SearchError(f"{where}: transform.n_time {n_time}: the search slides 2-s windows of "
                          "4096 samples (G2Net's sample length)")
    if not isinstance(rate, int) or rate <= 0:
        raise SearchError(f"{where}: transform.sample_rate {rate!r} is not a whole rate in Hz")
    shape = np.shape(card.psd)
    if shape != (len(DETECTORS), n_time // 2 + 1):
        raise SearchError(f"{where}: psd has shape {shape}, expected "
                          f"({len(DETECTORS)}, {n_time // 2 + 1})")


def load_models(runs: str | Path | None, checkpoints: list[str] = ()) -> list[Fold]:
    """Every fold to ensemble, each card checked for the search before its weights load."""
    dirs = find_checkpoints(runs, list(checkpoints))
    for d in dirs:
        check_card(d, read_card(d))
    folds = [load_fold(d) for d in dirs]
    check_folds(folds)
    return folds


# ---------------------------------------------------------------------------------------------
# The window grid


def whole_samples(seconds: float, sample_rate: int, key: str) -> int:
    """``seconds`` as a whole number of samples; ConfigError naming ``key`` otherwise."""
    n = seconds * sample_rate
    if abs(n - round(n)) > 1e-6 or round(n) < 1:
        raise ConfigError(f"{key}: {seconds:g} s is not a whole number of samples at "
                          f"{sample_rate} Hz")
    return round(n)


def whole_multiple(value: float, unit: float, key: str, unit_name: str) -> int:
    """``value / unit`` as a whole number >= 1; ConfigError naming ``key`` otherwise."""
    n = value / unit
    if abs(n - round(n)) > 1e-6 or round(n) < 1:
        raise ConfigError(f"{key}: {value:g} s is not a multiple of the {unit_name} ({unit:g} s)")
    return round(n)


@dataclass
class Grid:
    """Windows of ``n_time`` samples starting every ``stride`` samples from the strain's sample
    0; window k starts at GPS ``t0 + k * stride / sample_rate``."""

    t0: float
    sample_rate: int
    n_time: int
    stride: int
    n: int  # windows that fit in the strain

    @classmethod
    def over(cls, strain: Strain, n_time: int, stride: int) -> Grid:
        n = (strain.n - n_time) // stride + 1 if strain.n >= n_time else 0
        return cls(strain.t0, strain.sample_rate, n_time, stride, n)

    def starts(self, k: np.ndarray) -> np.ndarray:
        """GPS start time of windows ``k``."""
        return self.t0 + np.asarray(k, dtype=np.float64) * (self.stride / self.sample_rate)

    @property
    def stride_s(self) -> float:
        return self.stride / self.sample_rate


def bad_prefix(data: np.ndarray) -> np.ndarray:
    """(n + 1,) int64 cumulative count of samples where any detector is non-finite: the samples
    [a, b) are clean when prefix[b] == prefix[a]."""
    bad = ~np.isfinite(data).all(axis=0)
    return np.concatenate([[0], np.cumsum(bad, dtype=np.int64)])


def clean_windows(grid: Grid, prefix: np.ndarray) -> np.ndarray:
    """(grid.n,) bool: windows that touch no non-finite sample in any detector."""
    a = np.arange(grid.n, dtype=np.int64) * grid.stride
    return prefix[a + grid.n_time] == prefix[a]


def runs_of(mask: np.ndarray) -> list[tuple[int, int]]:
    """[a, b) index ranges of the runs of True in ``mask``."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def rings_of(mask: np.ndarray, most: int) -> list[tuple[int, int]]:
    """Runs of consecutive True windows, each cut into equal rings of at most ``most``."""
    out = []
    for a, b in runs_of(mask):
        parts = -(-(b - a) // most)
        edges = np.linspace(a, b, parts + 1).round().astype(int)
        out += list(zip(edges[:-1].tolist(), edges[1:].tolist()))
    return out


def slide_rows(n_windows: int, k: int, m: int, n_slid: int, slid_rows: list[int],
               n_rows: int = 3) -> np.ndarray | None:
    """(n_rows, W) window offsets within a ring: row d of window w of slide k comes from window
    ``(w - (i + 1) k m) mod W`` for the i-th slid detector (row ``slid_rows[i]``), from w for
    the others. None when the ring is too short for the shifts to be distinct and non-zero
    (``n_slid * k * m >= W``). Slide 0 is the identity (zero lag)."""
    w = np.arange(n_windows)
    rows = np.tile(w, (n_rows, 1))
    if k == 0:
        return rows
    if n_slid * k * m >= n_windows:
        return None
    for i, row in enumerate(slid_rows):
        rows[row] = (w - (i + 1) * k * m) % n_windows
    return rows


# ---------------------------------------------------------------------------------------------
# The local PSD


class LocalPSD:
    """Median-Welch PSDs of strain (3, n) around given centres, segments shared between calls.

    Segment j covers samples [j hop, j hop + n_time); it is used when clean (no non-finite
    sample in any detector). :meth:`psd` (centre) is the median PSD of the clean segments whose
    centres lie within span / 2 of ``centre`` (samples); each segment's periodogram is computed
    once while later centres still need it (centres must not decrease).
    """

    def __init__(self, data: np.ndarray, prefix: np.ndarray, alpha: float, sample_rate: int,
                 n_time: int, hop: int, span: float, min_segments: int):
        self.data = data
        self.window = tukey(n_time, alpha)
        self.sample_rate = sample_rate
        self.n_time = n_time
        self.hop = hop
        self.half_span = span * sample_rate / 2
        self.min_segments = min_segments
        n = data.shape[-1]
        self.n_segments = (n - n_time) // hop + 1 if n >= n_time else 0
        a = np.arange(self.n_segments, dtype=np.int64) * hop
        self.clean = prefix[a + n_time] == prefix[a]
        self._clean_prefix = np.concatenate([[0], np.cumsum(self.clean)])
        self._cache: dict[int, np.ndarray] = {}

    def segments(self, centre: float) -> tuple[int, int]:
        """[a, b): the segments whose centres are within span / 2 of ``centre`` (samples)."""
        half = self.n_time / 2
        a = math.ceil((centre - self.half_span - half) / self.hop)
        b = math.floor((centre + self.half_span - half) / self.hop) + 1
        return max(a, 0), min(max(b, 0), self.n_segments)

    def count(self, centre: float) -> int:
        """Clean segments around ``centre``: no FFT."""
        a, b = self.segments(centre)
        return int(self._clean_prefix[max(b, a)] - self._clean_prefix[a])

    def usable(self, centre: float) -> bool:
        return self.count(centre) >= self.min_segments

    def psd(self, centre: float) -> tuple[np.ndarray, int]:
        """(3, n_time // 2 + 1) float64 one-sided PSD in 1/Hz, and the segments it used."""
        a, b = self.segments(centre)
        for j in [j for j in self._cache if j < a]:
            del self._cache[j]
        used = [j for j in range(a, b) if self.clean[j]]
        todo = [j for j in used if j not in self._cache]
        if todo:
            view = sliding_window_view(self.data, self.n_time, axis=-1)[:, ::self.hop]
            p = periodograms(view[:, todo].transpose(1, 0, 2), self.window, self.sample_rate)
            self._cache.update(zip(todo, p))
        return median_psd(np.stack([self._cache[j] for j in used])), len(used)


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


# ---------------------------------------------------------------------------------------------
# Scoring


@dataclass
class WindowScores:
    """Every window's ensemble probability per slide: what the expensive part produces."""

    grid: Grid
    scores: np.ndarray  # (slides + 1, grid.n) float64; row 0 zero lag; NaN: not scored
    rings: list[tuple[int, int]]
    counts: dict  # window counts: grid, clean, no_psd, overflow, analysed
    seconds: dict  # stage -> wall seconds
    duration: float  # s of strain the three detectors share
    psd_segments: list[int] = field(default_factory=list)  # segments per block PSD (local)
    sources: dict = field(default_factory=dict)  # infer.strain.Strain.sources

    def save(self, path: Path, key: str) -> None:
        meta = {"key": key, "grid": dataclasses.asdict(self.grid), "rings": self.rings,
                "counts": self.counts, "seconds": self.seconds, "duration": self.duration,
                "psd_segments": self.psd_segments, "sources": self.sources}
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, scores=self.scores, meta=np.array(json.dumps(meta)))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path, key: str) -> WindowScores | None:
        """The saved scores if ``path`` holds ones made with ``key``, else None."""
        if not path.is_file():
            return None
        try:
            with np.load(path) as f:
                meta = json.loads(str(f["meta"]))
                if meta.get("key") != key:
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
    slide (see the module docstring). ``strain`` must be at the models' rate. On a CPU, torch
    runs ``cfg.threads`` threads meanwhile."""
    from accelerate import Accelerator

    accelerator = accelerator or Accelerator()
    threads = torch.get_num_threads()
    if accelerator.device.type == "cpu":
        cores = os.cpu_count() or 1
        # With the transform thread, two threads call torch at once: half the cores each.
        auto = cores // 2 if cfg.transform_thread else cores - 1
        torch.set_num_threads(cfg.threads or max(1, auto))
    try:
        return _score_windows(strain, folds, cfg, accelerator, progress)
    finally:
        torch.set_num_threads(threads)


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

    need_images = any(f.card.input == "images" for f in folds)
    need_waves = any(f.card.input == "waves" for f in folds)
    first_images = next((f for f in folds if f.card.input == "images"), folds[0])
    base = build_transform(first_images).to(device).eval()
    cqt = base.cqt if need_images else None
    models = [accelerator.prepare_model(f.model, evaluation_mode=True) for f in folds]

    n_scored = sum((b - a) * sum(slide_rows(b - a, k, m, len(slid), slid) is not None
                                 for k in range(cfg.slides + 1)) for a, b in rings)
    bars = {"disable": not progress, "dynamic_ncols": True, "unit": "window"}
    transform_bar = tqdm(total=int(analysed.sum()), desc="transform", **bars)
    score_bar = tqdm(total=n_scored, desc="score", **bars)
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

    def probabilities(batch: dict) -> np.ndarray:
        """(B,) ensemble probability of a batch of float16 "images" / "waves": each model's
        input made by infer.predict's own preparation (the identity view)."""
        logits = torch.stack([model(fold_views(fold, batch, [()], 0.0)[0]).float().view(-1)
                              for fold, model in zip(folds, models)])  # (n_folds, B)
        return combine(probability(logits.cpu().numpy())[:, None, :], "mean")

    def score_slides(a: int, rows_of: dict, ok: torch.Tensor) -> None:
        """Slides 1..K of the ring starting at window a, from its rows ``rows_of``."""
        w = ok.shape[0]
        for k in range(1, cfg.slides + 1):
            rows = slide_rows(w, k, m, len(slid), slid)
            if rows is None:
                continue
            rows_t = torch.from_numpy(rows).to(device)
            t = time.perf_counter()
            for s in range(0, w, cfg.batch_size):
                e = min(s + cfg.batch_size, w)
                idx = rows_t[:, s:e]
                # Each detector's row from its own (shifted) window of the ring.
                batch = {name: torch.stack([arr[idx[d], d] for d in range(len(DETECTORS))],
                                           dim=1) for name, arr in rows_of.items()}
                good = (ok[idx[0]] & ok[idx[1]] & ok[idx[2]]).cpu().numpy()
                scores[k, a + s:a + e] = np.where(good, probabilities(batch), np.nan)
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
        ring, a, rows_of, ok = -1, 0, {}, None
        for r, s, e, outs, ok_batch in batches:
            if r != ring:
                if ring >= 0:
                    score_slides(a, rows_of, ok)
                ring, (a, b) = r, rings[r]
                rows_of = {name: torch.empty((b - a, *half.shape[1:]), dtype=half.dtype,
                                             device=device) for name, half in outs.items()}
                ok = torch.ones(b - a, dtype=torch.bool, device=device)
            for name, half in outs.items():
                rows_of[name][s - a:e - a] = half
            ok[s - a:e - a] = ok_batch
            counts["overflow"] += int((~ok_batch).sum())
            transform_bar.update(e - s)
            t = time.perf_counter()
            scores[0, s:e] = np.where(ok_batch.cpu().numpy(), probabilities(outs), np.nan)
            timer.add("model", t)
            score_bar.update(e - s)
        if ring >= 0:
            score_slides(a, rows_of, ok)
    transform_bar.close()
    score_bar.close()
    counts["analysed"] = int(np.isfinite(scores[0]).sum())
    return WindowScores(grid=grid, scores=scores, rings=rings, counts=counts,
                        seconds=timer.seconds, duration=strain.duration,
                        psd_segments=psd_segments, sources=strain.sources)


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


# ---------------------------------------------------------------------------------------------
# Triggers and false-alarm rates


def cluster(scores: np.ndarray, radius: int) -> np.ndarray:
    """Indices of the windows whose score is the highest within +-``radius`` windows (ties: the
    earliest), NaN (unscored) windows never; so triggers are more than ``radius`` apart."""
    s = np.where(np.isfinite(scores), scores, -np.inf)
    pad = np.full(radius, -np.inf)
    padded = np.concatenate([pad, s, pad])
    view = sliding_window_view(padded, radius)
    before = view[: s.size].max(axis=1)  # windows i - radius .. i - 1
    after = view[radius + 1: radius + 1 + s.size].max(axis=1)  # i + 1 .. i + radius
    return np.flatnonzero(np.isfinite(scores) & (s > before) & (s >= after))


@dataclass
class Triggers:
    gps_time: np.ndarray  # (n,) float64
    score: np.ndarray  # (n,) float64
    slide: np.ndarray  # (n,) int: 0 zero lag


def peak_onsets(scores: np.ndarray, idx: np.ndarray, reach: int) -> np.ndarray:
    """Earliest window of each peak: the run of consecutive windows up to window ``idx`` whose
    scores are at least half its score, at most ``reach`` windows back (a chirp is in at most
    a window's length of windows)."""
    s = np.where(np.isfinite(scores), scores, -np.inf)
    half = s[idx] / 2
    first = idx.copy()
    alive = np.ones(idx.size, dtype=bool)
    for d in range(1, reach + 1):
        j = idx - d
        alive &= j >= 0
        alive[alive] = s[j[alive]] >= half[alive]
        first[alive] = j[alive]
    return first


def trigger_times(ws: WindowScores, k: int, idx: np.ndarray, cfg: SearchConfig,
                  offset: float) -> np.ndarray:
    """GPS times of the triggers ``idx`` of slide ``k`` (``cfg.trigger_time``): a window's
    start + ``offset``, of the peak's earliest window ("onset") or of its loudest."""
    if cfg.trigger_time == "onset":
        idx = peak_onsets(ws.scores[k], idx, ws.grid.n_time // ws.grid.stride)
    return ws.grid.starts(idx) + offset


def find_triggers(ws: WindowScores, cfg: SearchConfig,
                  offset: float) -> tuple[Triggers, Triggers]:
    """(zero-lag triggers, background triggers of every slide), each clustered on its own;
    ``offset``: :meth:`infer.config.SearchConfig.offset`."""
    radius = max(1, round(cfg.cluster / ws.grid.stride_s))
    found = []
    for k in range(ws.scores.shape[0]):
        idx = cluster(ws.scores[k], radius)
        found.append(Triggers(trigger_times(ws, k, idx, cfg, offset), ws.scores[k, idx],
                              np.full(idx.size, k)))
    bg = found[1:] or [Triggers(np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64))]
    background = Triggers(np.concatenate([t.gps_time for t in bg]),
                          np.concatenate([t.score for t in bg]),
                          np.concatenate([t.slide for t in bg]))
    return found[0], background


def source_windows(ws: WindowScores, k: int, cfg: SearchConfig) -> np.ndarray:
    """(3, grid.n) grid index of the window each detector's row of slide ``k``'s windows comes
    from (:func:`slide_rows` ring by ring); -1 where slide ``k`` has no window."""
    m = whole_multiple(cfg.slide_step, ws.grid.stride_s, "slide_step", "stride")
    slid = [DETECTORS.index(d) for d in cfg.slide_detectors]
    src = np.full((len(DETECTORS), ws.grid.n), -1, dtype=np.int64)
    for a, b in ws.rings:
        rows = slide_rows(b - a, k, m, len(slid), slid)
        if rows is not None:
            src[:, a:b] = a + rows
    return src


def veto_injections(ws: WindowScores, times: np.ndarray, cfg: SearchConfig) -> tuple[
        WindowScores, int]:
    """A copy of ``ws`` whose slid windows (slides >= 1) are unscored (NaN) where any detector's
    row comes from a window that holds an injection's merger within ``cfg.injection_veto`` s
    of its span: the injections the search looks for then make no background. Zero lag is
    kept whole. Returns the copy and the number of slid windows left out."""
    if cfg.injection_veto <= 0 or ws.scores.shape[0] == 1 or times.size == 0:
        return ws, 0
    starts = ws.grid.starts(np.arange(ws.grid.n))
    span = ws.grid.n_time / ws.grid.sample_rate
    times = np.sort(times)
    lo = np.searchsorted(times, starts - cfg.injection_veto, side="left")
    hi = np.searchsorted(times, starts + span + cfg.injection_veto, side="right")
    near = hi > lo  # (grid.n,) windows that see an injection
    scores = ws.scores.copy()
    n_vetoed = 0
    for k in range(1, scores.shape[0]):
        src = source_windows(ws, k, cfg)
        hit = ((src >= 0) & near[np.maximum(src, 0)]).any(axis=0) & np.isfinite(scores[k])
        scores[k, hit] = np.nan
        n_vetoed += int(hit.sum())
    return dataclasses.replace(ws, scores=scores), n_vetoed


def livetimes(ws: WindowScores) -> np.ndarray:
    """(slides + 1,) seconds each slide analysed: its scored windows x stride."""
    return np.isfinite(ws.scores).sum(axis=1) * ws.grid.stride_s


def false_alarm_rates(scores: np.ndarray, background: np.ndarray,
                      livetime_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(FAR per year, IFAR in years) of each score: the background triggers at least as loud
    per background year. FAR 0 (IFAR inf) when none is; all NaN without background livetime."""
    if livetime_s <= 0:
        nan = np.full(np.shape(scores), np.nan)
        return nan, nan.copy()
    louder = background.size - np.searchsorted(np.sort(background), scores, side="left")
    far = louder / (livetime_s / YEAR)
    with np.errstate(divide="ignore"):
        ifar = np.where(louder > 0, 1.0 / far, np.inf)
    return far, ifar


# ---------------------------------------------------------------------------------------------
# Injections


def read_injections(path: str | Path) -> dict[str, np.ndarray]:
    """``gps_time`` and ``snr`` (and any other numeric columns) of an injections CSV, in time
    order. SearchError naming the file and column when they are missing or not numbers."""
    path = Path(path)
    if not path.is_file():
        raise SearchError(f"{path}: injections file not found")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        columns = reader.fieldnames or []
    for col in ("gps_time", "snr"):
        if col not in columns:
            raise SearchError(f"{path}: no column {col!r} (columns: {', '.join(columns)})")
    out = {}
    for col in columns:
        try:
            out[col] = np.array([float(r[col]) for r in rows], dtype=np.float64)
        except (TypeError, ValueError):
            if col in ("gps_time", "snr"):
                raise SearchError(f"{path}: column {col!r} holds a value that is not a number")
    order = np.argsort(out["gps_time"], kind="stable")
    return {k: v[order] for k, v in out.items()}


def match_injections(injections: dict, ws: WindowScores, zero: Triggers, far: np.ndarray,
                     cfg: SearchConfig, offset: float) -> dict[str, np.ndarray]:
    """Per injection: analysed (the window whose trigger time would be nearest was scored),
    the loudest zero-lag trigger within +-match_window (its index into ``zero``, -1 if none)
    and found at each of ``cfg.far_thresholds``."""
    t = injections["gps_time"]
    k = np.round((t - offset - ws.grid.t0) / ws.grid.stride_s).astype(np.int64)
    inside = (k >= 0) & (k < ws.grid.n)
    analysed = np.zeros(t.size, dtype=bool)
    analysed[inside] = np.isfinite(ws.scores[0, k[inside]])
    match = np.full(t.size, -1, dtype=np.int64)
    order = np.argsort(zero.gps_time)
    times = zero.gps_time[order]
    lo = np.searchsorted(times, t - cfg.match_window, side="left")
    hi = np.searchsorted(times, t + cfg.match_window, side="right")
    for i in range(t.size):
        if hi[i] > lo[i]:
            cand = order[lo[i]:hi[i]]
            match[i] = cand[np.argmax(zero.score[cand])]
    out = {"analysed": analysed, "match": match}
    for spec in cfg.far_thresholds:
        limit = far_per_year(spec)
        found = np.zeros(t.size, dtype=bool)
        has = match >= 0
        found[has] = far[match[has]] <= limit
        out[spec] = found & analysed
    return out


def threshold_column(spec: str) -> str:
    """``"1/day"`` -> ``found_1_per_day``."""
    return "found_" + re.sub(r"[^0-9A-Za-z]+", "_", spec.replace("/", "_per_"))


# ---------------------------------------------------------------------------------------------
# The run


def cache_key(paths: dict[str, list[Path]], folds: list[Fold], cfg: SearchConfig,
              device: torch.device) -> str:
    """What a window's score depends on: the files (path, size, mtime), the channels, the
    weights, the score-changing settings, the device kind and this code's SEARCH_VERSION."""
    files = {ifo: [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in ps]
             for ifo, ps in paths.items()}
    settings = {k: v for k, v in to_dict(cfg).items() if k not in POST_KEYS}
    key = {"version": SEARCH_VERSION, "files": files, "settings": settings,
           "weights": [f.card.weights_sha256 for f in folds], "device": device.type}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def check_length(strain: Strain, n_time: int, cfg: SearchConfig) -> None:
    """SearchError unless the common span holds a window (and the PSD span, for a local PSD)."""
    need = n_time / strain.sample_rate + (cfg.psd.span if cfg.psd.source == "local" else 0.0)
    if strain.duration < need:
        what = f"{n_time / strain.sample_rate:g} s window"
        if cfg.psd.source == "local":
            what += f" + {cfg.psd.span:g} s PSD span (psd.span)"
        files = ", ".join(f for s in strain.sources.values() for f in s["files"])
        raise SearchError(f"too little data: the three detectors share {strain.duration:g} s "
                          f"(GPS {strain.t0:.3f}), the search needs at least one {what} "
                          f"({files})")


def run(runs: str | Path | None, strain: list[str], out: str | Path, cfg: SearchConfig,
        injections: str | Path | None = None, rescore: bool = False, accelerator=None,
        progress: bool = True) -> dict:
    """The whole search (module docstring); returns the summary written to summary.json."""
    from accelerate import Accelerator

    start = time.perf_counter()
    out = Path(out)
    accelerator = accelerator or Accelerator()
    # Everything that can refuse the inputs does so before the first window is scored.
    folds = load_models(runs, cfg.checkpoints)
    card = folds[0].card
    fs, n_time = int(card.transform["sample_rate"]), int(card.transform["n_time"])
    grid_stride = whole_samples(cfg.stride, fs, "stride")
    if cfg.psd.source == "local":
        whole_multiple(cfg.psd.block, grid_stride / fs, "psd.block", "stride")
        whole_samples(cfg.psd.hop, fs, "psd.hop")
    whole_multiple(cfg.slide_step, grid_stride / fs, "slide_step", "stride")
    if cfg.slides and cfg.slide_step <= LIGHT_TRAVEL:
        raise ConfigError(f"slide_step: {cfg.slide_step:g} s is not longer than the light travel "
                          f"time between the sites ({LIGHT_TRAVEL * 1e3:.0f} ms)")
    paths = parse_strain(strain)
    table = read_injections(injections) if injections is not None else None
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / CONFIG_FILE)

    key = cache_key(paths, folds, cfg, accelerator.device)
    ws = None if rescore else WindowScores.load(out / WINDOWS_FILE, key)
    if ws is None:
        t = time.perf_counter()
        data = read_strain(paths, fs, cfg.channels)
        read_seconds = time.perf_counter() - t
        check_length(data, n_time, cfg)
        ws = score_windows(data, folds, cfg, accelerator, progress)
        ws.seconds["read"] = read_seconds
        del data
        ws.save(out / WINDOWS_FILE, key)
        cached = False
    else:
        log.info("reusing the window scores in %s (same inputs, models and settings)",
                 out / WINDOWS_FILE)
        cached = True

    t = time.perf_counter()
    n_zero = int(np.isfinite(ws.scores[0]).sum())
    n_slid = int(np.isfinite(ws.scores[1:]).sum())  # scored, before any veto
    n_vetoed = 0
    if table is not None:
        ws, n_vetoed = veto_injections(ws, table["gps_time"], cfg)
    offset = cfg.offset(n_time / fs, folds[0].card.preprocess_config["whiten"]["alpha"])
    zero, background = find_triggers(ws, cfg, offset)
    live = livetimes(ws)
    bg_live = float(live[1:].sum())
    far, ifar = false_alarm_rates(zero.score, background.score, bg_live)
    cluster_seconds = time.perf_counter() - t
    write_triggers(out / "triggers.csv", zero, far, ifar)
    write_background(out / "background.csv", background)

    from infer.plots import plot_efficiency, plot_timeline

    found = None
    if table is not None:
        found = match_injections(table, ws, zero, far, cfg, offset)
        write_found(out / "found.csv", table, found, zero, far, cfg)
        plot_efficiency(table["snr"], {s: found[s] for s in cfg.far_thresholds},
                        found["analysed"], cfg.snr_bins, out / "efficiency.png")
    zero_idx = np.flatnonzero(np.isfinite(ws.scores[0]))
    plot_timeline(ws.grid.starts(zero_idx) + offset, ws.scores[0, zero_idx],
                  zero.gps_time, zero.score,
                  table["gps_time"] if table is not None else None,
                  found[cfg.far_thresholds[-1]] if found is not None else None,
                  out / "timeline.png", t0=ws.grid.t0)

    seconds = {**{k: round(v, 3) for k, v in ws.seconds.items()},
               "clustering": round(cluster_seconds, 3)}
    # The per-window pipeline: reading, PSD, transform and the zero-lag model.
    zero_lag = sum(ws.seconds.get(k, 0.0) for k in ("read", "psd", "transform", "model"))
    summary = {
        "start": ws.grid.t0,
        "end": ws.grid.t0 + ws.duration,
        "stride": ws.grid.stride_s,
        "windows": ws.counts,
        "rings": len(ws.rings),
        "analysed_seconds": float(live[0]),
        "livetime": {"zero_lag_s": float(live[0]), "background_s": bg_live,
                     "background_years": bg_live / YEAR,
                     # The smallest non-zero FAR: one background trigger in the livetime.
                     "far_resolution_per_year": YEAR / bg_live if bg_live > 0 else None,
                     "per_slide_s": [float(x) for x in live[1:]],
                     "slid_windows_vetoed": n_vetoed},
        "slides": {"k": cfg.slides, "step": cfg.slide_step, "detectors": cfg.slide_detectors},
        "psd": {**to_dict(cfg.psd), "segments_per_block": _stats(ws.psd_segments)},
        "triggers": {"zero_lag": int(zero.score.size), "background": int(background.score.size),
                     "loudest_zero_lag": float(zero.score.max()) if zero.score.size else None,
                     "loudest_background": float(background.score.max())
                     if background.score.size else None},
        "folds": [f.name for f in folds],
        "sources": ws.sources,
        "cached": cached,
        "seconds": seconds,
        "speed": {
            "windows_per_s": n_zero / zero_lag if zero_lag > 0 else None,
            "strain_s_per_s": float(live[0]) / zero_lag if zero_lag > 0 else None,
            "slide_windows_per_s": n_slid / ws.seconds["model_slides"]
            if ws.seconds.get("model_slides") else None,
        },
        "files": {n: str(out / n) for n in ("triggers.csv", "background.csv", "timeline.png",
                                             WINDOWS_FILE, CONFIG_FILE)},
    }
    if found is not None:
        n_an = int(found["analysed"].sum())
        summary["injections"] = {
            "file": str(injections), "n": int(table["gps_time"].size), "analysed": n_an,
            "found": {s: int(found[s].sum()) for s in cfg.far_thresholds},
            "with_trigger": int(((found["match"] >= 0) & found["analysed"]).sum()),
        }
        summary["files"].update(found=str(out / "found.csv"),
                                efficiency=str(out / "efficiency.png"))
    summary["seconds"]["total"] = round(time.perf_counter() - start, 3)
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def _stats(values: list[int]) -> dict | None:
    if not values:
        return None
    return {"min": int(min(values)), "median": float(np.median(values)), "max": int(max(values))}


def write_triggers(path: Path, zero: Triggers, far: np.ndarray, ifar: np.ndarray) -> None:
    """gps_time, score, far_per_year, ifar_years; in time order; scores as shortest repr."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["gps_time", "score", "far_per_year", "ifar_years"])
        for i in np.argsort(zero.gps_time, kind="stable"):
            w.writerow([f"{zero.gps_time[i]:.6f}", repr(float(zero.score[i])),
                        repr(float(far[i])), repr(float(ifar[i]))])


def write_background(path: Path, bg: Triggers) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["slide", "gps_time", "score"])
        for i in np.lexsort((bg.gps_time, bg.slide)):
            w.writerow([int(bg.slide[i]), f"{bg.gps_time[i]:.6f}", repr(float(bg.score[i]))])


def write_found(path: Path, table: dict, found: dict, zero: Triggers, far: np.ndarray,
                cfg: SearchConfig) -> None:
    cols = [threshold_column(s) for s in cfg.far_thresholds]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["gps_time", "snr", "analysed", *cols, "trigger_gps_time", "trigger_score",
                    "trigger_far_per_year"])
        for i in range(table["gps_time"].size):
            j = found["match"][i]
            trig = ([f"{zero.gps_time[j]:.6f}", repr(float(zero.score[j])), repr(float(far[j]))]
                    if j >= 0 else ["", "", ""])
            w.writerow([f"{table['gps_time'][i]:.6f}", repr(float(table["snr"][i])),
                        int(found["analysed"][i]), *(int(found[s][i]) for s in cfg.far_thresholds),
                        *trig])


# ---------------------------------------------------------------------------------------------
# CLI


def _split_overrides(strain: list[str], overrides: list[str]) -> tuple[list[str], list[str]]:
    """``--strain`` takes several values, so key=value overrides typed right after it land in
    it: those whose name is not a detector-like ``X1`` are overrides."""
    keep, extra = [], []
    for item in strain:
        name = item.partition("=")[0]
        (keep if re.fullmatch(r"[A-Z]\d", name) or "=" not in item else extra).append(item)
    return keep, extra + list(overrides)


PROG = "g2net-search"


def main(argv: list[str] | None = None) -> None:
    """The console entry point; returns None (``sys.exit(main())`` must mean success)."""
    ap = argparse.ArgumentParser(
        prog=PROG,
        description="Search long H1/L1/V1 strain with a trained fold ensemble: triggers, "
                    "false-alarm rates from time slides, found injections.",
        epilog=config_help(SearchConfig),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--runs", type=Path, help="run directory (runs/NAME with fold*/) or one fold")
    ap.add_argument("--strain", nargs="+", required=True, metavar="IFO=PATH",
                    help="H1=PATH L1=PATH V1=PATH; PATH: a GWF/HDF5 file, several separated by "
                         "commas, or a glob")
    ap.add_argument("--out", type=Path, required=True, help="output directory")
    ap.add_argument("--channel", action="append", default=[], metavar="IFO=NAME",
                    help="channel (GWF) or dataset (HDF5) of a detector; default: the file's "
                         "only IFO:... one")
    ap.add_argument("--stride", type=float, help="s between windows (default 0.25)")
    ap.add_argument("--slides", type=int, help="time slides for the background (default 0)")
    ap.add_argument("--injections", type=Path, help="CSV with gps_time and snr columns")
    ap.add_argument("--psd", choices=("local", "training"), help="whitening PSD (default local)")
    ap.add_argument("--config", type=Path, help="search config YAML")
    ap.add_argument("--rescore", action="store_true", help="ignore cached window scores")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    ap.add_argument("overrides", nargs="*", help="config overrides key=value (listed below)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from accelerate import Accelerator

    strain, overrides = _split_overrides(args.strain, args.overrides)
    for flag, key in (("stride", "stride"), ("slides", "slides"), ("psd", "psd.source")):
        if getattr(args, flag) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
    with cli_errors(PROG, user_errors=(InferError, StrainError)):
        cfg = load_config(SearchConfig, args.config, overrides)
        for item in args.channel:
            ifo, sep, name = item.partition("=")
            if not sep or ifo not in DETECTORS or not name:
                raise ConfigError(f"--channel {item!r}: expected IFO=NAME with IFO one of "
                                  f"{', '.join(DETECTORS)}")
            cfg.channels[ifo] = name
        summary = run(args.runs, strain, args.out, cfg, injections=args.injections,
                      rescore=args.rescore, accelerator=Accelerator(), progress=not args.quiet)
    print(format_summary(summary))


def format_summary(s: dict) -> str:
    lines = [
        (f"searched {s['analysed_seconds']:.0f} s of strain (GPS {s['start']:.0f}-"
         f"{s['end']:.0f}; {s['windows']['analysed']} windows of {s['windows']['grid']}), "
         f"{s['slides']['k']} slides: {s['livetime']['background_s']:.0f} s of background"),
        f"{s['triggers']['zero_lag']} triggers, {s['triggers']['background']} background triggers",
    ]
    sp = s["speed"]
    if sp["windows_per_s"]:
        lines.append(f"speed: {sp['windows_per_s']:.0f} windows/s, {sp['strain_s_per_s']:.0f} s "
                     "of strain per s (zero lag)"
                     + (f"; slides {sp['slide_windows_per_s']:.0f} windows/s"
                        if sp["slide_windows_per_s"] else ""))
    if "injections" in s:
        inj = s["injections"]
        lines.append(f"injections: {inj['analysed']} of {inj['n']} analysed, found "
                     + ", ".join(f"{v} at FAR <= {k}" for k, v in inj["found"].items())
                     + f"; {inj['with_trigger']} with a trigger within the match window")
    lines.append(f"outputs: {Path(s['files']['triggers.csv']).parent}")
    return "\n".join(lines)


if __name__ == "__main__":
    main(sys.argv[1:])
