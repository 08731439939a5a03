"""Prediction from a store: submission format and order, fold and TTA averaging, invalid samples."""

import csv
import logging
import re

import numpy as np
import pytest
import torch
from scipy.stats import rankdata  # the reference for data.metrics.average_ranks

from data import layout
from infer.cli import main, run
from infer.config import InferConfig, InferError
from infer.predict.checkpoints import find_checkpoints, load_fold
from infer.predict.ensemble import combine
from infer.predict.inputs import store_inputs
from infer.predict.loop import predict
from infer.predict.submission import INVALID_TARGET
from infer.predict.tta import tta_views


def read_submission(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", "target"]
    return [r[0] for r in rows[1:]], np.array([float(r[1]) for r in rows[1:]])


def test_submission_in_sample_submission_order(make_store, make_run, tmp_path):
    store, ids, _ = make_store(n=20)
    runs = make_run(n_folds=2)
    order = list(np.random.default_rng(1).permutation(ids))
    sample = tmp_path / "sample_submission.csv"
    layout.write_labels(sample, order, [0.5] * len(order))
    out = tmp_path / "sub" / "submission.csv"
    # None: the console script's sys.exit(main()) must mean success.
    assert main(["--runs", str(runs), "--store", str(store), "--out", str(out),
                 "--sample-submission", str(sample), "--quiet", "num_workers=2",
                 "batch_size=6"]) is None
    got_ids, target = read_submission(out)
    assert got_ids == order
    assert np.all((target > 0) & (target < 1))
    assert (out.parent / "infer.yaml").is_file()
    # Without a sample submission: the store's order, same values per id.
    out2 = tmp_path / "submission_store_order.csv"
    run(out2, InferConfig(), runs=runs, store=store, progress=False)
    ids2, target2 = read_submission(out2)
    assert ids2 == ids
    by_id = dict(zip(ids2, target2))
    np.testing.assert_allclose([by_id[i] for i in order], target, rtol=1e-7)


@pytest.mark.parametrize("case", ["missing", "extra"])
def test_sample_submission_mismatch(make_store, make_run, tmp_path, case, capsys):
    store, ids, _ = make_store(n=12)
    runs = make_run(n_folds=1)
    sample_ids = ids[1:] if case == "missing" else ids + ["ffffffffff"]
    sample = tmp_path / "sample_submission.csv"
    layout.write_labels(sample, sample_ids, [0.5] * len(sample_ids))
    with pytest.raises(InferError, match="not in"):
        run(tmp_path / "s.csv", InferConfig(), runs=runs, store=store,
            sample_submission=sample, progress=False)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:  # the CLI turns it into one line and exit 2
        main(["--runs", str(runs), "--store", str(store), "--out", str(tmp_path / "s.csv"),
              "--sample-submission", str(sample), "--quiet"])
    assert e.value.code == 2
    assert re.fullmatch(r"g2net-infer: error: .* not in .*\n", capsys.readouterr().err)


def test_invalid_samples_get_half_and_a_warning(make_store, make_run, tmp_path, caplog):
    store, ids, _ = make_store(n=16, invalid=(3, 11))
    runs = make_run(n_folds=1)
    with caplog.at_level(logging.WARNING):
        summary = run(tmp_path / "s.csv", InferConfig(), runs=runs, store=store, progress=False)
    _, target = read_submission(tmp_path / "s.csv")
    assert summary["n_invalid"] == 2
    assert target[3] == INVALID_TARGET and target[11] == INVALID_TARGET
    assert ids[3] in caplog.text and "invalid" in caplog.text


def _by_hand(fold, images, view, shift):
    """One fold, one view, written out without infer's helpers: normalise, then the view."""
    x = torch.from_numpy(images).float()
    mean = torch.tensor(fold.card.channel_stats["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(fold.card.channel_stats["std"]).view(1, 3, 1, 1)
    x = (x - mean) / std
    if "swap" in view:
        x = torch.stack([x[:, 1], x[:, 0], x[:, 2]], dim=1)
    if "shift" in view:
        x = torch.cat([x[..., -shift:], x[..., :-shift]], dim=-1)  # circular, by `shift` frames
    with torch.no_grad():
        logit = fold.model(x).view(-1).double()
    return torch.sigmoid(logit).numpy()


@pytest.mark.parametrize("ensemble", ["mean", "rank"])
def test_fold_and_tta_averaging_by_hand(make_store, make_run, tmp_path, ensemble):
    from accelerate import Accelerator

    store, ids, images = make_store(n=24, invalid=(5,))
    runs = make_run(n_folds=3, channel_stats={"mean": [1.9, 2.0, 2.1], "std": [1.3, 1.4, 1.5]})
    # -0.125 s = -8 frames of hop 32 at 2048 Hz
    cfg = InferConfig(tta=["swap", "shift"], tta_shift=-0.125, ensemble=ensemble, batch_size=7)
    folds = [load_fold(d) for d in find_checkpoints(runs)]
    pred = predict(folds, store_inputs(store, 5), cfg, Accelerator(cpu=True), progress=False)

    shift = -8
    views = [(), ("swap",), ("shift",), ("swap", "shift")]
    assert tta_views(cfg.tta) == views
    per_fold = np.array([
        np.mean([_by_hand(f, images, v, shift) for v in views], axis=0) for f in folds
    ])  # (3, N): probabilities averaged over the 4 views
    valid = np.arange(24) != 5
    if ensemble == "mean":
        expected = per_fold.mean(axis=0)
    else:  # ranks among the valid rows only
        expected = np.zeros(24)
        expected[valid] = np.mean([rankdata(p[valid]) / valid.sum() for p in per_fold], axis=0)
    expected[~valid] = INVALID_TARGET
    np.testing.assert_allclose(pred.target, expected, rtol=1e-5, atol=1e-6)
    assert pred.probs.shape == (3, 4, 24) and np.isnan(pred.probs[:, :, 5]).all()


def test_combine_small_example():
    probs = np.array([[[0.2, 0.4, 0.9], [0.4, 0.4, 0.7]],   # fold 0, two views
                      [[0.1, 0.8, 0.5], [0.3, 0.6, 0.5]]])  # fold 1
    # views: fold0 -> [0.3, 0.4, 0.8], fold1 -> [0.2, 0.7, 0.5]
    np.testing.assert_allclose(combine(probs, "mean"), [0.25, 0.55, 0.65])
    # ranks / 3: fold0 -> [1, 2, 3]/3, fold1 -> [1, 3, 2]/3
    np.testing.assert_allclose(combine(probs, "rank"), [1 / 3, 2.5 / 3, 2.5 / 3])


def test_checkpoint_discovery(make_run, tmp_path):
    runs = make_run(n_folds=3)
    (runs / "fold3").mkdir()  # a fold still training: skipped with a warning
    assert [d.name for d in find_checkpoints(runs)] == ["fold0", "fold1", "fold2"]
    assert find_checkpoints(runs / "fold1") == [runs / "fold1"]
    assert find_checkpoints(None, [str(runs / "fold2" / "best.safetensors"), str(runs / "fold0")]) \
        == [runs / "fold2", runs / "fold0"]
    with pytest.raises(InferError, match="not both"):
        find_checkpoints(runs, [str(runs / "fold0")])
    with pytest.raises(InferError, match="no fold"):
        find_checkpoints(tmp_path)


def test_explicit_checkpoints_of_different_architectures(make_store, make_run, tmp_path):
    store, ids, _ = make_store(n=10)
    a = make_run("a", n_folds=1)
    b = make_run("b", n_folds=1, model_name="test_resnet", image_size=[24, 40])
    cfg = InferConfig(checkpoints=[str(a / "fold0"), str(b / "fold0" / "best.safetensors")])
    summary = run(tmp_path / "s.csv", cfg, store=store, progress=False)
    assert len(summary["folds"]) == 2 and summary["n"] == 10


def test_two_processes_equal_one(make_store, make_run, tmp_path):
    """``torchrun`` with 2 CPU processes (gloo): each predicts a share, gathered per batch;
    37 samples in batches of 5 leave a remainder that must not be counted twice. Both runs on
    the CPU (no GPU visible, ACCELERATE_USE_CPU), also where there is a GPU: TF32 would blur
    the comparison."""
    import os
    import subprocess
    import sys

    from data.devices import free_port

    store, ids, _ = make_store(n=37, invalid=(5,))
    runs = make_run(n_folds=2)
    args = ["-m", "infer", "--runs", str(runs), "--store", str(store), "--quiet",
            "batch_size=5", "tta=[swap]"]
    one, two = tmp_path / "one.csv", tmp_path / "two" / "submission.csv"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "ACCELERATE_USE_CPU": "1",
           "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, *args, "--out", str(one)], check=True, env=env,
                   timeout=300, capture_output=True)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                    "--master_port", str(free_port()), *args, "--out", str(two)], check=True,
                   env=env, timeout=300, capture_output=True)
    import yaml

    assert yaml.safe_load((two.parent / "infer.yaml").read_text())["num_processes"] == 2
    ids1, p1 = read_submission(one)
    ids2, p2 = read_submission(two)
    assert ids1 == ids2 == ids
    np.testing.assert_allclose(p2, p1, atol=1e-6)


