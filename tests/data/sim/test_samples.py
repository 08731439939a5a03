"""The synthetic generator against lalsimulation/lal themselves, a rank-formula AUC, and disk.

Reference values are recomputed here from lal and lalsimulation directly (the published PSD
curves, ArrivalTimeDiff), not through data.sim.physics, so a mistake in the generator's
helpers cannot hide behind itself.
"""

import csv
import dataclasses
from pathlib import Path

# lalsuite is in the `synth` extra that `make test` installs: a missing one is an error here,
# not a skip.
import lal
import lalsimulation
import numpy as np
import pytest
from scipy.signal import get_window, hilbert, welch

from data.layout import DETECTORS, N_TIME, SAMPLE_RATE, build_index, load_sample
from data.sim import physics, samples

CURVES = {
    "H1": "SimNoisePSDaLIGOaLIGOO3LowT1800545",
    "L1": "SimNoisePSDaLIGOaLIGOO3LowT1800545",
    "V1": "SimNoisePSDAdVO3LowT1800545",
}
G2NET_STD = {"H1": 7.4e-21, "L1": 7.4e-21, "V1": 1.8e-21}


def published_psd(detector: str, n_time: int) -> np.ndarray:
    """The lalsimulation curve on rfftfreq(n_time, 1/2048); 0 where it is undefined."""
    n_freq = n_time // 2 + 1
    series = lal.CreateREAL8FrequencySeries(
        "psd", 0, 0.0, SAMPLE_RATE / n_time, lal.DimensionlessUnit, n_freq
    )
    getattr(lalsimulation, CURVES[detector])(series, 0.0)
    return series.data.data.copy()


