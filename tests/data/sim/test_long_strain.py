"""Long synthetic strain, read back with gwpy and checked against scipy and lal/lalsimulation.

The references are computed here from lal and lalsimulation directly (the published PSD
curves, the waveform, the antenna patterns), not through data.sim.physics, so a mistake in
the generator cannot hide behind itself.
"""

import csv
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import fftconvolve, get_window, hilbert, welch

lal = pytest.importorskip("lal")
lalsimulation = pytest.importorskip("lalsimulation")
pytest.importorskip("lalframe")
gwpy_ts = pytest.importorskip("gwpy.timeseries")

from data.layout import DETECTORS  # noqa: E402
from data.sim import frames, long_strain, physics, samples  # noqa: E402

TimeSeries, TimeSeriesDict = gwpy_ts.TimeSeries, gwpy_ts.TimeSeriesDict

GPS = 1238166018
CURVES = {
    "H1": "SimNoisePSDaLIGOaLIGOO3LowT1800545",
    "L1": "SimNoisePSDaLIGOaLIGOO3LowT1800545",
    "V1": "SimNoisePSDAdVO3LowT1800545",
}


def published_psd(detector: str, n_time: int, sample_rate: int) -> np.ndarray:
    """The lalsimulation curve on rfftfreq(n_time, 1 / sample_rate); 0 where undefined."""
    series = lal.CreateREAL8FrequencySeries(
        "psd", 0, 0.0, sample_rate / n_time, lal.DimensionlessUnit, n_time // 2 + 1
    )
    getattr(lalsimulation, CURVES[detector])(series, 0.0)
    return series.data.data.copy()


def read(summary: dict, detector: str) -> TimeSeries:
    path = summary["paths"][detector]
    if path.endswith(".hdf5"):
        return TimeSeries.read(path, format="hdf5")
    return TimeSeries.read(path, frames.channel_name(detector))


def read_all(summary: dict) -> np.ndarray:
    return np.stack([read(summary, det).value for det in DETECTORS])


