"""The submission file: ``id,target`` in the order of the sample submission (or the label file),
written atomically; invalid samples get :data:`INVALID_TARGET`, no opinion.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data import layout
from infer.config import InferError

INVALID_TARGET = 0.5


def submission_order(ids: list[str], reference: list[str], what: str, ref_name: str) -> np.ndarray:
    """Positions into ``ids`` that put them in ``reference`` order; InferError unless the two
    hold the same ids."""
    pos = {sid: i for i, sid in enumerate(ids)}
    if len(pos) != len(ids):
        raise InferError(f"{what}: duplicate ids")
    missing = [sid for sid in reference if sid not in pos]
    if missing:
        raise InferError(
            f"{len(missing)} id(s) of {ref_name} are not in {what} (first: {missing[0]})"
        )
    ref = set(reference)
    extra = [sid for sid in ids if sid not in ref]
    if extra:
        raise InferError(
            f"{len(extra)} id(s) of {what} are not in {ref_name} (first: {extra[0]})"
        )
    return np.array([pos[sid] for sid in reference], dtype=np.int64)


def find_sample_submission(store_attrs: dict | None, data_root: str | Path | None) -> Path | None:
    """``sample_submission.csv`` next to the data: in ``data_root``, or in the data set a test
    store was made from (its ``source`` attribute), if it exists there."""
    root = data_root
    if root is None and store_attrs is not None and store_attrs.get("split") == "test":
        source = store_attrs.get("source")
        root = source
    if root is None:
        return None
    path = Path(root) / layout.LABEL_FILES["test"]
    return path if path.is_file() else None


def write_submission(path: str | Path, ids: list[str], target: np.ndarray) -> None:
    """``id,target`` CSV; each target as the shortest decimal that reads back to the same
    float64, so no two different predictions tie in the file (the AUC sees only their order)."""
    layout.write_labels(path, ids, [repr(float(t)) for t in target])
