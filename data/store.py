"""The CQT image cache: one Zarr v3 group per split (``CACHE/train.zarr``, ``CACHE/test.zarr``).

Arrays (N samples, chunked along N only, ``chunk_size`` samples per chunk)::

    images   (N, 3, n_bins, n_frames) float16   |CQT| of the whitened strain, H1/L1/V1
    ids      (N,) uint64                         the hex id as an integer (layout.id_to_int)
    targets  (N,) int8                           0/1 for train, -1 for test
    valid    (N,) bool                           False for a sample skipped as bad input
    bad_reason (N,) string                       why a sample is invalid, "" when valid
    done     (n_chunks,) bool, one Zarr chunk each   written *after* the chunk's data
    stats    (n_chunks, 3, 3) float64 [count, sum, sum of squares] per channel and chunk
    psd      (3, n_freq) float64 (train only)   average noise PSD, 1/Hz, at ``psd_df`` Hz spacing
    waves    (N, 3, 4096) float16 (optional)     whitened time series

Every writer owns whole chunks, so any number of processes can fill one store without two
of them touching the same Zarr chunk (Zarr sharding is not used: concurrent writers to one
shard lose chunks, zarr-python issues 3514 and 3682). Zarr >= 3.1.3 writes each chunk to a
``*.partial`` file and renames it, so a killed writer leaves orphans but never a torn chunk;
``done`` is the only completion marker (with ``write_empty_chunks=False`` the existence of a
chunk means nothing).

Group attributes: ``schema_version``, ``split``, ``n``, ``chunk_size``, ``config`` (the full
resolved preprocessing config), ``transform`` (the part that fixes the images), ``source``,
``versions``, ``device_type`` (cpu or cuda: they round differently), ``psd_df`` (train only),
and, once every chunk is done, ``complete``, ``channel_stats``, ``n_invalid`` and ``bad`` (a
list of ``{id, reason}``, one per invalid sample).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np
import zarr
import zarr.codecs
import zarr.storage

from data.layout import int_to_id

SCHEMA_VERSION = 1


class StoreError(ValueError):
    """A store that is missing, incomplete, of another schema, or made another way."""


class _LocalStore(zarr.storage.LocalStore):
    """zarr's local store, whose failed writes name the file.

    zarr writes a chunk with ``write`` on an already open file, so an ``OSError`` from a full
    disk or a file-size limit carries no file name and the user would not learn where.
    """

    async def set(self, key: str, value) -> None:
        try:
            await super().set(key, value)
        except OSError as e:
            if e.filename is not None:
                raise
            raise OSError(e.errno, e.strerror, str(self.root / key)) from e


def _open_group(path: str | Path, mode: str) -> zarr.Group:
    return zarr.open_group(store=_LocalStore(str(path), read_only=mode == "r"), mode=mode)


def n_chunks(n: int, chunk_size: int) -> int:
    return math.ceil(n / chunk_size)


def chunk_slice(chunk: int, n: int, chunk_size: int) -> slice:
    """Sample range of chunk ``chunk``."""
    return slice(chunk * chunk_size, min((chunk + 1) * chunk_size, n))


def compressors(codec: str, clevel: int = 5) -> Any:
    """The Zarr v3 codec for ``codec`` in {"none", "lz4", "zstd"} (bit-shuffled Blosc)."""
    if codec == "none":
        return None
    if codec in ("lz4", "zstd"):
        # Bit-shuffle groups the float16 exponent bits, the only part of CQT noise that repeats.
        return zarr.codecs.BloscCodec(cname=codec, clevel=clevel, shuffle="bitshuffle")
    raise StoreError(f"unknown codec {codec!r}; expected none, lz4 or zstd")


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
        dtype="float16", compressors=comp, fill_value=0,
    )
    if save_waves:
        g.create_array(
            "waves", shape=(n, image_shape[0], n_time), chunks=(chunk_size, image_shape[0], n_time),
            dtype="float16", compressors=comp, fill_value=0,
        )
    g.create_array("ids", shape=(n,), chunks=(chunk_size,), dtype="uint64", fill_value=0)
    g.create_array("targets", shape=(n,), chunks=(chunk_size,), dtype="int8", fill_value=-1)
    g.create_array("valid", shape=(n,), chunks=(chunk_size,), dtype="bool", fill_value=True)
    g.create_array("bad_reason", shape=(n,), chunks=(chunk_size,), dtype=str, fill_value="")
    g.create_array("done", shape=(nc,), chunks=(1,), dtype="bool", fill_value=False)
    g.create_array("stats", shape=(nc, image_shape[0], 3), chunks=(1, image_shape[0], 3),
                   dtype="float64", fill_value=0)
    g["ids"][:] = np.asarray(ids, dtype=np.uint64)
    g["targets"][:] = np.asarray(targets, dtype=np.int8)
    g.attrs.update({
        "schema_version": SCHEMA_VERSION, "split": split, "n": n, "chunk_size": chunk_size,
        "complete": False, **(attrs or {}),
    })
    return g


def open_store(path: str | Path, mode: str = "r") -> zarr.Group:
    """Open a store and check its schema version; StoreError if missing or foreign."""
    path = Path(path)
    if not (path / "zarr.json").is_file():
        raise StoreError(f"{path}: no Zarr store here (run `python -m preprocess` first)")
    g = _open_group(path, mode=mode)
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
    zeros and left out of the statistics. ``bad_reason`` (n strings, "" for valid samples)
    says why each invalid sample was skipped; ``finalize`` collects them into ``attrs["bad"]``.
    """
    sl = chunk_slice(chunk, g.attrs["n"], g.attrs["chunk_size"])
    if images.shape[0] != sl.stop - sl.start:
        raise ValueError(f"chunk {chunk}: {images.shape[0]} images for {sl.stop - sl.start} slots")
    g["images"][sl] = images
    g["valid"][sl] = valid
    if bad_reason is not None:
        g["bad_reason"][sl] = np.asarray(bad_reason, dtype=str)
    if waves is not None:
        g["waves"][sl] = waves
    x = images[valid].astype(np.float64)
    # [count, sum, sum of squares] per channel: summed over chunks into mean/std at the end,
    # so ranks never share state and a resumed run counts every chunk exactly once.
    stats = np.stack([
        np.full(x.shape[1], x[:, 0].size, dtype=np.float64) if len(x)
        else np.zeros(images.shape[1]),
        x.sum(axis=(0, 2, 3)),
        np.square(x).sum(axis=(0, 2, 3)),
    ], axis=-1)
    g["stats"][chunk] = stats
    g["done"][chunk] = True


