"""One search from end to end (:func:`run`): models loaded and checked, strain read, windows
scored (or reused from a cached ``windows.npz`` of the same inputs and settings), triggers,
FARs, injections found, outputs written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from data.config import ConfigError, save_config, to_dict
from data.layout import DETECTORS
from data.rundir import CARD_FILE, INPUT_KINDS
from data.strain import Strain, parse_strain, read_strain
from infer.predict.checkpoints import Fold, load_folds
from infer.search.config import (
    CONFIG_FILE,
    HARD_NEGATIVES_FILE,
    LIGHT_TRAVEL,
    POST_KEYS,
    RANKING_POST_KEYS,
    SEARCH_VERSION,
    SLIDE_KEYS,
    SUMMARY_FILE,
    WINDOWS_FILE,
    YEAR,
    SearchConfig,
    SearchError,
    far_per_year,
)
from infer.search.grid import whole_multiple, whole_samples
from infer.search.injections import match_injections, read_injections, veto_injections
from infer.search.outputs import (
    write_background,
    write_found,
    write_hard_negatives,
    write_triggers,
)
from infer.search.scoring import WindowScores, score_windows
from infer.search.triggers import (
    false_alarm_rates,
    find_triggers,
    integrate,
    livetimes,
    loudest_background_windows,
)

log = logging.getLogger(__name__)


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


def ranking_key(cfg: SearchConfig, identity: dict) -> str:
    """What makes two searches' scores comparable (one's background usable for the other's
    triggers): SEARCH_VERSION, the score-changing settings but the slides', and ``identity``
    (the models' weights, or the bank)."""
    settings = {k: v for k, v in to_dict(cfg).items()
                if k not in POST_KEYS + SLIDE_KEYS
                # off, the key is the one searches had before the setting existed, so that
                # their backgrounds still serve
                or (k in RANKING_POST_KEYS and v)}
    key = {"version": SEARCH_VERSION, "settings": settings, **identity}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def read_background(directory: str | Path, key: str) -> tuple[np.ndarray, float]:
    """(background trigger scores, background livetime s) of the earlier search in
    ``directory``; SearchError unless it ranked windows as this one does (``key``)."""
    directory = Path(directory)
    summary_path, bg_path = directory / SUMMARY_FILE, directory / "background.csv"
    if not summary_path.is_file() or not bg_path.is_file():
        raise SearchError(f"background: {directory} holds no search output ({SUMMARY_FILE}, "
                          "background.csv)")
    summary = json.loads(summary_path.read_text())
    if summary.get("ranking_key") != key:
        raise SearchError(f"background: {directory} ranked windows otherwise (other models, "
                          "bank or score settings): its background cannot give this search's "
                          "FARs")
    data = np.genfromtxt(bg_path, delimiter=",", names=True, dtype=None, encoding="utf-8")
    scores = np.atleast_1d(data["score"]).astype(np.float64) if data.size else np.zeros(0)
    live = summary["livetime"]
    return scores, float(live.get("own_background_s", live["background_s"]))


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


def run(runs: list[str | Path] | str | Path | None, strain: list[str], out: str | Path,
        cfg: SearchConfig, injections: str | Path | None = None, rescore: bool = False,
        accelerator=None, progress: bool = True) -> dict:
    """The whole search (docs/search.md, Notes from the code); returns the summary written to
    summary.json."""
    from accelerate import Accelerator

    start = time.perf_counter()
    out = Path(out)
    accelerator = accelerator or Accelerator()
    # Everything that can refuse the inputs does so before the first window is scored.
    if runs is None or isinstance(runs, (str, Path)):
        runs = [runs]
    folds = load_folds(list(runs), cfg.checkpoints, check_card=check_card)
    card = folds[0].card
    fs, n_time = int(card.transform["sample_rate"]), int(card.transform["n_time"])
    grid_stride = whole_samples(cfg.stride, fs, "stride")
    if cfg.psd.source == "local":
        whole_multiple(cfg.psd.block, grid_stride / fs, "psd.block", "stride")
        whole_samples(cfg.psd.hop, fs, "psd.hop")
    whole_multiple(cfg.slide_step, grid_stride / fs, "slide_step", "stride")
    if cfg.integrate:
        whole_multiple(cfg.integrate, 2 * grid_stride / fs, "integrate", "2 x stride")
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
        if cfg.save_windows:
            ws.save(out / WINDOWS_FILE, key)
        cached = False
    else:
        log.info("reusing the window scores in %s (same inputs, models and settings)",
                 out / WINDOWS_FILE)
        cached = True

    # The models' identity, in the summary too: g2net-search-combine (infer/search/combine.py)
    # makes the ranking key of several searches' runs together from it.
    identity = {"search": "neural",
                "weights": [[f.member, f.card.weights_sha256] for f in folds]}
    rank = ranking_key(cfg, identity)
    summary = report(ws, cfg, out, table, cfg.trigger_offset, rank, injections=injections,
                     extra={"folds": [f.name for f in folds], "cached": cached,
                            "identity": identity})
    summary["seconds"]["total"] = round(time.perf_counter() - start, 3)
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def report(ws: WindowScores, cfg: SearchConfig, out: Path, table: dict | None, offset: float,
           rank: str, injections: str | Path | None = None, extra: dict | None = None,
           statistic: str = "ranking statistic (ensemble logit)") -> dict:
    """Everything after the scores, shared by every search that makes a :class:`WindowScores`
    (the neural search, the matched-filter search): the injection veto, triggers, FARs, found
    injections, ``triggers.csv``, ``background.csv``, ``found.csv``, the plots; returns the
    summary (without its total time: the caller adds it and writes summary.json).
    ``offset``: s from a window's start to its trigger time; ``rank``: :func:`ranking_key`
    (written to the summary; a ``cfg.background`` search must have the same); ``statistic``:
    the score's name on the timeline plot."""
    t = time.perf_counter()
    n_zero = int(np.isfinite(ws.scores[0]).sum())
    n_slid = int(np.isfinite(ws.scores[1:]).sum())  # scored, before any veto
    n_vetoed = 0
    if table is not None:
        ws, n_vetoed = veto_injections(ws, table["gps_time"], cfg)
    if cfg.integrate:  # after the veto: no vetoed window's score reaches a kept one
        half = whole_multiple(cfg.integrate, 2 * ws.grid.stride_s, "integrate", "2 x stride")
        ws = dataclasses.replace(ws, scores=integrate(ws.scores, half))
        statistic = f"{statistic}, mean over {cfg.integrate:g} s"
    zero, background = find_triggers(ws, cfg, offset)
    live = livetimes(ws)
    own_live = float(live[1:].sum())
    bg_scores, bg_live, borrowed = background.score, own_live, []
    for directory in cfg.background:
        scores, seconds = read_background(directory, rank)
        bg_scores, bg_live = np.concatenate([bg_scores, scores]), bg_live + seconds
        borrowed.append({"dir": str(directory), "background_s": seconds,
                         "triggers": int(scores.size)})
    far, ifar = false_alarm_rates(zero.score, bg_scores, bg_live)
    cluster_seconds = time.perf_counter() - t
    write_triggers(out / "triggers.csv", zero, far, ifar)
    write_background(out / "background.csv", background)
    if cfg.hard_negatives:
        write_hard_negatives(out / HARD_NEGATIVES_FILE,
                             loudest_background_windows(ws, background, cfg, cfg.hard_negatives))

    from infer.plots import plot_efficiency, plot_timeline

    # A FAR threshold below one background trigger per livetime cannot be told from "louder
    # than every background trigger": it is reported as not resolved, never as found.
    resolution = YEAR / bg_live if bg_live > 0 else np.inf
    resolved = {spec: far_per_year(spec) >= resolution * (1 - 1e-9)
                for spec in cfg.far_thresholds}
    found = None
    if table is not None:
        found = match_injections(table, ws, zero, far, cfg, offset)
        write_found(out / "found.csv", table, found, zero, far, cfg, resolved)
        loudest = found["match"] >= 0
        loudest[loudest] = far[found["match"][loudest]] == 0
        curves = {f"FAR <= {spec}": found[spec] for spec in cfg.far_thresholds if resolved[spec]}
        if bg_live > 0:
            curves[f"louder than all background (FAR < {resolution:.3g}/yr)"] = (
                loudest & found["analysed"])
        plot_efficiency(table["snr"], curves, found["analysed"], cfg.snr_bins,
                        out / "efficiency.png")
    zero_idx = np.flatnonzero(np.isfinite(ws.scores[0]))
    plot_timeline(ws.grid.starts(zero_idx) + offset, ws.scores[0, zero_idx],
                  zero.gps_time, zero.score,
                  table["gps_time"] if table is not None else None,
                  found[cfg.far_thresholds[-1]] if found is not None else None,
                  out / "timeline.png", t0=ws.grid.t0, statistic=statistic)

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
                     "own_background_s": own_live, "background_from": borrowed,
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
        **(extra or {}),
        "ranking_key": rank,
        "sources": ws.sources,
        "seconds": seconds,
        "speed": {
            "windows_per_s": n_zero / zero_lag if zero_lag > 0 else None,
            "strain_s_per_s": float(live[0]) / zero_lag if zero_lag > 0 else None,
            "slide_windows_per_s": n_slid / ws.seconds["model_slides"]
            if ws.seconds.get("model_slides") else None,
        },
        # windows.npz where this search wrote it or reused it (save_windows)
        "files": {n: str(out / n) for n in ("triggers.csv", "background.csv", "timeline.png",
                                            WINDOWS_FILE, CONFIG_FILE, HARD_NEGATIVES_FILE)
                  if (n != WINDOWS_FILE or cfg.save_windows or (extra or {}).get("cached"))
                  and (n != HARD_NEGATIVES_FILE or cfg.hard_negatives)},
    }
    if found is not None:
        n_an = int(found["analysed"].sum())
        summary["injections"] = {
            "file": str(injections), "n": int(table["gps_time"].size), "analysed": n_an,
            # None: the background is too short to resolve that FAR.
            "found": {s: int(found[s].sum()) if resolved[s] else None
                      for s in cfg.far_thresholds},
            "with_trigger": int(((found["match"] >= 0) & found["analysed"]).sum()),
            "timing": trigger_timing(table, found, zero, resolved),
        }
        summary["files"].update(found=str(out / "found.csv"),
                                efficiency=str(out / "efficiency.png"))
    return summary


