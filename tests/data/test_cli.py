"""Every command ends the same way (data/cli.py), and every stage's --help lists its config."""

from __future__ import annotations

import errno
import os
import re

import pytest

from data.cli import RESUMES, cli_errors, error_exit, os_error_message
from data.config import ConfigError, config_fields, flat_dict, show_value
from data.layout import BadSample
from data.store import StoreError


def test_os_error_message():
    e = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/c/train.zarr/images/c/3/0/0/0")
    assert os_error_message(e, RESUMES) == (
        "/c/train.zarr/images/c/3/0/0/0: No space left on device (errno 28); free space and "
        "re-run the same command: it resumes where it stopped")
    e = OSError(errno.EACCES, os.strerror(errno.EACCES), "/a", None, "/b")  # os.rename's
    assert os_error_message(e) == "/a -> /b: Permission denied (errno 13)"
    assert os_error_message(OSError(errno.EFBIG, "File too large"), "re-run") == (
        "File too large (errno 27); fix that and re-run")
    assert os_error_message(OSError("Unable to create file (h5py)")) == (
        "Unable to create file (h5py)")


def test_exit_codes():
    class StageError(ValueError):
        pass

    assert error_exit(ConfigError("lr: must be positive")) == (2, "lr: must be positive")
    assert error_exit(StoreError("x.zarr: incomplete")) == (2, "x.zarr: incomplete")
    assert error_exit(StageError("bad"), user_errors=(StageError,)) == (2, "bad")
    assert error_exit(StageError("bad")) is None  # not declared: a bug, left to Python
    assert error_exit(RuntimeError("nan"), runtime_errors=(RuntimeError,)) == (1, "nan")
    assert error_exit(FileNotFoundError(errno.ENOENT, "No such file or directory", "f")) == (
        1, "f: No such file or directory (errno 2)")
    assert error_exit(KeyboardInterrupt(), rerun="re-run") == (130, "interrupted; re-run")
    assert error_exit(BadSample("/d/a.npy", "contains NaN"), hints={BadSample: "skip it"}) == (
        2, "/d/a.npy: contains NaN (skip it)")


def test_cli_errors_writes_one_line(capsys):
    with pytest.raises(SystemExit) as e, cli_errors("g2net-x"):
        raise ConfigError("unknown config key foo")
    assert e.value.code == 2
    assert capsys.readouterr().err == "g2net-x: error: unknown config key foo\n"
    with pytest.raises(SystemExit) as e, cli_errors("g2net-x", rerun=RESUMES):
        open(os.devnull + "/not-a-dir", "w")  # a real OSError from the OS: ENOTDIR
    assert e.value.code == 1
    assert capsys.readouterr().err == (
        "g2net-x: error: /dev/null/not-a-dir: Not a directory (errno 20); fix that and re-run "
        "the same command: it resumes where it stopped\n")
    with pytest.raises(ZeroDivisionError), cli_errors("g2net-x"):  # a bug keeps its traceback
        1 / 0
    with pytest.raises(SystemExit) as e, cli_errors("g2net-x"):  # argparse's exits pass
        raise SystemExit(0)
    assert e.value.code == 0


def _stage_mains():
    from infer.cli import main as infer_main
    from infer.config import InferConfig
    from preprocess.cli import parse_args as preprocess_args
    from preprocess.config import PreprocessConfig
    from train.cli import parse_args as train_args
    from train.config import TrainConfig

    return [("g2net-preprocess", preprocess_args, PreprocessConfig),
            ("g2net-train", train_args, TrainConfig), ("g2net-infer", infer_main, InferConfig)]


@pytest.mark.parametrize("prog,main,cls", _stage_mains(), ids=lambda x: getattr(x, "__name__", x))
def test_help_lists_every_config_key(prog, main, cls, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {prog} ")
    keys = config_fields(cls)
    assert [k for k, *_ in keys] == list(flat_dict(cls()))  # every key of the saved config
    for key, _, default, meaning in keys:
        # "  key  (type, default X)  meaning" on one line (the meaning may wrap)
        line = re.search(rf"^  {re.escape(key)}  \(.*, default (.*?)\)(  (.*))?$", out, re.M)
        assert line, f"{key} missing from {prog} --help"
        assert line.group(1) == show_value(default), key
        assert meaning and line.group(3), f"{key}: no meaning (a comment on the field's line)"


def test_demo_user_error(tmp_path, capsys):
    from infer.demo import main

    with pytest.raises(SystemExit) as e:
        main(["--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"), "--n-train", "1",
              "--n-test", "0", "--jobs", "1", "--quiet"])
    assert e.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("g2net-demo: error: ") and "n_train" in err[-1], err
    assert not any(line.startswith("Traceback") for line in err)


def test_error_line_is_not_glued_to_a_progress_bar(capsys):
    from tqdm import tqdm

    bar = tqdm(total=4, desc="epoch 1", leave=False)  # left open, as a failed loop leaves it
    bar.update(1)
    with pytest.raises(SystemExit), cli_errors("g2net-x"):
        raise ConfigError("boom")
    err = capsys.readouterr().err
    assert "epoch 1" in err and err.endswith("\n")
    assert err.splitlines()[-1] == "g2net-x: error: boom"  # \r ends the cleared bar's line
