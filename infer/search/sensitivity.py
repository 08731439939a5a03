"""How far away a search finds signals: efficiency, sensitive volume and sensitive distance at a
false-alarm rate, from the injections a search found (``found.csv``, ``summary.json``), and
several searches side by side (``python -m infer.search.compare``).

The figure of merit is MLGWSC-1's (Schäfer et al. 2023, arXiv:2209.11146): the sensitive
distance of a search at a FAR threshold, and its ratio to a reference search's.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.sim.samples import SNRDistribution, parse_snr
from infer.search.config import SUMMARY_FILE, SearchError, far_per_year
from infer.search.injections import read_injections

DEFAULT_FAR = ("1/day", "1/month", "1/year")
FOUND_FILE = "found.csv"
# s: found.csv and injections.csv both write gps_time to the microsecond; a row matches the
# nearest injection within this.
MATCH_TOLERANCE = 1e-4
# found_by_mass's bins: network SNR, and total mass (Msun) where the bank's and the generator's
# prior (each mass uniform on 7-50) puts 7 % below 30.
BY_MASS_SNR_BINS = (0.0, 8.0, 12.0, 15.0, np.inf)
MASS_BINS = (0.0, 30.0, 45.0, 70.0, np.inf)


def found_at(far_per_year: np.ndarray, analysed: np.ndarray, threshold_per_year: float
             ) -> np.ndarray:
    """(n,) bool: analysed and matched to a zero-lag trigger with FAR <= threshold (per year).
    ``far_per_year``: (n,) FAR of each injection's trigger, NaN where it has none."""
    far = np.asarray(far_per_year, dtype=float)
    with np.errstate(invalid="ignore"):  # NaN compares False: no trigger, not found
        return np.asarray(analysed, dtype=bool) & (far <= threshold_per_year)


