"""Fixtures: a tiny image store and run directories of untrained timm ``test_efficientnet``
models (random weights), written through the model card module as training writes them."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from data import layout
from data import store as zstore
from data.config import to_dict

IMAGE_SHAPE = (3, 16, 33)  # small, so that the models run in milliseconds
PSD = np.linspace(1.0, 2.0, 3 * 9).reshape(3, 9)  # a stand-in: only its hash is compared


def _base_transform() -> tuple[dict, dict]:
    """(store ``transform`` attribute, store ``config`` attribute) for the default config."""
    from preprocess.config import PreprocessConfig, transform_identity

    cfg = PreprocessConfig()
    return transform_identity(cfg, zstore.psd_sha256(PSD)), to_dict(cfg)


def random_ids(rng, n) -> list[str]:
    values = rng.choice(16**10, size=n, replace=False)
    return sorted(f"{int(v):010x}" for v in values)


@pytest.fixture
def make_store(tmp_path):
    """``make_store(name, n, invalid=(), transform=None, ...) -> (path, ids, images)``."""

    def make(name="test.zarr", n=20, invalid=(), transform=None, config=None, split="test",
             seed=0, chunk_size=8, ids=None):
        rng = np.random.default_rng(seed)
        t, c = _base_transform()
        transform = transform or t
        config = config or c
        ids = ids if ids is not None else random_ids(rng, n)
        images = rng.gamma(2.0, 1.0, size=(n, *IMAGE_SHAPE)).astype(np.float16)
        valid = np.ones(n, dtype=bool)
        valid[list(invalid)] = False
        images[~valid] = 0
        targets = np.full(n, -1) if split == "test" else rng.integers(0, 2, n)
        path = tmp_path / name
        g = zstore.create(path, split=split, ids=layout.id_to_int(ids), targets=targets,
                          image_shape=IMAGE_SHAPE, chunk_size=chunk_size, codec="lz4",
                          attrs={"transform": transform, "config": config})
        for k in range(zstore.n_chunks(n, chunk_size)):
            sl = zstore.chunk_slice(k, n, chunk_size)
            zstore.write_chunk(g, k, images[sl], valid[sl])
        zstore.finalize(g)
        return path, ids, images

    return make


def _write_fold(fold_dir, seed=0, model_name="test_efficientnet", transform=None, config=None,
                image_size=None, channel_stats=None, **card_fields):
    """One fold directory: random weights (seeded) and their model card, via
    :func:`data.rundir.write_fold`. ``card_fields`` override any other card field."""
    import timm

    from data.rundir import ModelCard, write_fold

    t, c = _base_transform()
    torch.manual_seed(seed)
    model = timm.create_model(model_name, pretrained=False, num_classes=1, in_chans=3)
    fields = dict(
        model_name=model_name,
        model_kwargs={"num_classes": 1, "in_chans": 3, "drop_rate": 0.0},
        input="images",
        image_size=image_size,
        channel_stats=channel_stats or {"mean": [2.0, 2.0, 2.0], "std": [1.4, 1.4, 1.4]},
        transform=copy.deepcopy(transform or t),
        preprocess_config=copy.deepcopy(config or c),
        psd=PSD.tolist(),
        psd_df=1024.0 / (PSD.shape[1] - 1),
        store_schema_version=zstore.SCHEMA_VERSION,
        weights_sha256="",
        fold=int(fold_dir.name.removeprefix("fold")) if fold_dir.name.startswith("fold") else 0,
        best_epoch=0,
        best_auc=0.5,
        n_folds=5,
        fold_seed=42,
    )
    fields.update(card_fields)
    write_fold(fold_dir, ModelCard(**fields), model.state_dict())
    return fold_dir


@pytest.fixture
def make_run(tmp_path):
    """``make_run(name, n_folds, **write_fold kwargs) -> runs/NAME`` with fold0..fold{n-1}."""

    def make(name="run", n_folds=2, **kwargs):
        run = tmp_path / "runs" / name
        for k in range(n_folds):
            _write_fold(run / f"fold{k}", seed=k, **kwargs)
        return run

    return make


@pytest.fixture
def write_fold():
    """``write_fold(fold_dir, seed=0, model_name=..., transform=..., config=..., ...)``."""
    return _write_fold


@pytest.fixture
def base_transform():
    """``() -> (store transform attribute, store config attribute)`` of the default config."""
    return _base_transform


@pytest.fixture
def psd():
    """The stand-in training PSD whose hash the fixtures record."""
    return PSD
