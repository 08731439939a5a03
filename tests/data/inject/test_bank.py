"""The waveform bank: what it stores against lalsimulation itself, resumability after a real
SIGKILL, checksums, and the errors of the command."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import lal
import lalsimulation
import numpy as np
import pytest

from data import store as zstore
from data.inject.bank import (
    PARAMS,
    BankError,
    BankSpec,
    Prior,
    draw_sources,
    make_bank,
    open_bank,
)
from data.sim import physics

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def small_bank(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bank") / "bank.zarr"
    make_bank(path, BankSpec(n=40, seed=3, chunk_size=16), jobs=2, progress=False)
    return path


def test_each_row_is_lalsimulations_waveform_merger_aligned(small_bank):
    """Row i holds lalsimulation's h+ and hx for source i (called here directly, not through
    the bank's code), placed so that t = 0 falls at merger_index + merger_offset."""
    bank = open_bank(small_bank)
    spec = BankSpec(n=40, seed=3, chunk_size=16)
    assert bank.polarisations.shape == (40, 2, spec.length)
    assert bank.polarisations.dtype == np.float32
    assert list(bank.attrs["params"]) == list(PARAMS)
    sources = draw_sources(spec, 0) + draw_sources(spec, 1) + draw_sources(spec, 2)
    starts = []
    for i in range(40):
        s = sources[i]
        f_start = max(physics.F_START_MIN,
                      physics.start_frequency(s.mass1, s.mass2, 1.9 + physics.START_MARGIN))
        hp, hc = lalsimulation.SimInspiralChooseTDWaveform(
            s.mass1 * lal.MSUN_SI, s.mass2 * lal.MSUN_SI, *s.spin1, *s.spin2,
            1e9 * lal.PC_SI, s.inclination, s.phase, 0.0, 0.0, 0.0, 1 / 2048, f_start,
            physics.F_REF, None, lalsimulation.GetApproximantFromString("IMRPhenomPv2"))
        first = bank.merger_index + float(hp.epoch) * 2048  # index of hp[0], fractional
        whole = int(np.floor(first + 0.5))
        assert bank.merger_offset[i] == pytest.approx(whole - first, abs=1e-9)
        k0 = max(0, -whole)
        n = min(hp.data.length - k0, spec.length - whole - k0)
        got = bank.polarisations[i, :, whole + k0:whole + k0 + n]
        want = np.stack([hp.data.data[k0:k0 + n], hc.data.data[k0:k0 + n]])
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7 * np.abs(want).max())
        assert not bank.polarisations[i, :, :max(whole, 0)].any()  # nothing before it
        row = bank.params[i]
        assert row[PARAMS.index("mass1")] == s.mass1 >= row[PARAMS.index("mass2")] == s.mass2
        # The amplitude peaks within a few ms of the merger (IMRPhenom's t = 0).
        peak = np.argmax(np.hypot(*bank.polarisations[i]))
        assert abs(peak - bank.merger_index) < 0.02 * 2048
        starts.append(whole)
    # The start frequency (the generator's rule for a merger 1.9 s into the sample) makes
    # every chirp longer than the bank keeps: rows are filled from their first sample.
    assert max(starts) < 0


def test_the_prior_is_the_generators(small_bank):
    p = open_bank(small_bank).params
    m1, m2 = p[:, 0], p[:, 1]
    assert (m1 >= m2).all() and m2.min() >= 7 and m1.max() <= 50
    spins = np.linalg.norm(p[:, 2:5], axis=1)
    assert spins.max() < 0.99 and np.abs(p[:, 2:5]).min() > 0  # precessing: x, y components


def test_a_bank_is_the_same_with_any_number_of_processes(small_bank, tmp_path):
    other = tmp_path / "one.zarr"
    make_bank(other, BankSpec(n=40, seed=3, chunk_size=16), jobs=1, progress=False)
    a, b = open_bank(small_bank), open_bank(other)
    np.testing.assert_array_equal(a.polarisations, b.polarisations)
    np.testing.assert_array_equal(a.params, b.params)


def test_aligned_spins_and_another_approximant(tmp_path):
    spec = BankSpec(n=8, chunk_size=8, prior=Prior(spins="aligned", approximant="IMRPhenomD"))
    make_bank(tmp_path / "d.zarr", spec, progress=False)
    p = open_bank(tmp_path / "d.zarr").params
    assert not p[:, [2, 3, 5, 6]].any() and p[:, [4, 7]].any()


@pytest.mark.timeout(120)
def test_a_killed_bank_resumes_to_the_same_bytes(tmp_path):
    """SIGKILL the command after some chunks, re-run it: the finished bank equals one made
    without a kill, and the re-run made only the missing chunks."""
    args = ["--n", "320", "--chunk-size", "8", "--jobs", "1", "--seed", "5", "--quiet"]
    path = tmp_path / "killed.zarr"
    proc = subprocess.Popen([sys.executable, "-m", "data.inject.bank", "--out", str(path), *args],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if (path / "zarr.json").is_file():
                try:
                    if zstore.done_chunks(zstore._open_group(path, "r")).sum() >= 3:
                        break
                except Exception:  # the done array half-created: look again
                    pass
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the bank finished before it could be killed"
    with pytest.raises(BankError, match="unfinished"):
        open_bank(path)
    done_before = int(zstore.done_chunks(zstore._open_group(path, "r")).sum())
    out = subprocess.run([sys.executable, "-m", "data.inject.bank", "--out", str(path), *args],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"({(40 - done_before) * 8} made now" in out.stderr
    make_bank(tmp_path / "straight.zarr", BankSpec(n=320, seed=5, chunk_size=8), progress=False)
    a, b = open_bank(path), open_bank(tmp_path / "straight.zarr")
    np.testing.assert_array_equal(a.polarisations, b.polarisations)
    np.testing.assert_array_equal(a.params, b.params)


def test_a_corrupt_chunk_is_named(small_bank, tmp_path):
    import shutil

    path = tmp_path / "bad.zarr"
    shutil.copytree(small_bank, path)
    chunk = path / "polarisations" / "c" / "1" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[100] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with pytest.raises(zstore.StoreDamaged, match=r"polarisations chunk 1"):
        open_bank(path)


def test_errors(small_bank, tmp_path):
    with pytest.raises(BankError, match="other arguments"):
        make_bank(small_bank, BankSpec(n=41, seed=3, chunk_size=16), progress=False)
    with pytest.raises(BankError, match="no waveform bank"):
        open_bank(tmp_path / "nothing")
    with pytest.raises(BankError, match="mass range"):
        make_bank(tmp_path / "m", BankSpec(n=2, prior=Prior(mass_range=(50, 7))))
    out = subprocess.run([sys.executable, "-m", "data.inject.bank", "--out", str(tmp_path / "x"),
                          "--n", "4", "--approximant", "NoSuchWaveform", "--quiet"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "g2net-bank: error: approximant NoSuchWaveform" in out.stderr
    assert not (tmp_path / "x").exists()  # refused before any file


def test_open_bank_limit(small_bank):
    assert open_bank(small_bank, limit=10).polarisations.shape[0] == 10
