"""A store, PSD or schema other than the model's, folds that disagree: clear errors, no output."""

import copy
import dataclasses

import pytest

from data import store as zstore
from data.rundir import CARD_FILE, read_card, write_card
from data.store import StoreError
from infer.config import InferConfig, InferError
from infer.predict.checkpoints import MismatchError, load_fold
from infer.predict.inputs import card_psd


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


def _leaves(tree: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in tree.items():
        out += _leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"]
    return out


def _changed(value):
    """Another value of the same kind (a bool flips, None becomes a number)."""
    if isinstance(value, bool):
        return not value
    if value is None:
        return 7.5
    if isinstance(value, (int, float)):
        return value * 2 + 1
    return value + "x"


def _set(tree: dict, dotted: str, value) -> dict:
    tree = copy.deepcopy(tree)
    node = tree
    *parents, last = dotted.split(".")
    for p in parents:
        node = node[p]
    node[last] = value
    return tree


def _get(tree: dict, dotted: str):
    for p in dotted.split("."):
        tree = tree[p]
    return tree


def _identity_keys():
    from preprocess.config import PreprocessConfig, transform_identity

    return _leaves(transform_identity(PreprocessConfig(), "0" * 64))


@pytest.mark.parametrize("key", _identity_keys())
def test_model_from_another_transform_is_refused(make_store, write_fold, base_transform,
                                                 tmp_path, key):
    """Every key of the transform identity: a model whose training inputs differ from the
    store's in that key alone (recorded consistently in its card's config where the key is a
    config key) is refused, and the message names the key."""
    from infer.cli import run

    transform, config = base_transform()
    store, _, _ = make_store(transform=transform, config=config)
    value = _changed(_get(transform, key))
    section = key.split(".")[0]
    card_config = _set(config, key, value) if section in ("whiten", "cqt") else config
    fold = write_fold(tmp_path / "runs" / "old" / "fold0", transform=_set(transform, key, value),
                      config=card_config)
    out = tmp_path / "s.csv"
    with pytest.raises(MismatchError) as e:
        run(out, InferConfig(), runs=fold.parent, store=store, progress=False)
    assert f"{key}: model" in str(e.value)
    assert not out.exists()


def test_transform_version_bump_refuses_old_models_and_stores(make_store, make_run, tmp_path,
                                                              monkeypatch):
    """The code's TRANSFORM_VERSION moves on: a model and a store made before are refused."""
    import preprocess.config
    from infer.cli import run

    store, _, _ = make_store()
    runs = make_run(n_folds=1)
    old = preprocess.config.TRANSFORM_VERSION
    monkeypatch.setattr(preprocess.config, "TRANSFORM_VERSION", old + 1)
    with pytest.raises(MismatchError,
                       match=f"transform_version: model {old}, this code {old + 1}"):
        run(tmp_path / "s.csv", InferConfig(), runs=runs, store=store, progress=False)


def test_store_from_another_transform_version(make_store, make_run, base_transform, tmp_path):
    """A store whose recorded identity this code would not make from its config is refused
    even when the model agrees with it."""
    from infer.cli import run

    transform, config = base_transform()
    transform = {**transform, "transform_version": 0}
    store, _, _ = make_store(transform=transform, config=config)
    runs = make_run(n_folds=1)
    with pytest.raises(MismatchError, match="transform_version: store 0, this code 1") as e:
        run(tmp_path / "s.csv", InferConfig(), runs=runs, store=store, progress=False)
    assert str(store) in str(e.value)


def test_other_schema_versions(make_store, make_run, write_fold, tmp_path):
    from infer.cli import run

    store, _, _ = make_store()
    # A model trained on a store of another schema version.
    old = write_fold(tmp_path / "runs" / "old" / "fold0", store_schema_version=99)
    expected = f"store_schema_version: model 99, this code {zstore.SCHEMA_VERSION}"
    with pytest.raises(MismatchError, match=expected):
        run(tmp_path / "s.csv", InferConfig(), runs=old.parent, store=store, progress=False)
    # A store of another schema version.
    runs = make_run(n_folds=1)
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


def test_weights_of_another_architecture(write_fold, tmp_path):
    fold = write_fold(tmp_path / "fold0", model_name="test_efficientnet")
    card = read_card(fold)
    write_card(fold / CARD_FILE, dataclasses.replace(card, model_name="test_resnet"))
    with pytest.raises(InferError, match="weights do not fit test_resnet"):
        load_fold(fold)


def test_raw_path_psd_must_match_its_hash(write_fold, psd, tmp_path):
    """The raw path whitens with the card's PSD, which must be the one its transform names."""
    fold = load_fold(write_fold(tmp_path / "fold0"))
    assert (card_psd(fold) == psd).all()
    fold.card.psd = (psd * 2).tolist()
    with pytest.raises(MismatchError, match="psd_sha256: transform"):
        card_psd(fold)


def test_truncated_weights_stop_inference(make_store, make_run, tmp_path, capsys):
    from data.rundir import CardError
    from infer.cli import main

    store, _, _ = make_store()
    runs = make_run(n_folds=2)
    weights = runs / "fold1" / "best.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    out = tmp_path / "s.csv"
    with pytest.raises(CardError, match=f"{weights}: SHA-256 .* does not match"):
        from infer.cli import run

        run(out, InferConfig(), runs=runs, store=store, progress=False)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:  # the command line: one line naming the file
        main(["--runs", str(runs), "--store", str(store), "--out", str(out), "--quiet"])
    assert e.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"g2net-infer: error: {weights}: SHA-256"), err
    assert not out.exists()
