"""data.devices: the device of each process (pure: GPU counts are passed in, so every CUDA case
runs here without a GPU), the IEEE-float32 switch on new and old torch, ports."""

from __future__ import annotations

import socket
from types import SimpleNamespace

import pytest
import torch

from data import devices
from data.config import ConfigError
from data.devices import pick_device


def cuda(i: int) -> torch.device:
    return torch.device("cuda", i)


@pytest.mark.parametrize("n_gpus, expected", [
    (1, [cuda(0)] * 4),  # four I/O processes share one GPU
    (2, [cuda(0), cuda(1), cuda(0), cuda(1)]),
    (4, [cuda(0), cuda(1), cuda(2), cuda(3)]),
    (8, [cuda(0), cuda(1), cuda(2), cuda(3)]),
    (0, [torch.device("cpu")] * 4),
])
def test_auto_deals_processes_round_robin(n_gpus, expected):
    assert [pick_device("auto", rank, n_gpus) for rank in range(4)] == expected


def test_cuda_without_an_index_is_the_rank_s_gpu():
    assert [pick_device("cuda", rank, 3) for rank in range(5)] == [
        cuda(0), cuda(1), cuda(2), cuda(0), cuda(1)]


def test_an_explicit_gpu_is_every_process_s_gpu():
    assert [pick_device("cuda:1", rank, 2) for rank in range(3)] == [cuda(1)] * 3


def test_cpu_stays_on_the_cpu_whatever_the_gpus():
    assert pick_device("cpu", 3, 2) == torch.device("cpu")


def test_cuda_without_cuda_is_a_config_error():
    with pytest.raises(ConfigError, match="device: cuda requested but CUDA is not available"):
        pick_device("cuda", 0, 0)
    with pytest.raises(ConfigError, match="device: cuda:0 requested but CUDA is not available"):
        pick_device("cuda:0", 0, 0)


def test_a_gpu_the_machine_lacks_is_a_config_error():
    with pytest.raises(ConfigError, match=r"cuda:2 requested but this machine has 2 CUDA "
                                          r"device\(s\), cuda:0 to cuda:1"):
        pick_device("cuda:2", 0, 2)


@pytest.mark.parametrize("name", ["gpu", "cuda:x", ""])
def test_an_unknown_device_is_a_config_error(name):
    with pytest.raises(ConfigError, match="is not a torch device"):
        pick_device(name, 0, 1)


