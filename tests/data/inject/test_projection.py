"""data.inject.projection against lalsuite (antenna patterns, delays) and against the
generator's own numpy path (data.sim.physics.project) for the same sources, skies and times."""

from __future__ import annotations

import numpy as np
import pytest
import torch

lal = pytest.importorskip("lal")
pytest.importorskip("lalsimulation")

from data.inject.projection import (  # noqa: E402
    Detectors,
    antenna_patterns,
    geocentre_delays,
    gmst,
    project,
)
from data.layout import DETECTORS, N_TIME, SAMPLE_RATE  # noqa: E402
from data.sim import physics  # noqa: E402
from data.sim.samples import draw_source  # noqa: E402


def test_antenna_patterns_and_delays_match_lal():
    rng = np.random.default_rng(0)
    n = 300
    ra = rng.uniform(0, 2 * np.pi, n)
    dec = np.arcsin(rng.uniform(-1, 1, n))
    psi = rng.uniform(0, np.pi, n)
    gps = rng.uniform(1e9, 1.4e9, n)
    dets = Detectors.from_lal()
    fp_ref, fc_ref, dt_ref = np.empty((n, 3)), np.empty((n, 3)), np.empty((n, 3))
    fp, fc, dt = np.empty((n, 3)), np.empty((n, 3)), np.empty((n, 3))
    for i in range(n):
        g = gmst(gps[i])
        for k, det in enumerate(DETECTORS):
            site = lal.cached_detector_by_prefix[det]
            fp_ref[i, k], fc_ref[i, k] = lal.ComputeDetAMResponse(site.response, ra[i], dec[i],
                                                                  psi[i], g)
            dt_ref[i, k] = lal.TimeDelayFromEarthCenter(site.location, ra[i], dec[i], gps[i])
        t = [torch.tensor([v], dtype=torch.float64) for v in (ra[i], dec[i], psi[i])]
        a, b = antenna_patterns(*t, g, dets)
        fp[i], fc[i] = a[0].numpy(), b[0].numpy()
        dt[i] = geocentre_delays(t[0], t[1], g, dets)[0].numpy()
    np.testing.assert_allclose(fp, fp_ref, atol=1e-6)
    np.testing.assert_allclose(fc, fc_ref, atol=1e-6)
    np.testing.assert_allclose(dt, dt_ref, atol=1e-9)  # s; lal's light-travel times are ~1e-2
    # batched at one time: the same numbers as one at a time
    g = gmst(gps[0])
    bp, bc = antenna_patterns(*(torch.from_numpy(v) for v in (ra, dec, psi)), g, dets)
    ref = [lal.ComputeDetAMResponse(lal.cached_detector_by_prefix["L1"].response, ra[j],
                                    dec[j], psi[j], g) for j in range(n)]
    np.testing.assert_allclose(bp[:, 1].numpy(), [r[0] for r in ref], atol=1e-6)
    np.testing.assert_allclose(bc[:, 1].numpy(), [r[1] for r in ref], atol=1e-6)


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-9), (torch.float32, 2e-5)])
def test_projection_matches_the_generator(dtype, rtol):
    """The same sources projected by data.sim.physics.project (numpy, lal's antenna patterns
    and delays) and by this module in one batch: the same strain, to the dtype's precision
    relative to each signal's peak."""
    rng = np.random.default_rng(7)
    sources = [draw_source(rng) for _ in range(5)]
    waves = [physics.polarisations(s) for s in sources]
    n = max(hp.size for hp, _, _ in waves)
    hp = torch.zeros(len(sources), n, dtype=dtype)
    hc = torch.zeros(len(sources), n, dtype=dtype)
    for i, (p, c, _) in enumerate(waves):
        hp[i, :p.size] = torch.from_numpy(p)
        hc[i, :c.size] = torch.from_numpy(c)
    first = torch.tensor([(s.merger_time + t) * SAMPLE_RATE
                          for s, (_, _, t) in zip(sources, waves)], dtype=torch.float64)
    ra, dec, psi = (torch.tensor([getattr(s, a) for s in sources], dtype=dtype)
                    for a in ("ra", "dec", "psi"))
    dets = Detectors.from_lal()
    g = gmst(physics.GPS_REFERENCE)
    fplus, fcross = antenna_patterns(ra, dec, psi, g, dets)
    delay = geocentre_delays(ra, dec, g, dets)
    got = project(hp, hc, first, N_TIME, fplus, fcross, delay).to(torch.float64).numpy()
    for i, s in enumerate(sources):
        want = physics.project(s)
        peak = np.abs(want).max()
        assert np.abs(got[i] - want).max() <= rtol * peak, (i, np.abs(got[i] - want).max() / peak)


def test_the_delay_is_fractional_not_rounded():
    """A shift of 0.3 samples moves a band-limited pulse by 0.3 samples: the projected strain
    equals the pulse evaluated 0.3 samples later (rounding would be a whole sample off)."""
    t = torch.arange(600, dtype=torch.float64)
    pulse = lambda x: torch.exp(-0.5 * ((x - 300) / 12.0) ** 2)  # noqa: E731
    hp = pulse(t)[None]
    zero = torch.zeros(1, 3, dtype=torch.float64)
    delay = torch.tensor([[0.3, -0.3, 0.0]], dtype=torch.float64) / SAMPLE_RATE
    out = project(hp, torch.zeros_like(hp), torch.zeros(1, dtype=torch.float64), 600,
                  zero + 1, zero, delay)[0]
    np.testing.assert_allclose(out[0, 250:350], pulse(t - 0.3)[250:350], atol=1e-9)
    np.testing.assert_allclose(out[1, 250:350], pulse(t + 0.3)[250:350], atol=1e-9)
