"""The matched-filter search over long strain (infer.search.mf) against the 2-s bank statistic
(infer.matched_filter.filter.bank_statistic) on the same data, templates and PSD, scipy's
chi^2 with 2 degrees of freedom, and brute-force slides; then ``g2net-search
--matched-filter`` end to end.

Module fixtures: 160 s of strain with loud injections (network SNR 15-30, one every 16 s) and
128 s of noise alone from data.sim.long_strain; eight explicit non-spinning templates across
the prior (placement is exercised by the command-line test only, with a coarse bank).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

pytest.importorskip("lalsimulation")

from data.config import load_config  # noqa: E402
from data.layout import DETECTORS  # noqa: E402
from data.strain import Strain, parse_strain, read_strain  # noqa: E402
from infer.search import mf  # noqa: E402
from infer.search.config import SearchConfig  # noqa: E402

pytestmark = pytest.mark.timeout(300)

GPS = 1238166018
CPU = torch.device("cpu")
# Light, unequal, heavy: as tests/infer/matched_filter/test_matched_filter.py.
PARAMS = np.array([
    [8.0, 7.5, 0.0], [14.0, 9.0, 0.0], [20.0, 19.0, 0.0], [30.0, 10.0, 0.0],
    [35.0, 25.0, 0.0], [45.0, 8.0, 0.0], [48.0, 40.0, 0.0], [50.0, 50.0, 0.0],
])  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # torch's 2 OpenMP threads collapse on a shared 2-core machine
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    from data.sim.long_strain import generate

    root = tmp_path_factory.mktemp("strain")
    generate(root / "inj", 160, 11, snr="uniform:15,30", injections_every=16, fmt="hdf5",
             gps_start=GPS, progress=False)
    generate(root / "noise", 128, 12, injections_every=0, fmt="hdf5", gps_start=GPS,
             progress=False)
    return {"inj": root / "inj", "noise": root / "noise"}


def strain_args(directory: Path) -> list[str]:
    return [f"{d}={directory}/{d[0]}-{d}_SYNTH-*.hdf5" for d in DETECTORS]


def read(directory: Path) -> Strain:
    return read_strain(parse_strain(strain_args(directory)), 2048)


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def config(*overrides: str) -> SearchConfig:
    return load_config(SearchConfig, None, list(overrides))


@pytest.fixture(scope="module")
def searched(dirs):
    """The injection strain searched with PARAMS: 3 slides, rings of 64 s."""
    strain = read(dirs["inj"])
    cfg = config("slides=3", "ring=64")
    plan = mf.plan_bins(strain, cfg)
    return strain, cfg, plan, mf.score_bins(strain, plan, PARAMS, cfg, CPU, progress=False)


# ---------------------------------------------------------------------------------------------
# The filter


def test_overlap_save_is_exact(dirs):
    """A merger time's rho^2 does not depend on the FFT it comes from: 24-s and 32-s segments
    starting anywhere give a 100-s FFT's values to float32 rounding (the whitening filter is
    cut to 2 s, so nothing wraps around)."""
    strain = read(dirs["inj"])
    plan = mf.plan_bins(strain, config())
    psd = plan.local.psd(60 * 2048)[0]

    def series(start: int, seconds: int, n_fft: int) -> tuple[int, np.ndarray]:
        templates = mf.make_templates(PARAMS[::3], n_fft * 2048, CPU)
        x = strain.data[:, start:start + seconds * 2048]
        z = torch.cat([s for _, s in mf.snr2_series(x, psd, templates)]).numpy()
        return start + 2 * mf.WHITEN + mf.PRE, z  # the first merger time, its rho^2

    first, ref = series(10 * 2048, 100, 100)
    assert ref.max() > 100  # injections in the stretch
    for start, seconds, n_fft in ((40 * 2048, 24, 24), (47 * 2048 + 2000, 23, 32)):
        t, z = series(start, seconds, n_fft)
        o = (t - first) // mf.STEP
        np.testing.assert_allclose(z, ref[..., o:o + z.shape[-1]], rtol=2e-4, atol=2e-4)


def test_snr2_is_chi2_with_two_degrees_of_freedom(dirs):
    """Gaussian noise, each block whitened by its local PSD: every template's rho^2 per
    detector has mean 2 and scipy's chi^2(2) quantiles. 16-s blocks: the in-band noise power
    of one block fluctuates by ~5 %, the median-Welch PSD's noise biases 1 / S up by ~2 %."""
    strain = read(dirs["noise"])
    plan = mf.plan_bins(strain, config())
    templates = mf.make_templates(PARAMS, plan.layout.n_fft, CPU)
    lay = plan.layout
    parts = []
    (a, b), = plan.rings
    for j in range(a // plan.block, (b - 1) // plan.block + 1):
        p0, p1 = max(a, j * plan.block), min(b, (j + 1) * plan.block)
        x = strain.data[:, p0 * lay.bin - lay.before:p1 * lay.bin + lay.after]
        psd = plan.local.psd(plan.centre(j))[0]
        parts.append(torch.cat([s for _, s in mf.snr2_series(x, psd, templates)]).numpy())
    snr2 = np.concatenate(parts, axis=-1)  # (8, 3, ~60,000)
    assert snr2.mean() == pytest.approx(2.0, rel=0.04)
    for i in range(3):
        assert snr2[:, i].mean() == pytest.approx(2.0, rel=0.05), DETECTORS[i]
    chi2 = stats.chi2(2)
    for q in (0.5, 0.9, 0.99, 0.999):
        assert np.quantile(snr2, q) == pytest.approx(chi2.ppf(q), rel=0.06), q


def test_bins_keep_the_pooled_maxima():
    """bin_maxima against its definition, in numpy: H1's max over the bin; L1's and V1's max
    over the bin of their max within +-pool steps."""
    rng = np.random.default_rng(0)
    lay = mf.Layout(n_fft=1 << 16, bin=32, pool=(0, 11, 29))
    skip, per_bin, n_bins = lay.reach // mf.STEP, lay.bin // mf.STEP, 40
    snr2 = rng.exponential(2.0, size=(3, 3, n_bins * per_bin + 2 * skip)).astype(np.float32)
    got = mf.bin_maxima(torch.from_numpy(snr2), lay).numpy()
    assert got.shape == (3, 3, n_bins)
    for b in range(n_bins):
        lags = skip + b * per_bin + np.arange(per_bin)
        for i, half in enumerate(lay.pool):
            pooled = np.stack([snr2[:, i, j - half:j + half + 1].max(axis=-1) for j in lags])
            np.testing.assert_array_equal(got[:, i, b], pooled.max(axis=0))


# ---------------------------------------------------------------------------------------------
# The statistic against the 2-s bank statistic


def test_agrees_with_the_2s_bank_statistic(dirs, searched):
    """Issue: the long-strain statistic agrees with infer.matched_filter's on the same data,
    templates and PSD. 2-s windows cut with the geocentre merger at 1.8 s (the 2-s filter
    searches H1 merger times 1.26-1.94 s), whitened by the PSD of the block the long search used.

    Expected differences: the 2-s filter sees only its window, tapered by Tukey(0.1), so it
    misses the first ~0.2 s of a 2-s template and has the rest of the template's SNR^2
    (normalised per lag); that part is low-frequency inspiral, a few % of a light system's
    SNR^2 and less of a heavy one's, and a template that fits the signal's early inspiral
    badly can even fit better cut: loud injections agree within 5 % (~1 % typical). In noise
    the long statistic is the max of the bins covering the 2-s search's merger times: a few
    more lags, and a bin keeps H1's, L1's and V1's maxima within 1/64 s of each other
    (the sum of maxima >= the max of sums): its median is 0-6 % higher, the two correlate."""
    from infer.matched_filter.bank import build_bank
    from infer.matched_filter.filter import bank_statistic

    def compare(strain, plan, scores, times, near=None):
        banks: dict[int, object] = {}
        out = []
        for t in times:
            start = int(round((t - strain.t0 - 1.8) * 2048)) // 2 * 2  # even: the same lags
            j = (start + int(1.6 * 2048)) // plan.layout.bin // plan.block
            if j not in banks:
                banks[j] = build_bank(plan.local.psd(plan.centre(j))[0], PARAMS)
            bank = banks[j]
            two = bank_statistic(strain.data[None, :, start:start + 4096], bank)[0]
            if near is None:  # the bins of the 2-s filter's merger times
                lo = start + (bank.lag0 + bank.search.start) * bank.time_step
                hi = start + (bank.lag0 + bank.search.stop - 1) * bank.time_step
            else:
                lo, hi = near(t)
            bins = scores[lo // plan.layout.bin:hi // plan.layout.bin + 1]
            assert np.isfinite(bins).all()
            out.append((two, bins.max()))
        return np.array(out)

    strain, _, plan, ws = searched
    rows = [r for r in read_csv(dirs["inj"] / "injections.csv")
            if float(r["gps_time"]) < strain.t0 + 157]  # analysed: to 2.3 s before the end
    h1 = {float(r["gps_time"]): float(r["time_h1"]) - strain.t0 for r in rows}
    loud = compare(strain, plan, ws.scores[0], list(h1), near=lambda t: (
        int((h1[t] - 0.05) * 2048), int((h1[t] + 0.05) * 2048)))
    assert len(loud) >= 8 and (loud > 10).all()
    ratio = loud[:, 0] / loud[:, 1]
    assert np.all(np.abs(ratio - 1) < 0.05), ratio
    assert abs(np.median(ratio) - 1) < 0.015, ratio

    noise = read(dirs["noise"])
    nplan = mf.plan_bins(noise, config())
    nws = mf.score_bins(noise, nplan, PARAMS, config(), CPU, progress=False)
    quiet = compare(noise, nplan, nws.scores[0], noise.t0 + np.arange(6.0, 121.0, 2.5))
    two, long = quiet.T
    assert 1.0 <= np.median(long / two) <= 1.06, np.median(long / two)
    assert np.corrcoef(two, long)[0, 1] > 0.6
    assert stats.ks_2samp(two, long).pvalue > 0.01


# ---------------------------------------------------------------------------------------------
# Slides, gaps


def test_slides_are_the_shifted_statistic(searched):
    """Slide k's score of bin w of a ring is sqrt(max over templates of H1's rho^2 at w + L1's
    at w - k m + V1's at w - 2 k m (mod the ring)), m = slide_step / bin: brute force in numpy
    from the ring's per-bin rho^2; zero lag is k = 0; no slide reproduces zero lag."""
    strain, cfg, plan, ws = searched
    templates = mf.make_templates(PARAMS, plan.layout.n_fft, CPU)
    m = 64  # 1 s of 1/64-s bins
    assert len(plan.rings) >= 2 and ws.scores.shape == (4, plan.grid.n)
    for a, b in plan.rings[:2]:
        binned = mf.ring_snr2(strain, plan, templates, (a, b)).numpy().astype(np.float64)
        w = b - a
        for k in range(4):
            for col in (0, 5, w // 2, w - 1):
                total = (binned[:, 0, col] + binned[:, 1, (col - k * m) % w]
                         + binned[:, 2, (col - 2 * k * m) % w])
                assert ws.scores[k, a + col] == pytest.approx(np.sqrt(total.max()), rel=1e-6)
        for k in range(1, 4):
            assert np.mean(ws.scores[k, a:b] != ws.scores[0, a:b]) > 0.9
    analysed = np.isfinite(ws.scores[0])
    assert analysed.sum() == ws.counts["analysed"]
    np.testing.assert_array_equal(np.isfinite(ws.scores[1:]), np.broadcast_to(analysed,
                                                                              (3, analysed.size)))


def test_gap_drops_the_bins_within_reach(searched):
    """NaN in L1 over 60.3-61.1 s: exactly the bins whose filters read it are not analysed
    (the whitening filters' and template's reach: 4.03 s before a merger time, 2.28 s after);
    far from it (beyond the PSD span) the scores are unchanged."""
    strain, cfg, plan, ws = searched
    data = strain.data.copy()
    gap = (round(60.3 * 2048), round(61.1 * 2048))
    data[1, gap[0]:gap[1]] = np.nan
    holed = Strain(strain.t0, 2048, data, strain.sources)
    hplan = mf.plan_bins(holed, cfg)
    got = mf.score_bins(holed, hplan, PARAMS, cfg, CPU, progress=False)
    starts = np.arange(plan.grid.n) * 32
    reads = (starts + 32 + plan.layout.after > gap[0]) & (starts - plan.layout.before < gap[1])
    assert plan.layout.before == 8250 and plan.layout.after == 4666
    np.testing.assert_array_equal(np.isfinite(got.scores[0]), np.isfinite(ws.scores[0]) & ~reads)
    far = np.abs(starts / 2048 - 60.7) > 48  # no PSD segment of their blocks meets it
    # To float32 rounding: rings, hence FFT segments, start elsewhere.
    np.testing.assert_allclose(got.scores[0, far], ws.scores[0, far], rtol=2e-5)


# ---------------------------------------------------------------------------------------------
# The command line


def search(strain_dir: Path, out: Path, *options: str, overrides: tuple = ()) -> dict:
    """The command line, in this process (overrides last: argparse takes its positionals in
    one run); its summary.json."""
    from infer.search.cli import main

    main(["--matched-filter", "--strain", *strain_args(strain_dir), "--out", str(out),
          "--quiet", *options, "threads=1", "matched_filter.min_match=0.7", *overrides])
    return json.loads((out / "summary.json").read_text())


def test_command_line_finds_the_injections(dirs, tmp_path, monkeypatch):
    from infer.matched_filter import bank

    monkeypatch.setattr(bank, "STOP_WINDOW", 256)  # a coarse bank (~35 templates), placed fast
    out = tmp_path / "out"
    inj = ["--slides", "10", "--injections", str(dirs["inj"] / "injections.csv")]
    summary = search(dirs["inj"], out, *inj)
    for name in ("triggers.csv", "background.csv", "found.csv", "summary.json", "bank.npz",
                 "windows.npz", "timeline.png", "efficiency.png"):
        assert (out / name).is_file(), name
    assert summary["search"] == "matched_filter" and summary["templates"] >= 20
    assert summary["stride"] == 1 / 64 and not summary["cached"]
    found = read_csv(out / "found.csv")
    loud = [r for r in found if float(r["snr"]) >= 15 and r["analysed"] == "1"]
    assert len(loud) >= 8 and summary["injections"]["analysed"] == len(loud)
    for row in loud:
        assert row["trigger_gps_time"], row
        assert abs(float(row["trigger_gps_time"]) - float(row["gps_time"])) <= 0.1, row
        assert float(row["trigger_score"]) > 10
    assert summary["triggers"]["loudest_background"] < 12
    speed = summary["speed"]
    assert speed["filter_strain_s_per_s"] > 0 and speed["slides_s"] > 0
    assert summary["seconds"]["filter"] > 0 and summary["seconds"]["total"] > 0

    # Again: the bin scores are reused; with --rescore, the bank is (placement would fail).
    def refuse(*args, **kwargs):
        raise AssertionError("the bank was placed again")

    monkeypatch.setattr(mf, "place_templates", refuse)
    again = search(dirs["inj"], out, *inj, overrides=("cluster=1.0",))
    assert again["cached"] and again["templates"] == summary["templates"]
    before = np.load(out / "windows.npz")["scores"]
    rescored = search(dirs["inj"], out, *inj, "--rescore")
    assert not rescored["cached"]
    np.testing.assert_array_equal(np.load(out / "windows.npz")["scores"], before)


def test_background_from_noise_with_the_same_bank(dirs, tmp_path, monkeypatch):
    """The injection strain searched without slides, its FARs from slides over the noise
    strain: the same templates (matched_filter.bank_file), a count over the noise search's
    background.csv; without the bank file the banks differ and the background is refused.
    The noise search keeps no bin scores (save_windows=false): a background needs none."""
    from infer.matched_filter import bank
    from infer.search.config import YEAR

    monkeypatch.setattr(bank, "STOP_WINDOW", 256)
    bg = search(dirs["noise"], tmp_path / "bg", "--slides", "10",
                overrides=("save_windows=false",))
    assert not (tmp_path / "bg" / "windows.npz").exists()
    assert "windows.npz" not in bg["files"] and "background.csv" in bg["files"]
    fg = search(dirs["inj"], tmp_path / "fg", "--injections", str(dirs["inj"] / "injections.csv"),
                overrides=(f"background=[{tmp_path / 'bg'}]",
                           f"matched_filter.bank_file={tmp_path / 'bg' / 'bank.npz'}"))
    assert fg["templates"] == bg["templates"]
    live = bg["livetime"]["background_s"]
    assert fg["livetime"]["background_s"] == live > 0
    scores = np.array([float(r["score"]) for r in read_csv(tmp_path / "bg" / "background.csv")])
    for row in read_csv(tmp_path / "fg" / "triggers.csv"):
        count = (scores >= float(row["score"])).sum()
        assert float(row["far_per_year"]) == pytest.approx(count / (live / YEAR), rel=1e-12)
    with pytest.raises(SystemExit) as e:  # a bank placed on the injection strain's own PSD
        search(dirs["inj"], tmp_path / "own", overrides=(f"background=[{tmp_path / 'bg'}]",))
    assert e.value.code == 2


def test_bad_inputs_are_named(dirs, tmp_path, capsys, monkeypatch):
    from infer.search.cli import main

    def refuse(*args, **kwargs):
        raise AssertionError("strain read despite bad settings")

    monkeypatch.setattr(mf, "read_strain", refuse)
    base = ["--matched-filter", "--strain", *strain_args(dirs["inj"]), "--out",
            str(tmp_path / "out"), "--quiet"]
    for extra, words in (
        (["--runs", str(tmp_path)], ["--matched-filter", "--runs"]),
        (["--psd", "training"], ["psd.source", "training PSD"]),
        (["matched_filter.bin=0.00048828125"], ["matched_filter.bin", "2 samples"]),
        (["matched_filter.bin=0.03"], ["matched_filter.bin"]),
        (["matched_filter.segment=20"], ["matched_filter.segment", "psd.block=16"]),
        (["matched_filter.min_match=1.5"], ["matched_filter.min_match"]),
        (["hard_negatives=10"], ["hard_negatives", "not 2-s windows"]),
        (["integrate=1.0"], ["integrate", "network SNR per bin"]),
    ):
        with pytest.raises(SystemExit) as e:
            main(base + extra)
        assert e.value.code == 2, extra
        err = capsys.readouterr().err
        assert err.startswith("g2net-search: error: "), err
        for word in words:
            assert word in err, (extra, err)
