"""The CQT image cache: one Zarr v3 group per split (``CACHE/train.zarr``, ``CACHE/test.zarr``),
chunked along samples only. Every chunk is checksummed (crc32c), a chunk counts only once its
``done`` flag is written after its data, and the metadata is sealed by a hash; the arrays,
attributes and guarantees are in docs/cache-format.md.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path

import google_crc32c
import numpy as np
import zarr
import zarr.codecs
from zarr.storage import LocalStore, WrapperStore

from data.layout import int_to_id

# 2: crc32c on every chunk, every chunk written (1 had neither). 3: the metadata sealed by
# ``metadata_sha256`` when the store is finished.
SCHEMA_VERSION = 3

# Arrays written chunk by chunk by write_chunk: their chunk k exists once ``done[k]`` is set.
CHUNK_ARRAYS = ("images", "waves", "valid", "bad_reason")

REMEDY = "re-run preprocessing with --overwrite"


class StoreError(ValueError):
    """A store that is missing, incomplete, of another schema, or made another way."""


class StoreDamaged(StoreError):
    """A store whose files are not what was written: a chunk file missing or failing its
    checksum. ``where`` names the chunk (``images chunk 3 (samples 192-255)``), ``reason`` says
    what is wrong with it (both None when the exception was rebuilt from its message alone, as
    a DataLoader worker's exception is)."""

    def __init__(self, message: str, where: str | None = None, reason: str | None = None):
        super().__init__(message)
        self.where = where
        self.reason = reason


def n_chunks(n: int, chunk_size: int) -> int:
    return math.ceil(n / chunk_size)


def chunk_slice(chunk: int, n: int, chunk_size: int) -> slice:
    """Sample range of chunk ``chunk``."""
    return slice(chunk * chunk_size, min((chunk + 1) * chunk_size, n))


def compressors(codec: str, clevel: int = 5) -> tuple:
    """The Zarr v3 bytes-to-bytes codecs for ``codec`` in {"none", "lz4", "zstd"} (bit-shuffled
    Blosc), then the crc32c checksum (of the compressed bytes: checked before decompressing)."""
    if codec == "none":
        return (zarr.codecs.Crc32cCodec(),)
    if codec in ("lz4", "zstd"):
        # Bit-shuffle groups the float16 exponent bits, the only part of CQT noise that repeats.
        return (zarr.codecs.BloscCodec(cname=codec, clevel=clevel, shuffle="bitshuffle"),
                zarr.codecs.Crc32cCodec())
    raise StoreError(f"unknown codec {codec!r}; expected none, lz4 or zstd")


# The small arrays: Zarr's default compressor, plus the checksum.
_SMALL = (zarr.codecs.ZstdCodec(), zarr.codecs.Crc32cCodec())
# Array creation options every array gets: all chunks written, all zeros included.
_WRITE_ALL = {"write_empty_chunks": True}


def chunk_label(array: str, coords: tuple[int, ...], shape: tuple[int, ...],
                chunks: tuple[int, ...], n: int | None, chunk_size: int | None) -> str:
    """``images chunk 3 (samples 192-255)``: a chunk of a store array, with the samples it holds.

    An array along the samples (``shape[0] == n``) names the samples of its chunk; one with a
    row per store chunk (``done``, ``stats``) those of store chunk ``coords[0]``; others (the
    PSD) none. Arrays chunked along the samples only show one chunk number.
    """
    name = f"chunk {coords[0]}" if len(coords) and not any(coords[1:]) else f"chunk {coords}"
    rows = None
    if coords and n is not None and chunk_size:
        if shape[0] == n:
            rows = (coords[0] * chunks[0], min((coords[0] + 1) * chunks[0], n))
        elif shape[0] == n_chunks(n, chunk_size) and chunks[0] == 1:
            rows = (coords[0] * chunk_size, min((coords[0] + 1) * chunk_size, n))
    return f"{array} {name}" + (f" (samples {rows[0]}-{rows[1] - 1})" if rows else "")


def _damage_message(path: str, where: str, reason: str) -> str:
    return (f"{path}: {where}: {reason}; the store is damaged: {REMEDY} "
            f"(`python -m data.verify {path}` lists every damaged chunk)")


# Chunk keys of Zarr v3's default encoding: ``images/c/3/0/0/0``, ``ids/c/3``.
_CHUNK_KEY = re.compile(r"^(?P<array>[^/]+)/c(?P<coords>(?:/\d+)*)$")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}


