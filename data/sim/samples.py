"""Synthetic G2Net data in the Kaggle layout: coloured detector noise with and without BBH
chirps, and ``truth.csv`` with every sample's label, SNR and oracle statistic (``g2net-synth``,
``python -m data.sim.samples``; docs/synthetic-data.md).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import logging
import multiprocessing
import os
import shutil
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import lal
import numpy as np
import yaml

from data.cli import cli_errors
from data.layout import DETECTORS, LABEL_FILES, SPLITS, sample_path, write_labels
from data.metrics import roc_auc
from data.progress import progress_bar
from data.sim import likelihood, physics

log = logging.getLogger(__name__)

DEFAULT_SNR = "uniform:1,11"
MASS_RANGE = (7.0, 50.0)  # Msun, each component
SPIN_MAX = 0.99
MERGER_TIME_RANGE = (1.3, 1.9)  # s from the sample start, at the geocentre

TRUTH_FILE = "truth.csv"
CONFIG_FILE = "synth.yaml"
TRUTH_COLUMNS = (
    "id", "split", "target", "snr", "snr_h1", "snr_l1", "snr_v1",
    "mass1", "mass2", "spin1x", "spin1y", "spin1z", "spin2x", "spin2y", "spin2z",
    "distance", "merger_time", "ra", "dec", "psi", "inclination", "phase", "oracle",
)  # fmt: skip
_SOURCE_COLUMNS = TRUTH_COLUMNS[7:-1]  # empty on noise rows
_OUTPUTS = (*SPLITS, *LABEL_FILES.values(), TRUTH_FILE, CONFIG_FILE)


@dataclass(frozen=True)
class SNRDistribution:
    """Network optimal SNR of the injected signals; parse one with :func:`parse_snr`."""

    kind: str  # "uniform" | "normal" | "fixed"
    params: tuple[float, ...]

    def sample(self, rng: np.random.Generator) -> float:
        if self.kind == "uniform":
            return float(rng.uniform(*self.params))
        if self.kind == "normal":
            mu, sigma, floor = self.params
            return float(max(rng.normal(mu, sigma), floor))
        return self.params[0]

    def __str__(self) -> str:
        return f"{self.kind}:" + ",".join(f"{p:g}" for p in self.params)


_SNR_FORMS = {"uniform": "uniform:LO,HI", "normal": "normal:MU,SIGMA,MIN", "fixed": "fixed:X"}


def parse_snr(spec: str | SNRDistribution) -> SNRDistribution:
    """``uniform:LO,HI`` (0 <= LO < HI), ``normal:MU,SIGMA,MIN`` (SIGMA > 0, MIN >= 0) or
    ``fixed:X`` (X >= 0). Raises ValueError naming the spec and the expected form."""
    if isinstance(spec, SNRDistribution):
        return spec
    forms = ", ".join(_SNR_FORMS.values())
    kind, sep, rest = str(spec).strip().partition(":")
    if not sep or kind not in _SNR_FORMS:
        raise ValueError(f"bad SNR spec {spec!r}: expected one of {forms}")
    try:
        params = tuple(float(p) for p in rest.split(","))
    except ValueError:
        raise ValueError(f"bad SNR spec {spec!r}: {_SNR_FORMS[kind]} takes numbers") from None
    n_params = _SNR_FORMS[kind].count(",") + 1
    if len(params) != n_params or not all(np.isfinite(params)):
        raise ValueError(f"bad SNR spec {spec!r}: expected {_SNR_FORMS[kind]}")
    if kind == "uniform" and not 0 <= params[0] < params[1]:
        raise ValueError(f"bad SNR spec {spec!r}: uniform needs 0 <= LO < HI")
    if kind == "normal" and not (params[1] > 0 and params[2] >= 0):
        raise ValueError(f"bad SNR spec {spec!r}: normal needs SIGMA > 0 and MIN >= 0")
    if kind == "fixed" and params[0] < 0:
        raise ValueError(f"bad SNR spec {spec!r}: fixed needs X >= 0")
    return SNRDistribution(kind, params)


def _isotropic_spin(rng: np.random.Generator) -> tuple[float, float, float]:
    magnitude = rng.uniform(0.0, SPIN_MAX)
    cos_theta = rng.uniform(-1.0, 1.0)
    phi = rng.uniform(0.0, 2 * np.pi)
    sin_theta = np.sqrt(1.0 - cos_theta**2)
    return (
        float(magnitude * sin_theta * np.cos(phi)),
        float(magnitude * sin_theta * np.sin(phi)),
        float(magnitude * cos_theta),
    )


def draw_source(rng: np.random.Generator) -> physics.Source:
    """One draw from the priors (docs/synthetic-data.md, Notes from the code)."""
    m_a, m_b = rng.uniform(*MASS_RANGE, size=2)
    spin_a, spin_b = _isotropic_spin(rng), _isotropic_spin(rng)
    if m_b > m_a:  # keep each spin with its own mass
        m_a, m_b, spin_a, spin_b = m_b, m_a, spin_b, spin_a
    return physics.Source(
        mass1=float(m_a),
        mass2=float(m_b),
        spin1=spin_a,
        spin2=spin_b,
        inclination=float(np.arccos(rng.uniform(-1.0, 1.0))),
        phase=float(rng.uniform(0.0, 2 * np.pi)),
        ra=float(rng.uniform(0.0, 2 * np.pi)),
        dec=float(np.arcsin(rng.uniform(-1.0, 1.0))),
        psi=float(rng.uniform(0.0, np.pi)),
        merger_time=float(rng.uniform(*MERGER_TIME_RANGE)),
    )


@dataclass(frozen=True)
class Sample:
    """One generated sample: ``strain`` = noise (+ ``signal`` if target 1), each (3, N_TIME)."""

    strain: np.ndarray
    signal: np.ndarray  # the injected signal (target 1) or the oracle's template (target 0)
    target: int
    source: physics.Source
    snr: np.ndarray  # (3,) per-detector optimal SNR of `signal`, at the drawn network SNR
    distance: float  # Mpc at which `source` has that network SNR
    oracle: float


def make_sample(rng: np.random.Generator, target: int, snr: SNRDistribution | str) -> Sample:
    """Draw a source and an SNR, project and rescale the signal, add noise if ``target``.

    The draws are the same for both targets (source, SNR, then noise), so a noise sample's
    oracle template comes from the same pipeline as a signal.
    """
    snr = parse_snr(snr)
    source = draw_source(rng)
    network_snr = snr.sample(rng)
    signal = physics.project(source, physics.REFERENCE_DISTANCE_MPC)
    scale, snr_i = physics.snr_scale(signal, network_snr)
    signal *= scale
    noise = physics.coloured_noise(rng)
    strain = noise + signal if target else noise
    return Sample(
        strain=np.ascontiguousarray(strain, dtype="<f8"),
        signal=signal,
        target=int(target),
        source=source,
        snr=snr_i,
        distance=physics.REFERENCE_DISTANCE_MPC / scale if scale > 0 else float("inf"),
        oracle=likelihood.oracle_statistic(strain, signal),
    )


@dataclass(frozen=True)
class PlannedSample:
    split: str
    id: str
    target: int
    root_seed: int
    index: int  # position in the plan, train then test

    @property
    def seed(self) -> np.random.SeedSequence:
        """The sample's own stream: child ``index`` of child 1 of ``SeedSequence(root_seed)``
        (what ``.spawn`` would hand out, made directly so a plan of 786,000 stays small)."""
        return np.random.SeedSequence(self.root_seed, spawn_key=(1, self.index))


def plan(seed: int, n_train: int, n_test: int) -> list[PlannedSample]:
    """Ids, labels and per-sample seeds: train (sorted by id) then test (sorted by id).

    Ids and labels come from child 0 of ``SeedSequence(seed)``, samples from child 1.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    n_total = n_train + n_test
    values: list[int] = []
    seen: set[int] = set()
    while len(values) < n_total:  # 40-bit ids: a repeat is rare, but must not happen
        for v in rng.integers(0, 16**10, size=n_total - len(values)).tolist():
            if v not in seen:
                seen.add(v)
                values.append(v)
    planned: list[PlannedSample] = []
    for split, chunk in (("train", values[:n_train]), ("test", values[n_train:])):
        ids = sorted(f"{v:010x}" for v in chunk)
        targets = np.zeros(len(ids), dtype=int)
        targets[: len(ids) // 2] = 1
        rng.shuffle(targets)
        planned += [
            PlannedSample(split, sid, int(t), int(seed), len(planned) + k)
            for k, (sid, t) in enumerate(zip(ids, targets))
        ]
    return planned


def _fmt(x: float) -> str:
    return f"{x:.9g}"


def _truth_row(item: PlannedSample, sample: Sample) -> list[str]:
    s = sample.source
    if sample.target:
        snr = [_fmt(float(np.sqrt(np.sum(sample.snr**2)))), *map(_fmt, sample.snr)]
        source = [
            s.mass1, s.mass2, *s.spin1, *s.spin2, sample.distance,
            s.merger_time, s.ra, s.dec, s.psi, s.inclination, s.phase,
        ]  # fmt: skip
        source = [_fmt(v) for v in source]
    else:
        snr = ["0"] * (1 + len(DETECTORS))
        source = [""] * len(_SOURCE_COLUMNS)
    return [item.id, item.split, str(item.target), *snr, *source, _fmt(sample.oracle)]


def _write_sample(item: PlannedSample, out: Path, snr: SNRDistribution) -> list[str]:
    sample = make_sample(np.random.default_rng(item.seed), item.target, snr)
    path = sample_path(out, item.split, item.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, sample.strain)
    return _truth_row(item, sample)


def _check_args(out: Path, n_train: int, n_test: int, seed: int, jobs: int, overwrite: bool):
    for name, value in (("n_train", n_train), ("n_test", n_test), ("seed", seed), ("jobs", jobs)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    if n_train < 2:
        raise ValueError(f"n_train must be at least 2 (one sample of each class), got {n_train}")
    if n_test < 0:
        raise ValueError(f"n_test must be 0 or more, got {n_test}")
    if n_train + n_test > 16**10 // 2:
        raise ValueError(f"too many samples for 10-hex-digit ids: {n_train + n_test}")
    if seed < 0:
        raise ValueError(f"seed must be 0 or more, got {seed}")
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"{out}: directory is not empty; pass overwrite=True (--overwrite)")


def generate(
    out: str | Path,
    n_train: int,
    n_test: int,
    seed: int,
    snr: str = DEFAULT_SNR,
    jobs: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Write a synthetic G2Net data set to ``out``; returns a summary dict.

    ``overwrite`` removes this generator's own outputs (train/, test/, the label files,
    truth.csv, synth.yaml) before writing and leaves anything else in ``out`` alone.
    Raises ValueError for a bad argument or SNR spec, or a non-empty ``out`` without
    ``overwrite``. The summary holds the settings, ``seconds``, ``samples_per_s`` and
    ``oracle_auc`` (over both splits).
    """
    out = Path(out)
    snr_dist = parse_snr(snr)
    _check_args(out, n_train, n_test, seed, jobs, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    for name in _OUTPUTS:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    for split in SPLITS:
        (out / split).mkdir()

    planned = plan(seed, n_train, n_test)
    physics.noise_psd()  # fill the caches before forking, so the workers inherit them
    write = partial(_write_sample, out=out, snr=snr_dist)
    oracle = np.empty(len(planned))
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        truth = stack.enter_context((out / TRUTH_FILE).open("w", newline=""))
        bar = stack.enter_context(
            progress_bar(total=len(planned), desc="synth", unit="sample", disable=not progress)
        )
        if jobs == 1:
            rows = map(write, planned)
        else:
            pool = stack.enter_context(multiprocessing.get_context("fork").Pool(jobs))
            chunksize = max(1, min(64, len(planned) // (8 * jobs)))
            rows = pool.imap(write, planned, chunksize=chunksize)  # in plan order
        writer = csv.writer(truth)
        writer.writerow(TRUTH_COLUMNS)
        for i, row in enumerate(rows):
            writer.writerow(row)
            oracle[i] = float(row[-1])
            bar.update()
    seconds = time.perf_counter() - start

    for split in SPLITS:
        items = [p for p in planned if p.split == split]
        targets = [p.target for p in items] if split == "train" else [0.5] * len(items)
        write_labels(out / LABEL_FILES[split], [p.id for p in items], targets)
    settings = dict(
        n_train=n_train,
        n_test=n_test,
        seed=int(seed),
        snr=str(snr_dist),
        approximant=physics.APPROXIMANT,
        psd={det: physics.PSD_CURVES[det] for det in DETECTORS},
        lalsuite=lal.__version__,
    )
    (out / CONFIG_FILE).write_text(yaml.safe_dump(settings, sort_keys=False))

    labels = np.array([p.target for p in planned])
    summary = dict(
        out=str(out),
        **settings,
        jobs=jobs,
        seconds=seconds,
        samples_per_s=len(planned) / seconds if seconds > 0 else float("inf"),
        oracle_auc=roc_auc(labels, oracle),
    )
    log.info(
        "wrote %d train + %d test samples to %s in %.1f s (%.0f samples/s); oracle AUC %.4f",
        n_train, n_test, out, seconds, summary["samples_per_s"], summary["oracle_auc"],
    )  # fmt: skip
    return summary


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="g2net-synth",
        description="Write a synthetic G2Net data set (Kaggle layout) with a known oracle.",
    )
    ap.add_argument("--out", type=Path, required=True, help="output directory")
    ap.add_argument("--n-train", type=int, required=True, help="train samples (>= 2)")
    ap.add_argument("--n-test", type=int, required=True, help="test samples (>= 0)")
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument(
        "--snr",
        default=DEFAULT_SNR,
        help="network SNR of the signals: uniform:LO,HI | normal:MU,SIGMA,MIN | fixed:X "
        f"(default {DEFAULT_SNR})",
    )
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing data set")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    # generate() reports every bad argument as a ValueError naming it: a user error (exit 2).
    with cli_errors(ap.prog, user_errors=(ValueError,)):
        summary = generate(
            args.out,
            args.n_train,
            args.n_test,
            args.seed,
            snr=args.snr,
            jobs=args.jobs,
            overwrite=args.overwrite,
            progress=not args.quiet,
        )
    print(
        f"{summary['n_train']} train + {summary['n_test']} test samples in {summary['out']} "
        f"({summary['samples_per_s']:.0f} samples/s, oracle AUC {summary['oracle_auc']:.4f})"
    )


if __name__ == "__main__":
    main()
