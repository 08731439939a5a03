"""A split's store as preprocessing makes it: created for this config, its samples and PSD
(with the versions that made it), or an existing one checked before a run resumes it, which
it may only do when it was made with the same config, from the same samples, with the same PSD.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from data import layout
from data import store as zstore
from data.config import dict_diff, format_diff, to_dict
from data.store import StoreError
from preprocess.config import (
    RUNTIME_KEYS,
    PreprocessConfig,
    run_identity,
    transform_identity,
)

log = logging.getLogger(__name__)


def train_store_psd(path: Path, cfg: PreprocessConfig) -> np.ndarray:
    """The PSD of the train store at ``path``, which must be made with this config."""
    if not (path / "zarr.json").is_file():
        raise StoreError(f"{path}: no train store; the test split is whitened with the train "
                         "PSD, so preprocess train first (--splits train)")
    g = zstore.open_store(path)
    diff = dict_diff(run_identity(g.attrs.get("config", {})), run_identity(cfg))
    if diff:
        raise StoreError(f"{path} was made with another config "
                         f"({format_diff(diff, 'store', 'now')}); the test split needs the "
                         "train PSD of this config: re-run --splits train")
    return zstore.read_psd(g)


def versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in ("torch", "nnAudio", "zarr", "numpy", "g2net-spectrogram"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:  # run from a checkout that was never pip-installed
            out[name] = None
    return out


def create_store(path: Path, split: str, cfg: PreprocessConfig, ids: np.ndarray,
                 targets: np.ndarray, psd: np.ndarray, data: Path, device: torch.device,
                 replace: bool) -> None:
    """Build the empty store under a temporary name and rename it into place, so that a store
    at ``path`` always has its attributes and (train) PSD, even after a kill."""
    from preprocess.transforms import Transform

    if path.exists():
        if not replace:
            raise StoreError(f"{path} exists; use --overwrite to replace it")
        if not (path / "zarr.json").is_file():
            raise StoreError(f"{path} exists and is not a Zarr store; refusing to delete it")
    image_shape = Transform.from_config(cfg.whiten, cfg.cqt, psd).image_shape
    attrs = {"config": to_dict(cfg), "transform": transform_identity(cfg, zstore.psd_sha256(psd)),
             "source": str(data.resolve()), "versions": versions(),
             "device_type": device.type}
    tmp = path.with_name(f".{path.name}.creating")
    if tmp.exists():
        shutil.rmtree(tmp)
    g = zstore.create(tmp, split=split, ids=ids, targets=targets, image_shape=image_shape,
                      chunk_size=cfg.store.chunk_size, codec=cfg.store.codec,
                      clevel=cfg.store.clevel, save_waves=cfg.save_waves, attrs=attrs)
    if split == "train":
        zstore.write_psd(g, psd, df=layout.SAMPLE_RATE / layout.N_TIME)
    if path.exists():
        log.info("%s: --overwrite: replacing the existing store", path)
        shutil.rmtree(path)
    os.replace(tmp, path)
    log.info("%s: created, %d samples in %d chunks of %d, images %s float16, codec %s",
             path.name, len(ids), zstore.n_chunks(len(ids), cfg.store.chunk_size),
             cfg.store.chunk_size, tuple(image_shape), cfg.store.codec)


def check_resumable(g, path: Path, cfg: PreprocessConfig, ids: np.ndarray, targets: np.ndarray,
                    train_psd: np.ndarray | None, data: Path, split: str,
                    device: torch.device) -> None:
    """StoreError unless the store at ``path`` was made by this config and this transform code
    from these samples.

    ``train_psd``: for test, the train store's PSD (the test store must name its hash); None
    for train, whose PSD is its own and is checked against its hash instead.
    """
    stored = g.attrs.asdict()
    if stored.get("split") != split:
        raise StoreError(f"{path}: holds split {stored.get('split')!r}, not {split!r}")
    diff = dict_diff(run_identity(stored.get("config", {})), run_identity(cfg))
    recorded = stored.get("transform", {})
    psd_hash = (zstore.psd_sha256(train_psd) if train_psd is not None
                else recorded.get("psd_sha256", ""))
    # Another TRANSFORM_VERSION (code changed since the store was begun) shows up here too;
    # a whiten/cqt key that differs in the config is named once, as a config key.
    named = {k for k, _, _ in diff}
    diff += [d for d in dict_diff(recorded, transform_identity(cfg, psd_hash), "transform.")
             if d[0].removeprefix("transform.") not in named]
    # "device: auto" may resolve differently on another machine; CPU and GPU round differently.
    diff += dict_diff({"device_type": stored.get("device_type")}, {"device_type": device.type})
    if diff:
        raise StoreError(f"{path} was made with another config: "
                         f"{format_diff(diff, 'store', 'now')}; "
                         "use --overwrite to replace it, or another --out")
    old_ids, old_targets = np.asarray(g["ids"][:]), np.asarray(g["targets"][:])
    if not np.array_equal(old_ids, ids) or not np.array_equal(old_targets, targets):
        label_file = data / layout.LABEL_FILES[split]
        detail = (f"{old_ids.size} stored vs {ids.size} listed" if old_ids.size != ids.size
                  else first_difference(old_ids, ids, old_targets, targets))
        raise StoreError(f"{path} holds other samples than {label_file} ({detail}; made from "
                         f"{stored.get('source')}); use --overwrite to replace it")
    if split == "train":
        zstore.read_psd(g)  # the PSD must still match its hash
    if stored.get("source") != str(data.resolve()):
        log.info("%s: made from %s, resuming from %s (same ids and targets)", path.name,
                 stored.get("source"), data.resolve())
    run_diff = dict_diff({k: stored.get("config", {}).get(k) for k in RUNTIME_KEYS},
                         {k: getattr(cfg, k) for k in RUNTIME_KEYS})
    if run_diff:
        log.info("%s: resuming with other run settings: %s", path.name,
                 format_diff(run_diff, "store", "now"))


def first_difference(a_ids, b_ids, a_targets, b_targets) -> str:
    i = int(np.flatnonzero((a_ids != b_ids) | (a_targets != b_targets))[0])
    (a,), (b,) = layout.int_to_id(a_ids[i : i + 1]), layout.int_to_id(b_ids[i : i + 1])
    return (f"row {i}: stored id {a} target {a_targets[i]}, listed id {b} target {b_targets[i]}")