def rank_auc(scores, labels) -> float:
    """Mann-Whitney: P(score of a positive > score of a negative), ties counting half."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, int)
    pos, neg = scores[labels == 1], scores[labels == 0]
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return (greater + 0.5 * ties) / (pos.size * neg.size)


def read_truth(root: Path) -> list[dict]:
    with (root / "truth.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def tree_bytes(root: Path) -> dict[str, bytes]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


@pytest.fixture(scope="module")
def loud_set(tmp_path_factory):
    """A small data set with loud signals (network SNR 15), written by 2 processes."""
    root = tmp_path_factory.mktemp("loud")
    summary = samples.generate(root, 40, 10, seed=11, snr="fixed:15", jobs=2, progress=False)
    return root, summary


# --- noise -------------------------------------------------------------------------------


def test_noise_psd_matches_lalsimulation():
    """Welch PSD of generated noise = the published curve between 30 and 500 Hz.

    Welch averages the spectrum over its window's kernel (2 Hz wide here), which matters only
    at the curves' narrow lines (V1 438 Hz, aLIGO 480 Hz); the reference is the curve, taken on
    the generator's 0.125 Hz grid, averaged over the same kernel.
    """
    rng = np.random.default_rng(0)
    noise = np.stack([physics.coloured_noise(rng) for _ in range(160)])  # (160, 3, 4096)
    nperseg, n_fine = 1024, 4 * N_TIME
    freqs, psd = welch(noise, fs=SAMPLE_RATE, nperseg=nperseg, axis=-1)
    psd = psd.mean(axis=0)
    kernel = np.abs(np.fft.fft(get_window("hann", nperseg), n_fine)) ** 2
    kernel /= kernel.sum()
    band = (freqs >= 30) & (freqs <= 500)
    for i, det in enumerate(DETECTORS):
        curve = published_psd(det, n_fine)
        two_sided = np.r_[curve, curve[-2:0:-1]]
        smoothed = np.fft.ifft(np.fft.fft(two_sided) * np.fft.fft(kernel)).real
        reference = smoothed[: n_fine // 2 + 1 : n_fine // nperseg]
        ratio = psd[i, band] / reference[band]
        assert 0.8 < ratio.min() and ratio.max() < 1.25, (det, ratio.min(), ratio.max())
        # and without the kernel, away from the lines, the plain curve itself
        plain = psd[i, band] / published_psd(det, nperseg)[band]
        assert 0.8 < np.median(plain) < 1.25 and np.mean((plain > 0.8) & (plain < 1.25)) > 0.95
        # raw amplitude at G2Net's scale: the red wall below 15 Hz (V1: roll-off, see docs)
        std = noise[:, i].std()
        assert abs(std / G2NET_STD[det] - 1) < 0.1, (det, std)


def test_noise_has_no_wraparound():
    """The two ends of a sample are not continuations of each other (circular noise would be)."""
    rng = np.random.default_rng(1)
    x = np.stack([physics.coloured_noise(rng)[0] for _ in range(400)])
    # correlation of the last and first samples; for circular 2 s noise it would be ~1 (the
    # red wall makes neighbouring samples almost equal), for the cropped 8 s draw it is ~0
    assert abs(np.corrcoef(x[:, -1], x[:, 0])[0, 1]) < 0.2
    assert np.corrcoef(x[:, 1], x[:, 0])[0, 1] > 0.9


# --- signals -----------------------------------------------------------------------------


def test_injected_snr_matches_request():
    rng = np.random.default_rng(2)
    freqs = np.fft.rfftfreq(N_TIME, 1 / SAMPLE_RATE)
    band = (freqs >= 20) & (freqs <= 1000)
    psd = np.stack([published_psd(det, N_TIME) for det in DETECTORS])[:, band]
    for requested in (4.0, 8.0, 15.0, 30.0):
        state = rng.bit_generator.state
        sample = samples.make_sample(rng, 1, f"fixed:{requested}")
        h = np.fft.rfft(sample.signal, axis=-1)[:, band] / SAMPLE_RATE
        rho_i = np.sqrt(4 * (SAMPLE_RATE / N_TIME) * np.sum(np.abs(h) ** 2 / psd, axis=-1))
        assert abs(np.sqrt(np.sum(rho_i**2)) / requested - 1) < 0.02
        np.testing.assert_allclose(sample.snr, rho_i, rtol=0.02)
        # the file is noise + this signal: the same draws with target 0 give the bare noise
        rng_noise = np.random.default_rng()
        rng_noise.bit_generator.state = state
        noise = samples.make_sample(rng_noise, 0, f"fixed:{requested}").strain
        np.testing.assert_allclose(sample.strain - sample.signal, noise, rtol=0, atol=1e-35)


def _analytic_lag(a: np.ndarray, b: np.ndarray, upsample: int = 16) -> float:
    """Delay of ``b`` after ``a`` in seconds, from the peak of their complex cross-correlation."""
    fa, fb = np.fft.fft(hilbert(a)), np.fft.fft(hilbert(b))
    n = a.size
    cross = np.zeros(n * upsample, dtype=complex)
    product = fb * np.conj(fa)
    cross[: n // 2] = product[: n // 2]  # analytic signals: positive frequencies only
    corr = np.abs(np.fft.ifft(cross))
    lag = int(np.argmax(corr))
    if lag > cross.size // 2:
        lag -= cross.size
    return lag / (SAMPLE_RATE * upsample)


def test_detector_delays_follow_the_sky_position():
    """With aligned spins every detector sees the same chirp up to amplitude and phase, so the
    lag of the cross-correlation between detectors is the arrival-time difference."""
    rng = np.random.default_rng(3)
    h1 = lal.cached_detector_by_prefix["H1"]
    gps = lal.LIGOTimeGPS(physics.GPS_REFERENCE)
    for _ in range(6):
        drawn = samples.draw_source(rng)
        source = dataclasses.replace(drawn, spin1=(0.0, 0.0, 0.3), spin2=(0.0, 0.0, -0.2))
        signal = physics.project(source)
        for j, det in ((1, "L1"), (2, "V1")):
            expected = lal.ArrivalTimeDiff(
                lal.cached_detector_by_prefix[det].location, h1.location,
                source.ra, source.dec, gps,
            )  # fmt: skip
            measured = _analytic_lag(signal[0], signal[j])
            assert abs(measured - expected) < 1e-4, (det, measured, expected)
            if det == "L1":
                assert abs(measured) <= 0.0101
        # the merger sits where truth says: H1's envelope peaks near merger_time + H1's delay
        delay_h1 = lal.TimeDelayFromEarthCenter(h1.location, source.ra, source.dec, gps)
        peak = np.argmax(np.abs(hilbert(signal[0]))) / SAMPLE_RATE
        assert abs(peak - (source.merger_time + delay_h1)) < 0.015


def test_truth_delays_within_light_travel_time(loud_set):
    root, _ = loud_set
    for row in read_truth(root):
        if row["target"] == "1":
            ra, dec = float(row["ra"]), float(row["dec"])
            _, _, delay = physics.antenna_patterns(ra, dec, 0.0)
            assert abs(delay[0] - delay[1]) <= 0.0101
            assert 1.3 <= float(row["merger_time"]) <= 1.9


# --- oracle and the data set on disk ------------------------------------------------------


def test_oracle_separates_loud_signals(loud_set):
    root, summary = loud_set
    rows = read_truth(root)
    labels = np.array([int(r["target"]) for r in rows])
    oracle = np.array([float(r["oracle"]) for r in rows])
    assert rank_auc(oracle, labels) == 1.0
    assert summary["oracle_auc"] == pytest.approx(rank_auc(oracle, labels))
    # in noise sqrt(chi^2_6) maximised over ~200 shifts; on a signal about its SNR
    assert 3 < np.median(oracle[labels == 0]) < 6
    assert 13 < np.median(oracle[labels == 1]) < 17
    for r in rows:
        if r["target"] == "1":
            snr_i = np.array([float(r[k]) for k in ("snr_h1", "snr_l1", "snr_v1")])
            assert float(r["snr"]) == pytest.approx(15.0)
            assert np.sqrt(np.sum(snr_i**2)) == pytest.approx(15.0, rel=1e-6)
            assert 7 <= float(r["mass2"]) <= float(r["mass1"]) <= 50
        else:
            assert r["snr"] == "0" and r["mass1"] == ""


def test_layout_labels_and_ids(loud_set):
    root, _ = loud_set
    train, test = build_index(root, "train"), build_index(root, "test")
    assert (len(train), len(test)) == (40, 10)
    assert train.targets.sum() == 20 and train.ids == sorted(train.ids)
    assert not set(train.ids) & set(test.ids)
    assert set(test.targets.tolist()) == {0.5}
    truth = {r["id"]: r for r in read_truth(root)}
    assert sum(int(truth[i]["target"]) for i in test.ids) == 5
    assert all(truth[i]["split"] == "test" for i in test.ids)
    for i, sid in enumerate(train.ids[:5]):
        x = load_sample(train.path(i))
        assert x.shape == (3, N_TIME) and x.dtype == np.float64
        assert x.tobytes() == np.load(train.path(i)).tobytes()
        assert int(truth[sid]["target"]) == train.targets[i]
    # a file is exactly what make_sample makes from the plan's seed
    item = samples.plan(11, 40, 10)[0]
    sample = samples.make_sample(np.random.default_rng(item.seed), item.target, "fixed:15")
    assert load_sample(train.path(0)).tobytes() == sample.strain.tobytes()


def test_same_seed_same_bytes_any_jobs(tmp_path, loud_set):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    samples.generate(a, 12, 3, seed=11, snr="fixed:15", jobs=1, progress=False)
    samples.generate(b, 12, 3, seed=11, snr="fixed:15", jobs=2, progress=False)
    samples.generate(c, 12, 3, seed=12, snr="fixed:15", jobs=1, progress=False)
    assert tree_bytes(a) == tree_bytes(b)
    assert tree_bytes(a).keys() != tree_bytes(c).keys()
    # a larger set from the same seed, in more processes, is not the same set (ids change with
    # n), but any run of the same arguments is byte-identical to the module's loud set
    samples.generate(b, 40, 10, seed=11, snr="fixed:15", jobs=1, overwrite=True, progress=False)
    assert tree_bytes(b) == tree_bytes(loud_set[0])


def test_odd_sizes_and_empty_test_split(tmp_path):
    summary = samples.generate(tmp_path, 5, 0, seed=0, snr="uniform:2,6", progress=False)
    assert summary["n_test"] == 0
    assert build_index(tmp_path, "train").targets.sum() == 2
    assert len(build_index(tmp_path, "test")) == 0


# --- bad input ---------------------------------------------------------------------------


def test_refuses_non_empty_out_without_overwrite(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not empty"):
        samples.generate(tmp_path, 2, 0, seed=0, progress=False)
    samples.generate(tmp_path, 2, 0, seed=0, overwrite=True, progress=False)
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    assert len(build_index(tmp_path, "train")) == 2


@pytest.mark.parametrize(
    "n_train, n_test, match",
    [(0, 2, "n_train"), (-4, 2, "n_train"), (1, 2, "n_train"), (4, -1, "n_test")],
)
def test_bad_sizes(tmp_path, n_train, n_test, match):
    with pytest.raises(ValueError, match=match):
        samples.generate(tmp_path / "out", n_train, n_test, seed=0, progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "spec",
    ["", "uniform", "gauss:1,2", "uniform:5", "uniform:6,2", "uniform:-1,3",
     "normal:5,0,1", "normal:5,2", "fixed:x", "fixed:-1", "fixed:nan"],
)  # fmt: skip
def test_bad_snr_spec(tmp_path, spec):
    with pytest.raises(ValueError, match="SNR spec"):
        samples.generate(tmp_path / "out", 4, 0, seed=0, snr=spec, progress=False)


def test_good_snr_specs():
    rng = np.random.default_rng(0)
    assert samples.parse_snr("fixed:8").sample(rng) == 8.0
    assert 2 <= samples.parse_snr("uniform:2,6").sample(rng) <= 6
    draws = [samples.parse_snr("normal:3.6,1,1").sample(rng) for _ in range(2000)]
    assert min(draws) == 1.0 and abs(np.mean(draws) - 3.6) < 0.1
    assert str(samples.parse_snr(samples.DEFAULT_SNR)) == samples.DEFAULT_SNR


def test_cli_errors_are_clear(tmp_path, capsys):
    (tmp_path / "x").write_text("")
    base = ["--out", str(tmp_path), "--n-test", "0", "--seed", "0", "--jobs", "1"]
    with pytest.raises(SystemExit) as exc:
        samples.main([*base, "--n-train", "4"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("g2net-synth: error: ") and "not empty" in err
    assert len(err.splitlines()) == 1, err
    with pytest.raises(SystemExit):
        samples.main([*base, "--n-train", "0", "--overwrite"])
    assert "n_train must be at least 2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        samples.main([*base, "--n-train", "4", "--overwrite", "--snr", "lognormal:1,2"])
    assert "bad SNR spec 'lognormal:1,2'" in capsys.readouterr().err
    samples.main([*base, "--n-train", "4", "--overwrite", "--quiet"])
    assert "4 train + 0 test samples" in capsys.readouterr().out
