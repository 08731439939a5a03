"""Long strain for the search and for training on a detector's own noise: H1, L1 and V1 read
from GWF or HDF5 files with gwpy, resampled to the model's rate and laid on one sample grid over
the span the three share (:class:`Strain`: (3, n) float64, NaN where a detector has no data).
Which files it reads, how it joins and resamples them, and its memory: docs/search.md, "Notes
from the code".
"""

from __future__ import annotations

import glob
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data.layout import DETECTORS

log = logging.getLogger(__name__)

GWF_SUFFIXES = (".gwf",)
HDF5_SUFFIXES = (".hdf5", ".h5", ".hdf")
GWOSC_DATASET = "strain/Strain"
# Two pieces whose boundary times differ by less than this fraction of a sample abut.
GRID_TOLERANCE = 1e-3


class StrainError(ValueError):
    """Strain the search cannot use; the message names the detector, file or channel."""


@dataclass
class Strain:
    """Three detectors on one grid: sample i of every row is at GPS ``t0 + i / sample_rate``."""

    t0: float  # GPS time of sample 0
    sample_rate: int  # Hz
    data: np.ndarray  # (3, n) float64 strain, rows H1, L1, V1; NaN where there is no data
    sources: dict = field(default_factory=dict)  # per detector: files, channel, rates, segments

    @property
    def n(self) -> int:
        return self.data.shape[-1]

    @property
    def duration(self) -> float:
        return self.n / self.sample_rate


def parse_strain(items: list[str]) -> dict[str, list[Path]]:
    """``["H1=a.gwf,b.gwf", "L1=dir/L-*.gwf", "V1=v.hdf5"]`` -> {detector: [files]}.

    StrainError for an item not of the form IFO=PATH, an unknown or repeated detector, a
    missing detector, a glob that matches nothing or a file that does not exist.
    """
    found: dict[str, list[Path]] = {}
    for item in items:
        ifo, sep, spec = item.partition("=")
        if not sep or not ifo or not spec:
            raise StrainError(f"--strain {item!r}: expected IFO=PATH (e.g. H1=H-H1_X.gwf)")
        if ifo not in DETECTORS:
            raise StrainError(f"--strain {item!r}: unknown detector {ifo!r} (the models read "
                              f"{', '.join(DETECTORS)})")
        if ifo in found:
            raise StrainError(f"--strain: detector {ifo} given twice")
        paths: list[Path] = []
        for part in (p for p in spec.split(",") if p):
            if glob.has_magic(part):
                matched = sorted(glob.glob(part))
                if not matched:
                    raise StrainError(f"{ifo}: {part}: no file matches")
                paths += [Path(m) for m in matched]
            else:
                paths.append(Path(part))
        for p in paths:
            if not p.is_file():
                raise StrainError(f"{ifo}: {p}: file not found")
        found[ifo] = paths
    missing = [d for d in DETECTORS if d not in found]
    if missing:
        raise StrainError(f"missing detector(s) {', '.join(missing)}: give --strain "
                          + " ".join(f"{d}=PATH" for d in missing))
    return found


def _pick(ifo: str, path: Path, names: list[str], what: str) -> str:
    """The one name of ``names`` for ``ifo``: the only ``IFO:...`` one, else the only one."""
    own = [n for n in names if n.startswith(f"{ifo}:")]
    if len(own) == 1:
        return own[0]
    if not own and len(names) == 1:
        return names[0]
    listed = ", ".join(names) or "none"
    raise StrainError(f"{ifo}: {path}: cannot tell which {what} holds {ifo}'s strain ({listed});"
                      f" name it with --channel {ifo}=NAME")