def read_injections(root) -> list[dict]:
    with (Path(root) / long_strain.INJECTIONS_FILE).open(newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def gen(root, duration, seed, **kwargs):
    kwargs.setdefault("progress", False)
    kwargs.setdefault("gps_start", GPS)
    return long_strain.generate(root, duration, seed, **kwargs)


# --- (a) no seams ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seams(tmp_path_factory):
    """70 s with 4 injections, written in 5 s and 64 s segments, plus its noise-only and
    noise-free parts."""
    root = tmp_path_factory.mktemp("seams")
    common = dict(injections_every=16, snr="uniform:8,20")
    return dict(
        short=gen(root / "short", 70, 4, segment=5, **common),
        long=gen(root / "long", 70, 4, segment=64, **common),
        signal=gen(root / "signal", 70, 4, noise=False, **common),
        noise=gen(root / "noise", 70, 4, injections_every=0),
    )


def test_output_does_not_depend_on_the_segment_length(seams):
    """Bit for bit: noise blocks and injections crossing segment boundaries come out the same
    however the file is cut."""
    short, long = read_all(seams["short"]), read_all(seams["long"])
    assert short.shape == (3, 70 * 2048)
    assert np.array_equal(short, long)
    rows = read_injections(seams["short"]["out"])
    assert len(rows) == 4 and rows == read_injections(seams["long"]["out"])


def test_strain_is_noise_plus_injections(seams):
    """The noisy file minus its noise-only twin (same seed, no injections) is the noise-free
    render: injections are added once, whole, wherever the segments fall."""
    noisy, noise, signal = (read_all(seams[k]) for k in ("long", "noise", "signal"))
    assert np.abs(signal).max() > 1e-22  # the injections are there
    np.testing.assert_allclose(noisy - noise, signal, rtol=0, atol=1e-33)


def test_noise_is_one_long_convolution():
    """Overlap-save in 32 s blocks = one direct convolution of the same white noise with the
    same taps (scipy), across block boundaries and from an arbitrary start sample."""
    noise = long_strain.Noise(seed=9, sample_rate=2048)
    block, n_taps = noise.block, noise.taps.shape[1]
    start, n = GPS * 2048 + 12345, 2 * block + 777  # spans 3-4 blocks
    got = noise.read(start, n)
    first, last = (start - n_taps + 1) // block, (start + n - 1) // block
    white = np.concatenate([noise.white(b) for b in range(first, last + 1)], axis=-1)
    offset = start - n_taps + 1 - first * block
    white = white[:, offset : offset + n + n_taps - 1]
    expected = np.stack([fftconvolve(w, t, mode="valid") for w, t in zip(white, noise.taps)])
    assert expected.shape == got.shape
    scale = np.abs(expected).max(axis=-1, keepdims=True)
    assert np.abs(got - expected).max() / scale.min() < 1e-12
    # and reading it again in two pieces from a fresh generator gives the same bits
    again = long_strain.Noise(seed=9, sample_rate=2048)
    pieces = np.concatenate([again.read(start, 1000), again.read(start + 1000, n - 1000)], -1)
    assert np.array_equal(pieces, got)


def test_consecutive_files_read_as_one_series(tmp_path):
    """Two files with consecutive GPS spans and one seed join into the noise of one long file;
    gwpy reads the list of files as one series."""
    whole = gen(tmp_path / "whole", 80, 5, injections_every=0)
    first = gen(tmp_path / "first", 40, 5, injections_every=0)
    second = long_strain.generate(
        tmp_path / "second", 40, 5, injections_every=0, gps_start=GPS + 40, progress=False
    )
    for det in DETECTORS:
        channel = frames.channel_name(det)
        joined = TimeSeries.read([first["paths"][det], second["paths"][det]], channel)
        reference = read(whole, det)
        assert joined.t0 == reference.t0 and joined.duration == reference.duration
        assert np.array_equal(joined.value, reference.value)


# --- (b) PSD -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def noise_hdf5(tmp_path_factory):
    return gen(tmp_path_factory.mktemp("noise"), 128, 3, injections_every=0, fmt="hdf5")


def _welch_reference(detector, nperseg, sample_rate, oversample=8):
    """The published curve averaged over Welch's Hann kernel (matters at the narrow lines)."""
    n_fine = oversample * nperseg
    curve = published_psd(detector, n_fine, sample_rate)
    kernel = np.abs(np.fft.fft(get_window("hann", nperseg), n_fine)) ** 2
    kernel /= kernel.sum()
    two_sided = np.r_[curve, curve[-2:0:-1]]
    smoothed = np.fft.ifft(np.fft.fft(two_sided) * np.fft.fft(kernel)).real
    return smoothed[: n_fine // 2 + 1 : oversample]


def check_welch(strain: np.ndarray, sample_rate: int, f_max: float) -> None:
    """Welch PSD (4 s Hann segments, 50 % overlap) of each detector against the published curve,
    20 Hz .. f_max.

    Tolerances from the estimate's own scatter: 128 s give K = 63 averaged segments, a relative
    standard deviation per bin of sqrt(1.06 / K) = 0.13 (Hann at 50 % overlap); neighbouring
    bins are correlated, so a mean over N bins scatters by ~0.13 * sqrt(1.5 / N): 0.018 for the
    80 bins of 20-40 Hz, 0.003 over 20-900 Hz. Octave means must lie within 10 % (>= 5 sigma),
    the mean over the whole band within 2 % (~7 sigma), and 99 % of the bins within 45 %
    (3.5 sigma). The FIR's own deviation is < 0.3 % (3 % at V1's 438 Hz line, one bin).
    """
    nperseg = 4 * sample_rate
    freqs, psd = welch(strain, fs=sample_rate, nperseg=nperseg, axis=-1)
    edges = [20.0 * 2**k for k in range(12) if 20.0 * 2**k < f_max] + [f_max]
    band = (freqs >= 20) & (freqs <= f_max)
    for i, det in enumerate(DETECTORS):
        ratio = psd[i] / _welch_reference(det, nperseg, sample_rate)
        assert abs(ratio[band].mean() - 1) < 0.02, (det, ratio[band].mean())
        assert np.mean(np.abs(ratio[band] - 1) < 0.45) > 0.99, det
        for lo, hi in zip(edges[:-1], edges[1:]):
            octave = ratio[(freqs >= lo) & (freqs < hi)].mean()
            assert abs(octave - 1) < 0.1, (det, lo, hi, octave)


def test_welch_psd_matches_the_curves(noise_hdf5):
    check_welch(read_all(noise_hdf5), 2048, 900.0)


def test_noise_level_matches_the_2s_generator(noise_hdf5):
    """The raw std (dominated by the red wall below 15 Hz) equals that of data.sim.samples's
    frequency-domain noise, another implementation of the same PSDs: within 5 % (128 s of a
    ~12 Hz wide wall hold ~3,000 independent values: 1.3 % scatter)."""
    strain = read_all(noise_hdf5)
    rng = np.random.default_rng(0)
    reference = np.stack([physics.coloured_noise(rng) for _ in range(64)])  # (64, 3, 4096)
    for i, det in enumerate(DETECTORS):
        ratio = strain[i].std() / reference[:, i].std()
        assert abs(ratio - 1) < 0.05, (det, ratio)


# --- (c) injections ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signals(tmp_path_factory):
    """160 s of injections alone (no noise): 10 injections, one every 16 s."""
    root = tmp_path_factory.mktemp("signals")
    summary = gen(root, 160, 7, injections_every=16, snr="uniform:5,30", noise=False)
    return summary, read_all(summary), read_injections(root)


def _snr(x: np.ndarray, detector: str, sample_rate: int) -> float:
    """Optimal SNR of ``x`` against the published curve, 20-1000 Hz."""
    freqs = np.fft.rfftfreq(x.size, 1 / sample_rate)
    band = (freqs >= 20) & (freqs <= 1000)
    h = np.fft.rfft(x)[band] / sample_rate
    psd = published_psd(detector, x.size, sample_rate)[band]
    return float(np.sqrt(4 * (sample_rate / x.size) * np.sum(np.abs(h) ** 2 / psd)))


def check_snr(strain, rows, sample_rate, gps_start=GPS):
    """Each injection's recorded SNRs = the optimal SNR of the file's noise-free strain around
    it: from ``lead`` s before its merger (its whole in-band chirp) to 1 s after."""
    lead = long_strain.injection_lead()
    for row in rows:
        t = row["gps_time"] - gps_start
        a = max(0, int(round((t - lead) * sample_rate)))
        b = int(round((t + long_strain.TAIL) * sample_rate))
        rho = np.array([_snr(strain[i, a:b], det, sample_rate) for i, det in enumerate(DETECTORS)])
        recorded = np.array([row[f"snr_{det.lower()}"] for det in DETECTORS])
        np.testing.assert_allclose(rho, recorded, rtol=0.02, atol=0.02)
        assert abs(np.sqrt(np.sum(rho**2)) / row["snr"] - 1) < 0.02
        assert abs(np.sqrt(np.sum(recorded**2)) / row["snr"] - 1) < 1e-6
        assert 0 < row["snr_2s"] <= row["snr"] * 1.01


def test_recorded_snr_is_the_optimal_snr_of_the_render(signals):
    summary, strain, rows = signals
    assert len(rows) == 10 and all(5 <= r["snr"] <= 30 for r in rows)
    times = np.array([r["gps_time"] for r in rows]) - GPS
    assert times[0] >= long_strain.injection_lead() and times[-1] <= 160 - long_strain.TAIL
    assert np.all(np.diff(times) >= long_strain.min_injections_every())
    check_snr(strain, rows, 2048)


def check_times(strain, rows, sample_rate, gps_start=GPS):
    """The signal peaks where the table says: each detector's envelope peak lies within 2
    samples of its arrival time (``time_h1``...) plus the peak's offset from t = 0 in the
    same waveform made here by lalsimulation and projected with lal; and its energy there is
    that waveform's at the recorded distance (checks F+, Fx at the injection's GPS time)."""
    for row in rows:
        hp, hc = lalsimulation.SimInspiralChooseTDWaveform(
            row["mass1"] * lal.MSUN_SI, row["mass2"] * lal.MSUN_SI,
            row["spin1x"], row["spin1y"], row["spin1z"],
            row["spin2x"], row["spin2y"], row["spin2z"],
            row["distance"] * 1e6 * lal.PC_SI, row["inclination"], row["phase"],
            0.0, 0.0, 0.0, 1 / sample_rate, 15.0, 20.0, None,
            lalsimulation.GetApproximantFromString("IMRPhenomPv2"),
        )  # fmt: skip
        t_first = float(hp.epoch)
        gmst = lal.GreenwichMeanSiderealTime(lal.LIGOTimeGPS(row["gps_time"]))
        for i, det in enumerate(DETECTORS):
            site = lal.cached_detector_by_prefix[det]
            fplus, fcross = lal.ComputeDetAMResponse(
                site.response, row["ra"], row["dec"], row["psi"], gmst
            )
            template = fplus * hp.data.data + fcross * hc.data.data
            offset = t_first + np.argmax(np.abs(hilbert(template))) / sample_rate
            arrival = row[f"time_{det.lower()}"] - gps_start
            expected = lal.TimeDelayFromEarthCenter(
                site.location, row["ra"], row["dec"], row["gps_time"]
            )
            assert abs(arrival - (row["gps_time"] - gps_start) - expected) < 2e-6
            # envelope of the file around the merger (1 s margins keep Hilbert's edges out)
            a = int(round((arrival - 1.5) * sample_rate))
            b = int(round((arrival + 1.5) * sample_rate))
            envelope = np.abs(hilbert(strain[i, a:b]))[sample_rate:-sample_rate]
            peak = (a + sample_rate + np.argmax(envelope)) / sample_rate
            assert abs(peak - (arrival + offset)) * sample_rate <= 2, (det, peak, arrival)
            first = int(np.floor((arrival + t_first) * sample_rate))
            x = strain[i, first : first + template.size]
            energy = np.sqrt(np.sum(x**2) / np.sum(template**2))
            assert abs(energy - 1) < 0.01, (det, energy)


def test_injection_time_is_where_the_signal_peaks(signals):
    _, strain, rows = signals
    check_times(strain, rows, 2048)


# --- (d) formats -------------------------------------------------------------------------------


def test_gwf_and_hdf5_are_the_same_strain(tmp_path):
    common = dict(injections_every=16, segment=16)
    gwf = gen(tmp_path / "gwf", 40, 6, fmt="gwf", **common)
    hdf5 = gen(tmp_path / "hdf5", 40, 6, fmt="hdf5", **common)
    assert (tmp_path / "gwf" / "H-H1_SYNTH-1238166018-40.gwf").is_file()
    assert (tmp_path / "hdf5" / "V-V1_SYNTH-1238166018-40.hdf5").is_file()
    for det in DETECTORS:
        a, b = read(gwf, det), read(hdf5, det)
        assert np.array_equal(a.value, b.value) and a.value.dtype == np.float64
        assert a.t0.value == b.t0.value == GPS and a.sample_rate.value == 2048
        assert a.name == b.name == f"{det}:SYNTH-STRAIN" == str(b.channel)
        assert str(a.unit) == str(b.unit) == "strain"
        assert a.duration.value == 40
    # several channels at once, and a stretch
    tsd = TimeSeriesDict.read(gwf["paths"]["L1"], ["L1:SYNTH-STRAIN"], start=GPS + 3, end=GPS + 7)
    stretch = tsd["L1:SYNTH-STRAIN"]
    assert stretch.t0.value == GPS + 3 and stretch.value.size == 4 * 2048
    assert np.array_equal(stretch.value, read(hdf5, "L1").value[3 * 2048 : 7 * 2048])
    assert read_injections(tmp_path / "gwf") == read_injections(tmp_path / "hdf5")
    assert (tmp_path / "gwf" / long_strain.CONFIG_FILE).is_file()
    assert not list((tmp_path / "gwf").glob("*.partial"))


def test_higher_sample_rate(tmp_path):
    """4096 Hz: the PSD holds up to 1.9 kHz, injections are made at 4096 Hz with the same SNR
    and timing checks; 6 h after the O3 reference time, so that antenna patterns taken at any
    other time than the injection's own (the Earth has turned 90 degrees) would fail."""
    noise = gen(tmp_path / "noise", 128, 8, injections_every=0, sample_rate=4096, fmt="hdf5")
    strain = read_all(noise)
    assert read(noise, "H1").sample_rate.value == 4096
    check_welch(strain, 4096, 1900.0)
    later = GPS + 6 * 3600
    signal = gen(
        tmp_path / "signal", 40, 8, injections_every=20, sample_rate=4096, noise=False,
        gps_start=later,
    )  # fmt: skip
    rows = read_injections(tmp_path / "signal")
    assert len(rows) == 2
    strain = read_all(signal)
    check_snr(strain, rows, 4096, later)
    check_times(strain, rows, 4096, later)


# --- (e) bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(duration=-5), "--duration"),
        (dict(duration=0), "--duration"),
        (dict(duration=10.5), "--duration"),
        (dict(fmt="npy"), "--format"),
        (dict(sample_rate=3000), "--sample-rate"),
        (dict(sample_rate=1024), "--sample-rate"),
        (dict(sample_rate=32768), "--sample-rate"),
        (dict(injections_every=5), "--injections-every"),
        (dict(injections_every=-16), "--injections-every"),
        (dict(snr="loud"), "--snr"),
        (dict(seed=-1), "--seed"),
        (dict(gps_start=-1), "--gps-start"),
        (dict(segment=0), "--segment"),
    ],
)
def test_bad_input_names_the_option(tmp_path, kwargs, match):
    args = dict(out=tmp_path / "out", duration=16, seed=1) | kwargs
    with pytest.raises(ValueError, match=match):
        long_strain.generate(**args, progress=False)
    assert not (tmp_path / "out").exists()  # nothing written


