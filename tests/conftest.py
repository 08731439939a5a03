"""Fixtures shared by every test package: small training stores, and launching a stage as
several processes.

Training stores: small synthetic CQT-like images written with data.store.

Positives carry a bright rising stripe (a chirp's track in a CQT) at a random time over
gamma noise, so a tiny model learns them in seconds. The store has the attributes a store
made by preprocessing has (transform, config, channel_stats).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data import layout
from data import store as zstore
from data.config import to_dict
from data.devices import free_port

REPO = Path(__file__).resolve().parents[1]
# The tests compare against CPU results and run several processes on one machine: no GPU may
# take part, also on a workstation that has one (NCCL would refuse two ranks on one GPU, and
# GPU arithmetic is not the CPU's).
CPU_ONLY = {"CUDA_VISIBLE_DEVICES": ""}


def accelerate_launch(n: int, module: str, *args: str, env: dict | None = None,
                      timeout: float = 240, launch_args: tuple[str, ...] = (),
                      gpus: bool = False) -> subprocess.CompletedProcess:
    """``accelerate launch --multi_gpu --num_processes n -m MODULE ARGS`` (or ``SCRIPT.py
    ARGS``) on a free port with
    no GPU visible: n CPU processes in a gloo group. --multi_gpu is what starts n processes on
    any machine; --cpu --num_processes 2 silently runs one (accelerate issue 2741). ``gpus``:
    leave the GPUs visible (the CUDA tests)."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *(["--multi_gpu"] if n > 1 else []),
           "--num_processes", str(n), "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--main_process_port", str(free_port()), *launch_args,
           *([module] if module.endswith(".py") else ["-m", module]), *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **({} if gpus else CPU_ONLY), **(env or {})},
                          check=False)


@pytest.fixture(scope="session")
def launch():
    """:func:`accelerate_launch`: ``launch(n, "train", *args, env=..., timeout=...)``."""
    return accelerate_launch


IMAGE_SHAPE = (3, 24, 48)


def chirp_images(rng: np.random.Generator, targets: np.ndarray, shape=IMAGE_SHAPE,
                 amplitude: float = 3.0) -> np.ndarray:
    """(N, 3, H, W) float16: gamma noise, plus a rising stripe where target is 1."""
    n = targets.size
    c, h, w = shape
    x = rng.gamma(2.0, 1.0, size=(n, c, h, w)).astype(np.float32)
    length = w // 2
    for i in np.flatnonzero(targets == 1):
        t0 = rng.integers(0, w - length)
        cols = t0 + np.arange(length)
        rows = np.clip((np.linspace(0, 1, length) ** 2 * (h - 4)).astype(int) + 2, 0, h - 1)
        for ch in range(c):
            x[i, ch, rows, cols] += amplitude * (1.0 if ch < 2 else 0.5)
            x[i, ch, np.clip(rows + 1, 0, h - 1), cols] += 0.5 * amplitude
    return x.astype(np.float16)


def chirp_waves(rng: np.random.Generator, targets: np.ndarray, n_time: int = 4096,
                amplitude: float = 1.0) -> np.ndarray:
    """(N, 3, n_time) float16 whitened-strain stand-ins: unit Gaussian noise, plus a 0.25 s
    rising sinusoid (40 -> 250 Hz at 2048 Hz, Hann-tapered) at a random time in all three
    detectors where target is 1."""
    n = targets.size
    x = rng.normal(0.0, 1.0, size=(n, 3, n_time)).astype(np.float32)
    t = np.arange(512) / 2048.0
    chirp = np.sin(2 * np.pi * (40 * t + 420 * t**2)) * np.hanning(t.size)
    for i in np.flatnonzero(targets == 1):
        t0 = rng.integers(0, n_time - t.size)
        x[i, :, t0:t0 + t.size] += amplitude * chirp
    return x.astype(np.float16)