def read_file(ifo: str, path: Path, channel: str | None = None):
    """One file's strain for detector ``ifo`` as a gwpy TimeSeries. StrainError names the file
    and the cause. ``channel`` is ``--channel IFO=NAME``, or None:

    - ``*.gwf``: frames, read with ``TimeSeries.read(path, channel)`` (lalframe). The channel is
      ``--channel IFO=NAME``, else the file's only channel named ``IFO:...``.
    - ``*.hdf5`` / ``*.h5`` / ``*.hdf``: a GWOSC file (``strain/Strain``, read with gwpy's
      ``hdf5.gwosc`` format; its channel is checked against ``--channel`` when one is given) or
      a gwpy HDF5 file (one dataset per channel, ``TimeSeries.read(path, path=NAME,
      format="hdf5")``; the dataset is ``--channel IFO=NAME``, else the file's only
      ``IFO:...`` dataset, else its only dataset).
    """
    from gwpy.timeseries import TimeSeries

    suffix = path.suffix.lower()
    try:
        if suffix in GWF_SUFFIXES:
            from gwpy.io.gwf import iter_channel_names

            names = list(iter_channel_names(str(path)))
            if channel is None:
                channel = _pick(ifo, path, names, "channel")
            elif channel not in names:
                raise StrainError(f"{ifo}: {path}: no channel {channel!r} (channels: "
                                  f"{', '.join(names) or 'none'})")
            # Checked first: lalframe prints C-level errors for a channel it does not find.
            series = TimeSeries.read(str(path), channel)
        elif suffix in HDF5_SUFFIXES:
            import h5py

            with h5py.File(path, "r") as f:
                gwosc = GWOSC_DATASET in f
                names = []
                f.visititems(lambda name, obj: names.append(name)
                             if isinstance(obj, h5py.Dataset) else None)
            if gwosc:
                series = TimeSeries.read(str(path), format="hdf5.gwosc")
                if channel is not None and str(series.name) != channel:
                    raise StrainError(f"{ifo}: {path}: a GWOSC file of channel {series.name!r}, "
                                      f"not {channel!r}")
            else:
                if channel is None:
                    channel = _pick(ifo, path, names, "dataset")
                elif channel not in names:
                    raise StrainError(f"{ifo}: {path}: no dataset {channel!r} (datasets: "
                                      f"{', '.join(names) or 'none'})")
                series = TimeSeries.read(str(path), path=channel, format="hdf5")
        else:
            raise StrainError(f"{ifo}: {path}: unknown file type {path.suffix!r} (expected "
                              f"{', '.join(GWF_SUFFIXES + HDF5_SUFFIXES)})")
    except StrainError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        raise StrainError(f"{ifo}: {path}: cannot read strain: {e}") from None
    if series.ndim != 1 or len(series) == 0:
        raise StrainError(f"{ifo}: {path}: no samples")
    return series


def _rate(series) -> float:
    return float(series.sample_rate.to("Hz").value)


def _start(series) -> float:
    return float(series.t0.to("s").value)


def _concatenate(first, second):
    """Two abutting series as one, starting where ``first`` starts."""
    from gwpy.timeseries import TimeSeries

    return TimeSeries(np.concatenate([first.value, second.value]), t0=first.t0,
                      sample_rate=first.sample_rate, name=first.name, channel=first.channel,
                      unit=first.unit)


def join(ifo: str, pieces: list[tuple[Path, object]]) -> list[tuple[list[Path], object]]:
    """Sort ``(path, series)`` by start time and concatenate those that abut; returns
    ``([paths], series)`` per contiguous segment. StrainError for overlapping files or files of
    different rates."""
    pieces = sorted(pieces, key=lambda p: _start(p[1]))
    rates = {_rate(s) for _, s in pieces}
    if len(rates) > 1:
        raise StrainError(f"{ifo}: files at different sample rates ({sorted(rates)} Hz): "
                          + ", ".join(str(p) for p, _ in pieces))
    rate = rates.pop()
    out: list[tuple[list[Path], object]] = []
    for path, series in pieces:
        if out:
            paths, last = out[-1]
            end = _start(last) + len(last) / rate
            offset = (_start(series) - end) * rate
            if offset < -GRID_TOLERANCE:
                raise StrainError(f"{ifo}: {path} starts at {_start(series)} before {paths[-1]} "
                                  f"ends at {end}: overlapping files")
            if abs(offset) < GRID_TOLERANCE:
                out[-1] = (paths + [path], _concatenate(last, series))
                continue
        out.append(([path], series))
    return out