def efficiency(x: np.ndarray, found: np.ndarray, bins: Sequence[float]
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fraction found, count, binomial standard error sqrt(f (1 - f) / n)), each (len(bins)-1,),
    of the injections with ``x`` (e.g. network SNR, or distance in Mpc) in each bin (numpy's
    histogram bins: the last one holds its right edge). NaN fraction and error in empty bins."""
    x, found = np.asarray(x, dtype=float), np.asarray(found, dtype=bool)
    count = np.histogram(x, bins)[0]
    k = np.histogram(x[found], bins)[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = k / count
        err = np.sqrt(frac * (1 - frac) / count)
    return frac, count, err


def uniform_prior(snr_prior: str | SNRDistribution) -> tuple[float, float]:
    """(LO, HI) of a ``uniform:LO,HI`` network-SNR prior; SearchError for a spec that does not
    parse, or a normal or fixed one (their SNRs spread no sources over distance: no volume)."""
    try:
        prior = parse_snr(snr_prior)
    except ValueError as e:
        raise SearchError(f"SNR prior: {e}") from None
    if prior.kind != "uniform":
        raise SearchError(f"SNR prior {prior}: a sensitive volume needs injections drawn from "
                          "uniform:LO,HI in network SNR; a normal or fixed SNR spreads no "
                          "sources over distance")
    return prior.params


def sensitive_volume(snr: np.ndarray, distance: np.ndarray, found: np.ndarray,
                     snr_prior: str | SNRDistribution) -> tuple[float, float]:
    """(V in Mpc^3, its standard error): the sensitive volume averaged over the injected source
    population, from injections drawn in network optimal SNR rather than in distance.

    snr, distance (Mpc), found: (n,) of the analysed injections. SNR scales as 1/d, so source
    i at distance d has SNR K_i / d with K_i = snr_i distance_i; drawing snr from p(rho) on
    [rho_min, rho_max] draws d from p_i(d) = p(K_i / d) K_i / d^2 on [K_i / rho_max,
    K_i / rho_min]. Importance-weighting 4 pi d^2 by 1 / p_i(d) gives the Monte-Carlo estimate

        V = mean_i [ 4/3 pi (K_i / rho_max)^3 + found_i 4 pi d_i^3 / (rho_i p(rho_i)) ]

    with two assumptions about the distances the prior never draws: every source nearer than
    K_i / rho_max (SNR above rho_max) is found, and every source beyond K_i / rho_min (SNR
    below rho_min) is missed. The error is the standard error of that mean. Only a
    ``uniform:LO,HI`` prior (p = 1 / (HI - LO)) is supported: a normal or fixed SNR gives no
    distances to weigh, so no volume. SearchError for another prior, or an SNR outside it.
    """
    terms = volume_terms(snr, distance, found, snr_prior)
    if terms.size < 2:
        raise SearchError(f"a sensitive volume needs at least 2 analysed injections, got "
                          f"{terms.size}")
    return float(terms.mean()), float(terms.std(ddof=1) / np.sqrt(terms.size))


def volume_terms(snr: np.ndarray, distance: np.ndarray, found: np.ndarray,
                 snr_prior: str | SNRDistribution) -> np.ndarray:
    """(n,) Mpc^3: each analysed injection's term of :func:`sensitive_volume`'s mean (the
    volume is their mean; a bootstrap resamples them). SearchError for an SNR outside the
    prior."""
    lo, hi = uniform_prior(snr_prior)
    snr, distance = np.asarray(snr, dtype=float), np.asarray(distance, dtype=float)
    found = np.asarray(found, dtype=bool)
    # injections.csv keeps 9 significant digits: an SNR at an edge may round past it.
    outside = (snr < lo * (1 - 1e-6)) | (snr > hi * (1 + 1e-6))
    if outside.any():
        raise SearchError(f"an injection has network SNR {snr[outside][0]:g}, outside the SNR "
                          f"prior uniform:{lo:g},{hi:g}: give the one they were drawn from")
    k = snr * distance
    terms = 4 / 3 * np.pi * (k / hi) ** 3
    terms[found] += 4 * np.pi * distance[found] ** 3 * (hi - lo) / snr[found]
    return terms


def sensitive_distance(volume: float, volume_err: float) -> tuple[float, float]:
    """(R, its error) in Mpc: the radius of a sphere of ``volume`` Mpc^3, (3 V / (4 pi))^(1/3),
    with the error propagated to first order, dR = R dV / (3 V)."""
    r = (3 * volume / (4 * np.pi)) ** (1 / 3)
    return float(r), float(r * volume_err / (3 * volume)) if volume > 0 else float("nan")


def _nearest(sorted_times: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(n,) index of the element of ``sorted_times`` (non-empty, increasing) nearest each t."""
    right = np.clip(np.searchsorted(sorted_times, t), 0, sorted_times.size - 1)
    left = np.maximum(right - 1, 0)
    return np.where(np.abs(sorted_times[left] - t) < np.abs(sorted_times[right] - t), left, right)


@dataclass
class SearchInjections:
    """One search's injections (analysed or not), joined with their distances: (n,) arrays."""

    snr: np.ndarray  # network optimal SNR
    distance: np.ndarray  # Mpc
    analysed: np.ndarray  # bool
    far_per_year: np.ndarray  # FAR of the matched zero-lag trigger; NaN: none
    far_resolution_per_year: float | None  # 1 / background livetime; None: no background
    total_mass: np.ndarray | None = None  # mass1 + mass2 (Msun) where the injections give them
    gps_time: np.ndarray | None = None  # s, the injection's merger time (rows in time order)
    part: np.ndarray | None = None  # int: which strain's injections file (pool's order)


