"""``g2net-search-combine`` / ``python -m infer.search.combine``: searches of the same strain
with different runs, combined into the search of all their runs together, from their saved
window scores alone (no model, no strain read).

``g2net-search --runs A B C`` ranks windows on the mean over runs of each run's logit. A
search of A and B together (``windows.npz``: every slide's window scores) and a later search
of C alone hold everything that mean needs: weighted by their number of runs, the two give
``--runs A B C``'s scores window by window, slide by slide. So an ensemble grows by one run at
the cost of that run's search, not of searching the whole ensemble's month of background
again. The result is the search's own outputs (:func:`infer.search.pipeline.report`) and a
``summary.json`` whose ranking key is ``--runs A B C``'s, so either one's background serves
the other's triggers (``background=[...]``).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from data.cli import cli_errors
from data.config import load_config, save_config, to_dict
from infer.config import InferError
from infer.search.config import (
    CONFIG_FILE,
    POST_KEYS,
    SUMMARY_FILE,
    WINDOWS_FILE,
    SearchConfig,
    SearchError,
)
from infer.search.injections import read_injections
from infer.search.outputs import format_summary
from infer.search.pipeline import ranking_key, report
from infer.search.scoring import WindowScores

log = logging.getLogger(__name__)

# Settings that may differ between the searches combined: what is done after the scores
# (POST_KEYS: the combined search's own, from the first search or key=value), and how the
# work was batched or threaded, which no score depends on.
FREE_KEYS = POST_KEYS + ("batch_size", "slide_batch_size", "channels_last", "freeze",
                         "checkpoints")


def read_part(directory: str | Path) -> dict:
    """A search directory's window scores, config and model identity; SearchError where one is
    missing (the search ran with ``save_windows=false``, or before this tool)."""
    d = Path(directory)
    paths = {n: d / n for n in (WINDOWS_FILE, SUMMARY_FILE, CONFIG_FILE)}
    for name, path in paths.items():
        if not path.is_file():
            raise SearchError(f"{d}: no {name} (a g2net-search --out directory made with "
                              "save_windows=true, the default)")
    summary = json.loads(paths[SUMMARY_FILE].read_text())
    identity = summary.get("identity")
    if not identity or identity.get("search") != "neural":
        raise SearchError(f"{d}: summary.json names no model identity (a matched-filter "
                          "search, or one made before g2net-search-combine): search it again")
    ws = WindowScores.load(paths[WINDOWS_FILE], None)
    if ws is None:
        raise SearchError(f"{paths[WINDOWS_FILE]}: unreadable")
    cfg = load_config(SearchConfig, paths[CONFIG_FILE])
    return {"dir": d, "ws": ws, "cfg": cfg, "identity": identity,
            "folds": summary.get("folds", []), "runs": len({m for m, _ in identity["weights"]})}


def check_parts(parts: list[dict]) -> None:
    """SearchError unless the parts scored the same windows of the same strain the same way
    (every setting but FREE_KEYS, the grid, the slides, the windows analysed) with no model in
    two parts."""
    first = parts[0]
    settings = {k: v for k, v in to_dict(first["cfg"]).items() if k not in FREE_KEYS}
    seen = {}
    for part in parts:
        other = {k: v for k, v in to_dict(part["cfg"]).items() if k not in FREE_KEYS}
        differ = sorted(k for k in settings.keys() | other.keys()
                        if settings.get(k) != other.get(k))
        if differ:
            raise SearchError(f"{part['dir']}: searched with other settings than "
                              f"{first['dir']} ({', '.join(differ)}): its window scores do not "
                              "pair with the first's")
        a, b = first["ws"], part["ws"]
        if (a.grid != b.grid or a.scores.shape != b.scores.shape or a.sources != b.sources
                or not np.array_equal(np.isfinite(a.scores), np.isfinite(b.scores))):
            raise SearchError(f"{part['dir']}: other strain or windows than {first['dir']} "
                              "(its files, grid, slides or analysed windows differ)")
        for _, sha in part["identity"]["weights"]:
            if sha in seen:
                raise SearchError(f"{part['dir']}: a model of it is in {seen[sha]} too: each "
                                  "run is combined once")
            seen[sha] = part["dir"]


def combine_scores(parts: list[dict]) -> tuple[WindowScores, dict]:
    """The window scores of ``--runs`` with every part's runs, in the order given: each part's
    scores (its runs' mean logit) weighted by its number of runs; and that search's identity
    (the models' weights, members renumbered as ``--runs`` numbers them)."""
    total = sum(p["runs"] for p in parts)
    scores = sum(p["runs"] * p["ws"].scores for p in parts) / total
    weights, offset = [], 0
    for p in parts:
        members = sorted({m for m, _ in p["identity"]["weights"]})
        renumber = {m: offset + i for i, m in enumerate(members)}
        weights += [[renumber[m], sha] for m, sha in p["identity"]["weights"]]
        offset += len(members)
    seconds: dict[str, float] = {}
    for p in parts:  # what the combined search cost: every part's work
        for k, v in p["ws"].seconds.items():
            seconds[k] = seconds.get(k, 0.0) + v
    base = parts[0]["ws"]
    ws = WindowScores(grid=base.grid, scores=scores, rings=base.rings, counts=base.counts,
                      seconds=seconds, duration=base.duration, psd_segments=base.psd_segments,
                      sources=base.sources)
    return ws, {"search": "neural", "weights": weights}


def combine(searches: list[str | Path], out: str | Path, overrides: list[str] = (),
            injections: str | Path | None = None) -> dict:
    """Combine ``searches`` (g2net-search --out directories of the same strain and settings)
    into ``out``; returns the summary written to summary.json. ``overrides``: key=value for
    what is done after the scores (POST_KEYS: background, far_thresholds, ...), over the first
    search's config."""
    start = time.perf_counter()
    if len(searches) < 2:
        raise SearchError("--searches: give at least two search directories to combine")
    bad = sorted({o.partition("=")[0].split(".")[0] for o in overrides} - set(POST_KEYS))
    if bad:  # before the window scores are read
        raise SearchError(f"{', '.join(bad)}: the combined scores are the searches' own; only "
                          f"{', '.join(POST_KEYS)} can be set")
    parts = [read_part(d) for d in searches]
    check_parts(parts)
    cfg = load_config(SearchConfig, parts[0]["dir"] / CONFIG_FILE, list(overrides))
    ws, identity = combine_scores(parts)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / CONFIG_FILE)
    rank = ranking_key(cfg, identity)
    if cfg.save_windows:  # so that the combination can itself be combined later
        ws.save(out / WINDOWS_FILE, f"combined:{rank}")
    table = read_injections(injections) if injections is not None else None
    summary = report(ws, cfg, out, table, cfg.trigger_offset, rank, injections=injections,
                     extra={"folds": [f for p in parts for f in p["folds"]],
                            "combined_from": [str(p["dir"]) for p in parts],
                            "identity": identity, "cached": True})
    summary["seconds"]["total"] = round(time.perf_counter() - start, 3)
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=1) + "\n")
    log.info("%d runs from %d searches: %s", len({m for m, _ in identity["weights"]}),
             len(parts), out)
    return summary


PROG = "g2net-search-combine"


def main(argv: list[str] | None = None) -> None:
    """The console entry point; returns None."""
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="key=value: any of " + ", ".join(POST_KEYS))
    ap.add_argument("--searches", nargs="+", required=True, type=Path, metavar="DIR",
                    help="g2net-search --out directories of the same strain and settings, "
                         "each with its windows.npz; their runs are combined in this order")
    ap.add_argument("--out", type=Path, required=True, help="output directory")
    ap.add_argument("--injections", type=Path, help="CSV with gps_time and snr columns")
    ap.add_argument("overrides", nargs="*", help="key=value for what follows the scores")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with cli_errors(PROG, user_errors=(InferError,)):
        summary = combine(args.searches, args.out, args.overrides, args.injections)
    print(format_summary(summary))


if __name__ == "__main__":
    main()
