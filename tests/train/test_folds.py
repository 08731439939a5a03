"""train.folds.stratified_folds: balance, determinism, partition."""

from __future__ import annotations

import numpy as np
import pytest

from train.folds import stratified_folds


@pytest.mark.parametrize("n, n_pos, k", [(100, 50, 5), (103, 31, 4), (10, 5, 5), (997, 500, 7)])
def test_folds_are_stratified_and_balanced(n, n_pos, k):
    target = np.zeros(n, dtype=int)
    target[np.random.default_rng(1).permutation(n)[:n_pos]] = 1
    fold = stratified_folds(target, k, seed=42)
    assert fold.shape == (n,) and set(np.unique(fold)) == set(range(k))
    sizes = np.bincount(fold, minlength=k)
    assert sizes.max() - sizes.min() <= 1
    for c in (0, 1):
        per_class = np.bincount(fold[target == c], minlength=k)
        assert per_class.max() - per_class.min() <= 1


def test_folds_depend_on_the_seed_only():
    target = np.random.default_rng(0).integers(0, 2, 200)
    a = stratified_folds(target, 5, seed=1)
    assert np.array_equal(a, stratified_folds(target, 5, seed=1))
    assert not np.array_equal(a, stratified_folds(target, 5, seed=2))


def test_folds_need_both_classes_in_every_fold():
    with pytest.raises(ValueError, match="both classes"):
        stratified_folds(np.array([0] * 10 + [1] * 3), 5, seed=0)
    with pytest.raises(ValueError, match="at least 2"):
        stratified_folds(np.array([0, 1] * 5), 1, seed=0)