def finalize(g: zarr.Group) -> dict:
    """Once every chunk is done: per-channel mean/std over valid samples; mark complete."""
    done = done_chunks(g)
    if not done.all():
        raise StoreError(f"{g.store_path}: {int((~done).sum())} of {done.size} chunks not done")
    s = np.asarray(g["stats"][:]).sum(axis=0)  # (3, 3)
    count, total, sq = s[:, 0], s[:, 1], s[:, 2]
    mean = total / np.maximum(count, 1)
    std = np.sqrt(np.maximum(sq / np.maximum(count, 1) - mean**2, 0))
    stats = {"mean": mean.tolist(), "std": std.tolist()}
    valid = np.asarray(g["valid"][:])
    invalid = np.flatnonzero(~valid)
    ids = int_to_id(np.asarray(g["ids"][:])[invalid])
    reasons = np.asarray(g["bad_reason"][:])[invalid]
    bad = [{"id": i, "reason": str(r)} for i, r in zip(ids, reasons)]
    g.attrs.update({"channel_stats": stats, "complete": True, "n_invalid": int(invalid.size),
                    "bad": bad})
    return stats


def psd_sha256(psd: np.ndarray) -> str:
    """SHA-256 of a PSD as C-ordered little-endian float64 bytes (``transform.psd_sha256``)."""
    return hashlib.sha256(np.ascontiguousarray(psd, dtype="<f8").tobytes()).hexdigest()


def write_psd(g: zarr.Group, psd: np.ndarray, df: float) -> None:
    """Store the (3, n_freq) float64 noise PSD (1/Hz, ``df`` Hz spacing from 0 Hz)."""
    g.create_array("psd", data=np.ascontiguousarray(psd, dtype=np.float64))
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
            "the store is damaged, re-run preprocessing with --overwrite"
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
    """Open a store for reading; StoreError unless every chunk is done and it is finalized."""
    g = open_store(path)
    if not g.attrs.get("complete"):
        done = done_chunks(g)
        raise StoreError(
            f"{path}: store is incomplete ({int(done.sum())} of {done.size} chunks done); "
            "re-run the same preprocess command to finish it"
        )
    return g