def test_refuses_non_empty_out_and_overwrite_keeps_foreign_files(tmp_path):
    first = gen(tmp_path, 16, 1, injections_every=0)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="--overwrite"):
        gen(tmp_path, 16, 1, injections_every=0)
    gen(tmp_path, 20, 2, injections_every=0, fmt="hdf5", overwrite=True)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert not Path(first["paths"]["H1"]).exists()
    assert names == sorted(
        ["notes.txt", long_strain.INJECTIONS_FILE, long_strain.CONFIG_FILE]
        + [f"{d[0]}-{d}_SYNTH-{GPS}-20.hdf5" for d in DETECTORS]
    )


def test_cli_errors_name_the_option(tmp_path, capsys):
    for argv, match in (
        (["--duration", "-5"], "--duration"),
        (["--duration", "16", "--format", "npy"], "--format"),
        (["--duration", "16", "--sample-rate", "3000"], "--sample-rate"),
        (["--duration", "16", "--injections-every", "3"], "--injections-every"),
    ):
        with pytest.raises(SystemExit) as exc:
            long_strain.main(["--out", str(tmp_path / "x"), "--seed", "1", *argv])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("g2net-synth-long: error: ") and match in err, err


def test_draws_come_from_the_synth_priors():
    """Injections use data.sim.samples's priors: masses in range, sorted, spins bounded."""
    rows = long_strain.plan_injections(1, GPS, 3200, 16, "uniform:4,20")
    assert len(rows) == 200
    m1 = np.array([r.source.mass1 for r in rows])
    m2 = np.array([r.source.mass2 for r in rows])
    lo, hi = samples.MASS_RANGE
    assert np.all((lo <= m2) & (m2 <= m1) & (m1 <= hi))
    spins = np.array([np.linalg.norm(r.source.spin1) for r in rows])
    assert spins.max() <= samples.SPIN_MAX
    assert all(4 <= r.snr <= 20 for r in rows)
