"""data.inputs.views: the deterministic ops behind augmentation and TTA, against numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data.inputs.views import flip_sign, roll_time, swap_detectors


def _x(*shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("shape", [(4, 3, 50), (4, 3, 6, 50)])
def test_swap_and_flip(shape):
    x = _x(*shape)
    xn = x.numpy()
    np.testing.assert_array_equal(swap_detectors(x).numpy(), xn[:, [1, 0, 2]])
    np.testing.assert_array_equal(flip_sign(x).numpy(), -xn)


def test_roll_time_matches_np_roll():
    x = _x(4, 3, 50)
    xn = x.numpy()
    np.testing.assert_array_equal(roll_time(x, -7).numpy(), np.roll(xn, -7, axis=-1))
    per_sample = torch.tensor([0, 3, -12, 61])  # more than T wraps
    y = roll_time(x, per_sample).numpy()
    for i, s in enumerate(per_sample.tolist()):
        np.testing.assert_array_equal(y[i], np.roll(xn[i], s, axis=-1))
    per_detector = torch.tensor([[0, 1, -2], [5, 0, 0], [-20, 20, 3], [49, -49, 0]])
    y = roll_time(x, per_detector).numpy()
    for i in range(4):
        for c in range(3):
            np.testing.assert_array_equal(y[i, c], np.roll(xn[i, c], int(per_detector[i, c])))
    img = _x(4, 3, 6, 50)
    y = roll_time(img, per_sample).numpy()
    for i, s in enumerate(per_sample.tolist()):
        np.testing.assert_array_equal(y[i], np.roll(img.numpy()[i], s, axis=-1))


def test_roll_time_rejects_a_shift_of_another_shape():
    with pytest.raises(ValueError, match="does not match"):
        roll_time(_x(4, 3, 50), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="does not match"):
        roll_time(_x(4, 3, 50), torch.zeros(4, 3, 50, dtype=torch.long))