def trigger_timing(table: dict, found: dict, zero, resolved: dict[str, bool],
                   min_snr: float = 8.0) -> dict | None:
    """The clock's error on injections at network SNR >= ``min_snr`` that have a trigger
    within the match window: trigger time - merger time (s), its median of absolute values,
    95th percentile, count; and under ``found``, per resolved FAR threshold of ``resolved``,
    the same of those found at it, with the largest error.

    Why both: a quiet injection's matched trigger may be a noise trigger that happens to lie
    within the match window, its error anywhere in it; the clock of a detection is that of
    the found ones (issue 19: a found signal has a trigger within +-0.3 s of its merger)."""
    has = (found["match"] >= 0) & found["analysed"] & (table["snr"] >= min_snr)
    if not has.any():
        return None

    def stats(sel: np.ndarray) -> dict:
        err = zero.gps_time[found["match"][sel]] - table["gps_time"][sel]
        return {"n": int(sel.sum()), "median_abs_s": float(np.median(abs(err))),
                "p95_abs_s": float(np.percentile(abs(err), 95)),
                "max_abs_s": float(abs(err).max()), "median_s": float(np.median(err))}

    hits = {spec: has & found[spec] for spec, ok in resolved.items() if ok}
    by_far = {spec: stats(sel) for spec, sel in hits.items() if sel.any()}
    return {"min_snr": min_snr, **stats(has), "found": by_far}


def _stats(values: list[int]) -> dict | None:
    if not values:
        return None
    return {"min": int(min(values)), "median": float(np.median(values)), "max": int(max(values))}