def test_inputs_refused_before_predicting(make_store, make_run, tmp_path):
    """A truth file that lacks a predicted id is an error before any prediction is written."""
    store, ids, _ = make_store(n=10)
    truth = tmp_path / "truth.csv"
    layout.write_labels(truth, ids[:-1], [0, 1] * 4 + [0])
    out = tmp_path / "s.csv"
    with pytest.raises(InferError, match=f"not in {truth}.*first: {ids[-1]}"):
        run(out, InferConfig(), runs=make_run(n_folds=1), store=store, truth=truth,
            progress=False)
    assert not out.exists()


def test_apply_view_on_waves_and_flip_of_an_image_is_the_image():
    from infer.predict.tta import apply_view

    x = torch.randn(2, 3, 64)
    assert torch.equal(apply_view(x, (), 5), x)
    assert torch.equal(apply_view(x, ("flip",), 5), -x)
    assert torch.equal(apply_view(x, ("swap", "shift"), 5),
                       torch.roll(x[:, [1, 0, 2]], 5, dims=-1))
    assert torch.equal(apply_view(x, ("swap", "shift", "flip"), -3),
                       -torch.roll(x[:, [1, 0, 2]], -3, dims=-1))
    assert tta_views(["swap", "flip"]) == [(), ("swap",), ("flip",), ("swap", "flip")]
    assert InferConfig(tta=["flip"]).tta == ["flip"]
    # |CQT(-x)| = |CQT(x)|: an image model's "flip" view is its input unchanged.
    image = torch.randn(2, 3, 8, 16)
    assert torch.equal(apply_view(image, ("flip",), 0), image)


