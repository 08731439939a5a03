"""data.metrics.roc_auc against the pairwise definition; ranks against scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import rankdata

from data.metrics import average_ranks, roc_auc


def pairwise_auc(target, score) -> float:
    """P(score of a positive > score of a negative) + P(tie) / 2, over all pairs."""
    pos, neg = score[target == 1], score[target == 0]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_pairwise_count_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = rng.integers(2, 300)
    target = rng.integers(0, 2, n)
    target[:2] = [0, 1]
    score = rng.integers(0, 12, n).astype(float)  # many ties
    score += target * rng.uniform(0, 3)
    assert roc_auc(target, score) == pytest.approx(pairwise_auc(target, score), abs=1e-12)


def test_auc_edge_values():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert roc_auc([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1]) == 0.0
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5


def test_ranks_match_scipy():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 20, 500).astype(float)
    assert np.array_equal(average_ranks(x), rankdata(x))


@pytest.mark.parametrize("target, score, match", [
    ([1, 1, 1], [0.1, 0.2, 0.3], "both classes"),
    ([0, 1, 2], [0.1, 0.2, 0.3], "0 or 1"),
    ([0, 1], [0.1, np.nan], "NaN"),
    ([0, 1], [0.1], "2 targets but 1 scores"),
])
def test_auc_rejects_bad_input(target, score, match):
    with pytest.raises(ValueError, match=match):
        roc_auc(np.array(target), np.array(score))