def _label(root: Path, array: str, coords: tuple[int, ...]) -> str:
    """:func:`chunk_label` from the metadata on disk (only on the error path)."""
    attrs = _read_json(root / "zarr.json").get("attributes", {})
    meta = _read_json(root / array / "zarr.json")
    chunks = meta.get("chunk_grid", {}).get("configuration", {}).get("chunk_shape", [])
    return chunk_label(array, coords, tuple(meta.get("shape", [])), tuple(chunks),
                       attrs.get("n"), attrs.get("chunk_size"))


def _damaged(root: Path, array: str, coords: tuple[int, ...], reason: str) -> StoreDamaged:
    where = _label(root, array, coords)
    return StoreDamaged(_damage_message(str(root), where, reason), where, reason)


class CheckedStore(WrapperStore[LocalStore]):
    """A local Zarr store in which a missing chunk file is an error, not the fill value, and a
    failed write names its file.

    Zarr reads a missing chunk as the fill value without a word (zarr-python issue 486; an
    option to raise instead arrives after 3.1, pull request 3748). The store is the one place
    that sees the chunk's key, and LocalStore already answers None for a missing file, so the
    check costs nothing: :class:`StoreDamaged` names the array, chunk and samples.
    """

    def __init__(self, store: LocalStore):
        super().__init__(store)
        self.root = Path(store.root)

    def __str__(self) -> str:
        return str(self.root)

    def __repr__(self) -> str:
        return f"CheckedStore({str(self.root)!r})"

    async def get(self, key: str, prototype, byte_range=None):
        buf = await self._store.get(key, prototype, byte_range)
        if buf is None and (m := _CHUNK_KEY.match(key)):
            coords = tuple(int(c) for c in m["coords"].split("/")[1:])
            raise _damaged(self.root, m["array"], coords, "chunk file missing")
        return buf

    async def set(self, key: str, value) -> None:
        # LocalStore writes a chunk with write() on a file it has already opened, so the
        # OSError of a full disk or a file-size limit carries no file name: add it.
        try:
            await self._store.set(key, value)
        except OSError as e:
            if e.filename is not None:
                raise
            raise OSError(e.errno, e.strerror, str(self.root / key)) from e


