"""What a search writes: triggers, background and found-injection CSVs, and the summary line.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from data.layout import DETECTORS
from infer.search.config import SearchConfig
from infer.search.triggers import Triggers


def threshold_column(spec: str) -> str:
    """``"1/day"`` -> ``found_1_per_day``."""
    return "found_" + re.sub(r"[^0-9A-Za-z]+", "_", spec.replace("/", "_per_"))


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


def write_hard_negatives(path: Path, windows: dict) -> None:
    """slide, score, H1, L1, V1 (each detector's window start, GPS): the search's loudest
    background windows (:func:`infer.search.triggers.loudest_background_windows`), loudest
    first; what ``inject.hard_negatives`` reads."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["slide", "score", *DETECTORS])
        for i in range(windows["score"].size):
            w.writerow([int(windows["slide"][i]), repr(float(windows["score"][i])),
                        *(f"{windows[d][i]:.6f}" for d in DETECTORS)])


def write_found(path: Path, table: dict, found: dict, zero: Triggers, far: np.ndarray,
                cfg: SearchConfig, resolved: dict[str, bool]) -> None:
    """One row per injection; a threshold the background does not resolve is left empty."""
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
                        int(found["analysed"][i]),
                        *(int(found[s][i]) if resolved[s] else "" for s in cfg.far_thresholds),
                        *trig])


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
                     + ", ".join(f"{v} at FAR <= {k}" if v is not None else
                                 f"? at FAR <= {k} (not resolved)" for k, v in
                                 inj["found"].items())
                     + f"; {inj['with_trigger']} with a trigger within the match window")
        if inj.get("timing"):
            tm = inj["timing"]
            lines.append(f"trigger time error at SNR >= {tm['min_snr']:g} ({tm['n']} with a "
                         f"trigger): median {tm['median_abs_s']:.3f} s, 95 % "
                         f"{tm['p95_abs_s']:.3f} s"
                         + "".join(f"; found at FAR <= {k} ({v['n']}): median "
                                   f"{v['median_abs_s']:.3f} s, 95 % {v['p95_abs_s']:.3f} s, "
                                   f"at most {v['max_abs_s']:.3f} s"
                                   for k, v in tm.get("found", {}).items()))
    lines.append(f"outputs: {Path(s['files']['triggers.csv']).parent}")
    return "\n".join(lines)