def test_tta_shift_on_resized_images_is_rescaled(make_store, make_run):
    """A model trained at a non-native image size: its input is the normalised image resized
    (bilinear, antialiased: written here with torch's interpolate, not torchvision), and the
    "shift" view rolls it by tta_shift in CQT frames rescaled to the resized width."""
    import torch.nn.functional as F
    from accelerate import Accelerator

    store, ids, images = make_store(n=12)
    runs = make_run(n_folds=1, image_size=[24, 66])  # native (16, 33): twice the width
    fold = load_fold(runs / "fold0")
    cfg = InferConfig(tta=["shift"], tta_shift=-0.125, batch_size=5)  # -8 native frames
    pred = predict([fold], store_inputs(store, 4), cfg, Accelerator(cpu=True), progress=False)

    x = torch.from_numpy(images).float()
    mean = torch.tensor(fold.card.channel_stats["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(fold.card.channel_stats["std"]).view(1, 3, 1, 1)
    x = F.interpolate((x - mean) / std, size=(24, 66), mode="bilinear", align_corners=False,
                      antialias=True)
    shifted = torch.cat([x[..., 16:], x[..., :16]], dim=-1)  # -8 frames x 66/33 = -16 columns
    with torch.no_grad():
        p = [torch.sigmoid(fold.model(v).view(-1).double()).numpy() for v in (x, shifted)]
    np.testing.assert_allclose(pred.probs[0, 0], p[0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(pred.probs[0, 1], p[1], rtol=1e-4, atol=1e-6)
