"""Check image stores for damage: ``python -m data.verify PATH [PATH ...]`` (``g2net-verify``).

PATH is a store (``CACHE/test.zarr``) or a cache directory holding ``train.zarr`` and/or
``test.zarr``. Every chunk of every array is read through :class:`data.store.CheckedStore`
(a missing chunk file or a crc32c mismatch is found), the done flags are checked against the
``complete`` attribute and the train PSD against its recorded hash. Every problem is reported,
not only the first. A chunk of ``images``, ``valid``, ``bad_reason`` or ``waves`` whose done
flag is not set is not expected yet (an unfinished store) and is not read.

Exit status: 0 every store clean, 1 a store damaged or unfinished, 2 a usage error.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr
from tqdm import tqdm

from data import store as zstore
from data.cli import cli_errors
from data.progress import progress_bar

SPLIT_STORES = ("train.zarr", "test.zarr")


def find_stores(path: Path) -> list[Path]:
    """The stores a PATH argument names: itself, or the split stores of a cache directory.

    ValueError (a usage error) when it is neither.
    """
    if (path / "zarr.json").is_file():
        return [path]
    if not path.exists():
        raise ValueError(f"{path}: no such file or directory")
    found = [path / name for name in SPLIT_STORES if (path / name).is_dir()]
    if not found:
        raise ValueError(f"{path}: neither a store (no zarr.json) nor a cache directory "
                         f"(no {' or '.join(SPLIT_STORES)})")
    return found


def _chunk_selection(coords: tuple[int, ...], a: zarr.Array) -> tuple[slice, ...]:
    return tuple(slice(c * k, min((c + 1) * k, s)) for c, k, s in zip(coords, a.chunks, a.shape))


def _read_chunks(g: zarr.Group, name: str, skip, bar: tqdm,
                 keep: bool = False) -> tuple[list[str], int, dict]:
    """Read every chunk of array ``name`` (but those ``skip(coords)`` says are not expected).

    Returns (problems, chunks read, {coords: data} of the chunks read when ``keep``).
    """
    a = g[name]
    n, cs = g.attrs.get("n"), g.attrs.get("chunk_size")
    problems, n_read, kept = [], 0, {}
    for coords in itertools.product(*(range(k) for k in a.cdata_shape)):
        bar.update(1)
        if skip(coords):
            continue
        try:
            data = a[_chunk_selection(coords, a)]
            n_read += 1
            if keep:
                kept[coords] = data
        except zstore.StoreDamaged as e:
            problems.append(f"{e.where}: {e.reason}")
        except Exception as e:  # a chunk whose checksum matches but that will not decode
            label = zstore.chunk_label(name, coords, a.shape, a.chunks, n, cs)
            problems.append(f"{label}: cannot be decoded ({type(e).__name__}: {e})")
    return problems, n_read, kept


@dataclass
class Report:
    """What :func:`verify_store` found in one store."""

    problems: list[str] = field(default_factory=list)  # damage, one line each
    unfinished: str | None = None  # why the store is not complete (not damage)
    n_read: int = 0  # chunks read

    @property
    def clean(self) -> bool:
        return not self.problems and self.unfinished is None


def verify_store(path: Path, progress: bool = True) -> Report:
    """Read every expected chunk of the store at ``path``; every problem found."""
    report = Report()
    problems = report.problems
    try:
        g = zstore.open_store(path)
        names = sorted(g.array_keys())
        arrays = {name: g[name] for name in names}
    except Exception as e:  # another schema, unreadable metadata: nothing more can be checked
        problems.append(f"cannot be opened: {e}")
        return report
    for name, a in arrays.items():
        codecs = [c.to_dict()["name"] for c in a.metadata.codecs]
        if codecs[-1] != "crc32c":
            problems.append(f"{name}: its chunks carry no crc32c checksum (codecs {codecs})")
    for name in ("done", "images", "ids", "valid"):
        if name not in arrays:
            problems.append(f"{name}: array missing")
    if "done" not in arrays:
        return report

    total = sum(math.prod(a.cdata_shape) for a in arrays.values())
    chunk_size = g.attrs.get("chunk_size")
    with progress_bar(total=total, desc=f"verify {path.name}", unit="chunk", disable=not progress,
                      dynamic_ncols=True) as bar:
        # The done flags first: they say which chunks of the chunk-by-chunk arrays must exist.
        found, report.n_read, flags = _read_chunks(g, "done", lambda coords: False, bar,
                                                   keep=True)
        problems += found
        # A flag that cannot be read counts as set: its chunks are expected and read.
        done = np.array([bool(flags[(k,)][0]) if (k,) in flags else True
                         for k in range(arrays["done"].shape[0])])
        for name in names:
            if name == "done":
                continue

            def skip(coords, name=name):
                # Chunk k of a chunk-by-chunk array is store chunk k, written once done[k].
                return (name in zstore.CHUNK_ARRAYS and arrays[name].chunks[0] == chunk_size
                        and coords[0] < done.size and not done[coords[0]])

            found, n_read, _ = _read_chunks(g, name, skip, bar)
            problems += found
            report.n_read += n_read

    n_done = int(done.sum())
    if g.attrs.get("complete"):
        if n_done < done.size:
            problems.append(f"marked complete, but {done.size - n_done} of {done.size} chunks "
                            "are not done")
        try:
            zstore.check_seal(g)
        except zstore.StoreDamaged as e:
            problems.append(f"{e.where}: {e.reason}")
    else:
        report.unfinished = (f"unfinished: {n_done} of {done.size} chunks done (re-run the "
                             "same preprocess command to finish it)")
    if "psd" in arrays:
        try:
            zstore.read_psd(g)
        except zstore.StoreDamaged:
            pass  # its chunk was reported above
        except zstore.StoreError as e:
            problems.append(str(e).removeprefix(f"{path}: "))
    elif g.attrs.get("split") == "train":
        problems.append("psd: array missing (a train store has one)")
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="g2net-verify",
        description="Read every chunk of image stores and report every damaged one "
                    "(exit status 0 clean, 1 damaged or unfinished, 2 usage error).",
    )
    ap.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                    help="a store (CACHE/test.zarr) or a cache directory holding "
                         "train.zarr and/or test.zarr")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    try:
        paths = [s for p in args.paths for s in find_stores(p)]
    except ValueError as e:
        ap.error(str(e))
    damaged = 0
    for path in paths:
        # A store it cannot open (another schema) or read (OSError): one line, as every command.
        with cli_errors(ap.prog):
            report = verify_store(path, progress=not args.quiet)
        if report.clean:
            print(f"{path}: OK, {report.n_read} chunks read, every checksum matches")
            continue
        damaged += 1
        if report.problems:
            print(f"{path}: DAMAGED, {len(report.problems)} problem(s):")
            for p in report.problems:
                print(f"  {p}")
        if report.unfinished:
            print(f"{path}: {report.unfinished}")
        if report.problems:
            print(f"  -> {zstore.REMEDY}")
    if len(paths) > 1 and damaged:
        print(f"{damaged} of {len(paths)} stores damaged or unfinished")
    return 1 if damaged else 0


if __name__ == "__main__":
    sys.exit(main())