def resample(ifo: str, paths: list[Path], series, sample_rate: int):
    """``series`` at ``sample_rate`` Hz: unchanged, or downsampled by an integer factor with
    gwpy's ``resample``. StrainError for a rate that is lower or not an integer multiple."""
    rate = _rate(series)
    if rate == sample_rate:
        return series
    factor = rate / sample_rate
    if factor < 1 or not math.isclose(factor, round(factor), rel_tol=0, abs_tol=1e-9):
        raise StrainError(f"{ifo}: {paths[0]}: sample rate {rate:g} Hz cannot be resampled to the "
                          f"model's {sample_rate} Hz (needs an integer multiple of it)")
    n = len(series) // round(factor) * round(factor)  # decimate keeps whole output samples
    return series[:n].resample(sample_rate)


def read_strain(paths: dict[str, list[Path]], sample_rate: int,
                channels: dict[str, str] | None = None) -> Strain:
    """Read, join and resample every detector's files; lay the three on one grid over their
    common span. StrainError (naming the detector and files) for unreadable files, unknown
    channels, rates that cannot be resampled, samples off the common grid, or no overlap."""
    channels = channels or {}
    segments: dict[str, list[tuple[list[Path], object]]] = {}
    sources: dict[str, dict] = {}
    for ifo in DETECTORS:
        pieces = [(p, read_file(ifo, p, channels.get(ifo))) for p in paths[ifo]]
        rate_in = _rate(pieces[0][1])
        joined = join(ifo, pieces)
        segments[ifo] = [(ps, resample(ifo, ps, s, sample_rate)) for ps, s in joined]
        sources[ifo] = {
            "files": [str(p) for p in paths[ifo]],
            "channel": str(pieces[0][1].name),
            "sample_rate": rate_in,
            "resampled": rate_in != sample_rate,
            "segments": [[_start(s), _start(s) + len(s) / sample_rate] for _, s in segments[ifo]],
        }
    start = max(_start(segs[0][1]) for segs in segments.values())
    end = min(_start(segs[-1][1]) + len(segs[-1][1]) / sample_rate for segs in segments.values())
    if end <= start:
        spans = "; ".join(f"{ifo} {s['segments'][0][0]:.3f}-{s['segments'][-1][1]:.3f}"
                          for ifo, s in sources.items())
        raise StrainError(f"the three detectors' data do not overlap ({spans})")
    n = math.floor((end - start) * sample_rate + GRID_TOLERANCE)
    data = np.full((len(DETECTORS), n), np.nan)
    for row, ifo in enumerate(DETECTORS):
        for files, series in segments[ifo]:
            offset = (_start(series) - start) * sample_rate
            first = round(offset)
            if abs(offset - first) > GRID_TOLERANCE:
                raise StrainError(
                    f"{ifo}: {files[0]}: samples are {offset - first:+.3f} samples off the grid "
                    f"of the detector that starts last (GPS {start}): the search needs the three "
                    "detectors sampled at the same times")
            a, b = max(first, 0), min(first + len(series), n)
            if a < b:
                data[row, a:b] = np.asarray(series.value[a - first:b - first], dtype=np.float64)
    log.info("strain: GPS %.3f-%.3f (%.1f s) at %d Hz; %s", start, start + n / sample_rate,
             n / sample_rate, sample_rate,
             ", ".join(f"{ifo} {len(s['files'])} file(s) at {s['sample_rate']:g} Hz"
                       for ifo, s in sources.items()))
    return Strain(t0=start, sample_rate=sample_rate, data=data, sources=sources)
