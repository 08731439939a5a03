"""The model card: written by training (and these fixtures) through one module, read back
exactly; a missing, corrupt or newer card, and weights that are not the card's, are refused
with the file named."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest
import torch

from data.rundir import (
    CARD_FILE,
    CARD_SCHEMA,
    WEIGHTS_FILE,
    CardError,
    ModelCard,
    read_card,
    verify_weights,
    write_fold,
)


def _card(**fields) -> ModelCard:
    base = dict(
        model_name="test_efficientnet", model_kwargs={"num_classes": 1, "in_chans": 3},
        input="images", image_size=None, channel_stats={"mean": [1.0] * 3, "std": [2.0] * 3},
        transform={"transform_version": 1, "psd_sha256": "ab" * 32},
        preprocess_config={"whiten": {"alpha": 0.25}}, psd=[[1.0, 2.0]] * 3, psd_df=1024.0,
        store_schema_version=2, weights_sha256="", fold=3, best_epoch=4, best_auc=0.75,
        n_folds=5, fold_seed=42,
    )
    return ModelCard(**{**base, **fields})


@pytest.fixture
def fold(tmp_path):
    state = {"w": torch.arange(6, dtype=torch.float32).view(2, 3), "b": torch.ones(2)}
    card = write_fold(tmp_path / "fold3", _card(), state)
    return tmp_path / "fold3", card


def test_round_trip_and_hash(fold):
    path, card = fold
    # The hash is the file's SHA-256, computed here with hashlib directly.
    assert card.weights_sha256 == hashlib.sha256((path / WEIGHTS_FILE).read_bytes()).hexdigest()
    back = read_card(path)
    assert back == card and back.card_schema == CARD_SCHEMA
    verify_weights(back, path / WEIGHTS_FILE)  # no error: the weights are the card's


def test_missing_card(tmp_path):
    with pytest.raises(CardError, match=f"{tmp_path / CARD_FILE}: model card missing"):
        read_card(tmp_path)


@pytest.mark.parametrize("text, match", [
    ('{"model_name": "x", ', "not a readable model card"),  # truncated JSON
    ("\x00\x01garbage", "not a readable model card"),
    ("[1, 2]", "a JSON object is expected"),
    ('{"model_name": "x"}', "no card_schema"),  # e.g. an old model.json
])
def test_corrupt_card(fold, text, match):
    path, _ = fold
    (path / CARD_FILE).write_text(text)
    with pytest.raises(CardError, match=match) as e:
        read_card(path)
    assert str(path / CARD_FILE) in str(e.value)


def test_newer_schema_and_missing_or_unknown_keys(fold):
    path, card = fold
    values = json.loads((path / CARD_FILE).read_text())
    (path / CARD_FILE).write_text(json.dumps({**values, "card_schema": CARD_SCHEMA + 1}))
    with pytest.raises(CardError, match=f"card_schema {CARD_SCHEMA + 1} is newer"):
        read_card(path)
    (path / CARD_FILE).write_text(json.dumps({k: v for k, v in values.items() if k != "psd"}))
    with pytest.raises(CardError, match="missing key.s. psd"):
        read_card(path)
    (path / CARD_FILE).write_text(json.dumps({**values, "colour": "red"}))
    with pytest.raises(CardError, match="unknown config key colour"):
        read_card(path)
    (path / CARD_FILE).write_text(json.dumps({**values, "input": "spectra"}))
    with pytest.raises(CardError, match="input: 'spectra' is not one of"):
        read_card(path)
    (path / CARD_FILE).write_text(json.dumps({**values, "fold": "three"}))
    with pytest.raises(CardError, match="fold: expected an integer"):
        read_card(path)


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "replace"])
def test_damaged_weights_are_refused(fold, damage):
    path, card = fold
    weights = path / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    if damage == "truncate":
        weights.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        data[-3] ^= 0xFF  # inside the last tensor's bytes: still a loadable safetensors file
        weights.write_bytes(bytes(data))
    elif damage == "delete":
        weights.unlink()
    else:  # other weights of the same shapes, written after the card
        write_fold(path.parent / "other", card, {"w": torch.zeros(2, 3), "b": torch.ones(2)})
        weights.write_bytes((path.parent / "other" / WEIGHTS_FILE).read_bytes())
    with pytest.raises(CardError, match=str(weights)):
        verify_weights(read_card(path), weights)


def test_interrupted_save_leaves_a_pair_that_is_refused(fold):
    """Weights are written before the card: a kill between the two leaves new weights beside
    the old card, which no longer names them."""
    path, card = fold
    write_fold(path, card, {"w": torch.zeros(2, 3), "b": torch.ones(2)})
    newer = read_card(path)
    (path / CARD_FILE).write_text(json.dumps(dataclasses.asdict(card)))  # the old card back
    with pytest.raises(CardError, match="does not match its model card"):
        verify_weights(read_card(path), path / WEIGHTS_FILE)
    assert newer.weights_sha256 != card.weights_sha256
