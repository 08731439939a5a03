"""The training PSD: the noise spectrum that stage one whitens with, estimated once per data set
from its first ``n_psd`` target-0 training samples in label order (a fixed set, so a store made
again gets the same PSD). Preprocessing and the matched-filter bank both call
:func:`training_psd`, so the two whiten with the same estimate of the same data.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from data import layout
from data.layout import BadSample, DataError
from preprocess.spectral import PSDAccumulator

log = logging.getLogger(__name__)


def training_psd(index: layout.Index, n_psd: int, alpha: float, *, on_bad: str = "error",
                 read_threads: int = 1, batch: int = 64) -> tuple[np.ndarray, int]:
    """(PSD (3, 2049) float64 in 1/Hz, samples averaged): the average Tukey(``alpha``)-windowed
    periodogram of the first ``n_psd`` target-0 samples of the train ``index``.

    A file that :func:`data.layout.load_sample` rejects raises with ``on_bad="error"``; with
    ``"skip"`` it is left out with a warning (the PSD averages one sample fewer, not the next
    one: the set stays fixed). DataError when no target-0 sample is listed or none is readable.
    """
    if n_psd < 1:
        raise DataError(f"n_psd must be at least 1, got {n_psd}")
    rows = np.flatnonzero(index.targets == 0)[:n_psd]
    if rows.size == 0:
        raise DataError(f"{index.root / layout.LABEL_FILES['train']}: no target-0 samples "
                        "to estimate the noise PSD from")

    def read(i: int) -> np.ndarray | BadSample:
        try:
            return layout.load_sample(index.path(int(i)))
        except BadSample as e:
            if on_bad == "error":
                raise
            return e

    acc = PSDAccumulator(alpha, layout.SAMPLE_RATE)
    skipped, block = [], []
    # Updates in blocks of `batch` good samples, whatever was skipped: the float64 sums, and so
    # the PSD's hash that every store and model card records, do not depend on where bad
    # files sit. Reads run `batch` at a time on the threads (bounded memory).
    with ThreadPoolExecutor(max(read_threads, 1), thread_name_prefix="psd") as pool:
        for start in range(0, rows.size, batch):
            for x in pool.map(read, rows[start:start + batch]):
                if isinstance(x, BadSample):
                    skipped.append(x)
                    continue
                block.append(x)
                if len(block) == batch:
                    acc.update(np.stack(block))
                    block = []
    if block:
        acc.update(np.stack(block))
    if acc.count == 0:
        raise DataError(f"{index.root}: none of the {rows.size} target-0 samples for the PSD "
                        f"could be read (first: {skipped[0]})")
    if skipped:
        log.warning("PSD: left out %d bad sample(s), e.g. %s", len(skipped), skipped[0])
    log.info("PSD: averaged over %d target-0 training samples", acc.count)
    return acc.psd(), acc.count