def _chunks_touched(a: zarr.Array, selection) -> Iterator[tuple[int, ...]]:
    """Coordinates of the chunks a basic selection (ints and unit-step slices, per axis) reads;
    all chunks along an axis selected any other way."""
    sel = selection if isinstance(selection, tuple) else (selection,)
    if any(s is Ellipsis for s in sel):
        sel = ()
    ranges = []
    for axis, (size, k) in enumerate(zip(a.shape, a.chunks)):
        s = sel[axis] if axis < len(sel) else slice(None)
        if isinstance(s, slice) and s.step in (None, 1):
            start, stop, _ = s.indices(size)
            ranges.append(range(start // k, (stop - 1) // k + 1) if stop > start else range(0))
        elif isinstance(s, (int, np.integer)) and -size <= s < size:
            ranges.append(range((int(s) % size) // k, (int(s) % size) // k + 1))
        else:
            ranges.append(range(math.ceil(size / k)))
    return itertools.product(*ranges)


def checksum_failures(a: zarr.Array, selection=slice(None)) -> list[tuple[tuple[int, ...], str]]:
    """(chunk coordinates, reason) of each chunk read by ``a[selection]`` whose file fails its
    crc32c, checked on the raw bytes on disk. Only for arrays of a store opened here."""
    root = a.store.root
    failures = []
    for coords in _chunks_touched(a, selection):
        try:
            data = (root / a.path / a.metadata.encode_chunk_key(coords)).read_bytes()
        except FileNotFoundError:
            failures.append((coords, "chunk file missing"))
            continue
        if len(data) < 4 or google_crc32c.value(data[:-4]) != int.from_bytes(data[-4:], "little"):
            failures.append(
                (coords, f"checksum mismatch (crc32c) in a chunk file of {len(data)} bytes"))
    return failures


class CheckedArray(zarr.Array):
    """An array of a store opened here: reading a chunk that fails its checksum raises
    :class:`StoreDamaged` naming the array, chunk and samples.

    The crc32c codec verifies every chunk as it decodes it, but its error does not say which
    chunk failed. Checking the checksum a second time in the store, where the chunk key is
    known, would add a second pass over every chunk's bytes to every read (measured: twice
    the codec's own cost). So the codec checks, once, and only when a read fails are the
    chunks it touched re-checked on disk to name the culprit.
    """

    def __getitem__(self, selection):
        try:
            return super().__getitem__(selection)
        except StoreDamaged:
            raise
        except ValueError as e:  # the codec's "Stored and computed checksum do not match"
            failures = checksum_failures(self, selection)
            if not failures:
                raise
            coords, reason = failures[0]
            raise _damaged(self.store.root, self.path, coords, reason) from e


class CheckedGroup(zarr.Group):
    """A store group whose arrays are :class:`CheckedArray`."""

    def __getitem__(self, path: str):
        item = super().__getitem__(path)
        # type(self)(async_node) is how Zarr itself rebuilds its wrappers (Array.with_config).
        return CheckedArray(item._async_array) if isinstance(item, zarr.Array) else item


def _open_group(path: str | Path, mode: str) -> CheckedGroup:
    store = CheckedStore(LocalStore(Path(path), read_only=mode == "r"))
    return CheckedGroup(zarr.open_group(store=store, mode=mode)._async_group)


def _for_writing(g: zarr.Group, name: str) -> zarr.Array:
    """``g[name]`` set to write every chunk: the array config is not stored, so an array
    reopened from disk would skip all-zero chunks (Zarr's default), which would then read as
    missing."""
    return g[name].with_config(_WRITE_ALL)


def create(
    path: str | Path,
    *,
    split: str,
    ids: np.ndarray,
    targets: np.ndarray,
    image_shape: tuple[int, int, int],
    chunk_size: int,
    codec: str,
    clevel: int = 5,
    save_waves: bool = False,
    n_time: int = 4096,
    attrs: dict | None = None,
) -> zarr.Group:
    """Create an empty store (overwriting ``path``); ids and targets are written at once."""
    n = len(ids)
    nc = n_chunks(n, chunk_size)
    g = _open_group(path, mode="w")
    comp = compressors(codec, clevel)
    g.create_array(
        "images", shape=(n, *image_shape), chunks=(chunk_size, *image_shape),
        dtype="float16", compressors=comp, fill_value=0, config=_WRITE_ALL,
    )
    if save_waves:
        g.create_array(
            "waves", shape=(n, image_shape[0], n_time), chunks=(chunk_size, image_shape[0], n_time),
            dtype="float16", compressors=comp, fill_value=0, config=_WRITE_ALL,
        )
    small = {"compressors": _SMALL, "config": _WRITE_ALL}
    g.create_array("ids", shape=(n,), chunks=(chunk_size,), dtype="uint64", fill_value=0, **small)
    g.create_array("targets", shape=(n,), chunks=(chunk_size,), dtype="int8", fill_value=-1,
                   **small)
    g.create_array("valid", shape=(n,), chunks=(chunk_size,), dtype="bool", fill_value=True,
                   **small)
    g.create_array("bad_reason", shape=(n,), chunks=(chunk_size,), dtype=str, fill_value="",
                   **small)
    g.create_array("done", shape=(nc,), chunks=(1,), dtype="bool", fill_value=False, **small)
    g.create_array("stats", shape=(nc, image_shape[0], 3), chunks=(1, image_shape[0], 3),
                   dtype="float64", fill_value=0, **small)
    _for_writing(g, "ids")[:] = np.asarray(ids, dtype=np.uint64)
    _for_writing(g, "targets")[:] = np.asarray(targets, dtype=np.int8)
    # Written now so that every chunk of them exists from the start (docs/cache-format.md, Notes
    # from the code).
    _for_writing(g, "done")[:] = False
    _for_writing(g, "stats")[:] = 0
    g.attrs.update({
        "schema_version": SCHEMA_VERSION, "split": split, "n": n, "chunk_size": chunk_size,
        "complete": False, **(attrs or {}),
    })
    return g


def open_store(path: str | Path, mode: str = "r") -> zarr.Group:
    """Open a store and check its schema version; StoreError if missing or foreign.

    Reads through the group raise :class:`StoreDamaged` for a missing or corrupt chunk.
    """
    path = Path(path)
    if not (path / "zarr.json").is_file():
        raise StoreError(f"{path}: no Zarr store here (run `python -m preprocess` first)")
    try:
        g = _open_group(path, mode)
    except ValueError as e:  # zarr.json that is not JSON, or not a group's
        raise _unreadable_metadata(path, "zarr.json", e) from None
    version = g.attrs.get("schema_version")
    if version != SCHEMA_VERSION:
        raise StoreError(
            f"{path}: store schema version {version}, this code reads {SCHEMA_VERSION}; "
            "re-run preprocessing"
        )
    return g


def done_chunks(g: zarr.Group) -> np.ndarray:
    """(n_chunks,) bool: which chunks are finished."""
    return np.asarray(g["done"][:], dtype=bool)


def write_chunk(
    g: zarr.Group,
    chunk: int,
    images: np.ndarray,
    valid: np.ndarray,
    waves: np.ndarray | None = None,
    bad_reason: list[str] | None = None,
) -> None:
    """Write one chunk's data and statistics, then its done flag (in that order).

    ``images`` (n, 3, H, W) float16, ``valid`` (n,) bool; invalid samples are stored as
    zeros and left out of the statistics. ``bad_reason`` (n strings, "" for valid samples, all
    "" when None) says why each invalid sample was skipped; ``finalize`` collects them into
    :func:`bad_samples`. Every chunk is written, all-zero ones included.
    """
    sl = chunk_slice(chunk, g.attrs["n"], g.attrs["chunk_size"])
    if images.shape[0] != sl.stop - sl.start:
        raise ValueError(f"chunk {chunk}: {images.shape[0]} images for {sl.stop - sl.start} slots")
    if bad_reason is None:
        bad_reason = [""] * len(images)
    _for_writing(g, "images")[sl] = images
    _for_writing(g, "valid")[sl] = valid
    _for_writing(g, "bad_reason")[sl] = np.asarray(bad_reason, dtype=str)
    if waves is not None:
        _for_writing(g, "waves")[sl] = waves
    x = images[valid].astype(np.float64)
    # [count, sum, sum of squares] per channel: summed over chunks into mean/std at the end,
    # so ranks never share state and a resumed run counts every chunk exactly once.
    stats = np.stack([
        np.full(x.shape[1], x[:, 0].size, dtype=np.float64) if len(x)
        else np.zeros(images.shape[1]),
        x.sum(axis=(0, 2, 3)),
        np.square(x).sum(axis=(0, 2, 3)),
    ], axis=-1)
    _for_writing(g, "stats")[chunk] = stats
    _for_writing(g, "done")[chunk] = True


def missing_chunks(g: zarr.Group) -> list[str]:
    """Labels (:func:`chunk_label`) of every chunk whose file is absent, in array order.

    One directory listing per array, no chunk read: cheap enough to run on every finalize.
    """
    root, n, cs = Path(g.store.root), g.attrs.get("n"), g.attrs.get("chunk_size")
    missing = []
    for name in sorted(g.array_keys()):
        a = g[name]
        present = {
            Path(d, f).relative_to(root / name).as_posix()
            for d, _, files in os.walk(root / name) for f in files
        }
        for coords in itertools.product(*(range(k) for k in a.cdata_shape)):
            if a.metadata.encode_chunk_key(coords) not in present:
                missing.append(chunk_label(name, coords, a.shape, a.chunks, n, cs))
    return missing


def finalize(g: zarr.Group) -> dict:
    """Once every chunk is done and every chunk file is there: per-channel mean/std over valid
    samples; mark complete. StoreError if a chunk is not done, StoreDamaged if a chunk file of
    any array is missing (listed, not read: the checksums are checked when the data is read)."""
    done = done_chunks(g)
    if not done.all():
        raise StoreError(f"{g.store_path}: {int((~done).sum())} of {done.size} chunks not done")
    missing = missing_chunks(g)
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10
                                           else "")
        raise StoreDamaged(
            f"{g.store_path}: refusing to mark the store complete: {len(missing)} chunk file(s) "
            f"missing although their chunks are done: {shown}; {REMEDY}",
            where=missing[0], reason="chunk file missing")
    s = np.asarray(g["stats"][:]).sum(axis=0)  # (3, 3)
    count, total, sq = s[:, 0], s[:, 1], s[:, 2]
    mean = total / np.maximum(count, 1)
    std = np.sqrt(np.maximum(sq / np.maximum(count, 1) - mean**2, 0))
    stats = {"mean": mean.tolist(), "std": std.tolist()}
    n_invalid = int((~np.asarray(g["valid"][:])).sum())
    g.attrs.update({"channel_stats": stats, "complete": True, "n_invalid": n_invalid})
    seal(g)
    return stats


def _unreadable_metadata(root: str | Path, where: str, e: Exception) -> StoreDamaged:
    reason = f"unreadable metadata ({e})"
    return StoreDamaged(_damage_message(str(root), where, reason), where, reason)


def metadata_sha256(path: str | Path) -> str:
    """SHA-256 of a store's metadata as it is on disk: the group's attributes (less
    ``metadata_sha256`` itself) and every array's ``zarr.json`` (shape, dtype, chunks, codecs),
    as canonical JSON. StoreDamaged if a metadata file cannot be read as JSON."""
    root = Path(path)
    meta = {}
    for f in sorted([root / "zarr.json", *root.glob("*/zarr.json")]):
        where = f.relative_to(root).as_posix()
        try:
            meta[where] = json.loads(f.read_bytes())
        except (OSError, ValueError) as e:
            raise _unreadable_metadata(root, where, e) from None
    meta["zarr.json"].get("attributes", {}).pop("metadata_sha256", None)
    text = json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def seal(g: zarr.Group) -> None:
    """Record the metadata's SHA-256 (:func:`metadata_sha256`) in the group's attributes:
    the last write to a finished store."""
    g.attrs["metadata_sha256"] = metadata_sha256(g.store.root)


def check_seal(g: zarr.Group) -> None:
    """StoreDamaged unless the store's metadata is what :func:`seal` recorded."""
    root = g.store.root
    if g.attrs.get("metadata_sha256") != metadata_sha256(root):
        reason = ("the zarr.json files do not match the SHA-256 recorded when the store was "
                  "finished (changed on disk)")
        raise StoreDamaged(_damage_message(str(root), "metadata", reason), "metadata", reason)


def bad_samples(g: zarr.Group) -> list[dict]:
    """``[{id, reason}]`` of every sample skipped as bad input, in store order: read from the
    ``valid`` and ``bad_reason`` arrays, the one place the store keeps them."""
    valid = np.asarray(g["valid"][:])
    invalid = np.flatnonzero(~valid)
    ids = int_to_id(np.asarray(g["ids"][:])[invalid])
    reasons = np.asarray(g["bad_reason"][:])[invalid]
    return [{"id": i, "reason": str(r)} for i, r in zip(ids, reasons)]


def psd_sha256(psd: np.ndarray) -> str:
    """SHA-256 of a PSD as C-ordered little-endian float64 bytes (``transform.psd_sha256``)."""
    return hashlib.sha256(np.ascontiguousarray(psd, dtype="<f8").tobytes()).hexdigest()


def write_psd(g: zarr.Group, psd: np.ndarray, df: float) -> None:
    """Store the (3, n_freq) float64 noise PSD (1/Hz, ``df`` Hz spacing from 0 Hz)."""
    g.create_array("psd", data=np.ascontiguousarray(psd, dtype=np.float64), compressors=_SMALL,
                   config=_WRITE_ALL)
    g.attrs["psd_df"] = float(df)


def read_psd(g: zarr.Group) -> np.ndarray:
    """The store's noise PSD, float64 (3, n_freq), checked against ``transform.psd_sha256``."""
    if "psd" not in g:
        raise StoreError(f"{g.store_path}: has no 'psd' array (only a train store has one)")
    psd = np.asarray(g["psd"][:], dtype=np.float64)
    recorded = g.attrs.get("transform", {}).get("psd_sha256")
    if recorded != psd_sha256(psd):
        raise StoreError(
            f"{g.store_path}: the psd array does not match its recorded psd_sha256; "
            f"the store is damaged, {REMEDY}"
        )
    return psd


def remove_partials(path: str | Path) -> list[Path]:
    """Delete the ``*.partial`` files a killed writer left inside the store at ``path``.

    Zarr writes each chunk to ``<key>.<uuid>.partial`` and renames it into place, so such a
    file is never a chunk anyone reads; only call this while no writer is running.
    """
    removed = sorted(p for p in Path(path).rglob("*.partial") if p.is_file())
    for p in removed:
        p.unlink()
    return removed


def require_complete(path: str | Path) -> zarr.Group:
    """Open a store for reading; StoreError unless every chunk is done and it is finalized,
    StoreDamaged if its metadata changed since (:func:`check_seal`)."""
    g = open_store(path)
    if not g.attrs.get("complete"):
        done = done_chunks(g)
        raise StoreError(
            f"{path}: store is incomplete ({int(done.sum())} of {done.size} chunks done); "
            "re-run the same preprocess command to finish it"
        )
    check_seal(g)
    return g
