"""End to end: `python -m train` in subprocesses, on CPU, with the tiny preset.

Learning (a loud set, with the real synth -> preprocess chain), the run directory contract
(reloaded the way inference reloads it), exact resume after SIGKILL, two processes with
gloo, a NaN loss, and fold=all.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from data import layout
from data import store as zstore
from data.config import load_config
from data.inputs.images import prepare_images
from data.metrics import roc_auc
from data.rundir import file_sha256, read_card
from tests.conftest import kill_training_mid_epoch
from train import checkpoints
from train.config import TrainConfig
from train.folds import stratified_folds

REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "configs" / "train" / "tiny.yaml")
# tiny.yaml with a batch and fold count that fit the 384-sample test store
SMALL = ["--config", TINY, "batch_size=16", "n_folds=4", "fold=0", "loader.num_workers=1"]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path)


def _newest_checkpoint(fold_dir: Path) -> Path:
    dirs = glob.glob(str(fold_dir / "checkpoints" / "checkpoint_*"))
    return Path(max(dirs, key=lambda p: int(p.rsplit("_", 1)[1])))


def _history(fold_dir: Path) -> list[dict]:
    import csv

    with (fold_dir / "history.csv").open() as f:
        return list(csv.DictReader(f))


def _val_ids(store: Path, n_folds: int, fold: int, seed: int = 42) -> list[str]:
    g = zstore.open_store(store)
    rows = np.flatnonzero(np.asarray(g["valid"][:]))
    folds = stratified_folds(np.asarray(g["targets"][:])[rows], n_folds, seed)
    return layout.int_to_id(np.asarray(g["ids"][:])[rows[folds == fold]])


@pytest.fixture(scope="module")
def single(train_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    _run(*SMALL, f"store={train_store}", f"out={out}", "name=single", "epochs=3")
    return out / "single" / "fold0"


def _run(*args: str, timeout: float = 240, env: dict | None = None) -> subprocess.CompletedProcess:
    # No GPU: the tests compare weights with torch.equal, exact on the CPU (docs/training.md).
    proc = subprocess.run([sys.executable, "-m", "train", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": "", **(env or {})})
    if proc.returncode != 0:
        raise AssertionError(f"training failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loud_cache(tmp_path_factory):
    """synth (SNR 25, 400 samples) -> preprocess with the whitened strain kept."""
    from data.sim.samples import generate
    from preprocess import pipeline
    from preprocess.config import PreprocessConfig

    root = tmp_path_factory.mktemp("loud")
    generate(root / "data", 400, 0, seed=3, snr="fixed:25", jobs=2, progress=False)
    cfg = load_config(PreprocessConfig, None,
                      ["store.chunk_size=32", "whiten.n_psd=100", "save_waves=true"])
    pipeline.run(root / "data", root / "cache", cfg, splits=("train",), progress=False)
    return root / "cache" / "train.zarr"


@pytest.mark.timeout(240)
@pytest.mark.parametrize("model", [[], ["model.name=g2net_1d_small", "lr=3e-3"]],
                         ids=["cqt-tiny", "1d-small"])
def test_learns_a_loud_set_from_the_real_chain(loud_cache, tmp_path, model):
    """synth (SNR 25) -> preprocess -> the tiny CQT model, or the small 1D CNN on the whitened
    strain: val AUC >= 0.9 within 3 epochs."""
    _run("--config", TINY, f"store={loud_cache}", f"out={tmp_path}", "name=loud", "n_folds=4",
         "batch_size=16", "epochs=3", *model, timeout=180)
    card = read_card(tmp_path / "loud" / "fold0")
    assert card.best_auc >= 0.9, card.best_auc
    assert card.transform["psd_sha256"] == zstore.psd_sha256(np.array(card.psd))
    assert card.input == ("waves" if model else "images")


def test_run_directory_contract(single, train_store):
    files = {p.name for p in single.iterdir()}
    assert {"config.yaml", "checkpoints", "best.safetensors", "model.json", "oof.csv",
            "history.csv", "curves.png"} <= files
    g = zstore.open_store(train_store)
    card = read_card(single)
    assert card.model_name == "test_efficientnet" and card.input == "images"
    assert card.model_kwargs["num_classes"] == 1 and card.model_kwargs["in_chans"] == 3
    assert card.image_size is None
    assert card.channel_stats == g.attrs["channel_stats"]
    assert card.transform == g.attrs["transform"]
    assert card.preprocess_config == g.attrs["config"]
    assert card.store_schema_version == zstore.SCHEMA_VERSION
    assert np.array_equal(np.array(card.psd), zstore.read_psd(g))
    assert card.weights_sha256 == file_sha256(single / "best.safetensors")
    assert (card.fold, card.n_folds, card.fold_seed) == (0, 4, 42)
    history = _history(single)
    assert [int(h["epoch"]) for h in history] == [1, 2, 3]
    best = max(history, key=lambda h: float(h["val_auc"]))
    assert card.best_epoch == int(best["epoch"])
    assert card.best_auc == pytest.approx(float(best["val_auc"]))
    assert card.best_auc >= 0.9  # the stripes are easy
    cfg = load_config(TrainConfig, single / "config.yaml")
    assert cfg.name == "single" and cfg.fold == 0 and cfg.store == str(train_store)
    assert len(list((single / "checkpoints").iterdir())) <= cfg.checkpoint_total_limit

    # oof.csv: every validation id once, and the predictions of best.safetensors on them,
    # reloaded the way inference reloads a fold: timm.create_model(name, **model_kwargs).
    import csv

    import timm

    with (single / "oof.csv").open() as f:
        oof = list(csv.DictReader(f))
    ids = [r["id"] for r in oof]
    assert sorted(ids) == sorted(_val_ids(train_store, 4, 0)) and len(set(ids)) == len(ids)
    model = timm.create_model(card.model_name, pretrained=False, **card.model_kwargs)
    model.load_state_dict(_weights(single / "best.safetensors"), strict=True)
    model.eval()
    row_of = {sid: i for i, sid in enumerate(layout.int_to_id(np.asarray(g["ids"][:])))}
    rows = np.array([row_of[i] for i in ids])
    images = torch.from_numpy(np.asarray(g["images"][:])[rows])
    x = prepare_images(images, card.channel_stats["mean"], card.channel_stats["std"],
                       card.image_size)
    with torch.no_grad():
        pred = torch.sigmoid(model(x).squeeze(1)).numpy()
    assert np.allclose(pred, [float(r["pred"]) for r in oof], atol=1e-5)
    target = np.array([int(r["target"]) for r in oof])
    assert np.array_equal(target, np.asarray(g["targets"][:])[rows])
    assert roc_auc(target, pred) == pytest.approx(card.best_auc, abs=1e-6)


# A 1D CNN on whitened strain through the same machinery, with every waveform augmentation.
WAVES = ["model.name=g2net_1d_small", "augment.flip_p=0.5", "augment.swap_p=0.5",
         "augment.shift_p=0.5", "augment.max_shift_samples=256", "augment.detector_shift_p=0.5",
         "augment.mask_p=0.5", "augment.mask_max=200"]


def test_ema_warmup_follows_the_weights_of_a_short_run(train_store, tmp_path):
    """One short epoch at decay 0.999: the plain average is still mostly the initial weights,
    the warmed-up one (timm's ramp) follows the trained weights."""
    gaps = {}
    for warmup in ("false", "true"):
        _run(*SMALL, f"store={train_store}", f"out={tmp_path}", f"name=w{warmup}", "epochs=1",
             "ema=true", "ema_decay=0.999", f"ema_warmup={warmup}", "loader.num_workers=0")
        fold = tmp_path / f"w{warmup}" / "fold0"
        ema = _weights(fold / "best.safetensors")  # the EMA weights when ema=true
        raw = _weights(_newest_checkpoint(fold) / "model.safetensors")
        gaps[warmup] = sum(float((ema[k].float() - raw[k].float()).norm() ** 2)
                           for k in raw if raw[k].is_floating_point()) ** 0.5
    assert gaps["true"] < 0.3 * gaps["false"], gaps


@pytest.fixture(params=["images", "waves"])
def kind_store(request, train_store, waves_store):
    """(store, model overrides) for a CQT model on images and a 1D CNN on waves."""
    if request.param == "images":
        return train_store, ["augment.erase_p=0.5"]
    return waves_store, WAVES


@pytest.mark.timeout(300)
def test_resume_after_sigkill_is_exact(kind_store, tmp_path):
    """Kill -9 after a mid-epoch checkpoint, resume=auto: the same weights as no kill."""
    store, model = kind_store
    args = [*SMALL, f"store={store}", "name=r", "epochs=2", "checkpoint_every_steps=5",
            "seed=7", "ema=true", *model]
    _run(*args, f"out={tmp_path / 'a'}")

    fold_b = tmp_path / "b" / "r" / "fold0"
    latest = kill_training_mid_epoch([*args, f"out={tmp_path / 'b'}"], fold_b)
    done = _run(*args, f"out={tmp_path / 'b'}", "resume=auto")
    assert f"resumed from {latest}" in done.stderr

    fold_a = tmp_path / "a" / "r" / "fold0"
    last_a = _weights(_newest_checkpoint(fold_a) / "model.safetensors")
    last_b = _weights(_newest_checkpoint(fold_b) / "model.safetensors")
    assert last_a.keys() == last_b.keys()
    for k in last_a:
        assert torch.equal(last_a[k], last_b[k]), k
    best_a, best_b = _weights(fold_a / "best.safetensors"), _weights(fold_b / "best.safetensors")
    for k in best_a:  # EMA weights
        assert torch.equal(best_a[k], best_b[k]), k
    strip = lambda h: [{k: v for k, v in r.items() if k != "samples_per_s"} for r in h]  # noqa
    assert strip(_history(fold_a)) == strip(_history(fold_b))
    assert (fold_a / "oof.csv").read_text() == (fold_b / "oof.csv").read_text()


@pytest.mark.timeout(240)
def test_training_at_a_non_native_image_size(train_store, tmp_path):
    """image_size=[32, 96] (native 24 x 48) with time shifts: the card records the size, and
    the out-of-fold predictions are the model's on the images resized the way written here
    (torch's interpolate, bilinear and antialiased), not the native ones."""
    import csv

    import timm
    import torch.nn.functional as F

    _run(*SMALL, f"store={train_store}", f"out={tmp_path}", "name=big", "epochs=1",
         "image_size=[32,96]", "augment.shift_p=1.0", "augment.max_shift=4")
    fold = tmp_path / "big" / "fold0"
    card = read_card(fold)
    assert card.image_size == [32, 96]
    model = timm.create_model(card.model_name, pretrained=False, **card.model_kwargs)
    model.load_state_dict(_weights(fold / "best.safetensors"), strict=True)
    model.eval()
    with (fold / "oof.csv").open() as f:
        oof = list(csv.DictReader(f))
    g = zstore.open_store(train_store)
    row_of = {sid: i for i, sid in enumerate(layout.int_to_id(np.asarray(g["ids"][:])))}
    rows = np.array([row_of[r["id"]] for r in oof])
    x = torch.from_numpy(np.asarray(g["images"][:])[rows]).float()
    mean = torch.tensor(card.channel_stats["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(card.channel_stats["std"]).view(1, 3, 1, 1)
    x = F.interpolate((x - mean) / std, size=(32, 96), mode="bilinear", align_corners=False,
                      antialias=True)
    with torch.no_grad():
        pred = torch.sigmoid(model(x).squeeze(1)).numpy()
    assert np.allclose(pred, [float(r["pred"]) for r in oof], atol=1e-4)


@pytest.mark.timeout(240)
def test_resume_with_a_changed_config_warns(single, train_store, tmp_path):
    """resume=auto with another learning rate and more epochs continues, and says which keys
    changed (the run is no longer the one it would have been); unchanged keys go unmentioned,
    and so does a key the run's saved config lacks (saved by an earlier version) that holds its
    default now."""
    run = tmp_path / "single"
    shutil.copytree(single.parent, run)
    saved = yaml.safe_load((run / "fold0" / "config.yaml").read_text())
    del saved["ema_warmup"]  # added after runs like this one were saved
    (run / "fold0" / "config.yaml").write_text(yaml.safe_dump(saved))
    done = _run(*SMALL, f"store={train_store}", f"out={tmp_path}", "name=single", "epochs=4",
                "lr=2e-3", "resume=auto")
    warning = [line for line in done.stderr.splitlines()
               if "resuming with a changed config" in line]
    assert len(warning) == 1, done.stderr[-3000:]
    changed = warning[0].split("changed config (")[1].split("): ")[0].split(", ")
    # the run directory moved (out) and resume=auto itself are no change of what it computes
    assert changed == ["epochs: 3 -> 4", "lr: 0.005 -> 0.002"], warning[0]
    assert [int(h["epoch"]) for h in _history(run / "fold0")] == [1, 2, 3, 4]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("name, damage", [("model.safetensors", "flip"),
                                          ("optimizer.bin", "truncate"),
                                          ("random_states_0.pkl", "delete")])
def test_a_damaged_checkpoint_is_refused_on_resume(single, train_store, tmp_path, name, damage):
    """A file of the newest checkpoint damaged on disk for real (one byte flipped near its
    end, in the tensor data; cut in half; deleted): resume=auto stops before loading anything
    with one line naming the file (exit 2) and leaves the run as it was; with that checkpoint
    deleted, as the message says, it resumes from the one before."""
    shutil.copytree(single.parent, tmp_path / "single")
    fold = tmp_path / "single" / "fold0"
    newest = _newest_checkpoint(fold)
    previous = checkpoints.checkpoint_dirs(fold)[-2][1]
    path = newest / name
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[-10] ^= 0x01
        path.write_bytes(bytes(data))
    elif damage == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:
        path.unlink()
    history = (fold / "history.csv").read_text()
    args = [*SMALL, f"store={train_store}", f"out={tmp_path}", "name=single", "epochs=4",
            "resume=auto"]
    proc = subprocess.run([sys.executable, "-m", "train", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=200)
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"g2net-train: error: {path}: "), last
    assert ("missing from the checkpoint" if damage == "delete" else "damaged on disk") in last
    assert f"delete {newest} to resume from the checkpoint before it" in last
    assert (fold / "history.csv").read_text() == history

    shutil.rmtree(newest)
    done = _run(*args)
    assert f"resumed from {previous}" in done.stderr
    assert [int(h["epoch"]) for h in _history(fold)] == [1, 2, 3, 4]


@pytest.mark.timeout(240)
def test_a_checkpoint_without_checksums_resumes_with_a_warning(single, train_store, tmp_path):
    """A checkpoint saved before COMPLETE recorded checksums (its ``files`` removed, for real,
    from the file on disk): resume=auto loads it, saying that it is unverified."""
    shutil.copytree(single.parent, tmp_path / "single")
    fold = tmp_path / "single" / "fold0"
    newest = _newest_checkpoint(fold)
    mark = json.loads((newest / "COMPLETE").read_text())
    del mark["files"]
    (newest / "COMPLETE").write_text(json.dumps(mark) + "\n")
    done = _run(*SMALL, f"store={train_store}", f"out={tmp_path}", "name=single", "epochs=4",
                "resume=auto")
    assert f"{newest} was saved before checkpoints carried checksums: loading it unverified" \
        in done.stderr
    assert f"resumed from {newest}" in done.stderr


@pytest.mark.timeout(300)
def test_two_processes(single, train_store, tmp_path, launch):
    """accelerate launch --multi_gpu --num_processes 2 with no GPU visible (also where there
    is one), so train/cli.py makes a CPU group (gloo): every validation sample gathered
    exactly once, and an AUC close to the single process's."""
    proc = launch(2, "train", *SMALL, f"store={train_store}", f"out={tmp_path}", "name=ddp",
                  "epochs=3")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "2 processes and no accelerator: a CPU process group (gloo)" in proc.stderr
    assert "on 2 process(es)" in proc.stderr
    fold = tmp_path / "ddp" / "fold0"
    ids = [line.split(",")[0] for line in (fold / "oof.csv").read_text().splitlines()[1:]]
    assert len(ids) == len(set(ids))
    assert sorted(ids) == sorted(_val_ids(train_store, 4, 0))
    ddp_auc = read_card(fold).best_auc
    one_auc = read_card(single).best_auc
    assert ddp_auc >= 0.9 and abs(ddp_auc - one_auc) <= 0.05, (ddp_auc, one_auc)
    assert len(list((fold / "checkpoints").glob("checkpoint_*/random_states_1.pkl"))) >= 1


@pytest.mark.timeout(300)
def test_two_machines_train_one_fold(train_store, tmp_path, launch_machines):
    """Issue 17: two "machines" (two launchers on localhost, --num_machines 2, one process
    each, gloo) train one fold into one run directory: every validation sample's out-of-fold
    prediction exactly once, and a checkpoint holds both processes' RNG states."""
    results = launch_machines(2, "train", *SMALL, f"store={train_store}", f"out={tmp_path}",
                              "name=mm", "epochs=2", "progress=false")
    for r in results:
        assert r.returncode == 0, r.stderr[-4000:]
    assert "on 2 process(es)" in results[0].stderr
    fold = tmp_path / "mm" / "fold0"
    ids = [line.split(",")[0] for line in (fold / "oof.csv").read_text().splitlines()[1:]]
    assert len(ids) == len(set(ids)) and sorted(ids) == sorted(_val_ids(train_store, 4, 0))
    assert len(list((fold / "checkpoints").glob("checkpoint_*/random_states_1.pkl"))) >= 1


@pytest.mark.timeout(300)
def test_waves_model_learns_in_two_processes(waves_store, tmp_path, launch):
    """The 1D CNN on the waves array: 2 processes (gloo), every validation sample once, a
    high AUC, and a model card that says it reads waves with identity statistics."""
    proc = launch(2, "train", *SMALL, *WAVES, f"store={waves_store}", f"out={tmp_path}",
                  "name=w", "epochs=4", "lr=3e-3", timeout=280)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "on 2 process(es)" in proc.stderr and "g2net_1d_small on waves" in proc.stderr
    fold = tmp_path / "w" / "fold0"
    ids = [line.split(",")[0] for line in (fold / "oof.csv").read_text().splitlines()[1:]]
    assert sorted(ids) == sorted(_val_ids(waves_store, 4, 0)) and len(ids) == len(set(ids))
    card = read_card(fold)
    assert card.input == "waves" and card.model_name == "g2net_1d_small"
    assert card.channel_stats == {"mean": [0.0] * 3, "std": [1.0] * 3}
    assert card.best_auc >= 0.9, card.best_auc


@pytest.mark.timeout(240)
def test_nan_loss_stops_and_keeps_the_last_checkpoint(train_store, tmp_path):
    store = Path(shutil.copytree(train_store, tmp_path / "train.zarr"))
    args = [*SMALL, f"store={store}", f"out={tmp_path}", "name=nan"]
    _run(*args, "epochs=1")
    fold = tmp_path / "nan" / "fold0"
    before = {p.relative_to(fold): p.read_bytes() for p in fold.rglob("*") if p.is_file()
              and p.name not in ("config.yaml",)}
    # Poison one chunk of training images after the fact (the statistics stay finite).
    g = zstore.open_store(store, mode="r+")
    g["images"][0:32] = np.full((32, *g["images"].shape[1:]), np.nan, dtype=np.float16)
    proc = subprocess.run([sys.executable, "-m", "train", *args, "epochs=2", "resume=auto"],
                          cwd=REPO, capture_output=True, text=True, timeout=200)
    assert proc.returncode == 1
    assert "error: training loss is nan or inf at epoch 2" in proc.stderr
    after = {p.relative_to(fold): p.read_bytes() for p in fold.rglob("*") if p.is_file()
             and p.name not in ("config.yaml",)}
    assert after == before  # no new checkpoint, best.safetensors and history untouched


@pytest.mark.timeout(300)
def test_fold_all_runs_every_fold(train_store, tmp_path):
    from train.cli import main

    # This process is the dispatcher; each fold runs in its own `python -m train` subprocess.
    main(["--config", TINY, f"store={train_store}", f"out={tmp_path}", "name=cv",
          "batch_size=16", "n_folds=2", "fold=all", "epochs=1", "loader.num_workers=0",
          "grad_accum=2", "clip_grad=1.0", "channels_last=true"])
    run = tmp_path / "cv"
    for k in (0, 1):
        assert (run / f"fold{k}" / "best.safetensors").is_file()
        cfg = yaml.safe_load((run / f"fold{k}" / "config.yaml").read_text())
        assert cfg["fold"] == k and cfg["name"] == "cv" and cfg["grad_accum"] == 2
    ids = [line.split(",")[0] for line in (run / "oof.csv").read_text().splitlines()[1:]]
    g = zstore.open_store(train_store)
    valid_ids = layout.int_to_id(np.asarray(g["ids"][:])[np.asarray(g["valid"][:])])
    assert sorted(ids) == sorted(valid_ids)  # every valid sample out-of-fold exactly once


def test_fold_all_is_refused_under_a_multi_process_launch(train_store, tmp_path, monkeypatch,
                                                          capsys):
    """fold=all re-launches nothing from inside a launch: one fold per launch instead."""
    from train.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit) as e:
        main(["--config", TINY, f"store={train_store}", f"out={tmp_path}", "fold=all"])
    assert e.value.code == 2
    assert "g2net-train: error: fold=all runs from a single process" in capsys.readouterr().err
    assert not (tmp_path / "tiny").exists()


@pytest.mark.timeout(240)
def test_nan_loss_on_one_rank_stops_every_rank(train_store, tmp_path, launch):
    """Issue 17: a NaN loss on rank 1 alone used to raise there only; rank 0 waited in DDP's
    all-reduce until the launcher killed it (SIGTERM), without a word. Now every rank meets the
    collective check, stops with the one-line message and exit status 1, and nothing is
    saved (a real 2-process run; the fault is injected on rank 1 from its 3rd batch)."""
    script = str(REPO / "tests" / "faults" / "nan_loss_on_one_rank.py")
    proc = launch(2, script, *SMALL, f"store={train_store}", f"out={tmp_path}", "name=nan",
                  "epochs=2", "progress=false", env={"NAN_RANK": "1", "NAN_BATCH": "3"},
                  timeout=200)
    assert proc.returncode != 0
    # Both ranks leave the collective check together and each says why: two lines. (Which of
    # them the launcher then reports as killed is a race: it SIGTERMs the rest as soon as one
    # has exited. Before the fix rank 1 spoke alone and rank 0 was killed in the all-reduce.)
    line = "g2net-train: error: training loss is nan or inf at epoch 1"
    assert proc.stderr.count(line) == 2, proc.stderr[-3000:]
    fold = tmp_path / "nan" / "fold0"
    assert not (fold / "best.safetensors").exists() and not list(fold.glob("checkpoints/*"))


@pytest.mark.timeout(900)
def test_compile_bf16_grad_accum_train_and_resume(waves_store, tmp_path, launch):
    """Issue 17: compile=true, bf16 autocast and a resume with gradient accumulation had no
    test. One process (accelerate launch --mixed_precision bf16; bf16 autocast runs on the
    CPU too), compile=true (torch.compile after Accelerate's wrapping), grad_accum=2, a
    checkpoint every 2 updates; then resume=auto for a second epoch. The run resumes from the
    first epoch's last checkpoint, trains the 1D CNN to a high AUC, and the card says waves."""
    args = [*SMALL, *WAVES, "model.name=g2net_1d_tiny", f"store={waves_store}",
            f"out={tmp_path}", "name=c", "compile=true", "grad_accum=2",
            "checkpoint_every_steps=2", "lr=3e-3", "progress=false"]
    bf16 = ("--mixed_precision", "bf16")
    first = launch(1, "train", *args, "epochs=1", launch_args=bf16, timeout=420)
    assert first.returncode == 0, first.stderr[-4000:]
    second = launch(1, "train", *args, "epochs=2", "resume=auto", launch_args=bf16,
                    timeout=420)
    assert second.returncode == 0, second.stderr[-4000:]
    assert "resumed from" in second.stderr and "epoch 2," in second.stderr
    assert "(cpu, bf16)" in second.stderr
    card = read_card(tmp_path / "c" / "fold0")
    assert card.input == "waves" and card.best_auc >= 0.9, card.best_auc


@pytest.mark.timeout(300)
def test_deterministic_training_runs_and_changes_nothing_on_the_cpu(train_store, tmp_path):
    """deterministic=true (what exact resume needs on a GPU) must not refuse any operation
    the training uses; on the CPU, deterministic already, the weights are the same as without."""
    args = [*SMALL, f"store={train_store}", f"out={tmp_path}", "epochs=1", "progress=false"]
    _run(*args, "name=plain")
    _run(*args, "name=det", "deterministic=true")
    a, b = (_weights(tmp_path / n / "fold0" / "best.safetensors") for n in ("plain", "det"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