def pool(parts: Sequence[SearchInjections]) -> SearchInjections:
    """One search's injections over several stretches of strain searched apart (each part the
    search of one strain with its injections file), as one: the rows one after another, each
    part's rows marked by its index. A FAR threshold is resolved only where every part
    resolves it: the resolution is the parts' coarsest (None if a part has no background)."""
    if not parts:
        raise SearchError("no searches to pool")
    res = [p.far_resolution_per_year for p in parts]
    cat = lambda name: np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
    has = lambda name: all(getattr(p, name) is not None for p in parts)  # noqa: E731
    return SearchInjections(
        cat("snr"), cat("distance"), cat("analysed"), cat("far_per_year"),
        None if None in res else max(res),
        cat("total_mass") if has("total_mass") else None,
        cat("gps_time") if has("gps_time") else None,
        np.concatenate([np.full(p.snr.size, i) for i, p in enumerate(parts)]))


def read_search(directory: str | Path, injections: Mapping[str, np.ndarray]) -> SearchInjections:
    """A search's ``found.csv`` and ``summary.json``, each row joined to ``injections`` (a
    :func:`infer.search.injections.read_injections` table with a ``distance`` column) by the
    nearest gps_time within MATCH_TOLERANCE s. SearchError naming the file otherwise."""
    directory = Path(directory)
    path, summary_path = directory / FOUND_FILE, directory / SUMMARY_FILE
    for p in (path, summary_path):
        if not p.is_file():
            raise SearchError(f"{p}: not found (a g2net-search --out directory run with "
                              "--injections?)")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        rows, columns = list(reader), reader.fieldnames or []
    need = ("gps_time", "snr", "analysed", "trigger_far_per_year")
    for col in need:
        if col not in columns:
            raise SearchError(f"{path}: no column {col!r} (columns: {', '.join(columns)})")
    try:
        t, snr, analysed = (np.array([float(r[c]) for r in rows]) for c in need[:3])
        far = np.array([float(r[need[3]]) if r[need[3]] else np.nan for r in rows])
    except ValueError as e:
        raise SearchError(f"{path}: a value that is not a number ({e})") from None
    j = _nearest(injections["gps_time"], t)
    miss = ~(np.abs(injections["gps_time"][j] - t) <= MATCH_TOLERANCE)
    if miss.any():
        raise SearchError(f"{path}: the injection at GPS {t[miss][0]:.6f} is not in the "
                          "injections file (the search ran on other injections?)")
    if not np.allclose(snr, injections["snr"][j], rtol=1e-6):
        raise SearchError(f"{path}: the SNRs differ from the injections file's at the same "
                          "times (the search ran on other injections?)")
    livetime = json.loads(summary_path.read_text()).get("livetime", {})
    mass = (injections["mass1"][j] + injections["mass2"][j]
            if "mass1" in injections and "mass2" in injections else None)
    o = np.argsort(t, kind="stable")  # time order: two searches' rows pair up one to one
    return SearchInjections(snr[o], injections["distance"][j][o], analysed[o].astype(bool),
                            far[o], livetime.get("far_resolution_per_year"),
                            None if mass is None else mass[o], t[o])


def sensitivity_table(searches: Mapping[str, SearchInjections], snr_prior: str | SNRDistribution,
                      far: Sequence[str] = DEFAULT_FAR, reference: str | None = None) -> dict:
    """Per FAR threshold (N/unit strings) and search: found, analysed, volume and sensitive
    distance (Mpc) with errors, and the distance's ratio to ``reference``'s (default: the first
    search). At a threshold below a search's FAR resolution (1 / background livetime) the
    search cannot tell that FAR: ``resolved`` False and found, volume, distance, ratio None.
    """
    lo, hi = uniform_prior(snr_prior)
    names = list(searches)
    reference = names[0] if reference is None else reference
    if reference not in searches:
        raise SearchError(f"--reference {reference!r}: not one of the searches "
                          f"({', '.join(names)})")
    rows = []
    for spec in far:
        limit = far_per_year(spec)
        cells = {}
        for name, s in searches.items():
            cell = {"analysed": int(s.analysed.sum()), "resolved": False, "found": None,
                    "volume_mpc3": None, "volume_err_mpc3": None, "distance_mpc": None,
                    "distance_err_mpc": None, "ratio": None}
            res = s.far_resolution_per_year
            if res is not None and limit >= res:
                found = found_at(s.far_per_year, s.analysed, limit)
                a = s.analysed
                v, dv = sensitive_volume(s.snr[a], s.distance[a], found[a], snr_prior)
                r, dr = sensitive_distance(v, dv)
                cell.update(resolved=True, found=int(found.sum()), volume_mpc3=v,
                            volume_err_mpc3=dv, distance_mpc=r, distance_err_mpc=dr)
            cells[name] = cell
        ref = cells[reference]["distance_mpc"]
        for cell in cells.values():
            if cell["resolved"] and ref:
                cell["ratio"] = cell["distance_mpc"] / ref
        rows.append({"far": spec, "far_per_year": limit, "searches": cells})
    return {"snr_prior": f"uniform:{lo:g},{hi:g}", "reference": reference, "rows": rows}