def test_process_device_reads_the_launcher_s_local_rank(monkeypatch):
    monkeypatch.setattr(devices, "cuda_device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert devices.process_device("auto") == cuda(1)
    monkeypatch.delenv("LOCAL_RANK")
    assert devices.process_device("auto") == cuda(0)  # not launched: rank 0


def test_process_device_here():
    """This machine as it is: CUDA or not, ``auto`` lands where pick_device says."""
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert devices.cuda_device_count() == n
    assert devices.process_device("auto") == pick_device("auto", devices.local_rank(), n)


def test_one_process_per_gpu():
    devices.check_one_process_per_gpu(2, 2)
    devices.check_one_process_per_gpu(1, 8)
    with pytest.raises(ConfigError, match=r"4 processes on this machine but 1 GPU\(s\).*NCCL.*"
                                          r"--num_processes 1 per machine"):
        devices.check_one_process_per_gpu(4, 1)


def test_inference_refuses_more_processes_than_gpus(monkeypatch):
    """infer.cli.run checks before reading anything; a stand-in accelerator on "cuda" (no GPU
    is touched: the check needs only the device type and the counts)."""
    from infer.cli import run
    from infer.config import InferConfig

    monkeypatch.setattr(devices, "cuda_device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    fake = SimpleNamespace(device=torch.device("cuda", 0))
    with pytest.raises(ConfigError, match="4 processes on this machine but 1 GPU"):
        run("never.csv", InferConfig(), runs="nowhere", store="nowhere", accelerator=fake)


# ---------------------------------------------------------------------------------------------
# IEEE float32


def _old_torch_backends() -> SimpleNamespace:
    """torch.backends as torch < 2.9 has it: allow_tf32 flags, no fp32_precision."""
    return SimpleNamespace(cudnn=SimpleNamespace(allow_tf32=True),
                           cuda=SimpleNamespace(matmul=SimpleNamespace(allow_tf32=True)))


def _new_torch_backends() -> SimpleNamespace:
    """torch.backends as torch >= 2.9 has it: both APIs."""
    return SimpleNamespace(
        cudnn=SimpleNamespace(conv=SimpleNamespace(fp32_precision="tf32"),
                              rnn=SimpleNamespace(fp32_precision="tf32"), allow_tf32=True),
        cuda=SimpleNamespace(matmul=SimpleNamespace(fp32_precision="none", allow_tf32=True)))


def test_ieee_fp32_on_old_torch_turns_tf32_off_and_back():
    b = _old_torch_backends()
    with devices.ieee_fp32(b):
        assert b.cudnn.allow_tf32 is False and b.cuda.matmul.allow_tf32 is False
    assert b.cudnn.allow_tf32 is True and b.cuda.matmul.allow_tf32 is True


def test_ieee_fp32_on_new_torch_sets_both_apis_and_restores_them():
    b = _new_torch_backends()
    with devices.ieee_fp32(b):
        assert (b.cudnn.conv.fp32_precision, b.cudnn.rnn.fp32_precision,
                b.cuda.matmul.fp32_precision) == ("ieee", "ieee", "ieee")
        assert b.cudnn.allow_tf32 is False and b.cuda.matmul.allow_tf32 is False
    assert (b.cudnn.conv.fp32_precision, b.cudnn.rnn.fp32_precision,
            b.cuda.matmul.fp32_precision) == ("tf32", "tf32", "none")
    assert b.cudnn.allow_tf32 is True and b.cuda.matmul.allow_tf32 is True


def test_ieee_fp32_restores_after_an_exception():
    b = _old_torch_backends()
    with pytest.raises(KeyError), devices.ieee_fp32(b):
        raise KeyError("boom")
    assert b.cudnn.allow_tf32 is True and b.cuda.matmul.allow_tf32 is True


def test_ieee_fp32_on_this_torch():
    switches = devices.fp32_switches()
    before = [getattr(obj, attr) for obj, attr, _ in switches]
    with devices.ieee_fp32():
        assert [getattr(obj, attr) for obj, attr, _ in switches] == [v for _, _, v in switches]
    assert [getattr(obj, attr) for obj, attr, _ in switches] == before


# ---------------------------------------------------------------------------------------------
# Accelerators and ports


def test_accelerator_available_without_torch_accelerator(monkeypatch):
    """torch < 2.6 has no torch.accelerator: CUDA (or XPU) decides."""
    expected = torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())
    monkeypatch.delattr(torch, "accelerator", raising=False)
    assert devices.accelerator_available() == expected
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert devices.accelerator_available() is True


def test_accelerator_available_with_torch_accelerator(monkeypatch):
    monkeypatch.setattr(torch, "accelerator",
                        SimpleNamespace(is_available=lambda: True), raising=False)
    assert devices.accelerator_available() is True
    monkeypatch.setattr(torch, "accelerator", SimpleNamespace(is_available=lambda: False))
    assert devices.accelerator_available() is False


def test_free_port_can_be_bound():
    port = devices.free_port()
    assert 0 < port < 65536
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


@pytest.fixture
def torch_fp32_flags():
    """This process's real TF32 flags (settable without a GPU), restored after the test."""
    b = torch.backends
    leaves = [b.cudnn.conv, b.cudnn.rnn, b.cuda.matmul, b.mkldnn.matmul, b.mkldnn.conv,
              b.mkldnn.rnn]
    saved = ([o.fp32_precision for o in leaves] if hasattr(b.cudnn.conv, "fp32_precision")
             else None)
    legacy = (b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32)
    yield
    b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32 = legacy
    if saved is not None:
        for o, v in zip(leaves, saved):
            o.fp32_precision = v


@pytest.mark.parametrize("before", ["default", "matmul_precision_high", "legacy_tf32_on",
                                    "new_api_conv_only"])
def test_ieee_fp32_keeps_torchs_two_tf32_apis_consistent(before, torch_fp32_flags):
    """Issue 17: setting only the new per-operator flags left torch >= 2.9 with a mix of the
    legacy and new APIs, and reading torch.backends.cudnn.allow_tf32 then raised RuntimeError
    (as code checking "is TF32 on?" does). Whatever was set before, inside the block both APIs
    read IEEE float32 without an error, and afterwards everything reads as before."""
    b = torch.backends
    if not hasattr(b.cudnn.conv, "fp32_precision"):
        pytest.skip("this torch has the legacy allow_tf32 flags only")
    if before == "matmul_precision_high":
        torch.set_float32_matmul_precision("high")
    elif before == "legacy_tf32_on":
        b.cudnn.allow_tf32 = True
        b.cuda.matmul.allow_tf32 = True
    elif before == "new_api_conv_only":
        b.cudnn.conv.fp32_precision = "tf32"

    def snapshot():
        flags = [b.cudnn.conv.fp32_precision, b.cudnn.rnn.fp32_precision,
                 b.cuda.matmul.fp32_precision, b.mkldnn.matmul.fp32_precision]
        try:
            flags.append(torch.get_float32_matmul_precision())
        except RuntimeError:
            flags.append("unreadable")
        for obj in (b.cudnn, b.cuda.matmul):
            try:
                flags.append(obj.allow_tf32)
            except RuntimeError:
                flags.append("unreadable")
        return flags

    outside = snapshot()
    with devices.ieee_fp32():
        assert b.cudnn.allow_tf32 is False and b.cuda.matmul.allow_tf32 is False
        assert [b.cudnn.conv.fp32_precision, b.cudnn.rnn.fp32_precision,
                b.cuda.matmul.fp32_precision] == ["ieee"] * 3
        assert torch.get_float32_matmul_precision() == "highest"
    assert snapshot() == outside
