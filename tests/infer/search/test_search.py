"""The search over long strain (infer.search) with a model trained here for the purpose.

Module fixtures: a small G2Net-layout set of loud signals (data.sim.samples), preprocessed with the
default config, the tiny config trained on fold 0 for a few epochs (train.cli.main in this
process); then 192 s of strain with loud injections from data.sim.long_strain (HDF5 and GWF, one
seed: the same numbers) and 96 s of noise alone. The searches run once per module.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from data.layout import DETECTORS

pytestmark = pytest.mark.timeout(600)

DURATION = 192  # s of strain with injections
GPS = 1238166018
THREADS = ["threads=1"]  # torch's 2 OpenMP threads collapse on a shared 2-core machine


@pytest.fixture(scope="module")
def torch_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, torch_threads):
    """runs/tiny with fold0 trained on 400 loud samples (SNR 15-30)."""
    from data.sim.samples import generate
    from preprocess import pipeline
    from preprocess.config import PreprocessConfig
    from train.cli import main as train_main

    root = tmp_path_factory.mktemp("model")
    generate(root / "data", 400, 0, seed=3, snr="uniform:15,30", jobs=1, progress=False)
    pipeline.run(root / "data", root / "cache", PreprocessConfig(), splits=("train",),
                 progress=False)
    config = Path(__file__).resolve().parents[3] / "configs" / "train" / "tiny.yaml"
    train_main(["--config", str(config), f"store={root / 'cache' / 'train.zarr'}",
                f"out={root / 'runs'}", "name=tiny", "fold=0", "epochs=3", "progress=false"])
    return root / "runs" / "tiny"


@pytest.fixture(scope="module")
def strain(tmp_path_factory):
    """{"hdf5": dir, "gwf": dir, "noise": dir}: 192 s with injections at network SNR 20-30
    (HDF5 and GWF, same numbers), 96 s of noise alone (HDF5)."""
    from data.sim.long_strain import generate

    root = tmp_path_factory.mktemp("strain")
    out = {}
    for fmt in ("hdf5", "gwf"):
        generate(root / fmt, DURATION, 11, snr="uniform:20,30", injections_every=16, fmt=fmt,
                 gps_start=GPS, progress=False)
        out[fmt] = root / fmt
    generate(root / "noise", 96, 12, injections_every=0, fmt="hdf5", gps_start=GPS,
             progress=False)
    out["noise"] = root / "noise"
    return out


def strain_args(directory: Path, fmt: str = "hdf5") -> list[str]:
    return [f"{d}={directory}/{d[0]}-{d}_SYNTH-*.{fmt}" for d in DETECTORS]


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def search(trained, strain_dir, out, *extra, fmt="hdf5") -> dict:
    """The command line, in this process; its summary.json."""
    from infer.search.cli import main
    from infer.search.config import SUMMARY_FILE

    main(["--runs", str(trained), "--strain", *strain_args(strain_dir, fmt), "--out", str(out),
          "--quiet", *extra, *THREADS])
    return json.loads((Path(out) / SUMMARY_FILE).read_text())


@pytest.fixture(scope="module")
def main_run(trained, strain, tmp_path_factory):
    """HDF5, local PSD, 3 slides, the injections."""
    out = tmp_path_factory.mktemp("search") / "hdf5"
    summary = search(trained, strain["hdf5"], out, "--slides", "3", "--injections",
                     str(strain["hdf5"] / "injections.csv"))
    return out, summary


def window_scores(out: Path):
    from infer.search.scoring import WindowScores

    with np.load(out / "windows.npz") as f:
        key = json.loads(str(f["meta"]))["key"]
    return WindowScores.load(out / "windows.npz", key)


# ---------------------------------------------------------------------------------------------
# Pure parts, against hand-computed values or scipy


def test_cluster_and_half_max_centres():
    from infer.search.triggers import cluster, half_max_centres

    s = np.array([0.1, 0.9, 0.95, 0.9, 0.2, np.nan, 0.3, 0.1, 0.1, 0.1, 0.5, 0.5, 0.1])
    # Loudest within +-2: index 2; the NaN is never a trigger; index 6 beats 4 and 7, 8; the
    # tie at 10/11 goes to the earliest.
    assert cluster(s, 2).tolist() == [2, 6, 10]
    # A plateau of 8 from window 3 to 9 with a spike of 20 at 4, on a baseline of -10.
    z = np.full(20, -10.0)
    z[3:10] = 8.0
    z[4] = 20.0
    # Half height (-10 + 20) / 2 = 5: the run is windows 3..9; the ends cross 5 at 3 - 3/18
    # and 9 + 3/18 (linear between 8 and -10): the centre is 6, not the spike's 4.
    np.testing.assert_allclose(half_max_centres(z, np.array([4]), 8), [6.0])
    # reach caps the run; an unscored window ends it without interpolation.
    np.testing.assert_allclose(half_max_centres(z, np.array([4]), 2), [(3 - 3 / 18 + 6) / 2])
    z[8] = np.nan
    np.testing.assert_allclose(half_max_centres(z, np.array([4]), 8), [(3 - 3 / 18 + 7) / 2])
    # Shifting and scaling the scores (logits of another calibration) moves nothing.
    z[8] = 8.0
    np.testing.assert_allclose(half_max_centres(3 * z + 40, np.array([4]), 8), [6.0])


def test_integrate_is_the_mean_of_the_scored_windows_around_each():
    """Against a loop of numpy's nanmean over each window's +-half neighbours: unscored (NaN)
    windows count in no mean and stay unscored, the ends take what they have, half 0 is the
    identity."""
    from infer.search.triggers import integrate

    rng = np.random.default_rng(5)
    scores = rng.normal(size=(4, 60)) * 3
    scores[0, [0, 7, 8, 30]] = np.nan
    scores[2, 10:25] = np.nan
    scores[3] = np.nan
    for half in (1, 2, 4):
        want = np.full_like(scores, np.nan)
        for r in range(scores.shape[0]):
            for i in range(scores.shape[1]):
                if np.isfinite(scores[r, i]):
                    want[r, i] = np.nanmean(scores[r, max(i - half, 0):i + half + 1])
        got = integrate(scores, half)
        assert np.array_equal(np.isnan(got), np.isnan(scores))
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert integrate(scores, 0) is scores


def test_slide_rows_never_zero_lag():
    from infer.search.grid import slide_rows

    w, m = 40, 4
    assert (slide_rows(w, 0, m, 2, [1, 2]) == np.arange(w)).all()
    for k in (1, 2, 4):
        rows = slide_rows(w, k, m, 2, [1, 2])
        assert (rows[0] == np.arange(w)).all()  # H1 stays
        assert (rows[1] == (np.arange(w) - k * m) % w).all()
        assert (rows[2] == (np.arange(w) - 2 * k * m) % w).all()
        # No window of a slide pairs rows of one time: never zero lag, in any pair.
        assert (rows[0] != rows[1]).all() and (rows[0] != rows[2]).all()
        assert (rows[1] != rows[2]).all()
    assert slide_rows(w, 5, m, 2, [1, 2]) is None  # 2 * 5 * 4 = 40: V1 back at zero lag


def test_false_alarm_rates_brute_force():
    from infer.search.config import YEAR
    from infer.search.triggers import false_alarm_rates

    rng = np.random.default_rng(0)
    bg = rng.random(500)
    zero = np.r_[rng.random(50), bg[:5], 2.0]
    far, ifar = false_alarm_rates(zero, bg, 1000.0)
    brute = np.array([(bg >= z).sum() for z in zero]) / (1000.0 / YEAR)
    np.testing.assert_array_equal(far, brute)
    assert far[-1] == 0 and ifar[-1] == np.inf
    louder = brute > 0
    np.testing.assert_allclose(ifar[louder], 1 / brute[louder])
    assert (ifar[~louder] == np.inf).all()


def test_local_psd_is_scipy_median_welch():
    """The block PSD equals scipy.signal.welch(average='median') over the same segments, and
    skips the segments that touch a NaN."""
    from scipy.signal import welch

    from infer.search.grid import bad_prefix
    from infer.search.psd import LocalPSD

    rng = np.random.default_rng(1)
    fs, n = 2048, 4096
    data = rng.normal(size=(3, 40 * fs))
    lp = LocalPSD(data, bad_prefix(data), 0.25, fs, n, fs, span=16.0, min_segments=4)
    centre = 20 * fs
    psd, used = lp.psd(centre)
    a, b = lp.segments(centre)  # segment j covers [j fs, j fs + n)
    assert used == b - a == 17  # centres 12..28 s: within +-8 s, both ends included
    _, ref = welch(data[:, a * fs:(b - 1) * fs + n], fs=fs, window=("tukey", 0.25), nperseg=n,
                   noverlap=n - fs, average="median")
    np.testing.assert_allclose(psd, ref, rtol=1e-12)

    gappy = data.copy()
    gappy[1, 21 * fs + 5] = np.nan  # in segments 20 and 21 (whose centres are 21 s and 22 s)
    lp = LocalPSD(gappy, bad_prefix(gappy), 0.25, fs, n, fs, span=16.0, min_segments=4)
    psd, used = lp.psd(centre)
    assert used == 15
    segs = [data[:, j * fs:j * fs + n] for j in range(a, b) if j not in (20, 21)]
    ref = np.stack([welch(s, fs=fs, window=("tukey", 0.25), nperseg=n)[1] for s in segs])
    from preprocess.spectral import median_psd
    np.testing.assert_allclose(psd, median_psd(ref), rtol=1e-12)


def test_worker_yields_in_order_and_raises():
    from infer.search.scoring import _Worker

    def items():
        yield from range(20)
        raise ValueError("boom")

    got = []
    with pytest.raises(ValueError, match="boom"), _Worker(items) as w:
        for item in w:
            got.append(item)  # noqa: PERF402  (keeps what came before the error)
    assert got == list(range(20))

    def endless():
        while True:
            yield 1

    with _Worker(endless) as w:  # leaving early stops the thread
        next(iter(w))
    assert not w.thread.is_alive()


def test_reader_resamples_real_gwf():
    """gwpy's shipped second of S6 strain (16384 Hz, three channels in one file)."""
    from gwpy.testing.utils import TEST_GWF_FILE

    from data.strain import read_strain

    paths = {d: [Path(TEST_GWF_FILE)] for d in DETECTORS}
    s = read_strain(paths, 2048, {"V1": "V1:h_16384Hz"})
    assert s.sample_rate == 2048 and s.n == 2048 and np.isfinite(s.data).all()
    assert s.sources["H1"]["channel"] == "H1:LDAS-STRAIN" and s.sources["H1"]["resampled"]


