"""The G2Net Kaggle layout on disk, and a validated index over it.

A data set root holds::

    training_labels.csv           id,target   (target 0 or 1)
    sample_submission.csv         id,target   (target ignored)
    train/{id[0]}/{id[1]}/{id[2]}/{id}.npy    float64 (3, 4096): H1, L1, V1 at 2048 Hz
    test/{id[0]}/{id[1]}/{id[2]}/{id}.npy

Ids are 10 lowercase hex digits. The index checks that every listed id has a file and every
file a listing without opening or stat-ing each of the 786,000 files: it lists the 4,096
leaf directories once (``os.scandir``) and compares names, which costs one ``getdents`` per
directory instead of one ``stat`` per file.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 2048  # Hz
DURATION = 2.0  # s
N_TIME = 4096  # samples per detector
DETECTORS = ("H1", "L1", "V1")  # Hanford, Livingston, Virgo: the row order in every file
SPLITS = ("train", "test")
LABEL_FILES = {"train": "training_labels.csv", "test": "sample_submission.csv"}

_ID = re.compile(r"^[0-9a-f]{10}$")


class DataError(ValueError):
    """A data set that does not follow the Kaggle layout; the message names the culprit."""


class BadSample(DataError):
    """One ``.npy`` file that cannot be used: missing, corrupt, wrong shape/dtype, NaN/Inf, zero."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def sample_path(root: str | Path, split: str, sample_id: str) -> Path:
    """``root/split/a/b/c/abc....npy`` for id ``abc...``."""
    return Path(root) / split / sample_id[0] / sample_id[1] / sample_id[2] / f"{sample_id}.npy"


def id_to_int(ids: list[str] | np.ndarray) -> np.ndarray:
    """Hex ids -> uint64 (10 hex digits fit in 40 bits); the form stored in Zarr."""
    return np.array([int(i, 16) for i in ids], dtype=np.uint64)


def int_to_id(values: np.ndarray) -> list[str]:
    """uint64 -> 10-digit lowercase hex ids; inverse of :func:`id_to_int`."""
    return [f"{int(v):010x}" for v in np.asarray(values)]


def read_labels(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Read an ``id,target`` CSV (labels, or a submission's scores); returns ids in file
    order and targets as float64.

    Raises DataError naming the line for a malformed id, a duplicate id or a target that is
    not a number. (Whether labels are 0/1 is for the caller to check.)
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: label file is missing")
    ids: list[str] = []
    targets: list[float] = []
    seen: set[str] = set()
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["id", "target"]:
            raise DataError(f"{path}: expected header 'id,target', got {header}")
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) < 2:
                raise DataError(f"{path}:{lineno}: expected 'id,target', got {row}")
            sid, target = row[0].strip(), row[1].strip()
            if not _ID.match(sid):
                raise DataError(f"{path}:{lineno}: id {sid!r} is not 10 lowercase hex digits")
            if sid in seen:
                raise DataError(f"{path}:{lineno}: duplicate id {sid}")
            seen.add(sid)
            try:
                targets.append(float(target))
            except ValueError:
                raise DataError(f"{path}:{lineno}: id {sid}: target {target!r} is not a number")
            ids.append(sid)
    return ids, np.asarray(targets)


def write_labels(path: str | Path, ids: list[str], targets) -> None:
    """Write an ``id,target`` CSV (the Kaggle label and submission format)."""
    with Path(path).open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "target"])
        for sid, t in zip(ids, targets):
            w.writerow([sid, t])


def _list_files(split_dir: Path) -> tuple[set[str], list[Path]]:
    """Ids of all ``.npy`` files under ``split_dir/?/?/?/``, one scandir per directory, and
    the files that sit in another directory than their id's ``{id[0]}/{id[1]}/{id[2]}``."""
    found: set[str] = set()
    misplaced: list[Path] = []
    if not split_dir.is_dir():
        return found, misplaced
    stack: list[tuple[Path, tuple[str, ...]]] = [(split_dir, ())]  # (directory, its parts)
    while stack:
        d, parts = stack.pop()
        with os.scandir(d) as it:
            for e in it:
                if len(parts) < 3:
                    if e.is_dir(follow_symlinks=True):
                        stack.append((Path(e.path), (*parts, e.name)))
                elif e.name.endswith(".npy"):
                    sid = e.name[:-4]
                    found.add(sid)
                    if parts != tuple(sid[:3]):
                        misplaced.append(Path(e.path))
    return found, misplaced


