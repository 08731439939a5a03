"""The preprocessing job end to end, with its faults done for real.

Stores are read back with plain ``zarr.open_group`` (not through data/store.py), channel
statistics are checked against numpy over the images, a run is killed with SIGKILL in a
subprocess, two processes are launched with ``accelerate launch``, and bad files are written
to disk.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from data import layout
from data import store as zstore
from data.config import load_config, to_dict
from data.layout import BadSample, DataError
from data.store import SCHEMA_VERSION, StoreError
from preprocess import pipeline
from preprocess.config import TRANSFORM_VERSION, PreprocessConfig

REPO = Path(__file__).resolve().parents[2]


def arrays(path: Path) -> dict[str, np.ndarray]:
    g = zarr.open_group(str(path), mode="r")
    return {k: np.asarray(g[k][:]) for k in sorted(g.array_keys())}


def assert_identical(a: Path, b: Path) -> None:
    """Same arrays byte for byte (strings by value) and the same final statistics."""
    x, y = arrays(a), arrays(b)
    assert sorted(x) == sorted(y)
    for k in x:
        assert x[k].dtype == y[k].dtype and x[k].shape == y[k].shape, k
        if x[k].dtype.kind == "T":  # variable-length strings have no fixed bytes
            assert (x[k] == y[k]).all(), k
        else:
            assert x[k].tobytes() == y[k].tobytes(), f"{k} differs"
    ga, gb = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    for key in ("channel_stats", "n_invalid", "transform", "complete"):
        assert ga.attrs[key] == gb.attrs[key], key


def chunk_files(store: Path, array: str) -> dict[str, int]:
    """Chunk file -> mtime (ns) for one array of a store (orphaned ``.partial`` files aside)."""
    return {str(p.relative_to(store)): p.stat().st_mtime_ns
            for p in (store / array / "c").rglob("*") if p.is_file() and p.suffix != ".partial"}


def cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "preprocess", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120, **kwargs)


# ---------------------------------------------------------------------------------------------
# A normal run


def test_end_to_end(dataset, reference_cache, make_config):
    from preprocess.spectral import estimate_psd
    from preprocess.transforms import Transform

    cache, summary = reference_cache
    cfg = make_config()
    train = zarr.open_group(str(cache / "train.zarr"), mode="r")
    test = zarr.open_group(str(cache / "test.zarr"), mode="r")
    image_shape = (3, 46, 129)  # default preset: fmin 20, fmax 1024, 8 bins/octave, hop 32
    assert summary["image_shape"] == list(image_shape)
    for split, g in (("train", train), ("test", test)):
        ids, targets = layout.read_labels(dataset / layout.LABEL_FILES[split])
        n = len(ids)
        assert g["images"].shape == (n, *image_shape) and g["images"].dtype == np.float16
        assert g["images"].chunks == (8, *image_shape)
        assert np.array_equal(g["ids"][:], layout.id_to_int(ids)) and g["ids"].dtype == np.uint64
        want = targets.astype(np.int8) if split == "train" else np.full(n, -1, np.int8)
        assert np.array_equal(g["targets"][:], want)
        assert g["done"][:].all() and g["done"].shape == (-(-n // 8),)
        assert g["valid"][:].all()
        images = np.asarray(g["images"][:], dtype=np.float64)
        assert np.isfinite(images).all() and (images >= 0).all()
        assert images.any(axis=(1, 2, 3)).all()
        stats = g.attrs["channel_stats"]
        np.testing.assert_allclose(stats["mean"], images.mean(axis=(0, 2, 3)), rtol=1e-9)
        np.testing.assert_allclose(stats["std"], images.std(axis=(0, 2, 3)), rtol=1e-6)
        attrs = g.attrs.asdict()
        assert attrs["schema_version"] == SCHEMA_VERSION
        assert attrs["split"] == split and attrs["complete"]
        assert attrs["config"] == to_dict(cfg)
        assert attrs["source"] == str(dataset.resolve())
        assert {"torch", "nnAudio", "zarr", "numpy", "g2net-spectrogram"} <= set(attrs["versions"])
        assert zstore.bad_samples(g) == [] and attrs["n_invalid"] == 0
        assert summary["splits"][split]["n"] == n and summary["splits"][split]["n_invalid"] == 0

    # The PSD: the first n_psd target-0 training samples, its hash in the transform attribute.
    ids, targets = layout.read_labels(dataset / layout.LABEL_FILES["train"])
    rows = np.flatnonzero(targets == 0)[: cfg.whiten.n_psd]
    x = np.stack([layout.load_sample(layout.sample_path(dataset, "train", ids[i])) for i in rows])
    psd = np.asarray(train["psd"][:])
    np.testing.assert_allclose(psd, estimate_psd(x, cfg.whiten.alpha), rtol=1e-12)
    # The identity written by hand: every key that fixes the images, the code's version, and
    # the PSD's SHA-256 computed here with hashlib.
    transform = {
        "transform_version": TRANSFORM_VERSION, "sample_rate": 2048, "n_time": 4096,
        "whiten": {"alpha": cfg.whiten.alpha, "highpass": cfg.whiten.highpass,
                   "lowpass": cfg.whiten.lowpass, "ramp": cfg.whiten.ramp,
                   "n_psd": cfg.whiten.n_psd},
        "cqt": {k: getattr(cfg.cqt, k) for k in ("fmin", "fmax", "hop_length",
                                                 "bins_per_octave", "filter_scale", "window")},
        "psd_sha256": hashlib.sha256(psd.astype("<f8").tobytes()).hexdigest(),
    }
    assert train.attrs["transform"] == transform
    assert test.attrs["transform"] == transform  # one cache, one transform
    assert "psd" not in test and train.attrs["psd_df"] == 0.5

    # Test images are the train-PSD transform of the test files, not a test-PSD one.
    ids, _ = layout.read_labels(dataset / layout.LABEL_FILES["test"])
    x = np.stack([layout.load_sample(layout.sample_path(dataset, "test", i)) for i in ids])
    with torch.inference_mode():
        want = Transform.from_config(cfg.whiten, cfg.cqt, psd)(torch.from_numpy(x[:8]))[0]
        own = Transform.from_config(cfg.whiten, cfg.cqt, estimate_psd(x, cfg.whiten.alpha))(
            torch.from_numpy(x[:8]))[0]
    stored = np.asarray(test["images"][:8])
    assert np.array_equal(stored, want.half().numpy())
    assert not np.array_equal(stored, own.half().numpy())

    saved = load_config(PreprocessConfig, cache / "preprocess.yaml")
    assert saved == cfg


def test_test_split_needs_the_train_store(dataset, cache_with_train, make_config, tmp_path):
    with pytest.raises(StoreError, match="no train store.*--splits train"):
        pipeline.run(dataset, tmp_path / "empty", make_config(), splits=("test",), progress=False)
    # Once train exists, test alone works (and its transform carries the train PSD's hash).
    summary = pipeline.run(dataset, cache_with_train, make_config(), splits="test",
                           progress=False)
    assert summary["splits"]["test"]["chunks_computed"] == 3
    train = zarr.open_group(str(cache_with_train / "train.zarr"), mode="r")
    test = zarr.open_group(str(cache_with_train / "test.zarr"), mode="r")
    assert test.attrs["transform"] == train.attrs["transform"]
    # A test run with another whitening config than the train store's is refused.
    with pytest.raises(StoreError, match=r"whiten\.alpha: store 0\.25, now 0\.5"):
        pipeline.run(dataset, cache_with_train, make_config("whiten.alpha=0.5"),
                     splits=("test",), progress=False)


# ---------------------------------------------------------------------------------------------
# Crash safety


def test_sigkill_then_rerun_is_byte_identical(tmp_path, make_config, small_args):
    from data.sim.samples import generate

    data, cache, ref = tmp_path / "data", tmp_path / "cache", tmp_path / "ref"
    generate(data, n_train=160, n_test=0, seed=5, snr="fixed:20", progress=False)
    # Small batches and one reader make the 20 chunks slow enough to kill the run midway.
    slow = ["batch_size=1", "read_threads=1"]
    pipeline.run(data, ref, make_config(*slow), splits=("train",), progress=False)

    args = ["--data", str(data), "--out", str(cache), "--splits", "train", "--no-progress",
            *small_args, *slow]
    proc = subprocess.Popen([sys.executable, "-m", "preprocess", *args], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = cache / "train.zarr"

    def n_done() -> int:  # every done chunk exists from the start: count the flags set
        if not (store / "zarr.json").is_file():  # the store appears whole, renamed into place
            return 0
        return int(np.asarray(zarr.open_group(str(store), mode="r")["done"][:]).sum())

    deadline = time.monotonic() + 90
    try:
        while n_done() < 2:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no chunk was done in time"
            time.sleep(0.002)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    done = np.asarray(zarr.open_group(str(store), mode="r")["done"][:])
    assert 0 < done.sum() < done.size, f"kill landed at {done.sum()} of {done.size} chunks"
    assert not zarr.open_group(str(store), mode="r").attrs["complete"]
    finished = {k: v for k, v in chunk_files(store, "images").items()
                if done[int(Path(k).parts[2])]}
    fake = store / "images" / "c" / "0" / "0" / "0" / "0.0123456789abcdef.partial"
    fake.parent.mkdir(parents=True, exist_ok=True)
    fake.write_bytes(b"half a chunk")

    result = cli(*args)
    assert result.returncode == 0, result.stderr
    assert f"resuming, {int(done.sum())} of {done.size} chunks already done" in result.stderr
    assert re.search(r"removed \d+ leftover \.partial file", result.stderr)
    assert not fake.exists() and not list(store.rglob("*.partial"))
    after = chunk_files(store, "images")
    assert all(after[k] == v for k, v in finished.items()), "a done chunk was rewritten"
    assert_identical(store, ref / "train.zarr")


def test_two_processes_equal_one(dataset, reference_cache, tmp_path, small_args, launch):
    """Two CPU processes (device=cpu, and no GPU visible even on a machine that has one):
    byte-identical to the one-process reference."""
    cache = tmp_path / "cache"
    result = launch(2, "preprocess", "--data", str(dataset), "--out", str(cache), "--no-progress",
                    *small_args, env={"CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "device cpu, 2 process(es)" in result.stderr
    for split in ("train", "test"):
        assert_identical(cache / f"{split}.zarr", reference_cache[0] / f"{split}.zarr")


@pytest.mark.timeout(300)
def test_two_machines_equal_one(dataset, reference_cache, tmp_path, small_args,
                                launch_machines):
    """Issue 17: two "machines" (two launchers on localhost, --num_machines 2 --machine_rank
    0/1, one process each, gloo) writing one cache, as a cluster with a shared filesystem
    does: byte-identical to the one-process reference."""
    cache = tmp_path / "cache"
    results = launch_machines(2, "preprocess", "--data", str(dataset), "--out", str(cache),
                              "--no-progress", *small_args)
    for r in results:
        assert r.returncode == 0, r.stderr[-3000:]
    assert "device cpu, 2 process(es)" in results[0].stderr
    for split in ("train", "test"):
        assert_identical(cache / f"{split}.zarr", reference_cache[0] / f"{split}.zarr")


def assert_close_to_cpu(store: Path, cpu_store: Path) -> None:
    """A store made on a GPU: the CPU's arrays, images (and their statistics) within about
    one float16 step."""
    gpu, cpu = arrays(store), arrays(cpu_store)
    assert zarr.open_group(str(store), mode="r").attrs["device_type"] == "cuda"
    assert sorted(gpu) == sorted(cpu)
    for k in cpu:
        if k in ("images", "stats"):
            np.testing.assert_allclose(gpu[k].astype(np.float64), cpu[k].astype(np.float64),
                                       rtol=2e-3, atol=1e-3 * float(np.abs(cpu[k]).max()),
                                       err_msg=k)
        else:
            assert (gpu[k] == cpu[k]).all(), k


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_store_matches_cpu(dataset, reference_cache, tmp_path, make_config):
    cache = tmp_path / "cache"
    summary = pipeline.run(dataset, cache, make_config("device=cuda"), progress=False)
    assert summary["device"] == "cuda:0"
    for split in ("train", "test"):
        assert_close_to_cpu(cache / f"{split}.zarr", reference_cache[0] / f"{split}.zarr")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_more_processes_than_gpus_share_them(dataset, reference_cache, tmp_path, small_args,
                                             launch):
    """One process more than there are GPUs: the last shares cuda:0 (pick_device) over the
    gloo group; the store is the CPU's up to float16 rounding."""
    n = torch.cuda.device_count() + 1
    cache = tmp_path / "cache"
    result = launch(n, "preprocess", "--data", str(dataset), "--out", str(cache),
                    "--no-progress", *small_args, "device=cuda", gpus=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"device cuda:0, {n} process(es)" in result.stderr
    for split in ("train", "test"):
        assert_close_to_cpu(cache / f"{split}.zarr", reference_cache[0] / f"{split}.zarr")


def test_rerun_of_a_finished_store_does_nothing(dataset, reference_cache, tmp_path, make_config,
                                                caplog):
    cache = shutil.copytree(reference_cache[0], tmp_path / "cache")
    before = {split: chunk_files(cache / f"{split}.zarr", "images") for split in ("train", "test")}
    # Reader/writer threads and on_bad change nothing that is written: still resumable.
    cfg = make_config("read_threads=1", "write_threads=1", "on_bad=skip")
    with caplog.at_level(logging.INFO, logger="preprocess.pipeline"):
        summary = pipeline.run(dataset, cache, cfg, progress=False)
    for split in ("train", "test"):
        s = summary["splits"][split]
        assert s["skipped"] and s["chunks_computed"] == 0
        assert chunk_files(cache / f"{split}.zarr", "images") == before[split]
        assert f"{split}.zarr: complete" in caplog.text and "nothing to do" in caplog.text
        assert_identical(cache / f"{split}.zarr", reference_cache[0] / f"{split}.zarr")


def test_other_config_is_refused_until_overwrite(dataset, reference_cache, tmp_path, make_config):
    cache = shutil.copytree(reference_cache[0], tmp_path / "cache")
    other = make_config("cqt.hop_length=16", "store.codec=zstd")
    with pytest.raises(StoreError, match=r"train\.zarr was made with another config: "
                                         r"cqt\.hop_length: store 32, now 16; "
                                         r"store\.codec: store lz4, now zstd; use --overwrite"):
        pipeline.run(dataset, cache, other, progress=False)
    with pytest.raises(StoreError, match=r"batch_size: store 8, now 4"):
        pipeline.run(dataset, cache, make_config("batch_size=4"), progress=False)
    assert_identical(cache / "train.zarr", reference_cache[0] / "train.zarr")  # untouched

    summary = pipeline.run(dataset, cache, other, overwrite=True, progress=False)
    assert summary["image_shape"] == [3, 46, 257]
    for split in ("train", "test"):
        g = zarr.open_group(str(cache / f"{split}.zarr"), mode="r")
        assert g.attrs["complete"] and g.attrs["config"] == to_dict(other)
        assert g["images"].shape[-1] == 257 and g["done"][:].all()


def test_other_samples_are_refused(data_copy, reference_cache, tmp_path, make_config):
    cache = shutil.copytree(reference_cache[0], tmp_path / "cache")
    ids, targets = layout.read_labels(data_copy / layout.LABEL_FILES["train"])
    layout.write_labels(data_copy / layout.LABEL_FILES["train"], ids[::-1], targets[::-1])
    with pytest.raises(StoreError, match=rf"train\.zarr holds other samples than .*"
                                         rf"row 0: stored id {ids[0]} .* listed id {ids[-1]}"):
        pipeline.run(data_copy, cache, make_config(), progress=False)


def test_cli_user_errors_are_one_line(dataset, tmp_path):
    result = cli("--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "cache"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"g2net-preprocess: error: {tmp_path / 'nowhere'}: data directory does not exist")
    result = cli("--data", str(dataset), "--out", str(tmp_path / "cache"), "cqt.hop=3")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(
        "g2net-preprocess: error: unknown config key cqt.hop")
    assert "Traceback" not in result.stderr


def _file_size_limit(limit: int):
    """A ``preexec_fn``: files of the child process cannot grow past ``limit`` bytes."""

    def apply() -> None:
        # With SIGXFSZ ignored, a write past the limit fails with EFBIG instead of killing.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_failed_write_is_one_line_and_resumes(dataset, reference_cache, tmp_path, small_args):
    """A write that really fails (a file-size limit: the image chunks, ~250 kB, cannot be
    written, as on a full disk) ends with exit status 1 and one line naming the chunk file,
    the cause and that re-running resumes; re-run without the limit, the stores come out
    identical to an uninterrupted run's."""
    cache = tmp_path / "cache"
    args = ("--data", str(dataset), "--out", str(cache), "--no-progress", *small_args)
    result = cli(*args, preexec_fn=_file_size_limit(100_000))
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert errors == result.stderr.strip().splitlines()[-1:], result.stderr[-3000:]
    assert re.fullmatch(rf"g2net-preprocess: error: {re.escape(str(cache))}/train\.zarr/images/c/"
                        r"\d+/0/0/0: File too large \(errno 27\); fix that and re-run the same "
                        r"command: it resumes where it stopped", errors[0]), errors[0]
    created = chunk_files(cache / "train.zarr", "psd")  # written when the store was made
    assert created

    result = cli(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert chunk_files(cache / "train.zarr", "psd") == created  # resumed, not made anew
    for split in ("train", "test"):
        assert_identical(cache / f"{split}.zarr", reference_cache[0] / f"{split}.zarr")


# ---------------------------------------------------------------------------------------------
# Bad input. Faults go into the test split's sample 11 (chunk 1 of 3), after a good chunk 0.

BAD_ROW = 11


def damage(data: Path, kind: str, row: int = BAD_ROW) -> str:
    """Damage test file ``row`` in the way ``kind`` says; returns its id."""
    ids, _ = layout.read_labels(data / layout.LABEL_FILES["test"])
    path = layout.sample_path(data, "test", ids[row])
    x = np.load(path)
    if kind == "corrupt":
        path.write_bytes(path.read_bytes()[:300])  # a truncated download
    elif kind == "shape":
        np.save(path, x[:2])
    elif kind == "dtype":
        np.save(path, (x * 1e20).astype(np.int64))
    elif kind == "nan":
        x[1, 2000] = np.nan
        np.save(path, x)
    elif kind == "zeros":
        x[2] = 0.0
        np.save(path, x)
    elif kind == "overflow":
        x[0, 2048] = 1e-9  # a glitch 1e11 x the noise: the CQT exceeds float16's 65504
        np.save(path, x)
    elif kind == "missing":
        path.unlink()
    else:
        raise ValueError(kind)
    return ids[row]


REASONS = {
    "corrupt": "not a readable .npy file",
    "shape": r"shape \(2, 4096\), expected \(3, 4096\)",
    "dtype": "dtype int64, expected float64",
    "nan": "contains NaN or Inf",
    "zeros": "detector V1 is all zeros",
    "overflow": "non-finite image after the transform .* exceeds float16's 65504",
}


@pytest.mark.parametrize("kind", list(REASONS))
def test_bad_sample_stops_with_its_name_and_the_store_resumes(kind, dataset, data_copy,
                                                              cache_with_train, make_config,
                                                              reference_cache):
    bad_id = damage(data_copy, kind)
    with pytest.raises(BadSample, match=rf"{bad_id}\.npy: {REASONS[kind]}"):
        pipeline.run(data_copy, cache_with_train, make_config(), splits=("test",), progress=False)
    g = zarr.open_group(str(cache_with_train / "test.zarr"), mode="r")
    assert list(g["done"][:]) == [True, False, False]  # the chunk before the bad one is kept
    assert not g.attrs["complete"]

    # Put the good file back: the rerun resumes and ends where an unbroken run ends.
    shutil.copy(layout.sample_path(dataset, "test", bad_id),
                layout.sample_path(data_copy, "test", bad_id))
    summary = pipeline.run(data_copy, cache_with_train, make_config(), splits=("test",),
                           progress=False)
    assert summary["splits"]["test"]["chunks_done_before"] == 1
    assert_identical(cache_with_train / "test.zarr", reference_cache[0] / "test.zarr")


def test_cli_bad_sample_message(data_copy, cache_with_train, small_args):
    bad_id = damage(data_copy, "nan")
    result = cli("--data", str(data_copy), "--out", str(cache_with_train), "--splits", "test",
                 "--no-progress", *small_args)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert re.fullmatch(rf"g2net-preprocess: error: .*/test/{'/'.join(bad_id[:3])}/{bad_id}\.npy: "
                        r"contains NaN or Inf \(--on-bad skip .*\)", last), last


def test_missing_file_is_a_listing_error(data_copy, cache_with_train, make_config):
    bad_id = damage(data_copy, "missing")
    for on_bad in ("error", "skip"):
        with pytest.raises(DataError, match=rf"{bad_id}\.npy: listed but missing"):
            pipeline.run(data_copy, cache_with_train, make_config(f"on_bad={on_bad}"),
                         splits=("test",), progress=False)
    assert not (cache_with_train / "test.zarr").exists()


def test_skip_records_bad_samples(data_copy, cache_with_train, make_config, reference_cache,
                                  caplog):
    reasons = {damage(data_copy, kind, row): REASONS[kind]
               for kind, row in (("corrupt", 3), ("nan", 11), ("overflow", 20))}
    with caplog.at_level(logging.WARNING, logger="preprocess.pipeline"):
        summary = pipeline.run(data_copy, cache_with_train, make_config("on_bad=skip"),
                               splits=("test",), progress=False)
    assert summary["splits"]["test"]["n_invalid"] == 3
    assert re.search(r"test\.zarr: 3 bad sample\(s\) skipped", caplog.text)

    store = cache_with_train / "test.zarr"
    g = zarr.open_group(str(store), mode="r")
    ids = layout.int_to_id(g["ids"][:])
    valid = np.asarray(g["valid"][:])
    assert [ids[i] for i in np.flatnonzero(~valid)] == list(reasons)
    images = np.asarray(g["images"][:])
    assert not images[~valid].any()
    ref = zarr.open_group(str(reference_cache[0] / "test.zarr"), mode="r")
    assert np.array_equal(images[valid], np.asarray(ref["images"][:])[valid])
    assert g.attrs["complete"] and g.attrs["n_invalid"] == 3
    bad = zstore.bad_samples(g)
    assert [b["id"] for b in bad] == list(reasons)
    for b in bad:
        assert re.match(reasons[b["id"]], b["reason"]), b
    # Statistics leave the skipped samples out.
    kept = images[valid].astype(np.float64)
    np.testing.assert_allclose(g.attrs["channel_stats"]["mean"], kept.mean(axis=(0, 2, 3)),
                               rtol=1e-9)
    with (cache_with_train / "test_bad.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["id"], r["reason"]) for r in rows] == [(b["id"], b["reason"]) for b in bad]


@pytest.fixture
def fresh_accelerate_state():
    """No Accelerate state before the test, none left after it (it is per process)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_an_accelerator_made_after_preprocessing_gets_the_accelerator(
        dataset, make_config, tmp_path, monkeypatch, fresh_accelerate_state):
    """Issue 17: stage one joins its processes with PartialState(cpu=True); Accelerate keeps
    one state per process, so an Accelerator made afterwards in the same process (the demo's
    inference, a notebook) inherited cpu=True and ran on the CPU beside a GPU. A stand-in
    accelerator ('meta' as the device Accelerate would pick) shows which device it gets."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    monkeypatch.setattr(PartialState, "default_device", property(lambda self: torch.device("meta")))
    assert Accelerator().device.type == "meta"  # the stand-in works
    AcceleratorState._reset_state(reset_partial_state=True)
    pipeline.run(dataset, tmp_path / "cache", make_config(), splits=("train",), progress=False)
    assert Accelerator().device.type == "meta"


@pytest.mark.timeout(240)
def test_a_bad_sample_on_one_process_stops_every_process(data_copy, tmp_path, small_args,
                                                         launch):
    """Issue 17: a bad file in a chunk of process 1 (of 2) used to stop process 1 alone; process
    0 went on with its share and then waited at the barrier until the launcher killed it.
    Now process 1 tells the others (the abort file), every process stops after its current
    chunk, process 1 reports its bad sample and process 0 names the failed process (each ends
    with the bad sample's status, 2; the launcher may SIGTERM the slower one after that)."""
    index = layout.build_index(data_copy, "train")
    # chunk 1 (rows 8-15 with chunks of 8) is process 1's; a target-1 row is not in the PSD
    row = next(r for r in range(8, 16) if index.targets[r] == 1)
    bad = index.path(row)
    bad.write_bytes(bad.read_bytes()[:300])  # a truncated download
    cache = tmp_path / "cache"
    result = launch(2, "preprocess", "--data", str(data_copy), "--out", str(cache),
                    "--no-progress", *small_args)
    assert result.returncode != 0
    err = result.stderr
    assert f"g2net-preprocess: error: {bad}" in err, err[-3000:]  # process 1, its own error
    assert "g2net-preprocess: error: process 1 failed: " in err, err[-3000:]  # process 0
    assert not (cache / ".abort").exists()
