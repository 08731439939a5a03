"""End to end: the demo (synth -> preprocess -> train subprocess -> infer -> score -> pictures)
at a very small size. Depends on every stage; runs last (file name order)."""

import json

import pytest

from data import layout


@pytest.mark.timeout(600)
def test_demo_end_to_end(tmp_path):
    from infer.demo import format_report, run_demo

    out, work = tmp_path / "runs" / "demo", tmp_path / "work"
    # Loud signals (network SNR 25), 400 samples, 3 epochs: both models must have learned
    # something, and the ensemble must be far above chance (measured: ensemble 0.99, members
    # 0.95+); the oracle is perfect at this SNR.
    report = run_demo(out, work, n_train=400, n_test=100, epochs=3, snr="fixed:25", seed=1,
                      jobs=1, progress=False,
                      train_overrides=["batch_size=16", "loader.num_workers=0"])

    assert report == json.loads((out / "report.json").read_text())
    assert report["n_train"] == 400 and report["n_test"] == 100
    assert report["oracle_auc"] > 0.99
    assert report["test_auc"] >= 0.85, report["test_auc"]
    assert set(report["member_auc"]) == {"train", "train1d"}
    assert min(report["member_auc"].values()) >= 0.7, report["member_auc"]
    for stage in ("synth", "preprocess", "train", "train1d", "infer", "pictures", "total"):
        assert report["seconds"][stage] > 0
    ids, target = layout.read_labels(out / "submission.csv")
    assert ids == layout.read_labels(work / "data" / "sample_submission.csv")[0]
    assert ((target >= 0) & (target <= 1)).all()
    for name in ("cqt.png", "curves.png", "curves1d.png", "roc.png", "auc_vs_snr.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 8 * 1024, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["auc"] == report["test_auc"]
    text = format_report(report)
    assert "test AUC" in text and "oracle AUC" in text and "auc_vs_snr.png" in text
