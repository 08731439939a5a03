"""Fixtures for the preprocessing pipeline: tiny synthetic data sets and a reference cache."""

from __future__ import annotations

import shutil

import pytest

from data.config import load_config
from preprocess.config import PreprocessConfig

# The default preset's CQT (3 x 46 x 129) with tiny chunks, so a few dozen samples make
# several chunks per split and per process. On the CPU even where there is a GPU: the tests
# compare stores byte for byte with CPU references, and CPU and GPU round differently (the
# CUDA tests of test_pipeline.py and test_transforms.py ask for the GPU by name).
SMALL_ARGS = ("store.chunk_size=8", "batch_size=8", "whiten.n_psd=16", "read_threads=2",
              "write_threads=2", "device=cpu")


def small_config(*overrides: str) -> PreprocessConfig:
    return load_config(PreprocessConfig, None, [*SMALL_ARGS, *overrides])


@pytest.fixture(scope="session")
def make_config():
    """``make_config("key=value", ...)``: the small test config with overrides."""
    return small_config


@pytest.fixture(scope="session")
def small_args() -> list[str]:
    """The small test config as command-line overrides."""
    return list(SMALL_ARGS)


@pytest.fixture(scope="session")
def dataset(tmp_path_factory):
    """48 train + 24 test samples in the Kaggle layout (read-only: copy before damaging)."""
    from data.sim.samples import generate

    root = tmp_path_factory.mktemp("preprocess-data") / "data"
    generate(root, n_train=48, n_test=24, seed=11, snr="fixed:20", jobs=1, progress=False)
    return root


@pytest.fixture(scope="session")
def reference_cache(dataset, tmp_path_factory):
    """Both splits of ``dataset`` preprocessed by one uninterrupted in-process run."""
    from preprocess import pipeline

    out = tmp_path_factory.mktemp("preprocess-ref") / "cache"
    summary = pipeline.run(dataset, out, small_config(), progress=False)
    return out, summary


@pytest.fixture
def data_copy(dataset, tmp_path):
    """A private copy of ``dataset`` that a test may damage."""
    return shutil.copytree(dataset, tmp_path / "data")


@pytest.fixture
def cache_with_train(reference_cache, tmp_path):
    """A cache holding a copy of the reference train store only (test not yet made)."""
    out = tmp_path / "cache"
    out.mkdir()
    shutil.copytree(reference_cache[0] / "train.zarr", out / "train.zarr")
    return out
