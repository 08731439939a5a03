"""The template-bank matched filter against the generator's physics and scipy.

References are outside the module under test: lalsimulation's IMRPhenomPv2 injections and
``data.sim.physics.optimal_snr`` (a), scipy's chi^2 with 2 degrees of freedom (b), the
generator's true-template oracle on the same samples (c).
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from scipy import stats

pytest.importorskip("lalsimulation")

from data import layout
from data.metrics import roc_auc  # noqa: E402
from data.sim import physics, samples  # noqa: E402
from infer.matched_filter import bank as mf_bank  # noqa: E402
from infer.matched_filter.bank import build_bank  # noqa: E402
from infer.matched_filter.cli import main  # noqa: E402
from infer.matched_filter.filter import _data_spectrum, bank_statistic, snr2_series  # noqa: E402
from preprocess.spectral import PSDAccumulator  # noqa: E402

# A few non-spinning templates across the prior: light, unequal, heavy.
PARAMS = np.array([
    [8.0, 7.5, 0.0], [14.0, 9.0, 0.0], [20.0, 19.0, 0.0], [30.0, 10.0, 0.0],
    [35.0, 25.0, 0.0], [45.0, 8.0, 0.0], [48.0, 40.0, 0.0], [50.0, 50.0, 0.0],
])  # fmt: skip


@pytest.fixture(scope="module")
def bank():
    return build_bank(physics.noise_psd(), PARAMS)


def _source(rng, mass1, mass2) -> physics.Source:
    """A non-spinning (hence non-precessing) source of these masses, elsewhere from the prior."""
    s = samples.draw_source(rng)
    return physics.Source(mass1, mass2, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), s.inclination,
                          s.phase, s.ra, s.dec, s.psi, s.merger_time)


@pytest.mark.parametrize("j", [0, 3, 6])
def test_recovers_injected_snr_of_a_bank_point(bank, j):
    # The generator's own IMRPhenomPv2 signal with zero spins is IMRPhenomD's (match 0.999);
    # the statistic of the noise-free signal is its network SNR up to the data window's
    # taper over the first 0.1 s, the 4 Hz band edges and the whole-sample lag grid.
    rng = np.random.default_rng(100 + j)
    signal = physics.project(_source(rng, *PARAMS[j, :2]))
    signal *= 10.0 / np.sqrt(np.sum(physics.optimal_snr(signal) ** 2))
    stat, best = bank_statistic(signal[None], bank, return_best=True)
    assert stat[0] == pytest.approx(10.0, rel=0.03)
    assert best[0] == j


def test_noise_gives_chi2_with_two_degrees_of_freedom():
    # Generator noise, whitened by stage one's PSD estimate (PSDAccumulator, Tukey 0.25, over
    # 200 other noise samples): |z|^2 / sigma^2 at every template, detector and searched lag
    # is chi^2(2): mean 2, tails as scipy's. One sample's in-band noise power fluctuates by a
    # few percent (a heavy template sees ~100 independent frequency bins), hence 32 samples.
    rng = np.random.default_rng(7)
    acc = PSDAccumulator(alpha=0.25)
    acc.update(np.stack([physics.coloured_noise(rng) for _ in range(200)]))
    bank = build_bank(acc.psd(), PARAMS)
    noise = np.stack([physics.coloured_noise(rng) for _ in range(32)])
    snr2 = snr2_series(_data_spectrum(noise, bank), bank, slice(None)).numpy()
    assert snr2.shape[:3] == (32, len(PARAMS), 3)
    assert snr2.mean() == pytest.approx(2.0, rel=0.03)
    for i in range(3):  # each detector
        assert snr2[:, :, i].mean() == pytest.approx(2.0, rel=0.05)
    # the two ends of the lag range: no edge effect
    assert snr2[..., :50].mean() == pytest.approx(2.0, rel=0.05)
    assert snr2[..., -50:].mean() == pytest.approx(2.0, rel=0.05)
    chi2 = stats.chi2(2)
    for q in (0.5, 0.9, 0.99, 0.999):
        assert np.quantile(snr2, q) == pytest.approx(chi2.ppf(q), rel=0.05)
    # and the network statistic is the max of many of them: well above one chi^2's quantiles
    assert (bank_statistic(noise, bank) ** 2 > chi2.ppf(0.999)).all()


def _read_truth(root):
    with (root / samples.TRUTH_FILE).open(newline="") as f:
        return {r["id"]: r for r in csv.DictReader(f)}


def _paired_bootstrap_se(target, a, b, rng, n=200) -> float:
    diffs = []
    for _ in range(n):
        k = rng.integers(0, target.size, target.size)
        if target[k].min() == target[k].max():
            continue
        diffs.append(roc_auc(target[k], a[k]) - roc_auc(target[k], b[k]))
    return float(np.std(diffs))


def test_bank_auc_is_below_the_oracle(tmp_path):
    # 300 test samples, SNR uniform on 3-10 (oracle AUC ~0.95). The oracle knows each signal;
    # the bank's AUC must not beat it beyond the statistical error of the paired difference
    # (2 standard errors by a paired bootstrap over the same samples, ~0.03 here; at least
    # 0.005), and must be far above chance: > 0.7 is 7 standard errors above 0.5 with 150
    # signals and 150 noise samples (measured ~0.8). A coarse bank, placed for the test: min
    # match 0.7 (~35 templates), placement stopped at < 1 % acceptance over 256 candidates.
    root = tmp_path / "set"
    samples.generate(root, n_train=2, n_test=300, seed=3, snr="uniform:3,10", progress=False)
    index = layout.build_index(root, "test")
    truth = _read_truth(root)
    target = np.array([int(truth[i]["target"]) for i in index.ids])
    oracle = np.array([float(truth[i]["oracle"]) for i in index.ids])
    x = np.stack([layout.load_sample(index.path(i)) for i in range(len(index))])
    bank = build_bank(physics.noise_psd(), min_match=0.7, stop_window=256)
    stat = np.concatenate([bank_statistic(x[i : i + 32], bank) for i in range(0, len(x), 32)])
    auc, oracle_auc = roc_auc(target, stat), roc_auc(target, oracle)
    se = _paired_bootstrap_se(target, stat, oracle, np.random.default_rng(0))
    assert auc <= oracle_auc + max(2 * se, 0.005), (auc, oracle_auc, se)
    assert auc > 0.7, (auc, oracle_auc)


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    samples.generate(root, n_train=8, n_test=6, seed=5, snr="uniform:6,10", progress=False)
    return root


def test_cli_writes_a_submission_and_scores_it(tiny_set, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(mf_bank, "STOP_WINDOW", 256)  # a coarse bank, placed fast
    out = tmp_path / "mf.csv"
    report = tmp_path / "mf.json"
    assert main(["--data", str(tiny_set), "--out", str(out), "--truth",
                 str(tiny_set / "truth.csv"), "--min-match", "0.6", "--device", "cpu",
                 "--quiet", "--batch-size", "4", "--report", str(report)]) is None
    summary = json.loads(report.read_text())
    ids, target = layout.read_labels(out)
    want, _ = layout.read_labels(tiny_set / "sample_submission.csv")
    assert ids == want
    assert np.isfinite(target).all() and (target > 0).all()
    assert summary["psd"]["n_samples"] == 4  # every target-0 training sample
    printed = capsys.readouterr().out
    assert "oracle" in printed and "snr" in printed
    assert summary["metrics"]["n"] == 6


def test_cli_errors_name_the_bad_input(tiny_set, tmp_path, capsys, monkeypatch):
    missing = tmp_path / "nowhere"
    with pytest.raises(SystemExit) as e:
        main(["--data", str(missing), "--out", str(tmp_path / "a.csv"), "--quiet"])
    assert e.value.code == 2
    assert str(missing) in capsys.readouterr().err

    with pytest.raises(SystemExit) as e:
        main(["--data", str(tiny_set), "--out", str(tmp_path / "a.csv"), "--quiet",
              "--min-match", "1.5"])
    assert e.value.code == 2
    assert "min_match" in capsys.readouterr().err

    monkeypatch.setitem(__import__("sys").modules, "lalsimulation", None)  # not installed
    with pytest.raises(SystemExit) as e:
        main(["--data", str(tiny_set), "--out", str(tmp_path / "a.csv"), "--quiet"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "lalsuite" in err and "synth" in err
    assert not (tmp_path / "a.csv").exists()
