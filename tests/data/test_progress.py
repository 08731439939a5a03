"""data.progress: a bar on a terminal, whole lines in a log (issue 16: a batch job's log must
not be one line of thousands of carriage-return updates)."""

from __future__ import annotations

import io
import math
import os
import subprocess
import sys
from pathlib import Path

from tqdm import tqdm

from data.progress import LineProgress, progress_bar

REPO = Path(__file__).resolve().parents[2]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run_bar(stream, n: int = 200, **kwargs) -> None:
    with progress_bar(total=n, desc="epoch 1", unit="batch", file=stream, **kwargs) as bar:
        for i in range(n):
            bar.update(1)
            if i % 10 == 0:
                bar.set_postfix(loss=0.5)  # tqdm redraws on every postfix


def test_a_log_gets_one_line_at_the_end_when_the_interval_never_passes():
    log = io.StringIO()
    _run_bar(log, interval=math.inf)
    out = log.getvalue()
    assert "\r" not in out
    assert out.count("\n") == 1 and out.endswith("\n")
    assert out.startswith("epoch 1: 100% 200/200") and "loss=0.5" in out


def test_a_log_gets_whole_lines_never_carriage_returns():
    log = io.StringIO()
    _run_bar(log, interval=0.0)
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert len(lines) > 10 and all(line.startswith("epoch 1:") for line in lines)
    assert lines[-1].startswith("epoch 1: 100% 200/200")


def test_a_terminal_gets_tqdm_and_a_file_gets_lines():
    assert type(progress_bar(total=1, file=_Terminal(), disable=True)) is tqdm
    assert isinstance(progress_bar(total=1, file=io.StringIO(), disable=True), LineProgress)
    term = _Terminal()
    _run_bar(term)
    assert "\r" in term.getvalue()  # a bar redrawn in place, as on a terminal


def test_a_command_logging_to_a_file_writes_lines(train_store, tmp_path):
    """g2net-verify with stderr in a file, as under SLURM or nohup: its progress is whole
    lines, its summary stays."""
    err = tmp_path / "stderr.log"
    with err.open("w") as f:
        rc = subprocess.run([sys.executable, "-m", "data.verify", str(train_store)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=f, text=True,
                            env={**os.environ, "G2NET_PROGRESS_INTERVAL": "0"}).returncode
    assert rc == 0
    text = err.read_text()
    assert "\r" not in text
    progress = [line for line in text.splitlines() if line.startswith("verify train.zarr:")]
    assert progress and "100%" in progress[-1]


def test_a_transient_bar_still_ends_with_a_line_in_a_log():
    """leave=False (training's epoch bar) clears a terminal's line; a log keeps its end."""
    log = io.StringIO()
    with progress_bar(total=5, desc="epoch 2", file=log, interval=math.inf, leave=False) as bar:
        bar.update(5)
    assert log.getvalue().startswith("epoch 2: 100% 5/5") and log.getvalue().count("\n") == 1


def test_a_malformed_interval_is_a_config_error(monkeypatch):
    import pytest

    from data.config import ConfigError

    monkeypatch.setenv("G2NET_PROGRESS_INTERVAL", "soon")
    with pytest.raises(ConfigError, match="G2NET_PROGRESS_INTERVAL"):
        progress_bar(total=1, file=io.StringIO())
    monkeypatch.setenv("G2NET_PROGRESS_INTERVAL", "-1")
    with pytest.raises(ConfigError):
        progress_bar(total=1, file=io.StringIO())


def test_no_stderr_at_all_gives_a_silent_bar(monkeypatch):
    monkeypatch.setattr(sys, "stderr", None)
    with progress_bar(total=3, desc="x") as bar:
        bar.update(3)