# A paired bootstrap's resamples: with 2,000 the ends of a 95 % interval on a ratio of 0.89
# over 1,350 injections moved by at most 0.003 between six bootstrap seeds (docs/search.md).
N_BOOTSTRAP = 2000


def _boot_distance(s: SearchInjections, limit: float, snr_prior: str | SNRDistribution,
                   idx: np.ndarray) -> np.ndarray:
    """(B,) the sensitive distance (Mpc) at FAR ``limit`` (per year) of each resample of
    ``s``'s injections, ``idx`` (B, n) their row numbers: each resample's volume is the mean of
    the volume terms of its analysed rows, as :func:`sensitive_volume` of that resample; NaN
    for a resample with fewer than 2 analysed rows (which sensitive_volume refuses)."""
    a = s.analysed
    terms = np.zeros(s.snr.size)
    terms[a] = volume_terms(s.snr[a], s.distance[a], found_at(s.far_per_year, a, limit)[a],
                            snr_prior)
    count = a[idx].sum(axis=1)
    volume = np.where(count >= 2, terms[idx].sum(axis=1) / np.maximum(count, 1), np.nan)
    return (3 * volume / (4 * np.pi)) ** (1 / 3)


def bootstrap_ratios(searches: Mapping[str, SearchInjections], table: dict,
                     snr_prior: str | SNRDistribution, n: int = N_BOOTSTRAP, seed: int = 0,
                     level: float = 0.95) -> dict:
    """``table`` (:func:`sensitivity_table`'s, of ``searches``) with intervals from a paired
    bootstrap over the injections: each resample draws injections with replacement, the same
    for every search, so what the searches share (which injections happened to be drawn)
    cancels from their ratios. Adds to each cell ``ratio_interval`` [lo, hi] (the distance
    ratio to the reference's; None for the reference and where either is not resolved) and to
    each row ``differences``: for each pair (a, b) of other searches resolved there, b's ratio
    minus a's with its interval; and ``resamples_used``: the resamples in which every search
    resolved there had at least 2 analysed injections (the others are dropped; with none,
    no intervals). SearchError unless every search holds the same injections (their gps_time
    and part), i.e. searched the same strains for the same injections files."""
    names = list(searches)
    ref = table["reference"]
    first = searches[ref]
    for name, s in searches.items():
        if (s.gps_time is None or first.gps_time is None
                or not np.array_equal(s.gps_time, first.gps_time)
                or not np.array_equal(s.part if s.part is not None else 0,
                                      first.part if first.part is not None else 0)):
            raise SearchError(f"{name} and {ref} did not look for the same injections: no "
                              "paired interval (give each search of the same strains and "
                              "injections files)")
    idx = np.random.default_rng(seed).integers(0, first.snr.size, (n, first.snr.size))
    q = [50 * (1 - level), 50 * (1 + level)]
    for row in table["rows"]:
        cells, limit = row["searches"], row["far_per_year"]
        resolved = [m for m in names if cells[m]["resolved"]]
        for m in names:
            cells[m]["ratio_interval"] = None
        row["differences"], row["resamples_used"] = [], 0
        if ref not in resolved:
            continue
        dist = {m: _boot_distance(searches[m], limit, snr_prior, idx) for m in resolved}
        used = np.all([np.isfinite(d) for d in dist.values()], axis=0)
        row["resamples_used"] = int(used.sum())
        if not used.any():
            continue
        ratio = {m: dist[m][used] / dist[ref][used] for m in resolved}
        for m in names:
            cells[m]["ratio_interval"] = (np.percentile(ratio[m], q).tolist()
                                          if m in resolved and m != ref else None)
        others = [m for m in resolved if m != ref]
        row["differences"] = [
            {"a": a, "b": b, "difference": cells[b]["ratio"] - cells[a]["ratio"],
             "interval": np.percentile(ratio[b] - ratio[a], q).tolist()}
            for k, a in enumerate(others) for b in others[k + 1:]]
    table["bootstrap"] = {"resamples": n, "seed": seed, "level": level}
    return table


