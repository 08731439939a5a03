"""fold=all's re-launch of each fold (train.cli.fold_command): the launch it copies, and a
rendezvous port that is free on one machine and agreed on several."""

from __future__ import annotations

import socket
import sys

from train.cli import fold_command


def _flag(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def test_one_process_runs_python_m_train():
    cmd = fold_command("c.yaml", ["epochs=2"], "cv", 3, {})
    assert cmd == [sys.executable, "-m", "train", "--config", "c.yaml", "epochs=2", "name=cv",
                   "fold=3"]


def test_one_machine_gets_a_free_port_per_fold():
    env = {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": "29500", "ACCELERATE_MIXED_PRECISION": "bf16"}
    # Hold MASTER_PORT + 1 + fold, the port an older scheme would have used: it must not matter.
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        env["MASTER_PORT"] = str(held.getsockname()[1] - 1)
        cmd = fold_command(None, [], "cv", 0, env)
        port = int(_flag(cmd, "--main_process_port"))
        assert port != held.getsockname()[1]
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # free
    assert cmd[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert "--multi_gpu" in cmd and _flag(cmd, "--num_processes") == "2"
    assert _flag(cmd, "--num_machines") == "1" and _flag(cmd, "--mixed_precision") == "bf16"
    assert cmd[-4:] == ["-m", "train", "name=cv", "fold=0"]


def test_several_machines_agree_on_master_port_plus_one_plus_fold():
    env = {"WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4", "GROUP_RANK": "1",
           "MASTER_ADDR": "node0", "MASTER_PORT": "29600"}
    cmd = fold_command(None, [], "cv", 2, env)
    assert _flag(cmd, "--num_machines") == "2" and _flag(cmd, "--machine_rank") == "1"
    assert _flag(cmd, "--main_process_ip") == "node0"
    assert _flag(cmd, "--main_process_port") == "29603"
