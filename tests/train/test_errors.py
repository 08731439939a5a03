"""Bad input stops `python -m train` with ``g2net-train: error: ...`` and exit status 2,
before any training or output."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
from pathlib import Path

import pytest

from data import store as zstore
from train.cli import main

REPO = Path(__file__).resolve().parents[2]
FAST = ["model.name=test_efficientnet", "batch_size=16", "epochs=2", "n_folds=4", "fold=0",
        "loader.num_workers=0"]


def _fails(tmp_path, *args, match: str):
    out = tmp_path / "runs"
    stderr = io.StringIO()
    with pytest.raises(SystemExit) as e, contextlib.redirect_stderr(stderr):
        main([f"out={out}", "name=bad", *FAST, *args])
    assert e.value.code == 2
    lines = stderr.getvalue().splitlines()
    assert len(lines) == 1, lines
    message = lines[0]
    assert message.startswith("g2net-train: error: "), message
    assert re.search(match, message), message
    assert not (out / "bad" / "fold0" / "best.safetensors").exists()
    return message


def test_missing_store(tmp_path):
    _fails(tmp_path, f"store={tmp_path / 'nope.zarr'}", match="no Zarr store")


def test_incomplete_store(tmp_path, make_train_store):
    path = make_train_store(tmp_path / "part.zarr", n=96, complete=False)
    _fails(tmp_path, f"store={path}", match="incomplete .2 of 3 chunks")


def test_other_schema_version(tmp_path, make_train_store):
    path = make_train_store(tmp_path / "old.zarr", n=96)
    zstore.open_store(path, mode="r+").attrs["schema_version"] = zstore.SCHEMA_VERSION + 1
    _fails(tmp_path, f"store={path}", match="schema version")


def test_test_split_store(tmp_path, make_train_store):
    path = make_train_store(tmp_path / "test.zarr", n=96, split="test")
    _fails(tmp_path, f"store={path}", match="train store")


def test_fold_outside_n_folds(tmp_path, train_store):
    _fails(tmp_path, f"store={train_store}", "fold=4", match="fold: 4 is not a fold of n_folds=4")


def test_unknown_key(tmp_path, train_store):
    _fails(tmp_path, f"store={train_store}", "optim.lr=1", match="unknown config key optim")
    _fails(tmp_path, f"store={train_store}", "augment.erase_pp=1", match="augment.erase_pp")


def test_wrong_type_and_value(tmp_path, train_store):
    _fails(tmp_path, f"store={train_store}", "epochs=many", match="epochs: expected an integer")
    _fails(tmp_path, f"store={train_store}", "augment.swap_p=2", match="augment.swap_p")
    _fails(tmp_path, f"store={train_store}", "checkpoint_total_limit=1", match="at least 2")
    _fails(tmp_path, f"store={train_store}", "source=inject", "inject.bank=b.zarr",
           "inject.incoherent_kinds=[glitch]", match="inject.incoherent_kinds")
    _fails(tmp_path, f"store={train_store}", "source=inject", "inject.bank=b.zarr",
           "inject.swap_detector=loudest", match="inject.swap_detector")
    _fails(tmp_path, f"store={train_store}", "source=inject", "inject.bank=b.zarr",
           "inject.mass_power=nan", match="inject.mass_power")


def test_missing_config_file(tmp_path, train_store, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--config", str(tmp_path / "none.yaml"), f"store={train_store}"])
    assert e.value.code == 2
    assert re.fullmatch(r"g2net-train: error: config file .* does not exist\n",
                        capsys.readouterr().err)


def test_unknown_or_missing_tracker(tmp_path, train_store):
    _fails(tmp_path, f"store={train_store}", "log_with=[no_such_tracker]",
           match="log_with: unknown tracker 'no_such_tracker' .*tensorboard")
    if importlib.util.find_spec("clearml") is None:  # accelerate knows it; it is not installed
        _fails(tmp_path, f"store={train_store}", "log_with=[clearml]",
               match=r"log_with: tracker 'clearml' needs the clearml package, which is not "
                     r"installed \(pip install clearml\)")


def test_image_size_the_model_cannot_take(tmp_path, train_store):
    # test_vit needs sides divisible by its patch size, 16; the store's images are 24 x 48
    _fails(tmp_path, f"store={train_store}", "model.name=test_vit",
           match="test_vit cannot take images of size 24x48")
    _fails(tmp_path, f"store={train_store}", "model.name=test_vit", "image_size=[30,40]",
           match="30x40")


def test_unknown_model_and_missing_weights(tmp_path, train_store):
    _fails(tmp_path, f"store={train_store}", "model.name=no_such_net", match="no_such_net")
    _fails(tmp_path, f"store={train_store}", f"model.pretrained_file={tmp_path / 'w.safetensors'}",
           match="pretrained_file.*does not exist")


def test_too_few_samples_per_class(tmp_path, make_train_store):
    path = make_train_store(tmp_path / "small.zarr", n=6)
    _fails(tmp_path, f"store={path}", match="cannot make 4 stratified folds")


def test_existing_checkpoints_need_resume(tmp_path, train_store):
    (tmp_path / "runs" / "bad" / "fold0" / "checkpoints" / "checkpoint_0").mkdir(parents=True)
    _fails(tmp_path, f"store={train_store}", match="resume=auto")


def test_presets_load():
    from data.config import load_config
    from train.config import TrainConfig, check

    presets = sorted((REPO / "configs" / "train").glob("*.yaml"))
    assert {p.stem for p in presets} >= {"tiny", "efficientnet_b0", "resnet34", "efficientnet_b5"}
    for p in presets:
        cfg = load_config(TrainConfig, p)
        if cfg.source != "store":  # an injection preset names its bank and strain on the CLI
            assert not cfg.inject.bank
            cfg = load_config(TrainConfig, p, ["inject.bank=bank.zarr",
                                               "inject.strain=[H1=h.gwf,L1=l.gwf,V1=v.gwf]"])
        check(cfg)


def _identity_leaves(tree: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in tree.items():
        out += _identity_leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"]
    return out


def _keys():
    from preprocess.config import PreprocessConfig, transform_identity

    return _identity_leaves(transform_identity(PreprocessConfig(), "0" * 64))


@pytest.mark.parametrize("key", _keys())
def test_store_made_by_another_transform(tmp_path, make_train_store, key):
    """A store whose recorded transform identity differs, in any one key, from what this code
    makes from the store's own config (an older transform version, another band-edge width...)
    is refused, naming the key."""
    path = make_train_store(tmp_path / "old.zarr", n=96)
    g = zstore.open_store(path, mode="r+")
    transform = g.attrs["transform"]
    node = transform
    *parents, last = key.split(".")
    for p in parents:
        node = node[p]
    value = node[last]
    node[last] = (not value if isinstance(value, bool) else 7.5 if value is None
                  else value * 2 + 1 if isinstance(value, (int, float)) else value + "x")
    g.attrs["transform"] = transform
    zstore.seal(g)  # a store made so, not one changed on disk
    _fails(tmp_path, f"store={path}", match=re.escape(key))


def test_transform_version_bump_refuses_old_store(tmp_path, make_train_store, monkeypatch):
    import preprocess.config

    path = make_train_store(tmp_path / "old.zarr", n=96)
    old = preprocess.config.TRANSFORM_VERSION
    monkeypatch.setattr(preprocess.config, "TRANSFORM_VERSION", old + 1)
    _fails(tmp_path, f"store={path}",
           match=f"transform_version: store {old}, this code {old + 1}")


def test_more_processes_than_gpus_is_refused(tmp_path, make_train_store, monkeypatch):
    """Four processes launched on a machine with one GPU: refused before any set-up, with what
    to launch instead (no GPU is touched: the check needs only the counts)."""
    from data import devices

    path = make_train_store(tmp_path / "train.zarr", n=96)
    monkeypatch.setattr(devices, "cuda_device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    _fails(tmp_path, f"store={path}",
           match="4 processes on this machine but 1 GPU.*launch --num_processes 1 per machine")