def found_by_mass(searches: Mapping[str, SearchInjections], table: dict,
                  snr_bins: Sequence[float] = BY_MASS_SNR_BINS,
                  mass_bins: Sequence[float] = MASS_BINS) -> list[dict]:
    """Where the found injections lie: per resolved threshold of ``table`` and search with
    masses, found and analysed counts (len(snr_bins) - 1, len(mass_bins) - 1) by network SNR
    and total mass (Msun), each bin [lo, hi). One sensitive distance hides which sources a
    search loses: the search model misses light chirps the matched filter finds
    (docs/search.md, "Where the rest is lost")."""
    out = []
    for row in table["rows"]:
        cells = {}
        for name, s in searches.items():
            if s.total_mass is None or not row["searches"][name]["resolved"]:
                continue
            found = found_at(s.far_per_year, s.analysed, row["far_per_year"])
            a = s.analysed
            counts = [np.histogram2d(s.snr[a & f], s.total_mass[a & f],
                                     bins=(snr_bins, mass_bins))[0].astype(int).tolist()
                      for f in (found, np.ones_like(found))]
            cells[name] = {"found": counts[0], "analysed": counts[1]}
        if cells:
            out.append({"far": row["far"], "snr_bins": [float(x) for x in snr_bins],
                        "mass_bins": [float(x) for x in mass_bins], "searches": cells})
    return out


def compare_searches(searches: Mapping[str, str | Path | Sequence[str | Path]],
                     injections: str | Path | Sequence[str | Path],
                     snr_prior: str | SNRDistribution, far: Sequence[str] = DEFAULT_FAR,
                     reference: str | None = None, bootstrap: int = 0
                     ) -> tuple[dict, dict[str, SearchInjections]]:
    """:func:`sensitivity_table` of the searches' ``--out`` directories (name -> directory, or
    one directory per injections file: the searches of several strains pooled, :func:`pool`)
    against the injections CSV(s) they searched for; with ``bootstrap`` resamples, its paired
    intervals (:func:`bootstrap_ratios`). Also returns what was read, per search."""
    files = [injections] if isinstance(injections, (str, Path)) else list(injections)
    tables = []
    for path in files:
        table = read_injections(path)
        if "distance" not in table:
            raise SearchError(f"{path}: no numeric column 'distance' (Mpc; g2net-synth-long's "
                              "injections.csv has one)")
        if table["gps_time"].size == 0:
            raise SearchError(f"{path}: no injections")
        tables.append(table)
    read = {}
    for name, dirs in searches.items():
        dirs = [dirs] if isinstance(dirs, (str, Path)) else list(dirs)
        if len(dirs) != len(files):
            raise SearchError(f"{name}: {len(dirs)} search directories for {len(files)} "
                              "injections files: give one per file, in the same order")
        parts = [read_search(d, t) for d, t in zip(dirs, tables)]
        read[name] = parts[0] if len(parts) == 1 else pool(parts)
    table = sensitivity_table(read, snr_prior, far, reference)
    if bootstrap:
        bootstrap_ratios(read, table, snr_prior, bootstrap)
    return table, read
