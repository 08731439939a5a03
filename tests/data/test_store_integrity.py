"""Stores that cannot lie: a chunk file deleted, flipped or truncated on disk stops every reader
(the loader, inference, training) with the array, chunk and samples named; metadata changed on
disk (a channel statistic, an array's shape) stops training and inference; finalize refuses a
store with a missing chunk; ``python -m data.verify`` reports every damage."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from torch.utils.data import DataLoader

from data import layout
from data import store as zstore
from data.inputs.loader import StoreBlocks
from data.verify import main as verify_main

REPO = Path(__file__).resolve().parents[2]
N, CHUNK = 40, 8  # five chunks; chunk 2 holds samples 16-23
DAMAGE = {  # how to damage a chunk file -> the reason the error gives
    "missing": "chunk file missing",
    "flipped": r"checksum mismatch \(crc32c\)",
    "truncated": r"checksum mismatch \(crc32c\)",
}


def _conftest(stage: str):
    """A stage's test conftest as a module, for its store and fold builders (pytest imports
    conftests under names other tests cannot import)."""
    spec = importlib.util.spec_from_file_location(f"_conftest_{stage}",
                                                  REPO / "tests" / (stage or ".") / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _make_store(path: Path, n: int = N, chunk_size: int = CHUNK, split: str = "test",
                invalid=(), complete: bool = True, seed: int = 0) -> tuple[Path, np.ndarray]:
    """A store with the attributes the inference fixtures' folds expect (a train store also
    has their PSD); returns (path, images)."""
    infer_fixtures = _conftest("infer")
    transform, config = infer_fixtures._base_transform()
    rng = np.random.default_rng(seed)
    images = rng.gamma(2.0, 1.0, size=(n, *infer_fixtures.IMAGE_SHAPE)).astype(np.float16)
    valid = np.ones(n, dtype=bool)
    valid[list(invalid)] = False
    images[~valid] = 0
    ids = layout.id_to_int(infer_fixtures.random_ids(rng, n))
    targets = np.full(n, -1) if split == "test" else rng.integers(0, 2, n)
    g = zstore.create(path, split=split, ids=ids, targets=targets,
                      image_shape=infer_fixtures.IMAGE_SHAPE, chunk_size=chunk_size, codec="lz4",
                      attrs={"transform": transform, "config": config})
    if split == "train":  # the stand-in PSD whose hash the transform attribute records
        zstore.write_psd(g, infer_fixtures.PSD, df=0.5)
    nc = zstore.n_chunks(n, chunk_size)
    for k in range(nc if complete else nc - 1):
        sl = zstore.chunk_slice(k, n, chunk_size)
        zstore.write_chunk(g, k, images[sl], valid[sl])
    if complete:
        zstore.finalize(g)
    return path, images


def _chunk_file(path: Path, array: str, chunk: int) -> Path:
    a = zarr.open_array(str(path / array), mode="r")
    return path / array / a.metadata.encode_chunk_key((chunk,) + (0,) * (a.ndim - 1))


def damage(path: Path, kind: str, array: str = "images", chunk: int = 2) -> Path:
    """Do ``kind`` to the file of ``array``'s chunk ``chunk``, for real; returns the file."""
    f = _chunk_file(path, array, chunk)
    data = bytearray(f.read_bytes())
    if kind == "missing":
        f.unlink()
    elif kind == "flipped":  # the case: 400 bytes overwritten inside a chunk
        mid = len(data) // 2
        data[mid:mid + 400] = bytes(b ^ 0xFF for b in data[mid:mid + 400])
        f.write_bytes(bytes(data))
    elif kind == "truncated":  # a copy cut short, a full disk
        f.write_bytes(bytes(data[: len(data) // 2]))
    else:
        raise ValueError(kind)
    return f


def _culprit(path: Path, kind: str, array: str = "images", samples: str = "16-23") -> str:
    """The regex an error about chunk 2 of ``array`` must match."""
    return rf"{path}: {array} chunk 2 \(samples {samples}\): {DAMAGE[kind]}"


# ---------------------------------------------------------------------------------------------
# The format


def test_every_array_checksummed_and_every_chunk_written(tmp_path):
    path, _ = _make_store(tmp_path / "s.zarr", split="test")  # targets all -1: the fill value
    g = zstore.open_store(path)
    for name in g.array_keys():
        assert g[name].metadata.codecs[-1].to_dict() == {"name": "crc32c"}, name
    assert zstore.missing_chunks(g) == []
    assert _chunk_file(path, "targets", 3).is_file()


def test_plain_zarr_rejects_a_flipped_byte(tmp_path):
    """The checksum is Zarr's own codec: any Zarr v3 reader catches the damage, not only ours."""
    path, images = _make_store(tmp_path / "s.zarr")
    a = zarr.open_array(str(path / "images"), mode="r")
    np.testing.assert_array_equal(a[16:24], images[16:24])
    f = _chunk_file(path, "images", 2)
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit
    f.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum do not match"):
        zarr.open_array(str(path / "images"), mode="r")[16:24]


def test_all_invalid_chunk_round_trips_and_verifies(tmp_path, capsys):
    """An all-zero chunk is written like any other (Zarr would skip it by default)."""
    path, images = _make_store(tmp_path / "s.zarr", invalid=range(8, 16))
    g = zstore.require_complete(path)
    for array in ("images", "valid", "bad_reason"):
        assert _chunk_file(path, array, 1).is_file(), array
    np.testing.assert_array_equal(g["images"][8:16], 0)
    assert not g["valid"][8:16].any() and g["valid"][:8].all()
    assert g.attrs["n_invalid"] == 8
    assert verify_main([str(path), "--quiet"]) == 0
    ds = StoreBlocks(path, batch_size=8, shuffle=False)
    index = np.concatenate([b[2].numpy() for b in ds])
    np.testing.assert_array_equal(index, np.r_[0:8, 16:N])


# ---------------------------------------------------------------------------------------------
# Readers stop on damage, naming it


# One case with a worker process: torch takes ~5 s to shut down a worker that raised.
@pytest.mark.parametrize("kind,workers", [(kind, 0) for kind in DAMAGE] + [("flipped", 1)])
def test_loader_names_the_damaged_chunk(tmp_path, kind, workers):
    path, images = _make_store(tmp_path / "s.zarr")
    ds = StoreBlocks(path, batch_size=8, shuffle=True, buffer_chunks=1)
    damage(path, kind)
    blocks = DataLoader(ds, batch_size=None, num_workers=workers)
    # Across the worker boundary torch rebuilds the exception from its text: same type, and the
    # text still names the chunk.
    with pytest.raises(zstore.StoreDamaged, match=_culprit(path, kind)):
        for _ in blocks:
            pass


def test_loader_reads_undamaged_chunks_of_a_damaged_store(tmp_path):
    """Only reads of the damaged chunk fail: the others still come back exact."""
    path, images = _make_store(tmp_path / "s.zarr")
    damage(path, "flipped")
    ds = StoreBlocks(path, batch_size=8, shuffle=False)
    block, _, index = ds.read_block(np.arange(0, 16))
    np.testing.assert_array_equal(block.numpy(), images[:16])
    with pytest.raises(zstore.StoreDamaged, match=_culprit(path, "flipped")):
        ds.read_block(np.array([3, 17]))


@pytest.mark.parametrize("array", ["valid", "targets", "done", "stats"])
def test_small_arrays_name_the_damaged_chunk(tmp_path, array):
    """``done`` and ``stats`` have a row per store chunk: chunk 2 is that of samples 16-23."""
    path, _ = _make_store(tmp_path / "s.zarr")
    damage(path, "missing", array=array)
    with pytest.raises(zstore.StoreDamaged, match=_culprit(path, "missing", array)):
        zstore.open_store(path)[array][:]
    if array in ("valid", "targets"):  # read when the loader is made
        with pytest.raises(zstore.StoreDamaged, match=_culprit(path, "missing", array)):
            StoreBlocks(path, batch_size=8, shuffle=False)


def test_psd_damage_is_named(tmp_path):
    path, _ = _make_store(tmp_path / "train.zarr", split="train")
    np.testing.assert_array_equal(zstore.read_psd(zstore.open_store(path)),
                                  _conftest("infer").PSD)
    damage(path, "flipped", array="psd", chunk=0)
    with pytest.raises(zstore.StoreDamaged, match=rf"{path}: psd chunk 0: checksum mismatch"):
        zstore.read_psd(zstore.open_store(path))


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_inference_stops_naming_the_chunk(tmp_path, kind):
    from infer.cli import run
    from infer.config import InferConfig

    path, _ = _make_store(tmp_path / "test.zarr")
    _conftest("infer")._write_fold(tmp_path / "runs" / "r" / "fold0")
    damage(path, kind)
    out = tmp_path / "submission.csv"
    with pytest.raises(zstore.StoreDamaged, match=_culprit(path, kind)):
        run(out, InferConfig(), runs=tmp_path / "runs" / "r", store=path, progress=False)
    assert not out.exists()


def _train_fails(store: Path, out: Path, capsys, workers: int = 0) -> str:
    """Train a tiny model on ``store`` in this process: it must exit 2 with one error line
    (no traceback, whichever process read the store); that line."""
    from train.cli import main

    with pytest.raises(SystemExit) as e:
        main([f"store={store}", f"out={out}", "name=bad", "model.name=test_efficientnet",
              "batch_size=16", "epochs=1", "n_folds=4", "fold=0", "progress=false",
              f"loader.num_workers={workers}"])
    assert e.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if " error: " in line]
    assert len(errors) == 1, errors
    return errors[0]


@pytest.mark.parametrize("kind,workers", [(kind, 0) for kind in DAMAGE] + [("flipped", 1)])
def test_training_stops_naming_the_chunk(tmp_path, kind, workers, capsys):
    path = _conftest("").build_store(tmp_path / "train.zarr", n=96, chunk_size=32)
    damage(path, kind, chunk=2)
    out = tmp_path / "runs"
    message = _train_fails(path, out, capsys, workers)
    assert message.startswith("g2net-train: error: ")
    assert re.search(_culprit(path, kind, samples="64-95"), message), message
    assert not (out / "bad" / "fold0" / "best.safetensors").exists()


# ---------------------------------------------------------------------------------------------
# Metadata (zarr.json: Zarr keeps no checksum of it)

METADATA_DAMAGE = ["channel_stats", "array_shape", "not_json"]


def damage_metadata(path: Path, kind: str) -> None:
    """Change a store's metadata on disk, for real, the way a bad copy or an edit would."""
    if kind == "not_json":  # a torn write
        f = path / "zarr.json"
        f.write_bytes(f.read_bytes()[:-20])
        return
    f = path / ("zarr.json" if kind == "channel_stats" else "images/zarr.json")
    meta = json.loads(f.read_text())
    if kind == "channel_stats":  # silently wrong normalisation, were it read
        meta["attributes"]["channel_stats"]["mean"][0] += 0.25
    else:  # one sample fewer: its chunks still read, the last sample would vanish
        meta["shape"][0] -= 1
    f.write_text(json.dumps(meta))


@pytest.mark.parametrize("kind", METADATA_DAMAGE)
def test_changed_metadata_is_refused(tmp_path, kind):
    path, _ = _make_store(tmp_path / "test.zarr")
    zstore.require_complete(path)  # sealed by finalize: opens clean
    damage_metadata(path, kind)
    where = "zarr.json: unreadable metadata" if kind == "not_json" else (
        "metadata: the zarr.json files do not match the SHA-256 recorded when the store was "
        "finished")
    with pytest.raises(zstore.StoreError, match=re.escape(f"{path}: {where}")):
        zstore.require_complete(path)


def test_training_and_inference_refuse_changed_metadata(tmp_path, capsys):
    from infer.cli import run
    from infer.config import InferConfig

    path = _conftest("").build_store(tmp_path / "train.zarr", n=96, chunk_size=32)
    damage_metadata(path, "channel_stats")
    out = tmp_path / "runs"
    message = _train_fails(path, out, capsys)
    assert message.startswith(f"g2net-train: error: {path}: metadata: the zarr.json files do "
                              "not match"), message
    assert not (out / "bad").exists()

    test, _ = _make_store(tmp_path / "test.zarr")
    _conftest("infer")._write_fold(tmp_path / "runs" / "r" / "fold0")
    damage_metadata(test, "array_shape")
    submission = tmp_path / "submission.csv"
    with pytest.raises(zstore.StoreDamaged, match=re.escape(f"{test}: metadata")):
        run(submission, InferConfig(), runs=tmp_path / "runs" / "r", store=test, progress=False)
    assert not submission.exists()


def test_verify_reports_changed_metadata(tmp_path, capsys):
    path, _ = _make_store(tmp_path / "test.zarr")
    damage_metadata(path, "channel_stats")
    assert verify_main([str(path), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "  metadata: the zarr.json files do not match the SHA-256 recorded" in out, out


# ---------------------------------------------------------------------------------------------
# Finalize


def test_finalize_refuses_a_missing_chunk(tmp_path):
    path, _ = _make_store(tmp_path / "s.zarr", complete=False)
    g = zstore.open_store(path, mode="r+")
    rng = np.random.default_rng(1)
    zstore.write_chunk(g, 4, rng.gamma(2.0, 1.0, (8, 3, 16, 33)).astype(np.float16),
                       np.ones(8, dtype=bool))
    damage(path, "missing", chunk=1)
    damage(path, "missing", array="bad_reason", chunk=3)
    with pytest.raises(zstore.StoreDamaged,
                       match=r"2 chunk file\(s\) missing .*: bad_reason chunk 3 \(samples "
                             r"24-31\), images chunk 1 \(samples 8-15\); re-run preprocessing"):
        zstore.finalize(g)
    assert zstore.open_store(path).attrs["complete"] is False


# ---------------------------------------------------------------------------------------------
# python -m data.verify


def test_verify_clean_store_and_cache(tmp_path, capsys):
    cache = tmp_path / "cache"
    _make_store(cache / "test.zarr")
    _make_store(cache / "train.zarr", split="train")
    assert verify_main([str(cache / "test.zarr"), "--quiet"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [f"{cache / 'test.zarr'}: OK, 35 chunks read, every checksum matches"]
    assert verify_main([str(cache), "--quiet"]) == 0  # a cache directory: both splits
    assert len(capsys.readouterr().out.strip().splitlines()) == 2


def test_verify_reports_every_damage(tmp_path, capsys):
    path, _ = _make_store(tmp_path / "s.zarr")
    damage(path, "missing", chunk=1)
    damage(path, "flipped", chunk=2)
    damage(path, "truncated", chunk=4)
    damage(path, "truncated", array="valid", chunk=0)
    damage(path, "missing", array="done", chunk=3)
    assert verify_main([str(path), "--quiet"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{path}: DAMAGED, 5 problem(s):"
    assert out[1:6] == [
        "  done chunk 3 (samples 24-31): chunk file missing",
        "  images chunk 1 (samples 8-15): chunk file missing",
        f"  images chunk 2 (samples 16-23): checksum mismatch (crc32c) in a chunk file of "
        f"{_chunk_file(path, 'images', 2).stat().st_size} bytes",
        f"  images chunk 4 (samples 32-39): checksum mismatch (crc32c) in a chunk file of "
        f"{_chunk_file(path, 'images', 4).stat().st_size} bytes",
        f"  valid chunk 0 (samples 0-7): checksum mismatch (crc32c) in a chunk file of "
        f"{_chunk_file(path, 'valid', 0).stat().st_size} bytes",
    ]
    assert out[6] == "  -> re-run preprocessing with --overwrite"


def test_verify_psd_hash_and_other_schema(tmp_path, capsys):
    path, _ = _make_store(tmp_path / "train.zarr", split="train")
    g = zstore.open_store(path, mode="r+")
    g.attrs["transform"] = {**g.attrs["transform"], "psd_sha256": "0" * 64}
    zstore.seal(g)  # as if made so: the PSD check, not the metadata's, is under test
    old, _ = _make_store(tmp_path / "old.zarr")
    zstore.open_store(old, mode="r+").attrs["schema_version"] = 1
    assert verify_main([str(path), str(old), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "  the psd array does not match its recorded psd_sha256" in out
    assert (f"  cannot be opened: {old}: store schema version 1, this code reads "
            f"{zstore.SCHEMA_VERSION}") in out
    assert "2 of 2 stores damaged or unfinished" in out


def test_verify_unfinished_store_is_not_damage(tmp_path, capsys):
    """Chunks not done yet are absent by design: reported unfinished, not missing."""
    path, _ = _make_store(tmp_path / "s.zarr", complete=False)
    assert verify_main([str(path), "--quiet"]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{path}: unfinished: 4 of 5 chunks done (re-run the same preprocess command to "
        "finish it)"]


def test_verify_command_line(tmp_path):
    """As a user runs it: ``python -m data.verify``, exit status and streams."""
    path, _ = _make_store(tmp_path / "s.zarr")

    def verify(*args):
        return subprocess.run([sys.executable, "-m", "data.verify", *args], cwd=REPO,
                              capture_output=True, text=True, timeout=60)

    clean = verify(str(path))
    assert clean.returncode == 0, clean.stderr
    assert clean.stdout.strip().endswith("every checksum matches")
    assert "chunk" in clean.stderr  # the progress bar
    usage = verify(str(tmp_path / "nowhere"))
    assert usage.returncode == 2
    assert f"g2net-verify: error: {tmp_path / 'nowhere'}: no such file" in usage.stderr
    damage(path, "missing")
    damaged = verify(str(path), "--quiet")
    assert damaged.returncode == 1
    assert "images chunk 2 (samples 16-23): chunk file missing" in damaged.stdout
