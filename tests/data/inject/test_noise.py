"""Noise sources: a store's noise with each detector from another sample keeps every row's PSD
and loses the rows' correlation; simulated noise whitens as the generator's does; windows of
long strain never touch a gap."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data import store as zstore
from data.inject.injector import batch_generator
from data.inject.noise import GaussianNoise, StoreNoise, StrainNoise, local_psd
from data.sim import physics
from preprocess.config import load_preset
from preprocess.spectral import median_psd, periodograms, tukey
from preprocess.transforms import Whiten


def _periodogram(x: np.ndarray) -> np.ndarray:
    """Mean periodogram (3, F) of (n, 3, T) series, Tukey-windowed (stage one's)."""
    return periodograms(x, tukey(x.shape[-1], 0.25)).mean(axis=0)


@pytest.fixture(scope="module")
def coloured_store(tmp_path_factory):
    """A store whose 'waves' are coloured noise, the same series in all three detectors (so a
    shuffle that mixes rows shows), with a PSD different per detector."""
    from tests.conftest import build_store

    path = build_store(tmp_path_factory.mktemp("noise") / "train.zarr", n=256, waves=True)
    g = zstore.open_store(path, mode="r+")
    rng = np.random.default_rng(0)
    white = rng.standard_normal((256, 4096))
    kernel = np.array([1.0, 0.9, 0.5])  # a low-pass colouring
    coloured = np.stack([np.convolve(w, kernel, mode="same") for w in white])
    waves = np.stack([coloured, 2 * coloured, 0.5 * coloured], axis=1).astype(np.float16)
    zstore._for_writing(g, "waves")[:] = waves
    return path, waves


def test_store_noise_with_shuffled_detectors_keeps_each_rows_psd(coloured_store):
    path, waves = coloured_store
    targets = np.asarray(zstore.open_store(path)["targets"][:])
    rows = np.flatnonzero(targets == 0)
    noise = StoreNoise(str(path), rows, shuffle_detectors=True)
    assert len(noise) == rows.size
    x = torch.cat([noise.batch(256, batch_generator(0, k)) for k in range(4)]).double().numpy()
    want = _periodogram(waves[rows].astype(np.float64))
    got = _periodogram(x)
    band = slice(10, 2000)
    ratio = got[:, band] / want[:, band]
    assert np.abs(ratio.mean(axis=1) - 1).max() < 0.03
    # Stored rows are perfectly correlated across detectors; shuffled ones are not.
    corr = [np.corrcoef(s[0], s[1])[0, 1] for s in x[:200]]
    assert abs(np.mean(corr)) < 0.05
    plain = StoreNoise(str(path), rows, shuffle_detectors=False)
    y = plain.batch(64, batch_generator(1)).numpy()
    assert np.allclose(y[:, 1], 2 * y[:, 0], rtol=1e-2, atol=1e-2)
    with pytest.raises(ValueError, match="no noise"):
        StoreNoise(str(path), np.array([], dtype=np.int64))


def test_gaussian_noise_whitens_like_the_generators():
    """Whitened by the generator's own PSD: unit variance where the window is flat, and the
    same mean periodogram as the generator's numpy noise (data.sim.physics.coloured_noise)
    whitened the same way."""
    whiten = Whiten.from_config(load_preset("default").whiten, physics.noise_psd())
    src = GaussianNoise(whiten)
    x = torch.cat([src.batch(64, batch_generator(2, k)) for k in range(4)]).double().numpy()
    assert x.shape == (256, 3, 4096)
    assert np.var(x[..., 1024:3072]) == pytest.approx(1.0, abs=0.03)
    rng = np.random.default_rng(0)
    ref = whiten(torch.from_numpy(np.stack([physics.coloured_noise(rng) for _ in range(256)])))
    a, b = _periodogram(x), _periodogram(ref.double().numpy())
    band = slice(60, 1900)  # 30 - 950 Hz
    assert np.abs(a[:, band].mean(axis=1) / b[:, band].mean(axis=1) - 1).max() < 0.05


def test_strain_windows_never_touch_a_gap():
    """Strain whose value is its sample index: a window's first value is where it starts."""
    data = np.tile(np.arange(40_000, dtype=np.float64), (3, 1))
    data[0, 10_000:12_000] = np.nan
    data[2, :30_000] = np.nan  # V1: only 10,000 samples, room for a few windows
    identity = lambda x: x  # noqa: E731
    src = StrainNoise(data, identity)
    assert src.clean_seconds[2] == pytest.approx((10_000 - 4096 + 1) / 2048)
    x = src.batch(2000, batch_generator(0)).numpy()
    assert np.isfinite(x).all()
    starts = x[..., 0].astype(np.int64)  # (n, 3)
    np.testing.assert_array_equal(x[..., -1] - x[..., 0], 4095)  # whole, contiguous windows
    h1 = starts[:, 0]
    assert ((h1 + 4096 <= 10_000) | (h1 >= 12_000)).all() and (h1 + 4096 <= 40_000).all()
    assert (starts[:, 2] >= 30_000).all()
    # Each detector's window from its own time, spread over the clean stretch.
    assert (starts[:, 0] != starts[:, 1]).mean() > 0.99
    assert h1.min() < 2000 and h1.max() > 33_000
    with pytest.raises(ValueError, match="no 4096-sample window"):
        StrainNoise(np.full((3, 5000), np.nan), identity)


def test_local_psd_is_the_median_of_gap_free_segments():
    rng = np.random.default_rng(3)
    data = rng.standard_normal((3, 4096 * 20)) * np.array([[1.0], [2.0], [3.0]])
    data[1, 100:200] = np.nan  # one segment of L1 has a gap: left out
    window = tukey(4096, 0.25)
    est = lambda s: median_psd(periodograms(s, window))  # noqa: E731
    psd = local_psd(data, est)
    want = median_psd(periodograms(data[1, 4096:].reshape(19, 4096), window))
    np.testing.assert_allclose(psd[1], want)
    # White noise of variance s^2 at 2048 Hz has one-sided PSD 2 s^2 / 2048.
    assert np.median(psd[2][10:-10]) == pytest.approx(2 * 9 / 2048, rel=0.1)
