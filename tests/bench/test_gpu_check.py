"""make gpu-check's dry run (tiny sizes, CPU): the script a GPU box runs is itself tested here
(issue 17). Every check must pass or be skipped for want of a GPU, and the table and the JSON
report must list them all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHECKS = ("suite CUDA tests", "CQT implementations", "stage one on the device",
          "processes sharing the device", "train tiny.yaml", "train tiny1d.yaml", "resume drift",
          "inference: store vs raw files", "search over long strain")


@pytest.mark.timeout(900)
def test_gpu_check_dry_run_passes(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--dry-run",
                           "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          timeout=850, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    status = {c["name"]: c["status"] for c in report["checks"]}
    for name in CHECKS:
        assert any(name in n for n in status), (name, status)
    assert report["failed"] == 0
    assert [n for n, s in status.items() if s == "skip"] == ["suite CUDA tests"], status
    table = (tmp_path / "gpu_check.txt").read_text()
    assert all(c["name"] in table for c in report["checks"])
    drift = next(c for c in report["checks"] if c["name"] == "resume drift")
    assert "0.00e+00" in drift["figure"]  # exact on the CPU
