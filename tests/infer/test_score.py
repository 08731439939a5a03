"""Scoring against a truth file: overall and per-SNR-bin AUC against a brute-force pairwise AUC."""

import csv
import json

import numpy as np
import pytest

from infer.config import InferError


def pairwise_auc(target, score):
    """P(score of a positive > score of a negative), ties counted half: every pair compared."""
    pos, neg = score[target == 1], score[target == 0]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def make_truth(rng, n):
    ids = [f"{v:010x}" for v in rng.choice(16**10, n, replace=False)]
    target = rng.integers(0, 2, n)
    snr = np.where(target == 1, rng.uniform(1, 20, n), 0.0)
    oracle = target * snr + rng.normal(0, 1, n)
    pred = np.round(target * snr * 0.3 + rng.normal(0, 1, n), 1)  # rounded: ties happen
    return ids, target, snr, oracle, pred


def write_truth(path, ids, target, snr, oracle, extra_ids=()):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "split", "target", "snr", "oracle"])
        for row in zip(ids, ["test"] * len(ids), target, snr, oracle):
            w.writerow(row)
        for sid in extra_ids:  # rows of another split, not predicted
            w.writerow([sid, "train", 1, 5.0, 3.0])


def test_scores_against_brute_force(tmp_path):
    from infer.score import read_truth, score

    rng = np.random.default_rng(0)
    ids, target, snr, oracle, pred = make_truth(rng, 400)
    write_truth(tmp_path / "truth.csv", ids, target, snr, oracle, extra_ids=["aaaaaaaaaa"])
    order = rng.permutation(len(ids))  # predictions in another order than the truth file
    result = score([ids[i] for i in order], pred[order], read_truth(tmp_path / "truth.csv"),
                   [0, 4, 6, 8, 10, 15])
    assert result["n"] == 400 and result["n_pos"] == target.sum()
    assert result["auc"] == pytest.approx(pairwise_auc(target, pred), abs=1e-12)
    assert result["oracle_auc"] == pytest.approx(pairwise_auc(target, oracle), abs=1e-12)
    edges = [0, 4, 6, 8, 10, 15, np.inf]
    assert len(result["snr_bins"]) == 6
    for b, lo, hi in zip(result["snr_bins"], edges[:-1], edges[1:]):
        keep = (target == 0) | ((snr >= lo) & (snr < hi))  # every noise sample in every bin
        assert b["lo"] == lo and b["hi"] == (None if np.isinf(hi) else hi)
        assert b["n_pos"] == int((target[keep] == 1).sum())
        assert b["auc"] == pytest.approx(pairwise_auc(target[keep], pred[keep]), abs=1e-12)
        assert b["oracle_auc"] == pytest.approx(pairwise_auc(target[keep], oracle[keep]),
                                                abs=1e-12)
    json.dumps(result)  # JSON-able


def test_truth_without_snr_or_oracle_and_missing_ids(tmp_path):
    from infer.score import read_truth, score

    path = tmp_path / "labels.csv"
    path.write_text("id,target\n0000000001,1\n0000000002,0\n0000000003,1\n")
    result = score(["0000000003", "0000000001", "0000000002"], np.array([0.9, 0.2, 0.5]),
                   read_truth(path), [0, 4])
    assert result["auc"] == 0.5 and result["oracle_auc"] is None and result["snr_bins"] == []
    with pytest.raises(InferError, match="not in"):
        score(["0000000004"], np.array([0.1]), read_truth(path), [0])


def test_empty_snr_bin_is_none(tmp_path):
    from infer.score import read_truth, score

    path = tmp_path / "truth.csv"
    path.write_text("id,target,snr\n0000000001,1,5\n0000000002,0,0\n")
    result = score(["0000000001", "0000000002"], np.array([0.9, 0.1]), read_truth(path),
                   [0, 4, 6])
    assert [b["auc"] for b in result["snr_bins"]] == [None, 1.0, None]
