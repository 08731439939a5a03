"""Sensitive volume and distance from SNR-drawn injections (infer.search.sensitivity) against
answers found without it: the analytic volume of a sharp SNR threshold and a brute-force Monte
Carlo over distances drawn uniform in volume; the FAR-resolution rule and the comparison CLI
(infer.search.compare) on small synthetic search outputs.
"""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest

from infer.search.config import YEAR, SearchError
from infer.search.sensitivity import (
    SearchInjections,
    _boot_distance,
    bootstrap_ratios,
    compare_searches,
    efficiency,
    found_at,
    found_by_mass,
    sensitive_distance,
    sensitive_volume,
    sensitivity_table,
)

K_RANGE = (200.0, 2000.0)  # SNR x Mpc: a source's SNR at 1 Mpc, uniform over the population
SNR_PRIOR = (4.0, 40.0)


def mean_k_cubed(a: float, b: float) -> float:
    """E[K^3] for K uniform on [a, b]: (b^4 - a^4) / (4 (b - a))."""
    return (b**4 - a**4) / (4 * (b - a))


def draw(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(snr, distance in Mpc) of n sources with K uniform in K_RANGE, SNR uniform in SNR_PRIOR."""
    k = rng.uniform(*K_RANGE, n)
    snr = rng.uniform(*SNR_PRIOR, n)
    return snr, k / snr


def ramp(snr: np.ndarray) -> np.ndarray:
    """A soft detection probability: 0 below SNR 8, 1 above 14, linear between."""
    return np.clip((snr - 8.0) / 6.0, 0.0, 1.0)


PRIOR = "uniform:4,40"


# 30: near the prior's top, where the sources nearer than K / 40 (counted as found, never
# drawn) hold 40 % of the volume.
@pytest.mark.parametrize("threshold", [10.0, 30.0])
def test_volume_of_a_sharp_threshold_matches_the_analytic_one(threshold):
    # found = SNR > threshold finds a source out to K / threshold: V = 4/3 pi E[K^3] / thr^3.
    truth = 4 / 3 * np.pi * mean_k_cubed(*K_RANGE) / threshold**3
    z = []
    for seed in range(40):
        snr, d = draw(np.random.default_rng(seed), 3000)
        v, err = sensitive_volume(snr, d, snr > threshold, PRIOR)
        z.append((v - truth) / err)
    z = np.array(z)
    assert np.abs(z).max() < 4  # a 4-sigma miss in 40 tries: p ~ 0.3 %
    assert abs(z[0]) < 3
    # The standard error is the real spread: z ~ N(0, 1) (std of 40 draws: 1 +- 0.11).
    assert abs(z.mean()) < 0.6
    assert 0.65 < z.std(ddof=1) < 1.35


def test_volume_matches_brute_force_draws_uniform_in_volume():
    rng = np.random.default_rng(7)
    # Brute force: sources uniform in a ball out to where every K gives SNR < 8 (never found).
    n = 400_000
    radius = K_RANGE[1] / SNR_PRIOR[0]
    k = rng.uniform(*K_RANGE, n)
    d = radius * rng.random(n) ** (1 / 3)
    found = rng.random(n) < ramp(k / d)
    ball = 4 / 3 * np.pi * radius**3
    p = found.mean()
    v_brute, err_brute = ball * p, ball * np.sqrt(p * (1 - p) / n)
    # Importance-weighted, from SNR-drawn injections with the same detection rule.
    snr, dist = draw(rng, 20_000)
    v, err = sensitive_volume(snr, dist, rng.random(snr.size) < ramp(snr), PRIOR)
    assert abs(v - v_brute) < 3 * np.hypot(err, err_brute)
    assert err < 0.05 * v and err_brute < 0.05 * v_brute  # a test that could fail


def test_distance_efficiency_and_found_at():
    r, dr = sensitive_distance(4 / 3 * np.pi * 100.0**3, 3e4)
    assert r == pytest.approx(100.0)
    # dR/dV = R / (3 V), checked by a finite difference.
    v = 4 / 3 * np.pi * 100.0**3
    assert dr == pytest.approx((sensitive_distance(v + 1, 0)[0] - r) * 3e4, rel=1e-4)
    far = np.array([0.5, np.nan, 20.0, 0.0, 1.0])
    analysed = np.array([True, True, True, False, True])
    assert found_at(far, analysed, 1.0).tolist() == [True, False, False, False, True]
    frac, count, err = efficiency([1, 2, 6, 7, 8, 12], [1, 0, 1, 1, 0, 1], [0, 5, 10, 15, 20])
    assert count.tolist() == [2, 3, 1, 0]
    np.testing.assert_allclose(frac[:3], [0.5, 2 / 3, 1.0])
    np.testing.assert_allclose(err[:3], [np.sqrt(0.25 / 2), np.sqrt(2 / 9 / 3), 0.0])
    assert np.isnan(frac[3]) and np.isnan(err[3])


def test_sensitive_volume_refuses_priors_without_a_distance_spread():
    with pytest.raises(ValueError, match="uniform:LO,HI"):
        sensitive_volume([10.0, 12.0], [100.0, 90.0], [True, False], "normal:10,3,4")
    with pytest.raises(ValueError, match="outside the SNR prior"):
        sensitive_volume([10.0, 50.0], [100.0, 90.0], [True, False], PRIOR)


# ---------------------------------------------------------------------------------------------
# Search outputs on disk

GPS = 1238166018.0
DAY = 86400.0


def write_injections(path, snr, distance, order, masses):
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["gps_time", "snr", "mass1", "mass2", "distance"])
        for i in order:  # not in time order: the join must not rely on it
            w.writerow([f"{GPS + 32 * i + 0.123456:.6f}", f"{snr[i]:.9g}", f"{masses[i, 0]:.9g}",
                        f"{masses[i, 1]:.9g}", f"{distance[i]:.9g}"])


def write_search(directory, snr, analysed, far, background_s, drop=None, order=None):
    """found.csv and summary.json as g2net-search writes them (``far``: NaN = no trigger);
    ``order``: the rows' order (default: time order)."""
    directory.mkdir()
    cols = ["gps_time", "snr", "analysed", "found_1_per_day", "trigger_gps_time",
            "trigger_score", "trigger_far_per_year"]
    with (directory / "found.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([c for c in cols if c != drop])
        for i in range(snr.size) if order is None else order:
            hit = np.isfinite(far[i])
            row = [f"{GPS + 32 * i + 0.123456:.6f}", repr(float(snr[i])), int(analysed[i]),
                   int(bool(analysed[i] and far[i] <= 365.25)),
                   f"{GPS + 32 * i:.6f}" if hit else "", "3.0" if hit else "",
                   repr(float(far[i])) if hit else ""]
            w.writerow([v for c, v in zip(cols, row) if c != drop])
    live = {"zero_lag_s": 10 * DAY, "background_s": background_s,
            "far_resolution_per_year": YEAR / background_s}
    (directory / "summary.json").write_text(json.dumps({"livetime": live}))


@pytest.fixture
def searches(tmp_path):
    """Injections (uniform:4,40) and two searches whose triggers have FAR e^-(snr - cut) per
    year: "mf" (cut 9) with 1000 days of background, "nn" (cut 11) with 20 (a FAR resolution
    of 18 per year: 1/month and 1/year are not resolved)."""
    rng = np.random.default_rng(3)
    snr, distance = draw(rng, 400)
    (tmp_path / "long").mkdir()
    masses = np.random.default_rng(4).uniform(7, 50, (400, 2))
    write_injections(tmp_path / "long" / "injections.csv", snr, distance, rng.permutation(400),
                     masses)
    (tmp_path / "long" / "synth_long.yaml").write_text("duration: 12800\nsnr: uniform:4,40\n")
    analysed = rng.random(400) < 0.95
    for name, cut, days in (("mf", 9.0, 1000), ("nn", 11.0, 20)):
        # Louder signals get rarer FARs: 1/year at the cut, no trigger well below it.
        far = np.where(snr > cut - 8, np.exp(-(snr - cut)), np.nan)
        write_search(tmp_path / name, snr, analysed, far, days * DAY)
    return tmp_path, snr, distance, analysed


def test_thresholds_below_the_far_resolution_are_not_resolved(searches):
    root, snr, distance, analysed = searches
    table, read = compare_searches({"mf": root / "mf", "nn": root / "nn"},
                                   root / "long" / "injections.csv", PRIOR)
    assert table["reference"] == "mf"
    by_far = {row["far"]: row["searches"] for row in table["rows"]}
    assert by_far["1/day"]["nn"]["resolved"]
    for spec in ("1/month", "1/year"):  # 12 and 1 per year < nn's 18.3 per year
        cell = by_far[spec]["nn"]
        assert not cell["resolved"]
        assert cell["found"] is cell["distance_mpc"] is cell["ratio"] is None
        assert by_far[spec]["mf"]["resolved"] and by_far[spec]["mf"]["ratio"] == 1.0
    # The join recovered each injection's distance although injections.csv is shuffled.
    day = by_far["1/day"]["nn"]
    found = analysed & (snr > 11.0 - np.log(365.25))
    assert day["found"] == found.sum()
    v, dv = sensitive_volume(snr[analysed], distance[analysed], found[analysed], PRIOR)
    assert day["volume_mpc3"] == pytest.approx(v) and day["volume_err_mpc3"] == pytest.approx(dv)
    assert day["ratio"] < 1  # nn finds less than mf at every SNR
    np.testing.assert_allclose(read["nn"].distance, distance, rtol=1e-8)


def test_found_by_mass_counts_each_injection_once_in_its_snr_and_mass_bin(searches):
    """found_by_mass against a count injection by injection; the masses come through the
    shuffled injections file's join; a search without masses is left out."""
    root, snr, _, analysed = searches
    masses = np.random.default_rng(4).uniform(7, 50, (400, 2))  # as the fixture wrote them
    total = masses.sum(axis=1)
    table, read = compare_searches({"mf": root / "mf", "nn": root / "nn"},
                                   root / "long" / "injections.csv", PRIOR)
    np.testing.assert_allclose(read["nn"].total_mass, total, rtol=1e-8)
    by_mass = found_by_mass(read, table)
    assert [t["far"] for t in by_mass] == ["1/day", "1/month", "1/year"]
    assert list(by_mass[1]["searches"]) == ["mf"]  # nn does not resolve 1/month
    snr_bins, mass_bins = (0, 8, 12, 15, np.inf), (0, 30, 45, 70, np.inf)
    for t in by_mass:
        limit = {"1/day": 365.25, "1/month": 12.0, "1/year": 1.0}[t["far"]]
        for name, cell in t["searches"].items():
            cut = {"mf": 9.0, "nn": 11.0}[name]
            want_found = np.zeros((4, 4), int)
            want_analysed = np.zeros((4, 4), int)
            for k in range(400):
                if not analysed[k]:
                    continue
                i = next(i for i in range(4) if snr_bins[i] <= snr[k] < snr_bins[i + 1])
                j = next(j for j in range(4) if mass_bins[j] <= total[k] < mass_bins[j + 1])
                want_analysed[i, j] += 1
                far = np.exp(-(snr[k] - cut)) if snr[k] > cut - 8 else np.inf
                want_found[i, j] += far <= limit
            assert cell["analysed"] == want_analysed.tolist()
            assert cell["found"] == want_found.tolist()
    assert sum(map(sum, by_mass[0]["searches"]["nn"]["found"])) == \
        table["rows"][0]["searches"]["nn"]["found"]
    no_mass = {n: dataclasses.replace(r, total_mass=None) for n, r in read.items()}
    assert found_by_mass(no_mass, table) == []


def test_cli_writes_the_table_json_and_plot(searches, capsys):
    from infer.search.compare import main

    root = searches[0]
    out = root / "compare"
    main(["--searches", f"nn={root / 'nn'}", f"mf={root / 'mf'}", "--injections",
          str(root / "long" / "injections.csv"), "--reference", "mf", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "| 1/month | nn | — / " in printed and "not resolved" in printed
    md = (out / "sensitivity.md").read_text()
    assert md.count("\n| 1/") == 6
    assert md.count("by network SNR and total mass") == 3  # mf resolves 3 thresholds
    assert "| nn | 8–12 | " in md and "| mf | ≥ 15 | " in md
    info = json.loads((out / "sensitivity.json").read_text())
    assert info["snr_prior"] == PRIOR and info["reference"] == "mf"
    assert [t["far"] for t in info["by_mass"]] == ["1/day", "1/month", "1/year"]
    assert (out / "sensitivity.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("case, message", [
    ("missing column", "no column 'trigger_far_per_year'"),
    ("normal prior", "normal:10,3,4: a sensitive volume needs"),
    ("no prior", "synth_long.yaml beside the injections"),
    ("unknown reference", "--reference 'pycbc': not one of the searches (nn, mf)"),
    ("bad FAR", "'2/fortnight' is not N/unit"),
    ("other injections", "is not in the injections file"),
    ("directories per file", "nn: 2 search directories for 1 injections files"),
    ("negative bootstrap", "--bootstrap -1: give 0 (none) or more"),
])
def test_cli_refuses_bad_inputs(searches, capsys, case, message):
    from infer.search.compare import main

    root, snr, _, analysed = searches
    args = ["--searches", f"nn={root / 'nn'}", f"mf={root / 'mf'}",
            "--injections", str(root / "long" / "injections.csv"), "--out", str(root / "c")]
    if case == "missing column":
        write_search(root / "bad", snr, analysed, np.full(snr.size, 1.0), DAY,
                     drop="trigger_far_per_year")
        args[2] = f"mf={root / 'bad'}"
    elif case == "normal prior":
        args += ["--snr-prior", "normal:10,3,4"]
    elif case == "no prior":
        (root / "long" / "synth_long.yaml").unlink()
    elif case == "unknown reference":
        args += ["--reference", "pycbc"]
    elif case == "bad FAR":
        args += ["--far", "1/day", "2/fortnight"]
    elif case == "directories per file":
        args[1] = f"nn={root / 'nn'},{root / 'nn'}"
    elif case == "negative bootstrap":
        args += ["--bootstrap", "-1"]
    else:
        write_injections(root / "other.csv", snr, snr, range(snr.size - 1),  # one left out
                         np.full((snr.size, 2), 20.0))
        args[4] = str(root / "other.csv")
        args += ["--snr-prior", PRIOR]
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("g2net-search-compare: error: ") and message in err and "\n" not in err
    assert not (root / "c" / "sensitivity.md").exists()


# ---------------------------------------------------------------------------------------------
# Several strains pooled, and the paired bootstrap


def split_searches(base, snr, distance, analysed, nn_days_b):
    """The fixture's injections and searches cut in two strains: rows 0-199 and 200-399, each
    with its own injections file at the same GPS times (two strains that start at the same
    GPS, as two g2net-synth-long seeds do); nn's second part has ``nn_days_b`` days of
    background."""
    masses = np.random.default_rng(4).uniform(7, 50, (400, 2))
    files = []
    for part, rows in enumerate((slice(0, 200), slice(200, 400))):
        d = base / f"part{part}"
        d.mkdir(parents=True)
        write_injections(d / "injections.csv", snr[rows], distance[rows], range(200),
                         masses[rows])
        (d / "synth_long.yaml").write_text("snr: uniform:4,40\n")
        files.append(d / "injections.csv")
        for name, cut, days in (("mf", 9.0, 1000), ("nn", 11.0, 20 if part == 0 else nn_days_b)):
            far = np.where(snr[rows] > cut - 8, np.exp(-(snr[rows] - cut)), np.nan)
            write_search(d / name, snr[rows], analysed[rows], far, days * DAY)
    return files


def test_strains_pooled_give_the_figures_of_one_strain_holding_both(searches):
    """Two strains searched apart and pooled (--searches nn=a,b --injections a.csv b.csv) give
    the found counts, volumes, ratios and bootstrap intervals of the same injections in one
    strain; a threshold one part's background does not resolve is not resolved pooled."""
    root, snr, distance, analysed = searches
    whole, _ = compare_searches({"mf": root / "mf", "nn": root / "nn"},
                                root / "long" / "injections.csv", PRIOR, bootstrap=300)
    files = split_searches(root / "a", snr, distance, analysed, nn_days_b=20)
    pooled, read = compare_searches(
        {name: [root / "a" / "part0" / name, root / "a" / "part1" / name] for name in ("mf", "nn")},
        files, PRIOR, bootstrap=300)
    assert read["nn"].snr.size == 400 and read["nn"].part.tolist() == [0] * 200 + [1] * 200
    for w, p in zip(whole["rows"], pooled["rows"]):
        for name in ("mf", "nn"):
            a, b = w["searches"][name], p["searches"][name]
            assert a["resolved"] == b["resolved"] and a["found"] == b["found"]
            if a["resolved"]:
                assert b["volume_mpc3"] == pytest.approx(a["volume_mpc3"], rel=1e-12)
                assert b["ratio"] == pytest.approx(a["ratio"], rel=1e-12)
                if name == "nn":  # the same rows in the same order: the same resamples
                    np.testing.assert_allclose(b["ratio_interval"], a["ratio_interval"])
    # nn's second part with half a day of background: 730 per year, 1/day not resolved
    files = split_searches(root / "b", snr, distance, analysed, nn_days_b=0.5)
    pooled, _ = compare_searches(
        {name: [root / "b" / "part0" / name, root / "b" / "part1" / name] for name in ("mf", "nn")},
        files, PRIOR)
    assert not pooled["rows"][0]["searches"]["nn"]["resolved"]
    assert pooled["rows"][0]["searches"]["mf"]["resolved"]


def test_bootstrap_distances_are_the_volumes_of_the_resampled_injections(searches):
    """The vectorised resamples against sensitive_volume of each resample drawn by hand, and
    the intervals against percentiles of those."""
    root = searches[0]
    table, read = compare_searches({"mf": root / "mf", "nn": root / "nn"},
                                   root / "long" / "injections.csv", PRIOR)
    n, limit = read["nn"].snr.size, 365.25
    idx = np.random.default_rng(0).integers(0, n, (200, n))
    by_hand = {}
    for name, s in read.items():
        got = _boot_distance(s, limit, PRIOR, idx)
        want = []
        for i in idx:
            a = s.analysed[i]
            found = found_at(s.far_per_year[i], a, limit)
            want.append(sensitive_distance(*sensitive_volume(s.snr[i][a], s.distance[i][a],
                                                             found[a], PRIOR))[0])
        np.testing.assert_allclose(got, want, rtol=1e-10)
        by_hand[name] = np.array(want)
    bootstrap_ratios(read, table, PRIOR, n=200, seed=0)
    np.testing.assert_allclose(table["rows"][0]["searches"]["nn"]["ratio_interval"],
                               np.percentile(by_hand["nn"] / by_hand["mf"], [2.5, 97.5]))
    assert table["rows"][0]["searches"]["mf"]["ratio_interval"] is None  # the reference


def test_bootstrap_intervals_cover_the_true_ratio():
    """Searches with sharp SNR thresholds 9 (reference) and 10 find sources out to K / 9 and
    K / 10: the true distance ratio is 0.9. Over 100 independent sets of 400 injections the 95 %
    interval holds it in 88 or more (binomial: 95 expected, sd 2.2; the percentile interval
    runs a little narrow at 400 injections, 90 seen; a 90 % one holds it in 82), and the
    difference between the threshold-10 and threshold-11 searches (true 9/11 - 9/10) too."""
    cover = {"ratio": 0, "difference": 0}
    for seed in range(100):
        snr, d = draw(np.random.default_rng(100 + seed), 400)
        t = np.arange(400.0)
        read = {name: SearchInjections(snr, d, np.ones(400, bool),
                                       np.where(snr > cut, 0.5, np.nan), 0.01, gps_time=t)
                for name, cut in (("ref", 9.0), ("a", 10.0), ("b", 11.0))}
        table = sensitivity_table(read, PRIOR, ["1/day"], "ref")
        bootstrap_ratios(read, table, PRIOR, n=400, seed=seed)
        lo, hi = table["rows"][0]["searches"]["a"]["ratio_interval"]
        cover["ratio"] += lo <= 0.9 <= hi
        (diff,) = table["rows"][0]["differences"]
        assert (diff["a"], diff["b"]) == ("a", "b")
        lo, hi = diff["interval"]
        cover["difference"] += lo <= 9 / 11 - 0.9 <= hi
    assert cover["ratio"] >= 88 and cover["difference"] >= 88, cover


def test_bootstrap_refuses_searches_of_other_injections(searches):
    """Other times, or the same times from another strain's injections file (part)."""
    root = searches[0]
    table, read = compare_searches({"mf": root / "mf", "nn": root / "nn"},
                                   root / "long" / "injections.csv", PRIOR)
    for change in ({"gps_time": read["nn"].gps_time + 1.0},
                   {"part": np.repeat([0, 1], 200)}):
        other = {**read, "nn": dataclasses.replace(read["nn"], **change)}
        with pytest.raises(SearchError, match="nn and mf did not look for the same injection"):
            bootstrap_ratios(other, table, PRIOR)


def test_bootstrap_pairs_rows_whatever_order_found_csv_lists_them(searches):
    """nn's found.csv written in a shuffled order: read_search puts the rows in time order, so
    the pairs, the table and the intervals are those of the time-ordered file."""
    root, snr, _, analysed = searches
    far = np.where(snr > 11.0 - 8, np.exp(-(snr - 11.0)), np.nan)
    write_search(root / "shuffled", snr, analysed, far, 20 * DAY,
                 order=np.random.default_rng(9).permutation(snr.size))
    inj = root / "long" / "injections.csv"
    want, _ = compare_searches({"mf": root / "mf", "nn": root / "nn"}, inj, PRIOR, bootstrap=300)
    got, _ = compare_searches({"mf": root / "mf", "nn": root / "shuffled"}, inj, PRIOR,
                              bootstrap=300)
    assert got == want


def test_bootstrap_drops_resamples_without_two_analysed_injections():
    """3 analysed injections of 6: some resamples draw fewer than 2 of them (sensitive_volume
    refuses those); they are dropped and counted, and the interval stays finite."""
    snr = np.array([5.0, 9.0, 12.0, 20.0, 30.0, 38.0])
    analysed = np.array([True, False, True, False, False, True])
    read = {name: SearchInjections(snr, 100.0 / snr * 10, analysed,
                                   np.where(snr > cut, 0.5, np.nan), 0.01,
                                   gps_time=np.arange(6.0))
            for name, cut in (("ref", 8.0), ("a", 10.0))}
    table = sensitivity_table(read, PRIOR, ["1/day"], "ref")
    bootstrap_ratios(read, table, PRIOR, n=500, seed=1)
    row = table["rows"][0]
    assert 300 < row["resamples_used"] < 500  # P(at least 2 of 3 in 6 draws) = 0.68
    lo, hi = row["searches"]["a"]["ratio_interval"]
    assert np.isfinite([lo, hi]).all() and lo <= row["searches"]["a"]["ratio"] <= hi
    json.dumps(table, allow_nan=False)  # valid JSON: no NaN anywhere


def test_cli_prints_intervals_and_the_difference_of_two_searches(searches, capsys):
    """Three searches: each ratio with its interval, and nn2 − nn with its value and interval
    (nn2 finds more than nn, at every SNR: its ratio is higher)."""
    from infer.search.compare import main

    root, snr, _, analysed = searches
    write_search(root / "nn2", snr, analysed,
                 np.where(snr > 10.0 - 8, np.exp(-(snr - 10.0)), np.nan), 20 * DAY)
    out = root / "c3"
    main(["--searches", f"mf={root / 'mf'}", f"nn={root / 'nn'}", f"nn2={root / 'nn2'}",
          "--injections", str(root / "long" / "injections.csv"), "--bootstrap", "500",
          "--out", str(out)])
    printed = capsys.readouterr().out
    info = json.loads((out / "sensitivity.json").read_text())
    day = info["rows"][0]
    nn, nn2 = day["searches"]["nn"], day["searches"]["nn2"]
    (diff,) = day["differences"]
    assert (diff["a"], diff["b"]) == ("nn", "nn2")
    assert diff["difference"] == pytest.approx(nn2["ratio"] - nn["ratio"])
    assert diff["difference"] > 0
    assert diff["interval"][0] <= diff["difference"] <= diff["interval"][1]
    lo, hi = nn["ratio_interval"]
    assert f"| {nn['ratio']:.3f} | {lo:.3f}–{hi:.3f} |" in printed
    lo, hi = (f"{x:+.3f}".replace("-", "−") for x in diff["interval"])  # typographic minus
    assert f"| 1/day | nn2 − nn | +{diff['difference']:.3f} | {lo} to {hi} |" in printed
    assert info["bootstrap"] == {"resamples": 500, "seed": 0, "level": 0.95}
