"""Pictures: each is written, is a valid PNG and is not trivially empty."""

import csv

import matplotlib.image
import numpy as np
import pytest

from data import layout

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path, min_kb=8):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert len(data) > min_kb * 1024, f"{path}: only {len(data)} bytes"
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and min(pixels.shape[:2]) > 200
    assert pixels[..., :3].std() > 0.05, f"{path} looks blank"


def test_plot_cqt(tmp_path):
    """The axes come from the CQT module: bin centres f_k = fmin 2^(k / bins_per_octave) (the
    constant-Q definition, written out here) and frames every hop_length samples."""
    from infer.plots import plot_cqt
    from preprocess.config import CQTConfig
    from preprocess.transforms import CQT

    cqt = CQT.from_config(CQTConfig())
    freqs, times = cqt.frequencies, cqt.frame_times(4096)
    np.testing.assert_allclose(freqs, 20.0 * 2.0 ** (np.arange(46) / 8), rtol=1e-6)
    np.testing.assert_allclose(times, np.arange(129) * 32 / 2048)
    rng = np.random.default_rng(0)
    image = rng.gamma(2.0, 1.0, size=(3, 46, 129)).astype(np.float16)
    path = plot_cqt(rng.normal(0, 1e-20, (3, 4096)), image, rng.normal(0, 1, (3, 4096)),
                    freqs, times, tmp_path / "cqt.png", title="a sample")
    assert_png(path)


def write_history(path, n=6):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", "train_loss", "val_loss", "val_auc", "lr", "samples_per_s"])
        for e in range(n):
            w.writerow([e, 0.7 - 0.05 * e, 0.69 - 0.04 * e, 0.6 + 0.04 * e,
                        1e-3 * (n - e) / n, 100])


def test_curves_roc_snr_via_cli(tmp_path, capsys):
    from infer.plots import main

    fold = tmp_path / "runs" / "r" / "fold0"
    fold.mkdir(parents=True)
    write_history(fold / "history.csv")
    assert main(["curves", "--run", str(fold)]) is None  # sys.exit(main()) means success
    assert capsys.readouterr().out == f"{fold / 'curves.png'}\n"
    assert_png(fold / "curves.png")

    rng = np.random.default_rng(0)
    n = 300
    ids = sorted(f"{v:010x}" for v in rng.choice(16**10, n, replace=False))
    target = rng.integers(0, 2, n)
    snr = np.where(target == 1, rng.uniform(1, 20, n), 0.0)
    with open(tmp_path / "truth.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "target", "snr", "oracle"])
        w.writerows(zip(ids, target, snr, target * snr + rng.normal(0, 1, n)))
    pred = 1 / (1 + np.exp(-(target * snr * 0.3 + rng.normal(0, 1, n))))
    layout.write_labels(tmp_path / "submission.csv", ids, pred)
    args = ["--submission", str(tmp_path / "submission.csv"),
            "--truth", str(tmp_path / "truth.csv")]
    main(["roc", *args])
    main(["snr", *args, "snr_bins=[0,5,10]"])
    assert_png(tmp_path / "roc.png")
    assert_png(tmp_path / "auc_vs_snr.png")


def test_cqt_preview_cli(tmp_path, make_run, psd, capsys):
    """The preview runs the transform recorded with a run (here: the fixture's stand-in PSD)."""
    from infer.plots import main

    runs = make_run(n_folds=1)
    sid = "0123456789"
    path = layout.sample_path(tmp_path / "data", "test", sid)
    path.parent.mkdir(parents=True)
    rng = np.random.default_rng(0)
    t = np.arange(4096) / 2048
    chirp = np.sin(2 * np.pi * (30 * t + 40 * t**2)) * (t > 1.0)  # 30 -> 190 Hz in the 2nd s
    np.save(path, rng.normal(0, 1, (3, 4096)) + 3 * chirp)
    main(["cqt", "--data", str(tmp_path / "data"), "--id", sid, "--run", str(runs / "fold0"),
          "--out", str(tmp_path / "preview.png")])
    assert_png(tmp_path / "preview.png")
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["cqt", "--data", str(tmp_path / "data"), "--id", "ffffffffff",
              "--run", str(runs / "fold0")])
    assert e.value.code == 2
    assert capsys.readouterr().err == (
        f"g2net-plots: error: {tmp_path / 'data'}: no train or test file for id ffffffffff\n")
