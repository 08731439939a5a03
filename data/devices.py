"""Devices and processes: which device a process computes on, IEEE float32 on CUDA, and ports
for launching process groups. Shared by preprocessing, training and inference.

Under ``accelerate launch`` or ``torchrun`` a machine runs ``LOCAL_WORLD_SIZE`` processes
numbered by ``LOCAL_RANK``. Preprocessing is I/O-bound, so it may run more processes than the
machine has GPUs: :func:`pick_device` deals them out round robin (4 processes, 1 GPU: all on
``cuda:0``; 2 GPUs: ``cuda:0, 1, 0, 1``) and their process group is gloo, on the CPU. Training
and inference run their process group on the GPUs through Accelerate (NCCL), which cannot put
two processes on one GPU ("Duplicate GPU detected"): :func:`check_one_process_per_gpu`.

Everything that depends on the torch version is feature-detected here, so the rest of the code
reads the same on every torch the package admits: :func:`ieee_fp32` (``fp32_precision`` from
torch 2.9, ``allow_tf32`` before) and :func:`accelerator_available` (``torch.accelerator``
from torch 2.6).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from typing import Any

import torch

from data.config import ConfigError

# ---------------------------------------------------------------------------------------------
# Which device


def pick_device(name: str, local_rank: int = 0, device_count: int = 0) -> torch.device:
    """The device process ``local_rank`` of a machine with ``device_count`` CUDA devices
    computes on, for the config value ``name``.

    ``auto``: ``cuda:(local_rank % device_count)`` when there is a GPU, else ``cpu``.
    ``cuda``: the same GPU; ConfigError when there is none. ``cuda:N``: GPU N for every process;
    ConfigError unless N < ``device_count``. Any other name: ``torch.device(name)`` (``cpu``,
    ``mps``, ...); ConfigError when torch does not know it.

    Pure: the counts are arguments, so the mapping is tested without a GPU.
    """
    if local_rank < 0 or device_count < 0:
        raise ValueError(f"local_rank {local_rank} and device_count {device_count} must be >= 0")
    if name == "auto":
        name = "cuda" if device_count > 0 else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"device: {name!r} is not a torch device (auto, cpu, cuda, cuda:1 ...)"
        ) from None
    if device.type != "cuda":
        return device
    if device_count == 0:
        raise ConfigError(f"device: {name} requested but CUDA is not available")
    if device.index is None:
        return torch.device("cuda", local_rank % device_count)
    if device.index >= device_count:
        raise ConfigError(f"device: {name} requested but this machine has {device_count} "
                          f"CUDA device(s), cuda:0 to cuda:{device_count - 1}")
    return device


def cuda_device_count() -> int:
    """CUDA devices this process can use (0 without a working CUDA, or with
    ``CUDA_VISIBLE_DEVICES=""``)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def local_rank() -> int:
    """This process's number on its machine (``LOCAL_RANK``, set by torchrun and accelerate
    launch); 0 when not launched."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def local_world_size(default: int = 1) -> int:
    """Processes on this machine (``LOCAL_WORLD_SIZE``); ``default`` when not launched."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", str(default)))


def process_device(name: str) -> torch.device:
    """:func:`pick_device` for this process: its ``LOCAL_RANK`` and the CUDA devices it sees."""
    return pick_device(name, local_rank(), cuda_device_count())


