"""A store, PSD or schema other than the model's, folds that disagree: clear errors, no output."""

import copy
import json

import pytest

from data import store as zstore
from data.store import StoreError
from infer.config import InferConfig
from infer.predict import InferError, MismatchError, build_transform, load_fold, training_psd


def _transform_with(base_transform, key, value):
    transform, config = base_transform()
    section, name = key.split(".")
    transform = copy.deepcopy(transform)
    config = copy.deepcopy(config)
    transform[section][name] = value
    config[section][name] = value
    return transform, config


@pytest.mark.parametrize("key, value, message", [
    ("cqt.hop_length", 16, "cqt.hop_length: model 32, store 16"),
    ("cqt.bins_per_octave", 12, "cqt.bins_per_octave: model 8, store 12"),
    ("cqt.window", "flattop", "cqt.window: model hann, store flattop"),
    ("whiten.highpass", 20.0, "whiten.highpass: model 18.0, store 20.0"),
])
def test_store_made_with_another_transform(make_store, make_run, base_transform, tmp_path,
                                           key, value, message):
    from infer.cli import run

    transform, config = _transform_with(base_transform, key, value)
    store, _, _ = make_store(transform=transform, config=config)
    runs = make_run(n_folds=1)
    out = tmp_path / "s.csv"
    with pytest.raises(MismatchError) as e:
        run(out, InferConfig(), runs=runs, store=store, progress=False)
    assert message in str(e.value) and str(store) in str(e.value)
    assert not out.exists()


def test_store_with_another_psd(make_store, make_run, base_transform, tmp_path):
    from infer.cli import run

    transform, config = base_transform()
    store, _, _ = make_store(transform={**transform, "psd_sha256": "0" * 64}, config=config)
    with pytest.raises(MismatchError, match=r"psd_sha256: model [0-9a-f]{12}\.\.\., store 0{12}"):
        run(tmp_path / "s.csv", InferConfig(), runs=make_run(n_folds=1), store=store,
            progress=False)


def test_other_schema_versions(make_store, make_run, tmp_path):
    from infer.cli import run

    store, _, _ = make_store()
    runs = make_run(n_folds=1)
    # A model trained on a store of another schema version.
    meta_path = runs / "fold0" / "model.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "schema_version": 99}))
    expected = f"schema_version: model 99, this code {zstore.SCHEMA_VERSION}"
    with pytest.raises(MismatchError, match=expected):
        run(tmp_path / "s.csv", InferConfig(), runs=runs, store=store, progress=False)
    # A store of another schema version.
    meta_path.write_text(json.dumps(meta))
    g = zstore.open_store(store, mode="r+")
    g.attrs["schema_version"] = 99
    with pytest.raises(StoreError, match="schema version 99"):
        run(tmp_path / "s.csv", InferConfig(), runs=runs, store=store, progress=False)


def test_folds_that_disagree(make_store, write_fold, base_transform, tmp_path):
    from infer.cli import run

    store, _, _ = make_store()
    runs = tmp_path / "runs" / "mixed"
    write_fold(runs / "fold0", seed=0)
    transform, config = _transform_with(base_transform, "cqt.fmin", 30.0)
    write_fold(runs / "fold1", seed=1, transform=transform, config=config)
    with pytest.raises(MismatchError) as e:
        run(tmp_path / "s.csv", InferConfig(), runs=runs, store=store, progress=False)
    assert "checkpoints disagree" in str(e.value)
    assert "cqt.fmin: fold0 20.0, fold1 30.0" in str(e.value)


def test_weights_of_another_architecture(make_run):
    runs = make_run(n_folds=1)
    meta_path = runs / "fold0" / "model.json"
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()),
                                     "model_name": "test_resnet"}))
    with pytest.raises(InferError, match="weights do not fit test_resnet"):
        load_fold(runs / "fold0")


def test_raw_path_psd_checks(make_store, make_run, psd, tmp_path):
    """The raw path needs the training psd: from model.json, else the train store in
    config.yaml; either must have the recorded hash."""
    runs = make_run(n_folds=1)
    fold = load_fold(runs / "fold0")
    with pytest.raises(InferError, match="no 'psd'"):
        training_psd(fold)
    # From the train store named in config.yaml (a cache directory holding train.zarr).
    train, _, _ = make_store(name="cache/train.zarr", split="train")
    g = zstore.open_store(train, mode="r+")
    g.create_array("psd", shape=psd.shape, dtype="float64")
    g["psd"][:] = psd
    (runs / "fold0" / "config.yaml").write_text(f"store: {train.parent}\n")
    assert (training_psd(fold) == psd).all()
    # From model.json, which wins; a psd with another hash is refused.
    fold.meta["psd"] = (psd * 2).tolist()
    with pytest.raises(MismatchError, match="psd_sha256: model"):
        training_psd(fold)
    fold.meta["psd"] = psd.tolist()
    assert (training_psd(fold) == psd).all()


def test_raw_path_store_config_disagrees_with_transform(make_run, psd):
    pytest.importorskip("preprocess.transforms", reason="preprocess/transforms.py not written yet")
    runs = make_run(n_folds=1, extra={"psd": psd.tolist()})
    fold = load_fold(runs / "fold0")
    fold.meta["store_config"]["cqt"]["fmax"] = 512.0
    with pytest.raises(MismatchError, match="cqt.fmax: store_transform 1024.0, store_config 512.0"):
        build_transform(fold)