def test_reader_joins_files_and_keeps_gaps(strain, tmp_path):
    """Consecutive files read as the one they were cut from (a comma list or a glob); a gap
    between files is NaN in that detector only; overlapping files are an error."""
    from gwpy.timeseries import TimeSeries

    from data.strain import StrainError, parse_strain, read_strain

    whole = read_strain(parse_strain(strain_args(strain["noise"])), 2048)
    h1 = TimeSeries.read(strain["noise"] / f"H-H1_SYNTH-{GPS}-96.hdf5", format="hdf5")
    pieces = {"cut": [(0, 40), (40, 96)], "gap": [(0, 40), (50, 96)], "overlap": [(0, 50),
                                                                                  (40, 96)]}
    for name, spans in pieces.items():
        (tmp_path / name).mkdir()
        for a, b in spans:
            h1.crop(GPS + a, GPS + b).write(tmp_path / name / f"H-H1_{a}.hdf5", format="hdf5")
    others = strain_args(strain["noise"])[1:]
    cut = read_strain(parse_strain([f"H1={tmp_path}/cut/H-H1_0.hdf5,{tmp_path}/cut/H-H1_40.hdf5",
                                    *others]), 2048)
    assert cut.t0 == whole.t0 and len(cut.sources["H1"]["segments"]) == 1
    np.testing.assert_array_equal(cut.data, whole.data)
    gap = read_strain(parse_strain([f"H1={tmp_path}/gap/H-H1_*.hdf5", *others]), 2048)
    missing = ~np.isfinite(gap.data)
    assert missing[1:].sum() == 0 and missing[0].sum() == 10 * 2048
    assert missing[0, 40 * 2048:50 * 2048].all()
    np.testing.assert_array_equal(gap.data[:, ~missing[0]], whole.data[:, ~missing[0]])
    with pytest.raises(StrainError, match="overlapping files"):
        read_strain(parse_strain([f"H1={tmp_path}/overlap/H-H1_*.hdf5", *others]), 2048)


# ---------------------------------------------------------------------------------------------
# With the trained model


def test_model_is_trained(trained):
    from data.rundir import read_card

    assert read_card(trained / "fold0").best_auc > 0.95


def test_local_psd_matches_training_psd(trained, strain):
    """On stationary noise the median-Welch PSD has the training PSD's scale: within a few %
    over 20-1000 Hz and within 8 % in each of three bands."""
    from data.rundir import read_card
    from data.strain import parse_strain, read_strain
    from infer.search.grid import bad_prefix
    from infer.search.psd import LocalPSD

    card = read_card(trained / "fold0")
    train_psd = np.asarray(card.psd)
    s = read_strain(parse_strain(strain_args(strain["noise"])), 2048)
    lp = LocalPSD(s.data, bad_prefix(s.data), card.preprocess_config["whiten"]["alpha"], 2048,
                  4096, 2048, span=64.0, min_segments=16)
    psd, used = lp.psd(48 * 2048)
    assert psd.shape == train_psd.shape == (3, 2049) and used == 65
    f = np.linspace(0, 1024, 2049)
    ratio = psd / train_psd
    band = (f >= 20) & (f < 1000)
    assert np.all(np.abs(ratio[:, band].mean(axis=1) - 1) < 0.03), ratio[:, band].mean(axis=1)
    for lo, hi in ((20, 64), (64, 256), (256, 1000)):
        b = (f >= lo) & (f < hi)
        assert np.all(np.abs(ratio[:, b].mean(axis=1) - 1) < 0.08), (lo, ratio[:, b].mean(1))