def cpu_threads(sharers: int = 1, spare: int = 1) -> int:
    """Torch threads per op for a CPU computation that shares this machine's cores (those this
    process may run on) with ``sharers`` - 1 others like it (processes or threads calling
    torch at once), leaving ``spare`` cores to busy helper threads (file reads, compression);
    at least 1.

    Torch's OpenMP workers spin at their barriers: when they share cores with busy threads the
    work collapses. On 2 cores, 2 torch threads made 230-400 samples/s in preprocessing against
    960-1,500 with 1, and ran the search 3-10x slower than 1 (docs/speed.md).
    """
    cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
             else os.cpu_count() or 1)
    return max(1, cores // max(sharers, 1) - spare)


def deterministic_algorithms() -> None:
    """Make this process's CUDA arithmetic repeatable: deterministic algorithms (an error for
    an operation that has none, rather than a silent difference), no cuDNN autotuning, and the
    cuBLAS workspace setting its determinism needs (read when cuBLAS starts: call this before
    any CUDA work). Nothing changes on the CPU, whose kernels are deterministic already."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Torch's intra-op threads set to ``n`` for the block (None: left alone), then restored."""
    before = torch.get_num_threads()
    try:
        if n is not None:
            torch.set_num_threads(n)
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def cpu_process_group() -> Iterator[Any]:
    """Accelerate's ``PartialState(cpu=True)`` for the duration of the block: the processes of a
    launch joined as a gloo group on the CPU, whatever device each computes on (stage one's
    few messages; several processes may share a GPU, which NCCL refuses).

    Accelerate keeps one state per process and every later ``Accelerator()`` inherits it, so
    a state left behind would put inference after preprocessing in the same process (the demo,
    a notebook) on the CPU without a word (issue 17). A state this block made is therefore
    dropped on exit, with its process group; one that existed before is left as it was.
    """
    from accelerate.state import AcceleratorState, PartialState

    owned = not PartialState._shared_state  # accelerate's own test for "initialized"
    state = PartialState(cpu=True)
    try:
        yield state
    finally:
        if owned:
            if state.num_processes > 1 and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
            AcceleratorState._reset_state(reset_partial_state=True)


def check_one_process_per_gpu(local_processes: int, device_count: int) -> None:
    """ConfigError when ``local_processes`` processes of one machine in a NCCL group would
    share its ``device_count`` GPUs (NCCL refuses two ranks on one GPU, at the first collective,
    after all the set-up); the message says what to launch instead."""
    if local_processes > device_count:
        raise ConfigError(
            f"{local_processes} processes on this machine but {device_count} GPU(s): this stage "
            "runs one process per GPU (its process group is NCCL, which cannot share a GPU "
            f"between processes); launch --num_processes {max(device_count, 1)} per machine"
        )


def accelerator_available() -> bool:
    """Whether torch sees an accelerator: ``torch.accelerator.is_available()`` (torch >= 2.6);
    on older torch, CUDA or XPU (the accelerators Accelerate groups processes on)."""
    acc = getattr(torch, "accelerator", None)
    if acc is not None and hasattr(acc, "is_available"):
        return bool(acc.is_available())
    xpu = getattr(torch, "xpu", None)
    return torch.cuda.is_available() or bool(xpu is not None and xpu.is_available())


# ---------------------------------------------------------------------------------------------
# How precisely float32 is computed


def fp32_switches(backends: Any = None) -> list[tuple[Any, str, Any]]:
    """``(object, attribute, value)`` settings that make CUDA float32 convolutions (cuDNN) and
    matmuls (cuBLAS) IEEE float32 on this torch (``backends``: ``torch.backends``, or a stand-in
    for a test), in the order to apply them.

    Torch before 2.9 has the ``allow_tf32`` flags only. From 2.9 it has ``fp32_precision`` per
    operator as well, and it refuses a mix of the two: once a new-API flag disagrees with the
    legacy one, reading ``torch.backends.cudnn.allow_tf32`` (as code that asks "is TF32 on?"
    does, possibly inside cuDNN's own checks) raises RuntimeError. So both are set, the legacy
    flags first (their setters reset the per-operator ones), then every per-operator flag
    (convolutions, RNNs, matmuls, on CUDA and oneDNN): every reading through either API agrees,
    whatever a user or Accelerate set before (``torch.set_float32_matmul_precision("high")``,
    ``allow_tf32 = True``, or the new API for convolutions only).
    """
    backends = torch.backends if backends is None else backends
    switches = [(backends.cudnn, "allow_tf32", False), (backends.cuda.matmul, "allow_tf32", False)]
    # Every per-operator flag of every backend: torch.get_float32_matmul_precision() also
    # raises when CUDA's and oneDNN's (CPU) matmul flags disagree.
    mkldnn = getattr(backends, "mkldnn", None)
    for parent, op in ((backends.cudnn, "conv"), (backends.cudnn, "rnn"),
                       (backends.cuda, "matmul"), (mkldnn, "matmul"), (mkldnn, "conv"),
                       (mkldnn, "rnn")):
        obj = getattr(parent, op, None)
        if obj is not None and hasattr(obj, "fp32_precision"):
            switches.append((obj, "fp32_precision", "ieee"))
    return switches


@contextlib.contextmanager
def ieee_fp32(backends: Any = None) -> Iterator[None]:
    """IEEE float32 for CUDA convolutions and matmuls inside the block; the previous settings
    come back on exit, exception or not. On the CPU it changes something only where a user had
    lowered oneDNN's float32 precision (IEEE is its default).

    cuDNN convolutions default to TF32 on Ampere and later GPUs: a 10-bit mantissa, coarser
    than the float16 images the CQT is stored as. Preprocessing and inference's on-the-fly
    transform compute under this, so GPU images equal CPU ones to float32 rounding.
    """
    switches = fp32_switches(backends)
    before = []
    for obj, attr, _ in switches:
        try:
            before.append((obj, attr, getattr(obj, attr)))
        except RuntimeError:
            # A mix of the two APIs makes the legacy flag unreadable (torch >= 2.9); the
            # per-operator flags, restored after it, bring that state back exactly.
            pass
    try:
        for obj, attr, value in switches:
            setattr(obj, attr, value)
        yield
    finally:
        for obj, attr, value in before:  # legacy first: its setter resets the per-operator flags
            setattr(obj, attr, value)


# ---------------------------------------------------------------------------------------------
# Launching


def free_port(host: str = "") -> int:
    """A TCP port that nothing on ``host`` (default: any address of this machine) is bound to
    now, for a process group's rendezvous.

    The OS picks it (bind to port 0); it is released before the launcher binds it, so another
    program could take it in between: a window of milliseconds, where a fixed port (29500) is
    taken whenever a second job runs on the machine.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]
