"""Ensembles of runs: mean, rank and a logistic stack fitted on out-of-fold predictions;
members, the ensemble, the matched-filter bank and the oracle scored side by side."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import rankdata

from data import layout
from data.metrics import roc_auc
from data.rundir import write_oof
from infer.config import InferConfig
from infer.predict.checkpoints import MismatchError
from infer.predict.ensemble import fit_stack


def _logit(p):
    return np.log(p) - np.log1p(-p)


def test_fit_stack_is_the_penalised_logistic_optimum():
    """Member 0 is informative, member 1 noise: at the fitted weights the gradient of the
    penalised logistic loss (written out here) vanishes, the noise member's weight is ~0, and
    the stack's AUC is at least the informative member's."""
    rng = np.random.default_rng(0)
    m = 4000
    y = rng.integers(0, 2, m)
    good = 1 / (1 + np.exp(-(2.0 * y - 1 + rng.normal(0, 1.5, m))))
    noise = rng.uniform(0.05, 0.95, m)
    z = _logit(np.stack([good, noise]))
    stack = fit_stack(z, y, l2=1e-3)
    s = stack.weights @ z + stack.bias
    r = 1 / (1 + np.exp(-s)) - y
    grad_w = z @ r / m + 2e-3 * stack.weights
    assert np.abs(grad_w).max() < 1e-4 and abs(r.mean()) < 1e-4
    assert abs(stack.weights[1]) < 0.1 < stack.weights[0]
    assert roc_auc(y, stack.apply(z)) >= roc_auc(y, good) - 1e-9


@pytest.fixture
def two_runs(make_store, make_run, tmp_path):
    """A test store with truth, and two runs (different seeds) whose folds carry oof.csv."""
    store, ids, _ = make_store(n=40)
    a = make_run("a", n_folds=2)
    b = make_run("b", n_folds=2, model_name="test_resnet")
    rng = np.random.default_rng(5)
    oof_ids = np.sort(rng.choice(16**10, 300, replace=False)).astype(np.uint64)
    y = rng.integers(0, 2, 300)
    for run, noise in ((a, 0.5), (b, 2.0)):
        for k in range(2):
            rows = slice(k * 150, (k + 1) * 150)
            logit = (2 * y[rows] - 1) + rng.normal(0, noise, 150)
            write_oof(run / f"fold{k}" / "oof.csv", oof_ids[rows], y[rows], logit)
    truth = tmp_path / "truth.csv"
    target = rng.integers(0, 2, len(ids))
    snr = np.where(target == 1, rng.uniform(2, 12, len(ids)), np.nan)
    oracle = target * 3 + rng.normal(0, 1, len(ids))
    with truth.open("w") as f:
        f.write("id,target,snr,oracle\n")
        for i, t, s, o in zip(ids, target, snr, oracle):
            f.write(f"{i},{t},{'' if np.isnan(s) else s},{o}\n")
    return store, ids, a, b, truth, target


@pytest.mark.parametrize("members", ["mean", "rank", "stack"])
def test_runs_combined_by_value(two_runs, tmp_path, members):
    from infer.cli import run

    store, ids, a, b, truth, target = two_runs
    cfg = InferConfig(members=members)
    one_a = run(tmp_path / "a.csv", InferConfig(), runs=a, store=store, progress=False)
    one_b = run(tmp_path / "b.csv", InferConfig(), runs=b, store=store, progress=False)
    both = run(tmp_path / "ab.csv", cfg, runs=[a, b], store=store, truth=truth, progress=False)
    pa = layout.read_labels(one_a["submission"])[1]
    pb = layout.read_labels(one_b["submission"])[1]
    got = layout.read_labels(both["submission"])[1]
    if members == "mean":
        expected = (pa + pb) / 2
    elif members == "rank":
        expected = (rankdata(pa) + rankdata(pb)) / (2 * len(pa))
    else:
        # The stack maps one model of each run to a probability, as it was fitted (on
        # out-of-fold predictions of single models): fold k of a with fold k of b, then the
        # folds' probabilities averaged.
        w, bias = np.array(both["stack"]["weights"]), both["stack"]["bias"]
        expected = 0
        for k in range(2):
            za, zb = (_logit(layout.read_labels(run(
                tmp_path / f"{r.name}{k}.csv", InferConfig(checkpoints=[str(r / f"fold{k}")]),
                runs=None, store=store, progress=False)["submission"])[1]) for r in (a, b))
            expected = expected + 1 / (1 + np.exp(-(w[0] * za + w[1] * zb + bias))) / 2
        assert both["stack"]["n_fit"] == 300 and w[0] > w[1]  # run a's OOF is less noisy
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-9)
    metrics = both["metrics"]
    assert set(metrics["others"]) == {"a", "b"}
    assert metrics["others"]["a"] == pytest.approx(roc_auc(target, pa))
    assert metrics["auc"] == pytest.approx(roc_auc(target, got))
    assert all(set(bin_["others"]) == {"a", "b"} for bin_ in metrics["snr_bins"])


def test_bank_scored_beside_the_models(two_runs, tmp_path):
    from infer.cli import run
    from infer.score import format_scores

    store, ids, a, _, truth, target = two_runs
    bank = tmp_path / "mf.csv"
    stat = target * 2 + np.random.default_rng(1).normal(0, 1, len(ids))
    order = np.random.default_rng(2).permutation(len(ids))  # any row order
    layout.write_labels(bank, [ids[i] for i in order], [repr(float(stat[i])) for i in order])
    summary = run(tmp_path / "s.csv", InferConfig(), runs=a, store=store, truth=truth,
                  bank=bank, progress=False)
    assert summary["metrics"]["others"]["bank"] == pytest.approx(roc_auc(target, stat))
    table = format_scores(summary["metrics"])
    assert "bank" in table.splitlines()[0] and "oracle" in table.splitlines()[0]
    assert (tmp_path / "auc_vs_snr.png").stat().st_size > 8000


def test_stack_refuses_runs_of_other_fold_assignments(two_runs, write_fold, tmp_path):
    from infer.cli import run

    store, _, a, _, truth, _ = two_runs
    other = tmp_path / "runs" / "c"
    for k in range(2):
        write_fold(other / f"fold{k}", seed=k, fold_seed=7)
    with pytest.raises(MismatchError, match="different fold"):
        run(tmp_path / "s.csv", InferConfig(members="stack"), runs=[a, other], store=store,
            progress=False)


def test_stack_needs_mean_folds_and_the_same_folds_of_every_run(two_runs, tmp_path):
    """Issue 17: a stack fitted on probabilities was applied to mean ranks (ensemble=rank), and
    runs with other folds cannot be paired fold by fold."""
    import shutil

    from data.config import ConfigError
    from infer.cli import run

    with pytest.raises(ConfigError, match="members=stack needs ensemble=mean"):
        InferConfig(members="stack", ensemble="rank")
    store, _, a, b, _, _ = two_runs
    shutil.rmtree(b / "fold1")
    with pytest.raises(MismatchError, match="same folds"):
        run(tmp_path / "s.csv", InferConfig(members="stack"), runs=[a, b], store=store,
            progress=False)


def test_apply_stack_pairs_fold_k_of_every_run_per_view():
    """apply_stack against the formula written out: for each fold number k and view v, the
    members' fold-k logits of view v through the stack; the mean over (k, v)."""
    from types import SimpleNamespace

    from infer.predict.ensemble import Stack, apply_stack

    rng = np.random.default_rng(3)
    # two runs of 3 folds each, listed in a mixed order; 2 views; 50 samples
    order = [(0, 2), (1, 0), (0, 0), (1, 2), (0, 1), (1, 1)]  # (member, fold)
    folds = [SimpleNamespace(member=m, card=SimpleNamespace(fold=k)) for m, k in order]
    logits = rng.normal(0, 3, (6, 2, 50))
    stack = Stack(weights=np.array([0.7, 1.3]), bias=-0.2, n_fit=100)
    row = {mk: i for i, mk in enumerate(order)}
    expected = np.mean([1 / (1 + np.exp(-(0.7 * logits[row[0, k], v] + 1.3 * logits[row[1, k], v]
                                          - 0.2))) for k in range(3) for v in range(2)], axis=0)
    np.testing.assert_allclose(apply_stack(stack, folds, logits), expected, rtol=1e-12)


def test_oof_keeps_confident_predictions_apart(tmp_path):
    """Issue 17: oof.csv held probabilities to 7 digits, so every p above 1 - 5e-8 read back as
    1 and tied. The logit is kept exactly: the OOF AUC and the stack see the order."""
    from data.rundir import read_oof

    ids = np.arange(1, 7, dtype=np.uint64)
    logit = np.array([17.0, 18.5, 25.0, 31.0, 36.5, 40.0], dtype=np.float32).astype(np.float64)
    target = np.array([0, 1, 0, 1, 0, 1])
    write_oof(tmp_path / "oof.csv", ids, target, logit)
    _, t, z = read_oof(tmp_path / "oof.csv")
    assert np.array_equal(z, logit) and np.array_equal(t, target)
    assert roc_auc(target, z) == roc_auc(target, logit) == pytest.approx(2 / 3)
    rounded = np.array([float(f"{1 / (1 + np.exp(-x)):.7g}") for x in logit])
    assert roc_auc(target, rounded) == 0.5  # what 7 digits gave: all tied at 1.0