@dataclass(frozen=True)
class Index:
    """The samples of one split, in label-file order."""

    root: Path
    split: str
    ids: list[str]
    targets: np.ndarray  # (N,) int8 for train; sample_submission's values for test

    def __len__(self) -> int:
        return len(self.ids)

    def path(self, i: int) -> Path:
        return sample_path(self.root, self.split, self.ids[i])


def build_index(root: str | Path, split: str, check_files: bool = True) -> Index:
    """Index ``split`` of the data set at ``root``, validated against the files on disk.

    Errors (DataError) name the id or path: a listed id with no file, a file with no label,
    a duplicate or malformed id, a train target other than 0/1, a file in the wrong
    directory for its id.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {SPLITS}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data directory does not exist")
    ids, targets = read_labels(root / LABEL_FILES[split])
    if split == "train":
        bad = np.flatnonzero((targets != 0) & (targets != 1))
        if bad.size:
            i = int(bad[0])
            raise DataError(
                f"{root / LABEL_FILES[split]}: id {ids[i]}: target {targets[i]:g} is not 0 or 1"
            )
        targets = targets.astype(np.int8)
    if check_files:
        on_disk, misplaced = _list_files(root / split)
        if misplaced:
            sid = misplaced[0].stem
            more = f" (and {len(misplaced) - 1} more)" if len(misplaced) > 1 else ""
            raise DataError(f"{misplaced[0]}: file in the wrong directory for its id; expected "
                            f"{sample_path(root, split, sid)}{more}")
        listed = set(ids)
        missing = [i for i in ids if i not in on_disk]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise DataError(f"{sample_path(root, split, missing[0])}: listed but missing{more}")
        extra = sorted(on_disk - listed)
        if extra:
            more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
            raise DataError(
                f"{sample_path(root, split, extra[0])}: file has no entry in "
                f"{LABEL_FILES[split]}{more}"
            )
    return Index(root=root, split=split, ids=ids, targets=targets)


# The header np.save writes for a C-ordered little-endian (3, 4096) float64 array; files that
# carry it are read with one read() and frombuffer, much faster than np.load (whose cost
# is mostly header parsing). Anything else goes through np.load and its checks.
_FAST_HEADER_LEN = 128
_EXPECTED_SHAPE = (len(DETECTORS), N_TIME)


def _expected_header() -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, np.zeros(_EXPECTED_SHAPE, dtype="<f8"))
    return buf.getvalue()[:_FAST_HEADER_LEN]


_HEADER = _expected_header()


def load_sample(path: str | Path) -> np.ndarray:
    """Read one G2Net file: float64 (3, 4096), strain (dimensionless, ~1e-20).

    Raises BadSample naming the path and the reason: missing or unreadable, not a .npy,
    wrong shape or dtype, NaN/Inf, or a detector row that is all zeros.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise BadSample(path, f"cannot read ({e.strerror or e})") from None
    if raw[:_FAST_HEADER_LEN] == _HEADER and len(raw) == _FAST_HEADER_LEN + 8 * 3 * N_TIME:
        x = np.frombuffer(raw, dtype="<f8", offset=_FAST_HEADER_LEN).reshape(_EXPECTED_SHAPE)
    else:
        import io

        try:
            x = np.load(io.BytesIO(raw), allow_pickle=False)
        except Exception as e:  # numpy raises ValueError/EOFError/... for a corrupt file
            raise BadSample(path, f"not a readable .npy file ({e})") from None
        if x.shape != _EXPECTED_SHAPE:
            raise BadSample(path, f"shape {x.shape}, expected {_EXPECTED_SHAPE}")
        if x.dtype.kind != "f":
            raise BadSample(path, f"dtype {x.dtype}, expected float64")
        x = x.astype(np.float64, copy=False)
    if not np.isfinite(x).all():
        raise BadSample(path, "contains NaN or Inf")
    zero = ~x.any(axis=1)
    if zero.any():
        raise BadSample(path, f"detector {DETECTORS[int(np.argmax(zero))]} is all zeros")
    return x
