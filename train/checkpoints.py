"""Training's own files in a fold's run directory: its resolved ``config.yaml`` and its
checkpoints, ``checkpoints/checkpoint_<i>/`` (Accelerate ``save_state`` dirs, at most
``checkpoint_total_limit``). Each checkpoint gets a ``COMPLETE`` file once every rank has written
its part, holding the SHA-256 of every file beside it: a killed save leaves none and is never
resumed, and resume=auto checks the hashes before loading (safetensors and pickles carry none).
What the run directory holds for inference is :mod:`data.rundir`'s.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from data.rundir import file_sha256

CONFIG_FILE = "config.yaml"
CHECKPOINTS = "checkpoints"
COMPLETE = "COMPLETE"
LOGS_DIR = "logs"

_CHECKPOINT = re.compile(r"checkpoint_(\d+)")


def fold_dir(out: str | Path, name: str, fold: int) -> Path:
    return Path(out) / name / f"fold{fold}"


def checkpoint_dirs(run: Path) -> list[tuple[int, Path, bool]]:
    """(number, path, complete) of every ``checkpoints/checkpoint_<i>``, oldest first."""
    root = Path(run) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _CHECKPOINT.fullmatch(p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p, (p / COMPLETE).is_file()))
    return sorted(found)


def latest_checkpoint(run: Path) -> Path | None:
    complete = [p for _, p, ok in checkpoint_dirs(run) if ok]
    return complete[-1] if complete else None


def remove_incomplete_checkpoints(run: Path) -> list[Path]:
    """Delete checkpoint dirs without COMPLETE (a save cut short by a kill); returns them."""
    removed = [p for _, p, ok in checkpoint_dirs(run) if not ok]
    for p in removed:
        shutil.rmtree(p)
    return removed


class CheckpointDamaged(ValueError):
    """A checkpoint whose files are not the ones its COMPLETE recorded."""


def _checkpoint_files(checkpoint: Path) -> list[Path]:
    return sorted(p for p in Path(checkpoint).rglob("*")
                  if p.is_file() and not p.name.startswith(COMPLETE))


def mark_complete(checkpoint: Path, summary: dict) -> None:
    """Write ``COMPLETE`` atomically: its existence is the marker, so it never exists empty.
    It holds ``summary`` and ``files``: the SHA-256 of every file of the checkpoint, by path
    relative to it (what :func:`verify_checkpoint` checks)."""
    checkpoint = Path(checkpoint)
    files = {p.relative_to(checkpoint).as_posix(): file_sha256(p)
             for p in _checkpoint_files(checkpoint)}
    tmp = checkpoint / (COMPLETE + ".tmp")
    tmp.write_text(json.dumps({**summary, "files": files}) + "\n")
    os.replace(tmp, checkpoint / COMPLETE)


def verify_checkpoint(checkpoint: Path) -> bool:
    """Check every file of a complete checkpoint against the SHA-256 its COMPLETE recorded.

    Returns True when checked, False for a checkpoint written before checksums were recorded
    (nothing to check against; the caller says so). Raises :class:`CheckpointDamaged` naming
    the first file that is missing, unreadable as recorded or altered.
    """
    checkpoint = Path(checkpoint)
    remedy = (f"delete {checkpoint} to resume from the checkpoint before it, or start afresh "
              "in a new out=")
    try:
        record = json.loads((checkpoint / COMPLETE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointDamaged(f"{checkpoint / COMPLETE}: unreadable ({e}); {remedy}") from None
    files = record.get("files") if isinstance(record, dict) else None
    if files is None:
        return False
    for name, digest in sorted(files.items()):
        path = checkpoint / name
        if not path.is_file():
            raise CheckpointDamaged(f"{path}: missing from the checkpoint; {remedy}")
        if file_sha256(path) != digest:
            raise CheckpointDamaged(f"{path}: damaged on disk (its SHA-256 is not the one "
                                    f"recorded when it was saved); {remedy}")
    return True
