"""The Kaggle layout: index validation names the culprit; sample loading rejects bad files."""

import numpy as np
import pytest

from data.layout import (
    BadSample,
    DataError,
    build_index,
    id_to_int,
    int_to_id,
    load_sample,
    sample_path,
    write_labels,
)

IDS = ["00000e74ad", "0a1b2c3d4e", "ffffffffff", "7be1a2c3d4"]


def make_set(root, ids=IDS, targets=(0, 1, 0, 1), split="train"):
    rng = np.random.default_rng(0)
    for sid in ids:
        p = sample_path(root, split, sid)
        p.parent.mkdir(parents=True, exist_ok=True)
        np.save(p, rng.normal(scale=1e-20, size=(3, 4096)))
    name = "training_labels.csv" if split == "train" else "sample_submission.csv"
    write_labels(root / name, ids, targets)


def test_index_in_label_order(tmp_path):
    make_set(tmp_path)
    idx = build_index(tmp_path, "train")
    assert idx.ids == IDS
    assert idx.targets.tolist() == [0, 1, 0, 1] and idx.targets.dtype == np.int8
    assert idx.path(1) == tmp_path / "train/0/a/1/0a1b2c3d4e.npy"


def test_ids_round_trip_through_uint64():
    assert int_to_id(id_to_int(IDS)) == IDS


def test_missing_file_is_named(tmp_path):
    make_set(tmp_path)
    sample_path(tmp_path, "train", IDS[2]).unlink()
    with pytest.raises(DataError, match=f"{IDS[2]}.npy: listed but missing"):
        build_index(tmp_path, "train")


def test_misplaced_file_is_named_before_any_work(tmp_path):
    """A file in another id's directory (e.g. copied by hand) is an index error naming both
    paths, not a bad sample found mid-run."""
    make_set(tmp_path)
    right = sample_path(tmp_path, "train", IDS[1])  # train/0/a/1/0a1b2c3d4e.npy
    wrong = tmp_path / "train" / "f" / "f" / "f" / right.name
    wrong.parent.mkdir(parents=True, exist_ok=True)
    right.rename(wrong)
    with pytest.raises(DataError, match="wrong directory for its id") as e:
        build_index(tmp_path, "train")
    assert str(wrong) in str(e.value) and str(right) in str(e.value)


def test_unlabelled_file_is_named(tmp_path):
    make_set(tmp_path)
    extra = sample_path(tmp_path, "train", "abcdef0123")
    extra.parent.mkdir(parents=True, exist_ok=True)
    np.save(extra, np.ones((3, 4096)))
    with pytest.raises(DataError, match="abcdef0123.npy: file has no entry"):
        build_index(tmp_path, "train")


@pytest.mark.parametrize(
    "rows, message",
    [
        ("00000e74ad,0\n00000e74ad,1\n", "duplicate id 00000e74ad"),
        ("00000E74AD,0\n", "'00000E74AD' is not 10 lowercase hex digits"),
        ("00000e74a,0\n", "'00000e74a' is not 10 lowercase hex"),
        ("00000e74ad,2\n", "id 00000e74ad: target 2 is not 0 or 1"),
        ("00000e74ad,yes\n", "target 'yes' is not a number"),
    ],
)
def test_bad_label_rows_are_named(tmp_path, rows, message):
    (tmp_path / "train").mkdir()
    (tmp_path / "training_labels.csv").write_text("id,target\n" + rows)
    with pytest.raises(DataError, match=message):
        build_index(tmp_path, "train", check_files=False)


def test_missing_labels_and_root(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        build_index(tmp_path / "nope", "train")
    with pytest.raises(DataError, match="training_labels.csv: label file is missing"):
        build_index(tmp_path, "train")


def test_load_sample_fast_path_equals_np_load(tmp_path):
    make_set(tmp_path)
    p = sample_path(tmp_path, "train", IDS[0])
    np.testing.assert_array_equal(load_sample(p), np.load(p))


@pytest.mark.parametrize(
    "content, reason",
    [
        (lambda p: p.write_bytes(b"\x93NUMPY garbage"), "not a readable .npy"),
        (lambda p: np.save(p, np.zeros((2, 4096))), r"shape \(2, 4096\)"),
        (lambda p: np.save(p, np.ones((3, 4096), dtype=np.int64)), "dtype int64"),
        (lambda p: np.save(p, np.full((3, 4096), np.nan)), "NaN or Inf"),
        (lambda p: np.save(p, np.vstack([np.ones((2, 4096)), np.zeros((1, 4096))])),
         "detector V1 is all zeros"),
    ],
)
def test_bad_samples_name_path_and_reason(tmp_path, content, reason):
    p = tmp_path / "x.npy"
    content(p)
    with pytest.raises(BadSample, match=reason) as e:
        load_sample(p)
    assert e.value.path == str(p)


def test_truncated_file(tmp_path):
    p = tmp_path / "x.npy"
    np.save(p, np.ones((3, 4096)))
    p.write_bytes(p.read_bytes()[:1000])
    with pytest.raises(BadSample, match="not a readable .npy"):
        load_sample(p)
    with pytest.raises(BadSample, match="cannot read"):
        load_sample(tmp_path / "missing.npy")