def build_store(path: Path, n: int = 384, seed: int = 0, chunk_size: int = 32,
                invalid=(), amplitude: float = 3.0, split: str = "train",
                complete: bool = True, images: np.ndarray | None = None,
                waves: bool = False) -> Path:
    from preprocess.config import PreprocessConfig, transform_identity

    rng = np.random.default_rng(seed)
    ids = np.sort(rng.choice(16**10, size=n, replace=False)).astype(np.uint64)
    targets = np.zeros(n, dtype=np.int8)
    targets[rng.permutation(n)[: n // 2]] = 1
    if images is None:
        images = chirp_images(rng, targets, amplitude=amplitude)
    valid = np.ones(n, dtype=bool)
    valid[list(invalid)] = False
    images[~valid] = 0
    cfg = PreprocessConfig()
    # A stand-in noise PSD (3, n_freq): only its hash and shape matter to training.
    psd = np.linspace(1.0, 2.0, 3 * 9).reshape(3, 9)
    transform = transform_identity(cfg, zstore.psd_sha256(psd))
    if split != "train":
        targets = -np.ones(n, dtype=np.int8)
    strain = chirp_waves(rng, targets) if waves else None
    if strain is not None:
        strain[~valid] = 0
    g = zstore.create(path, split=split, ids=ids, targets=targets,
                      image_shape=images.shape[1:], chunk_size=chunk_size, codec="lz4",
                      save_waves=waves, attrs={"transform": transform, "config": to_dict(cfg)})
    if split == "train":
        zstore.write_psd(g, psd, df=layout.SAMPLE_RATE / 2 / (psd.shape[1] - 1))
    nc = zstore.n_chunks(n, chunk_size)
    for k in range(nc if complete else nc - 1):
        sl = zstore.chunk_slice(k, n, chunk_size)
        zstore.write_chunk(g, k, images[sl], valid[sl],
                           waves=strain[sl] if strain is not None else None)
    if complete:
        zstore.finalize(g)
    return path


@pytest.fixture(scope="session")
def train_store(tmp_path_factory) -> Path:
    """384 loud samples, chunks of 32, images (3, 24, 48), rows 5 and 40 invalid."""
    return build_store(tmp_path_factory.mktemp("store") / "train.zarr", invalid=(5, 40))


@pytest.fixture(scope="session")
def waves_store(tmp_path_factory) -> Path:
    """The train_store's samples with whitened-strain stand-ins (3, 4096) beside the images:
    positives carry a chirp in unit noise in both (a 1D CNN learns them in seconds)."""
    return build_store(tmp_path_factory.mktemp("waves") / "train.zarr", invalid=(5, 40),
                       waves=True)


@pytest.fixture
def make_train_store():
    """``make_train_store(path, n=384, ...) -> path``: see :func:`build_store`."""
    return build_store


def accelerate_launch_machines(n_machines: int, module: str, *args: str, env: dict | None = None,
                               timeout: float = 300) -> list[subprocess.CompletedProcess]:
    """``n_machines`` "machines" on this one: one ``accelerate launch --num_machines N
    --machine_rank R --main_process_ip 127.0.0.1`` per rank, one process each, started together
    as a cluster's launchers would be, on CPUs (gloo). Returns each launcher's result."""
    port = str(free_port())
    procs = []
    for rank in range(n_machines):
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
               "--num_machines", str(n_machines), "--num_processes", str(n_machines),
               "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
               "--main_process_port", port, "--mixed_precision", "no", "--dynamo_backend", "no",
               "-m", module, *args]
        procs.append(subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True,
                                      env={**os.environ, **CPU_ONLY, **(env or {})}))
    results = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return results


@pytest.fixture(scope="session")
def launch_machines():
    """:func:`accelerate_launch_machines`: ``launch_machines(2, "preprocess", *args)``."""
    return accelerate_launch_machines


def kill_training_mid_epoch(args: list[str], fold_dir: Path, timeout: float = 180,
                            env: dict | None = None) -> Path:
    """Start ``python -m train ARGS``, SIGKILL it (and its loader workers) as soon as a
    mid-epoch checkpoint of ``fold_dir`` is complete, and return that checkpoint; fails when
    the run ended first or the kill came after an epoch's end."""
    import glob
    import json
    import signal
    import time

    from train import checkpoints

    proc = subprocess.Popen([sys.executable, "-m", "train", *args], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, **CPU_ONLY, **(env or {})})
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            marks = [json.loads(Path(p).read_text())
                     for p in glob.glob(str(fold_dir / "checkpoints" / "*" / "COMPLETE"))]
            if any(m["batches_done"] > 0 for m in marks):
                break
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its loader worker, at once
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    latest = checkpoints.latest_checkpoint(fold_dir)
    mark = json.loads((latest / "COMPLETE").read_text())
    assert mark["batches_done"] > 0, f"the kill came after an epoch end: {mark}"
    return latest

