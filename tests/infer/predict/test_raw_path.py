"""The raw-data path (``--data DIR``: whiten + CQT on the fly, no cache) equals the store path.

A tiny synthetic data set is preprocessed into a store by the real pipeline; a hand-written
run directory records that store's transform. Predicting the raw ``.npy`` files must give the
store path's images to within float16 rounding, and its predictions to the same precision.
"""

import numpy as np
import pytest
import torch

from data import layout
from data import store as zstore
from infer.config import InferConfig


@pytest.fixture(scope="module")
def preprocessed(tmp_path_factory):
    from data.config import load_config
    from data.sim.samples import generate
    from preprocess import pipeline
    from preprocess.config import PreprocessConfig

    root = tmp_path_factory.mktemp("raw")
    data, cache = root / "data", root / "cache"
    generate(data, n_train=24, n_test=21, seed=3, snr="uniform:8,20", progress=False)
    ids, _ = layout.read_labels(data / layout.LABEL_FILES["test"])
    bad = ids[4]
    x = np.load(layout.sample_path(data, "test", bad))
    x[1, 100] = np.nan  # a corrupt sample: skipped by preprocessing, 0.5 in both paths
    np.save(layout.sample_path(data, "test", bad), x)
    cfg = load_config(PreprocessConfig, None,
                      ["on_bad=skip", "batch_size=8", "store.chunk_size=8", "whiten.n_psd=12",
                       "save_waves=true"])
    pipeline.run(data, cache, cfg, splits=("train", "test"), overwrite=False)
    return data, cache, bad


def write_run(fold_dir, cache, model_name="test_efficientnet", input="images",
              image_size=(32, 64)):
    """A fold trained (here: not at all) on ``cache``, its card made from the train store."""
    import timm

    import data.models  # noqa: F401  (registers the 1D CNNs)
    from data.rundir import card_from_store, write_fold

    train = zstore.require_complete(cache / "train.zarr")
    torch.manual_seed(0)
    model = timm.create_model(model_name, pretrained=False, num_classes=1, in_chans=3)
    card = card_from_store(train, model_name=model_name, input=input,
                           model_kwargs={"num_classes": 1, "in_chans": 3},
                           image_size=list(image_size) if image_size else None)
    write_fold(fold_dir, card, model.state_dict())


def test_raw_equals_store(preprocessed, tmp_path):
    from accelerate import Accelerator

    from infer.cli import run
    from infer.predict.checkpoints import load_fold
    from infer.predict.inputs import build_transform

    data, cache, bad = preprocessed
    write_run(tmp_path / "run" / "fold0", cache)
    fold = load_fold(tmp_path / "run" / "fold0")

    # The images themselves: the store's float16 vs the transform run here.
    store = zstore.require_complete(cache / "test.zarr")
    stored = np.asarray(store["images"][:], dtype=np.float32)
    index = layout.build_index(data, "test")
    valid = np.asarray(store["valid"][:])
    assert (~valid).sum() == 1 and index.ids[int(np.flatnonzero(~valid)[0])] == bad
    strain = np.stack([layout.load_sample(index.path(i)) if valid[i] else np.zeros((3, 4096))
                       for i in range(len(index))])
    transform = build_transform(fold).eval()
    with torch.inference_mode():
        fresh = transform(torch.from_numpy(strain))[0].to(torch.float16).float().numpy()
    # One float16 step (2^-10 relative) at most: batch composition may move a float32 value
    # across a rounding boundary.
    np.testing.assert_allclose(fresh[valid], stored[valid], rtol=2**-10, atol=1e-6)

    # The predictions, end to end through both CLI paths.
    cfg = InferConfig(batch_size=5, tta=["swap"])
    a = run(tmp_path / "store" / "submission.csv", cfg, runs=tmp_path / "run",
            store=cache / "test.zarr", accelerator=Accelerator(cpu=True), progress=False)
    b = run(tmp_path / "raw" / "submission.csv", cfg, runs=tmp_path / "run", data=data,
            split="test", accelerator=Accelerator(cpu=True), progress=False)
    ids_a, pa = layout.read_labels(a["submission"])
    ids_b, pb = layout.read_labels(b["submission"])
    assert ids_a == ids_b == layout.read_labels(data / "sample_submission.csv")[0]
    assert a["n_invalid"] == b["n_invalid"] == 1
    assert pa[ids_a.index(bad)] == pb[ids_b.index(bad)] == 0.5
    np.testing.assert_allclose(pb, pa, atol=1e-3)  # measured: 3e-9 (CPU, grouped CQT)


def test_raw_equals_store_for_a_mixed_1d_and_2d_ensemble(preprocessed, tmp_path):
    """A run of a CQT fold and a 1D-CNN fold on whitened strain: the store path reads both
    arrays, the raw path computes both; same predictions, and the waves the raw path makes
    are the store's waves (float16 rounding)."""
    from accelerate import Accelerator

    from infer.cli import run
    from infer.predict.checkpoints import load_fold
    from infer.predict.inputs import build_transform

    data, cache, bad = preprocessed
    runs = tmp_path / "mixed"
    write_run(runs / "fold0", cache)
    write_run(runs / "fold1", cache, model_name="g2net_1d_small", input="waves", image_size=None)
    fold = load_fold(runs / "fold1")
    assert fold.card.input == "waves"

    store = zstore.require_complete(cache / "test.zarr")
    valid = np.asarray(store["valid"][:])
    index = layout.build_index(data, "test")
    strain = np.stack([layout.load_sample(index.path(i)) if valid[i] else np.zeros((3, 4096))
                       for i in range(len(index))])
    with torch.inference_mode():
        waves = build_transform(fold)(torch.from_numpy(strain))[1].to(torch.float16).float()
    np.testing.assert_allclose(waves.numpy()[valid], np.asarray(store["waves"][:])[valid],
                               rtol=2**-10, atol=1e-6)

    cfg = InferConfig(batch_size=6, tta=["swap", "flip", "shift"])
    a = run(tmp_path / "store" / "s.csv", cfg, runs=runs, store=cache / "test.zarr",
            accelerator=Accelerator(cpu=True), progress=False)
    b = run(tmp_path / "raw" / "s.csv", cfg, runs=runs, data=data, split="test",
            accelerator=Accelerator(cpu=True), progress=False)
    ids_a, pa = layout.read_labels(a["submission"])
    ids_b, pb = layout.read_labels(b["submission"])
    assert ids_a == ids_b and a["n_invalid"] == b["n_invalid"] == 1
    np.testing.assert_allclose(pb, pa, atol=1e-3)
    assert len(a["folds"]) == 2 and len(a["views"]) == 8
