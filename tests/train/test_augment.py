"""train.augment: detector swap, circular time shift (against torch.roll), random erasing."""

from __future__ import annotations

import torch

from train.augment import augment, random_erasing, swap_detectors, time_shift
from train.config import AugmentConfig


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
