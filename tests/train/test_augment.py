"""train.augment: detector swap, circular time shift (against torch.roll), random erasing; the
waveform augmentations (sign flip, detector shifts, time mask) against numpy, with the drawn
values read back from the output and their statistics over many samples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from data.config import ConfigError
from train.augment import (
    augment,
    augment_waves,
    detector_shift,
    flip_sign,
    random_erasing,
    swap_detectors,
    time_mask,
    time_shift,
)
from train.config import AugmentConfig, TrainConfig, check


def _x(b=6, h=10, w=20):
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(0))


def test_swap_exchanges_h1_and_l1_only():
    x = _x()
    assert torch.equal(swap_detectors(x, 0.0), x)
    y = swap_detectors(x, 1.0)
    assert torch.equal(y[:, 0], x[:, 1]) and torch.equal(y[:, 1], x[:, 0])
    assert torch.equal(y[:, 2], x[:, 2])


def test_time_shift_is_a_per_sample_roll():
    x = _x()
    torch.manual_seed(1)
    y = time_shift(x, 1.0, 5)
    for i in range(x.shape[0]):
        matches = [s for s in range(-5, 6) if torch.equal(y[i], torch.roll(x[i], s, dims=-1))]
        assert matches, f"sample {i} is not a roll of at most 5 columns"
    assert torch.equal(time_shift(x, 0.0, 5), x)


def test_random_erasing_fills_small_rectangles():
    x = _x(b=50, h=40, w=60)
    torch.manual_seed(2)
    y = random_erasing(x, 1.0, 1, scale=(0.01, 0.05), ratio=(0.5, 2.0), value=0.0)
    for i in range(x.shape[0]):
        erased = (y[i] != x[i]).all(dim=0)  # (H, W): erased in every channel
        rows, cols = erased.any(dim=1).nonzero(), erased.any(dim=0).nonzero()
        # one solid rectangle (randn is never exactly 0)
        box = erased[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert box.all() and box.sum() == erased.sum()
        assert 0.005 * 2400 <= erased.sum() <= 0.07 * 2400
        assert (y[i][:, erased] == 0).all()
    assert torch.equal(random_erasing(x, 0.0, 18, (0.001, 0.004), (0.3, 3.3)), x)


def _roll_of(y: torch.Tensor, x: torch.Tensor, max_cols: int) -> int | None:
    """The circular shift s (|s| <= max_cols) with y == torch.roll(x, s, -1), or None."""
    found = [s for s in range(-max_cols, max_cols + 1) if torch.equal(y, torch.roll(x, s, -1))]
    return found[0] if found else None


def test_augment_with_everything_off_is_identity():
    x = _x()
    assert torch.equal(augment(x, AugmentConfig()), x)


def test_augment_swaps_then_shifts_in_columns_of_the_resized_image():
    """swap_p=1, shift_p=1, max_shift=3 frames on an image resized to twice the native width
    (frames_to_columns=2): every sample is H1/L1-swapped and rolled by at most 6 columns, and
    over 400 samples every shift in -6..6 occurs (the bound really is 2 x 3 columns)."""
    x = torch.randn(400, 3, 4, 16, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(3)
    y = augment(x, AugmentConfig(swap_p=1.0, shift_p=1.0, max_shift=3), frames_to_columns=2.0)
    swapped = x[:, [1, 0, 2]]
    shifts = [_roll_of(y[i], swapped[i], 8) for i in range(len(x))]
    assert None not in shifts
    assert set(shifts) == set(range(-6, 7))


def test_augment_probabilities_are_honoured():
    """shift_p=0.5, swap_p=0.25 over 2,000 samples: the fractions of shifted and swapped
    samples within 4 standard deviations of p (binomial)."""
    n = 2000
    x = torch.randn(n, 3, 2, 32, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(4)
    y = augment(x, AugmentConfig(swap_p=0.25, shift_p=0.5, max_shift=4))
    plain = [_roll_of(y[i], x[i], 4) for i in range(n)]
    swap = [_roll_of(y[i], x[i][[1, 0, 2]], 4) for i in range(n)]
    assert all((a is None) != (b is None) for a, b in zip(plain, swap))  # randn: never both
    swapped = torch.tensor([b is not None for b in swap])
    rolled = torch.tensor([(a if a is not None else b) != 0 for a, b in zip(plain, swap)])
    for got, p in ((swapped.float().mean(), 0.25), (rolled.float().mean(), 0.5 * 8 / 9)):
        sd = (p * (1 - p) / n) ** 0.5
        assert abs(float(got) - p) < 4 * sd, (float(got), p)


# ---------------------------------------------------------------------------------------------
# Whitened strain (B, 3, T)


def _waves(b=400, t=64, seed=0):
    return torch.randn(b, 3, t, generator=torch.Generator().manual_seed(seed))


def _rolls(y: np.ndarray, x: np.ndarray) -> list[int]:
    """Every s in [-T/2, T/2) with y == np.roll(x, s, axis=-1) exactly: x (T,) or (3, T)
    (candidates: where x's first value landed; random values: one at most)."""
    t = x.shape[-1]
    first_row = np.flatnonzero(y.reshape(-1, t)[0] == x.reshape(-1, t)[0, 0])
    cands = ((int(k) + t // 2) % t - t // 2 for k in first_row)
    return [s for s in cands if np.array_equal(y, np.roll(x, s, axis=-1))]


def _close_to(frac: float, p: float, n: int) -> bool:
    return abs(frac - p) <= 5 * math.sqrt(p * (1 - p) / n)  # 5 sigma of a binomial fraction


def test_flip_negates_whole_samples_with_probability_p():
    x = _waves(b=4000)
    torch.manual_seed(3)
    y = flip_sign(x, 0.3).numpy()
    xn = x.numpy()
    flipped = np.array([np.array_equal(y[i], -xn[i]) for i in range(len(xn))])
    kept = np.array([np.array_equal(y[i], xn[i]) for i in range(len(xn))])
    assert (flipped ^ kept).all()  # each sample exactly -x or exactly x, all detectors together
    assert _close_to(flipped.mean(), 0.3, len(xn))
    assert torch.equal(flip_sign(x, 0.0), x) and torch.equal(flip_sign(x, 1.0), -x)


def test_swap_on_waves_exchanges_rows_0_and_1_with_probability_p():
    x = _waves(b=4000)
    torch.manual_seed(4)
    y = swap_detectors(x, 0.5).numpy()
    xn = x.numpy()
    swapped = np.array([np.array_equal(y[i], xn[i, [1, 0, 2]]) for i in range(len(xn))])
    kept = np.array([np.array_equal(y[i], xn[i]) for i in range(len(xn))])
    assert (swapped ^ kept).all()
    assert _close_to(swapped.mean(), 0.5, len(xn))


def test_common_shift_on_waves_is_np_roll_within_bounds():
    x = _waves(b=2000, t=64)
    torch.manual_seed(5)
    y = time_shift(x, 0.6, 7).numpy()
    xn = x.numpy()
    shifts = []
    for i in range(len(xn)):
        (s,) = _rolls(y[i], xn[i])  # the same roll for the three detectors together
        shifts.append(s)
    shifts = np.array(shifts)
    assert np.abs(shifts).max() == 7 and set(shifts) == set(range(-7, 8))
    # unshifted: not drawn (1 - p) or drawn 0 (p / 15)
    assert _close_to((shifts == 0).mean(), 0.4 + 0.6 / 15, len(xn))


def test_detector_shifts_are_np_rolls_per_detector_within_light_travel_bounds():
    hl, v, p = 3, 5, 0.7
    x = _waves(b=3000, t=64)
    torch.manual_seed(6)
    y = detector_shift(x, p, hl, v).numpy()
    xn = x.numpy()
    s = np.array([[_rolls(y[i, c], xn[i, c])[0] for c in range(3)] for i in range(len(xn))])
    assert (s[:, 0] == 0).all()  # H1 is the reference
    assert np.abs(s[:, 1]).max() == hl and set(s[:, 1]) == set(range(-hl, hl + 1))
    assert np.abs(s[:, 2]).max() == v and set(s[:, 2]) == set(range(-v, v + 1))
    assert (np.abs(s[:, 2] - s[:, 1]) <= v).all()  # V1 within max_v of L1 too
    assert np.abs(s[:, 2] - s[:, 1]).max() == v
    # applied with probability p; an applied draw is (0, 0) with probability
    # 1/(2 hl + 1) * 1/(2 v + 1) (V1 has all 2v + 1 values when L1 is not moved)
    moved = (s != 0).any(axis=1).mean()
    assert _close_to(moved, p * (1 - 1 / ((2 * hl + 1) * (2 * v + 1))), len(xn))
    # V1 uniform on its allowed interval given L1: e.g. L1 = +hl allows [hl - v, v]
    v_given = s[s[:, 1] == hl, 2]
    assert set(v_given[v_given != 0]) <= set(range(hl - v, v + 1))


def test_detector_shift_defaults_are_the_light_travel_times_in_samples():
    a = AugmentConfig()
    assert a.detector_shift_max == (20, 54)
    assert a.detector_shift_max[0] <= 0.0100 * 2048 < a.detector_shift_max[0] + 1  # H1-L1
    assert a.detector_shift_max[1] <= 0.02645 * 2048 < a.detector_shift_max[1] + 1  # L1-V1
    with pytest.raises(ValueError, match="max_hl <= 2"):
        detector_shift(_waves(b=2), 1.0, 11, 5)


def test_time_mask_zeroes_one_span_in_every_detector():
    max_len, p = 5, 0.5
    x = _waves(b=3000, t=32)
    torch.manual_seed(7)
    y = time_mask(x, p, max_len).numpy()
    xn = x.numpy()
    lengths, starts = [], []
    for i in range(len(xn)):
        zero = y[i] == 0  # randn is never exactly 0
        assert (zero == zero[0]).all()  # the same span in all detectors
        cols = np.flatnonzero(zero[0])
        assert np.array_equal(y[i][~zero], xn[i][~zero])  # everything else untouched
        if cols.size:
            assert np.array_equal(cols, np.arange(cols[0], cols[-1] + 1))  # contiguous, no wrap
            lengths.append(cols.size)
            starts.append(cols[0])
    lengths, starts = np.array(lengths), np.array(starts)
    assert set(lengths) == set(range(1, max_len + 1))
    assert starts.min() == 0 and (starts + lengths).max() == 32  # both ends reachable
    assert _close_to(len(lengths) / len(xn), p, len(xn))


def test_time_mask_by_hand():
    x = torch.arange(1.0, 3 * 10 + 1).view(1, 3, 10)
    torch.manual_seed(0)
    y = time_mask(x, 1.0, 4)
    zero = (y == 0).squeeze(0)
    cols = torch.nonzero(zero[0]).flatten()
    expected = x.clone()
    expected[..., cols[0]:cols[-1] + 1] = 0
    assert torch.equal(y, expected) and 1 <= cols.numel() <= 4


def test_augment_waves_off_is_identity_and_each_key_does_its_part():
    x = _waves(b=64, t=128)
    assert torch.equal(augment_waves(x, AugmentConfig()), x)
    # image-only keys leave waves alone
    assert torch.equal(augment_waves(x, AugmentConfig(erase_p=1.0, max_shift=8)), x)
    assert torch.equal(augment_waves(x, AugmentConfig(flip_p=1.0)), -x)
    assert torch.equal(augment_waves(x, AugmentConfig(swap_p=1.0)), x[:, [1, 0, 2]])
    everything = AugmentConfig(flip_p=0.5, swap_p=0.5, shift_p=0.5, max_shift_samples=16,
                               detector_shift_p=0.5, mask_p=0.5, mask_max=20)
    torch.manual_seed(8)
    y = augment_waves(x, everything)
    torch.manual_seed(8)
    assert torch.equal(augment_waves(x, everything), y)  # the device generator decides
    assert y.shape == x.shape and y.dtype == x.dtype and not torch.equal(y, x)
    # and waveform-only keys leave images alone
    img = _x()
    assert torch.equal(augment(img, AugmentConfig(flip_p=1.0, mask_p=1.0, mask_max=3,
                                                  detector_shift_p=1.0)), img)


@pytest.mark.parametrize("key,value,match", [
    ("flip_p", 1.5, "augment.flip_p"),
    ("detector_shift_p", -0.1, "augment.detector_shift_p"),
    ("mask_p", 2.0, "augment.mask_p"),
    ("detector_shift_max", (30, 10), "augment.detector_shift_max"),
    ("detector_shift_max", (-1, 10), "augment.detector_shift_max"),
    ("max_shift_samples", -1, "augment.max_shift_samples"),
    ("mask_max", -2, "augment.mask_max"),
])
def test_config_checks_name_the_waveform_keys(key, value, match):
    cfg = TrainConfig()
    setattr(cfg.augment, key, value)
    with pytest.raises(ConfigError, match=match):
        check(cfg)


def test_config_needs_a_mask_length_when_masking():
    cfg = TrainConfig()
    cfg.augment.mask_p = 0.5
    with pytest.raises(ConfigError, match="augment.mask_max: must be at least 1"):
        check(cfg)
    cfg.augment.mask_max = 100
    check(cfg)
