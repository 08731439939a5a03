"""preprocess.psd.training_psd: the first n_psd target-0 samples in label order, averaged in
blocks of good samples whatever was skipped (the PSD's hash, recorded in every store and model
card, must not depend on where a bad file sits), and a bad file an error unless skipped."""

from __future__ import annotations

import numpy as np
import pytest

from data import layout
from data.layout import BadSample
from preprocess.psd import training_psd
from preprocess.spectral import PSDAccumulator


def _accumulate(samples: list[np.ndarray], block: int, alpha: float = 0.25) -> np.ndarray:
    acc = PSDAccumulator(alpha, layout.SAMPLE_RATE)
    for start in range(0, len(samples), block):
        acc.update(np.stack(samples[start:start + block]))
    return acc.psd()


def test_the_first_target0_samples_in_label_order(dataset):
    index = layout.build_index(dataset, "train")
    rows = np.flatnonzero(index.targets == 0)[:10]
    psd, count = training_psd(index, 10, 0.25, batch=4, read_threads=2)
    want = _accumulate([layout.load_sample(index.path(int(i))) for i in rows], block=4)
    assert count == 10 and np.array_equal(psd, want)


def test_a_bad_file_is_an_error_or_left_out_in_blocks_of_good_samples(data_copy):
    index = layout.build_index(data_copy, "train")
    rows = np.flatnonzero(index.targets == 0)[:10]
    bad = index.path(int(rows[2]))
    bad.write_bytes(bad.read_bytes()[:300])  # a truncated download
    with pytest.raises(BadSample, match=bad.name):
        training_psd(index, 10, 0.25, batch=4)
    psd, count = training_psd(index, 10, 0.25, on_bad="skip", batch=4)
    good = [layout.load_sample(index.path(int(i))) for i in rows if int(i) != int(rows[2])]
    assert count == 9
    # blocks of 4 *good* samples: [0, 1, 3, 4], [5, 6, 7, 8], [9]; not of 4 rows
    assert np.array_equal(psd, _accumulate(good, block=4))
