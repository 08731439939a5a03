"""End to end: the demo (synth -> preprocess -> train subprocess -> infer -> score -> pictures)
at a very small size. Depends on every stage; runs last (file name order)."""

import json

import pytest

from data import layout


@pytest.mark.timeout(600)
def test_demo_end_to_end(tmp_path):
    from infer.demo import format_report, run_demo

    out, work = tmp_path / "runs" / "demo", tmp_path / "work"
    report = run_demo(out, work, n_train=160, n_test=64, epochs=1, snr="uniform:8,20", seed=1,
                      jobs=1, progress=False,
                      train_overrides=["batch_size=16", "loader.num_workers=0"])

    assert report == json.loads((out / "report.json").read_text())
    assert report["n_train"] == 160 and report["n_test"] == 64
    assert 0.0 <= report["test_auc"] <= 1.0 and 0.5 < report["oracle_auc"] <= 1.0
    for stage in ("synth", "preprocess", "train", "infer", "pictures", "total"):
        assert report["seconds"][stage] > 0
    ids, target = layout.read_labels(out / "submission.csv")
    assert ids == layout.read_labels(work / "data" / "sample_submission.csv")[0]
    assert ((target >= 0) & (target <= 1)).all()
    for name in ("cqt.png", "curves.png", "roc.png", "auc_vs_snr.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 8 * 1024, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["auc"] == report["test_auc"]
    text = format_report(report)
    assert "test AUC" in text and "oracle AUC" in text and "auc_vs_snr.png" in text