def test_injections_found_and_outputs(main_run, trained, strain):
    out, summary = main_run
    found = read_csv(out / "found.csv")
    injections = read_csv(strain["hdf5"] / "injections.csv")
    assert len(found) == len(injections) >= 10
    for row in found:
        assert row["analysed"] == "1"
        assert row["trigger_gps_time"], row
        assert abs(float(row["trigger_gps_time"]) - float(row["gps_time"])) <= 0.3, row
    # 285 s of background resolve FARs down to 1.1e5 per year: 1/day .. 1/year are not
    # resolved, so left empty (every matched trigger here is louder than all background).
    assert summary["livetime"]["far_resolution_per_year"] > 365.25
    assert summary["injections"]["found"] == {"1/day": None, "1/month": None, "1/year": None}
    for row in found:
        assert row["found_1_per_day"] == row["found_1_per_year"] == ""
    # With a looser threshold, found iff the matched trigger's FAR is at or below it.
    again = search(trained, strain["hdf5"], out.parent / "again", "--slides", "3",
                   "--injections", str(strain["hdf5"] / "injections.csv"),
                   "far_thresholds=[1/minute,10/minute]")
    assert all(v is not None for v in again["injections"]["found"].values())
    for row in read_csv(out.parent / "again" / "found.csv"):
        far = float(row["trigger_far_per_year"])
        assert row["found_1_per_minute"] == str(int(far <= 525960.0)), row
        assert row["found_10_per_minute"] == str(int(far <= 5259600.0)), row
    timing = summary["injections"]["timing"]
    assert timing["n"] == len(found) and timing["p95_abs_s"] <= 0.3
    assert timing["found"] == {}  # no threshold resolved, no clock of found ones
    # The clock of the found ones, per resolved threshold, against found.csv's own columns.
    rows = [r for r in read_csv(out.parent / "again" / "found.csv") if float(r["snr"]) >= 8]
    assert again["injections"]["timing"]["found"], "nothing found at 10/minute"
    for spec, col in (("1/minute", "found_1_per_minute"), ("10/minute", "found_10_per_minute")):
        err = np.array([abs(float(r["trigger_gps_time"]) - float(r["gps_time"]))
                        for r in rows if r[col] == "1"])
        if not err.size:
            assert spec not in again["injections"]["timing"]["found"]
            continue
        got = again["injections"]["timing"]["found"][spec]
        assert got["n"] == err.size
        np.testing.assert_allclose([got["median_abs_s"], got["p95_abs_s"], got["max_abs_s"]],
                                   [np.median(err), np.percentile(err, 95), err.max()], atol=2e-6)
    assert summary["injections"]["with_trigger"] == len(found)
    assert summary["windows"]["analysed"] == summary["windows"]["grid"]  # no gap
    assert summary["livetime"]["zero_lag_s"] == summary["windows"]["analysed"] * 0.25
    for name in ("timeline.png", "efficiency.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for stage in ("read", "psd", "transform", "model", "model_slides", "clustering"):
        assert summary["seconds"][stage] > 0


def test_far_is_a_count_over_the_background_list(main_run):
    from infer.search.config import YEAR

    out, summary = main_run
    background = np.array([float(r["score"]) for r in read_csv(out / "background.csv")])
    assert background.size == summary["triggers"]["background"] > 0
    years = summary["livetime"]["background_s"] / YEAR
    triggers = read_csv(out / "triggers.csv")
    assert len(triggers) == summary["triggers"]["zero_lag"]
    for row in triggers:
        count = int((background >= float(row["score"])).sum())
        assert float(row["far_per_year"]) == pytest.approx(count / years, rel=1e-12)
        ifar = float(row["ifar_years"])
        assert ifar == pytest.approx(years / count, rel=1e-12) if count else ifar == np.inf
    # The background livetime: the slid windows left after the injection veto, x stride.
    ws = window_scores(out)
    assert summary["livetime"]["background_s"] < 3 * summary["livetime"]["zero_lag_s"]
    assert np.isfinite(ws.scores[1:]).sum() == 3 * ws.counts["analysed"]  # before the veto


def _brute_force_image_rows(trained, data: np.ndarray, starts: list[int], psds) -> torch.Tensor:
    """Float16 images of the 2-s windows of ``data`` starting at sample ``starts``, each
    whitened with its own PSD through the model's own transform."""
    from infer.predict.checkpoints import load_fold
    from infer.predict.inputs import build_transform

    fold = load_fold(trained / "fold0")
    images = []
    with torch.inference_mode():
        for start, psd in zip(starts, psds):
            t = build_transform(fold, psd)
            x = torch.from_numpy(np.ascontiguousarray(data[None, :, start:start + 4096]))
            images.append(t(x)[0].to(torch.float16))
    return fold, torch.cat(images)


def _model_logit(fold, images: torch.Tensor) -> np.ndarray:
    from data.inputs.images import model_input

    stats = fold.card.channel_stats
    with torch.inference_mode():
        x = model_input(images, "images", stats["mean"], stats["std"], fold.card.image_size)
        return fold.model(x).float().view(-1).numpy().astype(np.float64)


def _local_psd(s, n_windows: int, k: int) -> np.ndarray:
    """The search's default local PSD of window ``k`` by scipy: its block of 64 windows (16 s),
    median Welch over the 2-s Tukey segments every 1 s whose centres lie within 32 s of the
    block's centre."""
    from scipy.signal import welch

    fs, stride = 2048, 512
    blk = k // 64
    first, last = blk * 64, min(blk * 64 + 63, n_windows - 1)
    centre = (first * stride + last * stride + 4096) / 2
    j0 = max(int(np.ceil((centre - 32 * fs - 2048) / fs)), 0)
    j1 = min(int(np.floor((centre + 32 * fs - 2048) / fs)), (s.n - 4096) // fs)
    return welch(s.data[:, j0 * fs:j1 * fs + 4096], fs=fs, window=("tukey", 0.25),
                 nperseg=4096, noverlap=4096 - fs, average="median")[1]


def test_slides_score_shifted_data_and_never_zero_lag(main_run, trained, strain, tmp_path):
    """A slid window's score is the model's on H1 at t, L1 at t - k step and V1 at
    t - 2 k step (each whitened with the PSD of its own time; scipy's median Welch here); a
    zero-lag score is the model's on the unshifted data; the zero lag of a run with slides
    equals that of a run without."""

    from data.strain import parse_strain, read_strain


    out, _ = main_run
    ws = window_scores(out)
    (a, b), = ws.rings
    w = b - a
    s = read_strain(parse_strain(strain_args(strain["hdf5"])), 2048)
    stride = 512

    def psd_at(k):
        return _local_psd(s, ws.grid.n, k)

    for k_slide, win in ((0, 100), (0, 300), (1, 150), (3, 20), (2, w - 3)):
        rows = [(win - i * k_slide * 4) % w + a for i in range(3)]  # H1, L1, V1 windows
        fold, images = _brute_force_image_rows(trained, s.data, [r * stride for r in rows],
                                               [psd_at(r) for r in rows])
        slid = torch.stack([images[d, d] for d in range(3)])[None]
        z = _model_logit(fold, slid)[0]
        # Equal up to float32 rounding (batches of another size; a float16 rounding flips).
        got = ws.scores[k_slide, a + win]
        assert got == pytest.approx(z, abs=2e-3), (k_slide, win)
        if k_slide:  # and not the zero-lag score of that window
            assert abs(got - ws.scores[0, a + win]) > 0.05, (k_slide, win)
    # Slides leave zero lag alone: the same scores without them.
    plain = search(trained, strain["hdf5"], tmp_path / "plain")
    ws0 = window_scores(tmp_path / "plain")
    assert plain["slides"]["k"] == 0 and ws0.scores.shape[0] == 1
    np.testing.assert_array_equal(ws0.scores[0], ws.scores[0])


def test_hard_negatives_are_the_loudest_slid_windows(main_run, trained, strain, tmp_path):
    """hard_negatives=N (reusing the window scores): hard_negatives.csv holds the N loudest
    background triggers, loudest first, as background.csv has them, and each detector's window
    start: the model on those three windows, each whitened with the PSD of its own time,
    scores what the search did (so training on them sees what the search saw)."""
    import shutil

    from data.strain import parse_strain, read_strain

    out, _ = main_run
    copy = tmp_path / "hn"
    shutil.copytree(out, copy)
    summary = search(trained, strain["hdf5"], copy, "--slides", "3", "--injections",
                     str(strain["hdf5"] / "injections.csv"), "hard_negatives=5")
    assert summary["cached"] and "hard_negatives.csv" in summary["files"]
    rows = read_csv(copy / "hard_negatives.csv")
    loudest = sorted((float(r["score"]) for r in read_csv(copy / "background.csv")),
                     reverse=True)[:5]
    assert [float(r["score"]) for r in rows] == loudest
    s = read_strain(parse_strain(strain_args(strain["hdf5"])), 2048)
    n_windows = window_scores(copy).grid.n
    for r in rows:
        starts = [round((float(r[d]) - s.t0) * 2048) for d in DETECTORS]
        assert int(r["slide"]) >= 1 and len(set(starts)) == 3
        fold, images = _brute_force_image_rows(
            trained, s.data, starts, [_local_psd(s, n_windows, st // 512) for st in starts])
        z = _model_logit(fold, torch.stack([images[d, d] for d in range(3)])[None])[0]
        assert float(r["score"]) == pytest.approx(z, abs=2e-3), r
    # Not written unless asked for.
    assert "hard_negatives.csv" not in main_run[1]["files"]


def test_gwf_and_hdf5_give_identical_scores(main_run, trained, strain, tmp_path):
    out, _ = main_run
    search(trained, strain["gwf"], tmp_path / "gwf", fmt="gwf")
    np.testing.assert_array_equal(window_scores(tmp_path / "gwf").scores[0],
                                  window_scores(out).scores[0])


def test_gap_drops_exactly_the_windows_that_touch_it(main_run, trained, strain, tmp_path):
    from gwpy.timeseries import TimeSeries

    out, _ = main_run
    gap_dir = tmp_path / "gap"
    gap_dir.mkdir()
    gap = (GPS + 100.3, GPS + 103.1)
    for d in DETECTORS:
        name = f"{d[0]}-{d}_SYNTH-{GPS}-{DURATION}.hdf5"
        series = TimeSeries.read(strain["hdf5"] / name, format="hdf5")
        if d == "L1":
            t = series.times.value
            series.value[(t >= gap[0]) & (t < gap[1])] = np.nan
        series.write(gap_dir / name, format="hdf5")
    summary = search(trained, gap_dir, tmp_path / "gap_out")

    whole = window_scores(out)
    holed = window_scores(tmp_path / "gap_out")
    starts = whole.grid.starts(np.arange(whole.grid.n))
    touches = (starts + 2.0 > gap[0]) & (starts < gap[1])
    assert touches.sum() == 19  # starts 98.5, 98.75, ..., 103.0 s after GPS
    before = np.flatnonzero(np.isfinite(whole.scores[0]))
    after = np.flatnonzero(np.isfinite(holed.scores[0]))
    np.testing.assert_array_equal(after, np.setdiff1d(before, np.flatnonzero(touches)))
    assert summary["windows"]["clean"] == whole.grid.n - 19
    # Far from the gap (blocks whose PSD span does not reach it) the scores are the same.
    far = np.abs(starts - gap[0]) > 70
    np.testing.assert_allclose(holed.scores[0, far], whole.scores[0, far], rtol=1e-5, atol=1e-9)


def test_rerun_reuses_window_scores(main_run, trained, strain, tmp_path):
    import shutil

    out, first = main_run
    shutil.copy(out / "windows.npz", tmp_path / "windows.npz")
    again = search(trained, strain["hdf5"], tmp_path, "--slides", "3", "--injections",
                   str(strain["hdf5"] / "injections.csv"), "cluster=1.0")
    assert again["cached"] and not first["cached"]
    assert again["triggers"]["zero_lag"] >= first["triggers"]["zero_lag"]


def test_waves_model_goes_through_model_input(trained, strain, tmp_path):
    """A fold reading whitened strain ("waves") gets the float16 whitened window normalised by
    its card's statistics, and no CQT is computed."""
    import dataclasses

    from data.config import load_config
    from data.strain import parse_strain, read_strain
    from infer.predict.checkpoints import Fold, load_fold
    from infer.predict.inputs import build_transform
    from infer.search.config import SearchConfig
    from infer.search.scoring import score_windows

    images_fold = load_fold(trained / "fold0")
    card = dataclasses.replace(images_fold.card, input="waves",
                               channel_stats={"mean": [0.1, 0.0, -0.1], "std": [1.0, 1.1, 0.9]})
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv1d(3, 4, 64, stride=32), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten(),
                                torch.nn.Linear(4, 1)).eval()
    fold = Fold(path=tmp_path / "fold0", card=card, model=model)
    s = read_strain(parse_strain(strain_args(strain["noise"])), 2048)
    cfg = load_config(SearchConfig, None, ["psd.source=training", "stride=1.0"])
    ws = score_windows(s, [fold], cfg, progress=False)
    whiten = build_transform(images_fold).whiten
    with torch.inference_mode():
        for k in (0, 40, ws.grid.n - 1):
            x = torch.from_numpy(np.ascontiguousarray(s.data[None, :, k * 2048:k * 2048 + 4096]))
            waves = whiten(x).to(torch.float16).float()
            m = torch.tensor(card.channel_stats["mean"]).view(1, 3, 1)
            sd = torch.tensor(card.channel_stats["std"]).view(1, 3, 1)
            logit = float(model((waves - m) / sd))
            assert ws.scores[0, k] == pytest.approx(logit, rel=1e-6, abs=1e-6)


def test_background_from_another_stretch(trained, strain, tmp_path, capsys):
    """background=[DIR]: the FARs of a search without slides come from another search's
    slides over noise alone (MLGWSC-1's background file): a count over that search's
    background.csv per its livetime; a search that ranks otherwise is refused. The noise
    search keeps no window scores (save_windows=false): a background needs none."""
    from infer.search.config import YEAR

    bg = search(trained, strain["noise"], tmp_path / "bg", "--slides", "4", "save_windows=false")
    assert not (tmp_path / "bg" / "windows.npz").exists()
    assert "windows.npz" not in bg["files"] and "background.csv" in bg["files"]
    fg = search(trained, strain["hdf5"], tmp_path / "fg", "--injections",
                str(strain["hdf5"] / "injections.csv"), f"background=[{tmp_path / 'bg'}]")
    assert fg["slides"]["k"] == 0 and fg["livetime"]["own_background_s"] == 0
    live = bg["livetime"]["background_s"]
    assert fg["livetime"]["background_s"] == live > 0
    scores = np.array([float(r["score"]) for r in read_csv(tmp_path / "bg" / "background.csv")])
    for row in read_csv(tmp_path / "fg" / "triggers.csv"):
        count = (scores >= float(row["score"])).sum()
        assert float(row["far_per_year"]) == pytest.approx(count / (live / YEAR), rel=1e-12)
    # Another stride ranks other windows: refused, naming the key.
    with pytest.raises(SystemExit) as e:
        search(trained, strain["hdf5"], tmp_path / "other", "--stride", "0.5",
               f"background=[{tmp_path / 'bg'}]")
    assert e.value.code == 2
    assert "background:" in capsys.readouterr().err


def test_integrated_ranking_and_its_background(main_run, trained, strain, tmp_path, capsys):
    """integrate=1.0 (stride 0.25 s: 5 windows): the zero-lag triggers and the background are
    those of the window logits averaged over +-2 windows (brute force from windows.npz: the
    cached scores, not scored again), vetoed slid windows taking no part; a background must be
    integrated alike: refused otherwise, naming it."""
    from infer.search.config import SearchConfig
    from infer.search.injections import read_injections, veto_injections
    from infer.search.triggers import cluster

    out, _ = main_run
    shutil.copy(out / "windows.npz", tmp_path / "windows.npz")
    got = search(trained, strain["hdf5"], tmp_path, "--slides", "3", "--injections",
                 str(strain["hdf5"] / "injections.csv"), "integrate=1.0")
    assert got["cached"]
    ws = window_scores(out)
    table = read_injections(strain["hdf5"] / "injections.csv")
    vetoed, _ = veto_injections(ws, table["gps_time"], SearchConfig(slides=3))
    raw = vetoed.scores
    brute = np.full_like(raw, np.nan)
    for k in range(raw.shape[0]):
        for i in np.flatnonzero(np.isfinite(raw[k])):
            brute[k, i] = np.nanmean(raw[k, max(i - 2, 0):i + 3])
    radius = round(2.0 / 0.25)  # cluster: 2 s
    want = [np.sort(brute[k, cluster(brute[k], radius)]) for k in range(raw.shape[0])]
    zero = np.sort([float(r["score"]) for r in read_csv(tmp_path / "triggers.csv")])
    np.testing.assert_allclose(zero, want[0], rtol=0, atol=1e-9)
    bg = np.sort([float(r["score"]) for r in read_csv(tmp_path / "background.csv")])
    np.testing.assert_allclose(bg, np.sort(np.concatenate(want[1:])), rtol=0, atol=1e-9)
    assert got["injections"]["with_trigger"] >= 0.9 * got["injections"]["analysed"]

    bg_dir = tmp_path / "bg"
    search(trained, strain["noise"], bg_dir, "--slides", "2", "save_windows=false",
           "integrate=1.0")
    with pytest.raises(SystemExit) as e:  # ranked on the window's own logit: refused
        search(trained, strain["hdf5"], tmp_path / "fg0", f"background=[{bg_dir}]")
    assert e.value.code == 2 and "ranked windows otherwise" in capsys.readouterr().err
    fg = search(trained, strain["hdf5"], tmp_path / "fg1", f"background=[{bg_dir}]",
                "integrate=1.0")
    assert fg["livetime"]["background_s"] > 0


class _Whole(torch.nn.Module):
    """A model run whole: hides the wrapped model's split at the detectors from the search."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)


def test_split_model_slides_equal_the_whole_model(trained, strain):
    """g2net_1d_coinc's slides run only its fusion head on features of other windows: the
    scores, at zero lag and in every slide, equal those of the same model run whole on the
    slid whitened rows (the path checked against brute force above)."""
    import dataclasses

    import timm

    import data.models  # noqa: F401  (registers the 1D CNNs)
    from data.config import load_config
    from data.strain import parse_strain, read_strain
    from infer.predict.checkpoints import Fold, load_fold
    from infer.search.config import SearchConfig
    from infer.search.scoring import score_windows, splits_at_detectors

    card = dataclasses.replace(load_fold(trained / "fold0").card, input="waves",
                               model_name="g2net_1d_coinc",
                               channel_stats={"mean": [0.0] * 3, "std": [1.0] * 3})
    torch.manual_seed(0)
    model = timm.create_model("g2net_1d_coinc", num_classes=1, in_chans=3).eval()
    with torch.no_grad():  # random weights score noise alike to 1e-4: spread the logits
        model.get_classifier().weight.mul_(1000)
    assert splits_at_detectors(model) and not splits_at_detectors(_Whole(model))
    s = read_strain(parse_strain(strain_args(strain["noise"])), 2048)
    cfg = load_config(SearchConfig, None, ["psd.source=training", "stride=0.5", "slides=3",
                                           "slide_batch_size=7"])
    split, whole = (score_windows(s, [Fold(path=trained, card=card, model=m)], cfg,
                                  progress=False).scores for m in (model, _Whole(model)))
    assert np.isfinite(split).sum() == np.isfinite(whole).sum() > 4 * 150
    assert np.nanstd(whole) > 0.05
    np.testing.assert_allclose(split, whole, atol=1e-3)
    assert np.abs(split[1:] - split[:1]).max() > 0.05  # slides are not zero lag


def _scaled_run(trained, run: Path, factor: float) -> Path:
    """A copy of the trained run whose logits are ``factor`` times the original's (its
    classifier's weight and bias scaled)."""
    from data.rundir import write_fold
    from infer.predict.checkpoints import load_fold

    fold = load_fold(trained / "fold0")
    head = fold.model.get_classifier()
    with torch.no_grad():
        head.weight.mul_(factor)
        head.bias.mul_(factor)
    write_fold(run / "fold0", fold.card, fold.model.state_dict())
    return run


def test_logit_ranking_survives_saturation(main_run, trained, strain, tmp_path):
    """Logits 100 times larger saturate the probabilities (windows at exactly 1.0 in float64
    tie) but change no trigger, no FAR and no found injection: the search ranks on logits."""
    loud_run = _scaled_run(trained, tmp_path / "loud", 100)
    search(loud_run, strain["hdf5"], tmp_path / "out", "--slides", "3",
           "--injections", str(strain["hdf5"] / "injections.csv"))
    out, _ = main_run
    plain, loud = window_scores(out).scores, window_scores(tmp_path / "out").scores
    ok = np.isfinite(plain[0])
    with np.errstate(over="ignore"):
        saturated = (1 / (1 + np.exp(-loud[0][ok])) == 1.0).sum()
    assert saturated >= 20, saturated
    np.testing.assert_allclose(loud, 100 * plain, rtol=1e-3, atol=1e-2)
    for name in ("triggers.csv", "found.csv"):
        a, b = read_csv(out / name), read_csv(tmp_path / "out" / name)
        assert len(a) == len(b)
        for key in ("far_per_year", "trigger_far_per_year"):
            assert [r.get(key) for r in a] == [r.get(key) for r in b], (name, key)
        for key in ("gps_time", "trigger_gps_time"):  # the interpolation's rounding: 1 us
            ta, tb = ([float(r.get(key) or "nan") for r in rows] for rows in (a, b))
            np.testing.assert_allclose(ta, tb, rtol=0, atol=1e-5)
    # The loud triggers are all told apart: no two share a score.
    scores = [float(r["score"]) for r in read_csv(tmp_path / "out" / "triggers.csv")]
    assert len(set(scores)) == len(scores)


def test_several_runs_average_their_logits(main_run, trained, strain, tmp_path):
    """--runs A B: each run's fold-averaged logit, then their mean. B's logits are 3 times A's
    (its head scaled), so the pair scores 2 times A alone, window by window."""
    from infer.search.cli import main

    triple = _scaled_run(trained, tmp_path / "triple", 3)
    main(["--runs", str(trained), str(triple), "--strain",
          *strain_args(strain["hdf5"]), "--out", str(tmp_path / "pair"), "--quiet", "--slides",
          "3", *THREADS])
    summary = json.loads((tmp_path / "pair" / "summary.json").read_text())
    assert len(summary["folds"]) == 2
    pair, one = window_scores(tmp_path / "pair").scores, window_scores(main_run[0]).scores
    np.testing.assert_allclose(pair, 2 * one, rtol=1e-4, atol=1e-3)


def test_combined_searches_are_the_search_of_all_their_runs(main_run, trained, strain,
                                                            tmp_path, capsys):
    """g2net-search-combine of a search of --runs A B (B: 3 x A's logits) and one of C alone
    (5 x A's) is --runs A B C: every window of every slide scores 3 x A's (the mean over the
    three runs; an unweighted mean of the two searches would give 3.5 x), with the same
    triggers, FARs, found injections and ranking key as that search made directly. It refuses
    a run given twice and a search with other score settings."""
    from infer.search.cli import main
    from infer.search.combine import main as combine_main

    inj = str(strain["hdf5"] / "injections.csv")
    common = ["--strain", *strain_args(strain["hdf5"]), "--quiet", "--slides", "3",
              "--injections", inj, *THREADS]
    b, c = (_scaled_run(trained, tmp_path / n, f) for n, f in (("b", 3), ("c", 5)))
    main(["--runs", str(trained), str(b), "--out", str(tmp_path / "ab"), *common])
    main(["--runs", str(c), "--out", str(tmp_path / "c"), *common])
    main(["--runs", str(trained), str(b), str(c), "--out", str(tmp_path / "abc"), *common])
    capsys.readouterr()
    combine_main(["--searches", str(tmp_path / "ab"), str(tmp_path / "c"), "--out",
                  str(tmp_path / "combined"), "--injections", inj])
    assert "triggers" in capsys.readouterr().out
    one, direct = window_scores(main_run[0]).scores, window_scores(tmp_path / "abc").scores
    combined = window_scores(tmp_path / "combined").scores
    np.testing.assert_allclose(direct, 3 * one, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(combined, direct, rtol=1e-6, atol=1e-6)
    for name in ("triggers.csv", "found.csv", "background.csv"):
        a, d = read_csv(tmp_path / "combined" / name), read_csv(tmp_path / "abc" / name)
        assert len(a) == len(d) > 0, name
        for key in ("far_per_year", "trigger_far_per_year", "found_1_per_day"):
            assert [r.get(key) for r in a] == [r.get(key) for r in d], (name, key)
    s_comb, s_direct = (json.loads((tmp_path / n / "summary.json").read_text())
                        for n in ("combined", "abc"))
    assert s_comb["ranking_key"] == s_direct["ranking_key"]
    assert s_comb["injections"]["found"] == s_direct["injections"]["found"]

    with pytest.raises(SystemExit):  # the same run in two searches
        combine_main(["--searches", str(tmp_path / "ab"), str(tmp_path / "abc"), "--out",
                      str(tmp_path / "twice")])
    assert "each run is combined once" in capsys.readouterr().err
    other = tmp_path / "other"
    shutil.copytree(tmp_path / "c", other)
    cfg = (other / "search.yaml").read_text()
    assert "stride: 0.25" in cfg
    (other / "search.yaml").write_text(cfg.replace("stride: 0.25", "stride: 0.5"))
    with pytest.raises(SystemExit):
        combine_main(["--searches", str(tmp_path / "ab"), str(other), "--out",
                      str(tmp_path / "other_out")])
    err = capsys.readouterr().err
    assert err.startswith("g2net-search-combine: error: ") and "stride" in err, err
    assert not (tmp_path / "twice").exists() and not (tmp_path / "other_out").exists()


def test_trigger_time_on_loud_and_quiet_injections(trained, tmp_path):
    """The clock (the centre of a trigger's peak + 1.1 s) on injections at network SNR 30-50
    and 14-18 (near this small test model's threshold): every loud one has a trigger within
    0.3 s of its merger, median error at most 0.1 s; every quiet one the model finds (a
    trigger within 1 s louder than any trigger of noise-only strain) within 0.5 s, median at
    most 0.2 s. (The search model's clock, at SNR 8-50: docs/search.md.)"""
    from data.sim.long_strain import generate

    errors = {}
    for name, snr, seed in (("loud", "uniform:30,50", 21), ("quiet", "uniform:14,18", 22),
                            ("noise", None, 23)):
        kw = {"snr": snr, "injections_every": 16} if snr else {"injections_every": 0}
        generate(tmp_path / name, 128, seed, fmt="hdf5", gps_start=GPS, progress=False, **kw)
        search(trained, tmp_path / name, tmp_path / f"out_{name}", *(
            ["--injections", str(tmp_path / name / "injections.csv")] if snr else []),
            "match_window=1.0")
        if snr:
            errors[name] = [(float(r["trigger_gps_time"]) - float(r["gps_time"]),
                             float(r["trigger_score"])) if r["trigger_gps_time"] else (np.inf, 0)
                            for r in read_csv(tmp_path / f"out_{name}" / "found.csv")]
    noise = max(float(r["score"]) for r in read_csv(tmp_path / "out_noise" / "triggers.csv"))
    loud = np.array([e for e, _ in errors["loud"]])
    assert loud.size >= 6 and (np.abs(loud) <= 0.3).all(), loud
    assert np.median(np.abs(loud)) <= 0.1, loud
    quiet = np.array([e for e, z in errors["quiet"] if z > noise])
    assert quiet.size >= 3 and (np.abs(quiet) <= 0.5).all(), (quiet, errors["quiet"], noise)
    assert np.median(np.abs(quiet)) <= 0.2, quiet


class _Power(torch.nn.Module):
    """A split model with a closed form: each detector's feature is its window's mean square,
    the fusion the sum of their logs."""

    def forward_detectors(self, x):
        return x.pow(2).mean(-1)[:, :, None, None]

    def forward_fusion(self, f):
        return f.flatten(1).log().sum(1, keepdim=True)

    def forward(self, x):
        return self.forward_fusion(self.forward_detectors(x))


def test_far_against_brute_force_at_a_month_of_background(trained, tmp_path):
    """1,150 slides of 2,400 s of noise (stride and slide step 1 s): a month of background.
    Every zero-lag trigger's FAR equals a brute-force count: the slid statistic computed from
    each window's whitened rows directly (numpy's rolls, not the search's slide rows), local
    maxima found by scipy's maximum filter, background triggers at least as loud per year
    (up to the float32 rounding of the search's scores)."""
    import dataclasses

    from scipy.ndimage import maximum_filter1d

    from data.config import load_config
    from data.sim.long_strain import generate
    from data.strain import parse_strain, read_strain
    from infer.predict.checkpoints import Fold, load_fold
    from infer.predict.inputs import build_transform
    from infer.search.config import FAR_UNITS, YEAR, SearchConfig
    from infer.search.scoring import score_windows
    from infer.search.triggers import false_alarm_rates, find_triggers, livetimes

    generate(tmp_path / "noise", 2400, 31, injections_every=0, fmt="hdf5", gps_start=GPS,
             progress=False)
    images_fold = load_fold(trained / "fold0")
    card = dataclasses.replace(images_fold.card, input="waves",
                               channel_stats={"mean": [0.0] * 3, "std": [1.0] * 3})
    s = read_strain(parse_strain(strain_args(tmp_path / "noise")), 2048)
    cfg = load_config(SearchConfig, None, ["psd.source=training", "stride=1.0", "slides=1150",
                                           "cluster=2.0"])
    ws = score_windows(s, [Fold(path=trained, card=card, model=_Power())], cfg, progress=False)
    live = livetimes(ws)
    assert live[1:].sum() >= FAR_UNITS["month"]  # a month of background
    zero, background = find_triggers(ws, cfg, cfg.trigger_offset)
    far, _ = false_alarm_rates(zero.score, background.score, live[1:].sum())

    # Brute force: each window's rows whitened, rounded to float16 as the search holds them.
    whiten = build_transform(images_fold).whiten
    w = ws.grid.n
    power = np.empty((3, w))
    with torch.inference_mode():
        for a in range(0, w, 256):
            x = torch.from_numpy(np.stack([s.data[:, k * 2048:k * 2048 + 4096]
                                           for k in range(a, min(a + 256, w))]))
            white = whiten(x).to(torch.float16).float()
            power[:, a:a + x.shape[0]] = white.pow(2).mean(-1).double().numpy().T
    logp = np.log(power)
    np.testing.assert_allclose(ws.scores[0], logp.sum(0), rtol=0, atol=1e-4)
    k = np.arange(1, 1151)[:, None]
    cols = np.arange(w)[None, :]
    slid = logp[0][cols] + logp[1][(cols - k) % w] + logp[2][(cols - 2 * k) % w]  # (K, W)
    np.testing.assert_allclose(ws.scores[1:], slid, rtol=0, atol=1e-4)
    peak = maximum_filter1d(slid, 5, axis=1, mode="constant", cval=-np.inf) == slid
    bg = np.sort(slid[peak])
    years = 1150 * w / YEAR
    brute = (bg.size - np.searchsorted(bg, zero.score, side="left")) / years
    # The search's scores are float32 (the brute force's float64): two neighbouring windows
    # within ~1e-6 may swap which is the local maximum, so a FAR may differ by a count or two.
    assert abs(background.score.size - bg.size) <= 0.001 * bg.size
    assert np.abs(far - brute).max() <= 2.5 / years
    assert np.mean(np.isclose(far, brute, rtol=1e-9, atol=0)) >= 0.8
    assert YEAR / live[1:].sum() <= 12  # FARs resolved down to 1/month


def test_transform_thread_changes_no_score(trained, strain):
    from data.config import load_config
    from data.strain import parse_strain, read_strain
    from infer.predict.checkpoints import load_fold
    from infer.search.config import SearchConfig
    from infer.search.scoring import score_windows

    fold = load_fold(trained / "fold0")
    s = read_strain(parse_strain(strain_args(strain["noise"])), 2048)
    got = [score_windows(s, [fold], load_config(SearchConfig, None, [
        "stride=0.5", "slides=2", f"transform_thread={flag}"]), progress=False).scores
           for flag in ("true", "false")]
    assert np.isfinite(got[0]).all()
    np.testing.assert_array_equal(got[0], got[1])


def test_frozen_channels_last_model_scores_as_the_plain_one(trained, strain, caplog):
    """The CPU speed-ups (NHWC images, a TorchScript-frozen model) change scores by float32
    rounding only, at every batch size the search makes; a model tracing cannot take runs
    unfrozen, with a warning."""
    from data.config import load_config
    from data.strain import parse_strain, read_strain
    from infer.predict.checkpoints import load_fold
    from infer.search.config import SearchConfig
    from infer.search.scoring import frozen, score_windows

    fold = load_fold(trained / "fold0")
    s = read_strain(parse_strain(strain_args(strain["noise"])), 2048)
    fast, plain = (score_windows(s, [fold], load_config(SearchConfig, None, [
        "stride=0.5", "slides=2", "batch_size=48", f"channels_last={flag}", f"freeze={flag}"]),
        progress=False).scores for flag in ("true", "false"))
    assert fast.shape[1] % 48 and np.isfinite(fast).all()  # a last, smaller batch too
    np.testing.assert_allclose(fast, plain, rtol=0, atol=1e-4)
    assert np.abs(fast - plain).max() > 0  # the frozen model did run

    x = torch.randn(4, 3, 46, 129)  # the default CQT image
    assert isinstance(frozen(fold.model.eval(), x), torch.jit.ScriptModule)

    class Untraceable(torch.nn.Module):
        def forward(self, x):
            return float(x.sum())

    class BranchesOnTheBatch(torch.nn.Module):  # a trace would bake in the first branch
        def forward(self, x):
            return x.sum(dim=(1, 2, 3)) if x.shape[0] >= 4 else -x.sum(dim=(1, 2, 3))

    for model in (Untraceable(), BranchesOnTheBatch()):
        caplog.clear()
        with caplog.at_level("WARNING"):
            assert frozen(model, x, "odd") is model
        assert "odd: not frozen" in caplog.text


# ---------------------------------------------------------------------------------------------
# Bad input: a clear error naming the file or key, before any scoring


@pytest.fixture
def no_scoring(monkeypatch):
    import infer.search.pipeline

    def refuse(*args, **kwargs):
        raise AssertionError("scoring started despite bad input")

    monkeypatch.setattr(infer.search.pipeline, "score_windows", refuse)


def _write(directory: Path, d: str, values: np.ndarray, t0: float, rate: float) -> Path:
    from gwpy.timeseries import TimeSeries

    directory.mkdir(exist_ok=True)
    path = directory / f"{d[0]}-{d}_X.hdf5"
    TimeSeries(values, t0=t0, sample_rate=rate, name=f"{d}:SYNTH-STRAIN").write(
        path, format="hdf5", path=f"{d}:SYNTH-STRAIN")
    return path


def _error(capsys, argv: list[str]) -> str:
    from infer.search.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv + ["--quiet"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("g2net-search: error: "), err
    return err


def _edit_card(trained, tmp_path, **changes) -> Path:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained / "fold0", run / "fold0", ignore=shutil.ignore_patterns("checkp*"))
    card = json.loads((run / "fold0" / "model.json").read_text())
    for key, value in changes.items():
        node = card
        *parents, last = key.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    (run / "fold0" / "model.json").write_text(json.dumps(card))
    return run


def test_bad_inputs_are_named(trained, strain, tmp_path, capsys, no_scoring):
    good = strain_args(strain["hdf5"])
    base = ["--runs", str(trained), "--out", str(tmp_path / "out")]
    rng = np.random.default_rng(0)

    err = _error(capsys, base + ["--strain", *good[:2]])
    assert "missing detector(s) V1" in err

    err = _error(capsys, base + ["--strain", *good, "--channel", "L1=L1:NOPE"])
    assert "L1:NOPE" in err and "L-L1_SYNTH" in err

    err = _error(capsys, base + ["--strain", *good, "hard_negatives=-1"])
    assert "hard_negatives: must be 0 or more" in err

    err = _error(capsys, base + ["--strain", good[0], good[1], "V1=/nonexistent/v.gwf"])
    assert "/nonexistent/v.gwf" in err

    # A rate that is no integer multiple of 2048 Hz, and one below it.
    for rate in (3000.0, 1024.0):
        odd = _write(tmp_path / f"r{int(rate)}", "V1", rng.normal(size=int(80 * rate)) * 1e-21,
                     GPS, rate)
        err = _error(capsys, base + ["--strain", *good[:2], f"V1={odd}"])
        assert str(odd) in err and f"{rate:g} Hz cannot be resampled" in err

    # Data that do not overlap, or are shorter than a window + the PSD span.
    late = _write(tmp_path / "late", "V1", rng.normal(size=80 * 2048) * 1e-21, GPS + 500, 2048)
    err = _error(capsys, base + ["--strain", *good[:2], f"V1={late}"])
    assert "do not overlap" in err
    short = _write(tmp_path / "short", "V1", rng.normal(size=40 * 2048) * 1e-21, GPS, 2048)
    err = _error(capsys, base + ["--strain", *good[:2], f"V1={short}"])
    assert "too little data" in err and "psd.span" in err and "40 s" in err

    # Model cards the search cannot use.
    err = _error(capsys, ["--runs", str(_edit_card(trained, tmp_path / "a", input="spectra")),
                          "--out", str(tmp_path / "out"), "--strain", *good])
    assert "model.json" in err and "spectra" in err
    err = _error(capsys, ["--runs", str(_edit_card(trained, tmp_path / "b",
                                                   **{"transform.n_time": 8192})),
                          "--out", str(tmp_path / "out"), "--strain", *good])
    assert "model.json" in err and "n_time 8192" in err

    # Settings: an unknown key, a stride that is no whole number of samples.
    err = _error(capsys, base + ["--strain", *good, "psd.spam=3"])
    assert "psd.spam" in err
    err = _error(capsys, base + ["--strain", *good, "--stride", "0.3"])
    assert "stride" in err and "0.3" in err
    err = _error(capsys, base + ["--strain", *good, "integrate=0.75"])  # 1.5 strides
    assert "integrate: 0.75 s" in err and "2 x stride (0.5 s)" in err
    err = _error(capsys, base + ["--strain", *good, "integrate=-1"])
    assert "integrate: must be 0" in err
    err = _error(capsys, base + ["--strain", *good, "--injections", str(tmp_path / "nope.csv")])
    assert "nope.csv" in err


@pytest.mark.timeout(180)
def test_a_multi_process_launch_is_refused_before_any_work(tmp_path, launch):
    """Issue 17: under accelerate launch every rank would score every window and write the
    same files. Two real processes: both refuse at once, naming the fix, and write nothing."""
    out = tmp_path / "out"
    proc = launch(2, "infer.search", "--runs", str(tmp_path / "runs"), "--strain",
                  f"H1={tmp_path}/H.gwf", f"L1={tmp_path}/L.gwf", f"V1={tmp_path}/V.gwf",
                  "--out", str(out), "--quiet", timeout=150)
    assert proc.returncode != 0
    assert proc.stderr.count("g2net-search: error: the search runs in one process") == 2, \
        proc.stderr[-3000:]
    assert not out.exists()
