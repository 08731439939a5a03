"""data.inject.snr against the generator's SNR (data.sim.physics.optimal_snr) and the target
distributions against their analytic CDFs (scipy)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

pytest.importorskip("lalsimulation")

from data.inject.snr import SNRPrior, optimal_snr, rescale  # noqa: E402
from data.layout import SAMPLE_RATE  # noqa: E402
from data.sim import physics  # noqa: E402
from data.sim.samples import draw_source  # noqa: E402


def test_optimal_snr_matches_the_generator_and_rescale_hits_the_target():
    rng = np.random.default_rng(2)
    signals = np.stack([physics.project(draw_source(rng)) for _ in range(4)])
    psd = torch.from_numpy(physics.noise_psd().copy())
    got = optimal_snr(torch.from_numpy(signals), psd, SAMPLE_RATE).numpy()
    want = np.stack([physics.optimal_snr(s) for s in signals])
    np.testing.assert_allclose(got, want, rtol=1e-10)
    target = torch.tensor([4.0, 8.0, 15.0, 40.0], dtype=torch.float64)
    scaled, rho = rescale(torch.from_numpy(signals), psd, target)
    np.testing.assert_allclose(torch.linalg.norm(rho, dim=-1).numpy(), target.numpy(), rtol=1e-12)
    for s, t, r in zip(scaled.numpy(), target.numpy(), rho.numpy()):
        assert physics.snr_scale(s, t)[0] == pytest.approx(1.0, rel=1e-10)
        np.testing.assert_allclose(physics.optimal_snr(s), r, rtol=1e-10)


@pytest.mark.parametrize("spec, cdf", [
    ("uniform:2,16", stats.uniform(2, 14).cdf),
    ("power-law:-3,4,100", lambda x: (4.0**-2 - x**-2) / (4.0**-2 - 100.0**-2)),
    ("power-law:-1,4,100", lambda x: np.log(x / 4) / np.log(25)),
])
def test_priors_follow_their_distributions(spec, cdf):
    g = torch.Generator().manual_seed(0)
    x = SNRPrior.parse(spec).sample(20000, g).numpy()
    assert stats.kstest(x, cdf).pvalue > 1e-3


def test_normal_prior_has_its_floor_and_fixed_is_fixed():
    g = torch.Generator().manual_seed(1)
    x = SNRPrior.parse("normal:3.6,1,1").sample(20000, g).numpy()
    assert x.min() == 1.0 and abs(np.mean(x == 1.0) - stats.norm.cdf(1, 3.6, 1)) < 0.005
    above = x[x > 1.0]
    assert abs(above.mean() - stats.truncnorm(-2.6, np.inf, 3.6, 1).mean()) < 0.02
    assert (SNRPrior.parse("fixed:8").sample(5) == 8).all()


def test_curriculum_lowers_the_bound_over_the_steps():
    prior = SNRPrior.parse("power-law:-3,4,100", curriculum_start=12, curriculum_steps=1000)
    assert [prior.lower_bound(s) for s in (0, 500, 1000, 5000)] == [12, 8, 4, 4]
    g = torch.Generator().manual_seed(2)
    assert prior.sample(5000, g, step=0).min() >= 12
    assert prior.sample(5000, g, step=2000).min() < 5


@pytest.mark.parametrize("spec", ["uniform:5,2", "power-law:-3,0,100", "normal:3,0,1",
                                  "lognormal:1,2", "uniform:a,b", "fixed:1,2"])
def test_bad_specs_are_refused(spec):
    with pytest.raises(ValueError, match="bad SNR spec"):
        SNRPrior.parse(spec)


def test_a_curriculum_must_start_above_zero_and_a_silent_signal_has_no_snr():
    with pytest.raises(ValueError, match="start > 0"):
        SNRPrior.parse("power-law:-3,4,100", curriculum_start=0, curriculum_steps=10)
    psd = torch.from_numpy(physics.noise_psd().copy())
    with pytest.raises(ValueError, match="no power"):
        rescale(torch.zeros(1, 3, 4096, dtype=torch.float64), psd, torch.tensor([8.0]))
