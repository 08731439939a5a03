"""Writing long strain to disk as the field's files: one GWF frame file (or HDF5) per detector,
named and channelled as GWOSC's are, written segment by segment so that an hour never has to
be held twice in memory.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import lal
import lalframe
import numpy as np

DEFAULT_SEGMENT = 64  # s of strain per frame / per HDF5 write


def channel_name(detector: str) -> str:
    """``H1`` -> ``H1:SYNTH-STRAIN``: the channel (GWF) / dataset (HDF5) name."""
    return f"{detector}:SYNTH-STRAIN"


def strain_path(out: str | Path, detector: str, gps_start: int, duration: int, fmt: str) -> Path:
    """``out/H-H1_SYNTH-<gps_start>-<duration>.<fmt>``: the LIGO file-name convention."""
    return Path(out) / f"{detector[0]}-{detector}_SYNTH-{int(gps_start)}-{int(duration)}.{fmt}"


class GWFWriter:
    """One GWF file, one frame per :meth:`write` (lalframe's FrameU stream, as gwpy writes)."""

    # LAL_<site>_DETECTOR_BIT = 1 << 2 * LALDetectorIndex<site>DIFF (LALDetectors.h); the
    # SWIG bindings export only the indices.
    _DETECTOR_BITS = {
        "H1": 1 << 2 * lal.LALDetectorIndexLHODIFF,
        "L1": 1 << 2 * lal.LALDetectorIndexLLODIFF,
        "V1": 1 << 2 * lal.LALDetectorIndexVIRGODIFF,
    }

    def __init__(self, path: Path, detector: str, gps_start: int, sample_rate: int):
        self.path, self.detector = path, detector
        self.gps_start, self.sample_rate = gps_start, sample_rate
        self._stream = lalframe.FrameUFrFileOpen(str(path), "w")
        self._n_frames = 0

    def write(self, offset: int, data: np.ndarray) -> None:
        epoch = lal.LIGOTimeGPS(self.gps_start) + offset / self.sample_rate
        frame = lalframe.FrameNew(
            epoch,
            data.size / self.sample_rate,
            "SYNTH",
            -1,  # run: negative numbers are reserved for simulated data
            self._n_frames,
            self._DETECTOR_BITS[self.detector],
        )
        series = lal.CreateREAL8TimeSeries(
            channel_name(self.detector), epoch, 0.0, 1.0 / self.sample_rate, lal.StrainUnit,
            data.size,
        )  # fmt: skip
        series.data.data[:] = data
        lalframe.FrameAddREAL8TimeSeriesProcData(frame, series)
        lalframe.FrameUFrameHWrite(self._stream, frame)
        self._n_frames += 1

    def close(self) -> None:
        # The SWIG object's destructor writes the table of contents and closes the file
        # (lalframe exposes no close of its own; gwpy's write_frames relies on the same).
        del self._stream


class HDF5Writer:
    """One HDF5 file with one resizable dataset, in gwpy's TimeSeries layout."""

    def __init__(self, path: Path, detector: str, gps_start: int, sample_rate: int):
        self.path = path
        self._file = h5py.File(path, "w")
        name = channel_name(detector)
        chunk = min(DEFAULT_SEGMENT * sample_rate, 1 << 20)  # <= 8 MB chunks
        self._dataset = self._file.create_dataset(
            name, shape=(0,), maxshape=(None,), dtype="<f8", chunks=(chunk,)
        )
        attrs = dict(
            channel=name, name=name, unit="strain", x0=float(gps_start),
            dx=1.0 / sample_rate, xunit="s",
        )  # fmt: skip
        self._dataset.attrs.update(attrs)

    def write(self, offset: int, data: np.ndarray) -> None:
        self._dataset.resize((offset + data.size,))
        self._dataset[offset:] = data

    def close(self) -> None:
        self._file.close()
