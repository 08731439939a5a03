"""Long synthetic strain: seamless coloured noise with BBH injections, one GWF or HDF5 file per
detector and an ``injections.csv`` (``g2net-synth-long``, ``python -m data.sim.long_strain``;
docs/synthetic-data.md).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import lal
import lalsimulation
import numpy as np
import yaml
from scipy.signal.windows import tukey

from data.cli import cli_errors
from data.layout import DETECTORS, SAMPLE_RATE
from data.progress import progress_bar
from data.sim import physics, samples
from data.sim.frames import DEFAULT_SEGMENT, GWFWriter, HDF5Writer, channel_name, strain_path

log = logging.getLogger(__name__)

FORMATS = ("gwf", "hdf5")
DEFAULT_SNR = "uniform:4,20"
DEFAULT_INJECTIONS_EVERY = 32.0  # s
MAX_SAMPLE_RATE = 16384  # Hz; the aLIGO O3 table ends at 5 kHz, lalsimulation extrapolates
FIR_DURATION = 32  # s; the noise filter's length, also the overlap-save block
FIR_TUKEY_ALPHA = 0.5
TAIL = 1.0  # s after a merger kept free of the next injection and of the file's end
MAX_DELAY = 0.025  # s; > Earth's radius / c (21.3 ms), the largest geocentre-detector delay
G2NET_WINDOW = (1.6, 0.4)  # s before and after the merger kept by `snr_2s`

INJECTIONS_FILE = "injections.csv"
CONFIG_FILE = "synth_long.yaml"
INJECTION_COLUMNS = (
    "gps_time", "snr", "snr_h1", "snr_l1", "snr_v1", "snr_2s",
    "time_h1", "time_l1", "time_v1",
    "mass1", "mass2", "spin1x", "spin1y", "spin1z", "spin2x", "spin2y", "spin2z",
    "distance", "ra", "dec", "psi", "inclination", "phase",
)  # fmt: skip
_PARTIAL = ".partial"
_INJECTION_KEY, _NOISE_KEY = 1, 2


# --- noise ---------------------------------------------------------------------------------


def noise_fir(sample_rate: int = SAMPLE_RATE, fir_duration: int = FIR_DURATION) -> np.ndarray:
    """Taps (3, fir_duration * sample_rate) that colour unit-variance white noise to
    :func:`data.sim.physics.noise_psd`, symmetric about the middle tap (linear phase).

    White noise of variance 1 at rate fs has the one-sided PSD 2 / fs, so the filter's gain is
    ``sqrt(PSD * fs / 2)``; 0 at DC (zero-mean noise) and at Nyquist, as in
    :func:`data.sim.physics.coloured_noise`. Truncating the impulse response to
    ``fir_duration`` smooths the PSD over ~1 / fir_duration Hz (see docs/synthetic-data.md, Notes
    from the code).
    """
    n_taps = int(fir_duration) * int(sample_rate)
    gain = np.sqrt(physics.noise_psd(n_taps, sample_rate) * (sample_rate / 2.0))
    gain[:, 0] = 0.0
    gain[:, -1] = 0.0
    taps = np.fft.irfft(gain, n=n_taps, axis=-1)  # zero phase: lag 0 at index 0, circular
    return np.roll(taps, n_taps // 2, axis=-1) * tukey(n_taps, FIR_TUKEY_ALPHA, sym=False)


class Noise:
    """Seamless coloured Gaussian noise: (3, n) strain at any span of absolute sample indices.

    Sample i (``i = gps * sample_rate``) is ``sum_k taps[k] * white[i - k]``, the white noise
    of block ``b = i // block`` drawn from ``SeedSequence(seed, spawn_key=(2, b + 1))``; each
    output block is one overlap-save FFT over its own and the previous white block, so a
    sample's value does not depend on which spans were asked for. Keeps the last two blocks.
    """

    def __init__(self, seed: int, sample_rate: int = SAMPLE_RATE):
        self.seed = int(seed)
        self.sample_rate = int(sample_rate)
        self.block = FIR_DURATION * self.sample_rate
        self.taps = noise_fir(self.sample_rate)
        self._kernel = np.fft.rfft(self.taps, n=2 * self.block, axis=-1)
        self._white: dict[int, np.ndarray] = {}
        self._coloured: dict[int, np.ndarray] = {}

    def white(self, b: int) -> np.ndarray:
        """White N(0, 1) noise of block ``b``: (3, block), samples ``b * block`` onwards."""
        if b not in self._white:
            seq = np.random.SeedSequence(self.seed, spawn_key=(_NOISE_KEY, b + 1))
            self._white = {k: v for k, v in self._white.items() if k == b - 1}
            self._white[b] = np.random.default_rng(seq).standard_normal((3, self.block))
        return self._white[b]

    def _coloured_block(self, b: int) -> np.ndarray:
        if b not in self._coloured:
            # Overlap-save: the circular convolution of 2 blocks with the (block,)-tap filter
            # equals the linear one on the second block.
            x = np.concatenate([self.white(b - 1), self.white(b)], axis=-1)
            y = np.fft.irfft(np.fft.rfft(x, axis=-1) * self._kernel, n=2 * self.block, axis=-1)
            self._coloured = {k: v for k, v in self._coloured.items() if k == b - 1}
            self._coloured[b] = y[:, self.block :]
        return self._coloured[b]

    def read(self, start: int, n: int) -> np.ndarray:
        """Noise at absolute samples ``start .. start + n - 1``: (3, n) float64 strain."""
        first, last = start // self.block, (start + n - 1) // self.block
        blocks = [self._coloured_block(b) for b in range(first, last + 1)]
        offset = start - first * self.block
        return np.concatenate(blocks, axis=-1)[:, offset : offset + n]


# --- injections ----------------------------------------------------------------------------


@lru_cache(maxsize=None)
def injection_lead() -> float:
    """s from the start of an injection slot to its earliest merger: lalsimulation's bound on
    the lightest, most spinning binary of the prior's time from ``F_LOW`` to merger, rounded up
    (13 s)."""
    m_min = samples.MASS_RANGE[0] * lal.MSUN_SI
    bound = lalsimulation.SimInspiralChirpTimeBound(
        physics.F_LOW, m_min, m_min, samples.SPIN_MAX, samples.SPIN_MAX
    )
    return float(math.ceil(bound))


def min_injections_every() -> float:
    """The shortest ``--injections-every`` (s): one in-band chirp plus its ringdown."""
    return injection_lead() + TAIL


@dataclass(frozen=True)
class Injection:
    """One planned injection: ``source.merger_time`` is s from the file start (geocentre)."""

    index: int
    source: physics.Source
    snr: float  # the requested network optimal SNR
    gps_time: float  # geocentre merger, = gps_start + source.merger_time


def plan_injections(
    seed: int, gps_start: int, duration: int, every: float, snr: str | samples.SNRDistribution
) -> list[Injection]:
    """The injections of a file: ``floor(duration / every)`` of them, in time order (see
    docs/synthetic-data.md, Notes from the code); none when ``every`` is 0. Arguments as
    :func:`generate` checks them."""
    if every == 0:
        return []
    snr = samples.parse_snr(snr)
    lead, jitter = injection_lead(), every - min_injections_every()
    planned = []
    for k in range(int(duration // every)):
        rng = np.random.default_rng(
            np.random.SeedSequence(seed, spawn_key=(_INJECTION_KEY, int(gps_start), k))
        )
        drawn = samples.draw_source(rng)
        network_snr = snr.sample(rng)
        merger_time = k * every + lead + rng.uniform(0.0, jitter)
        source = dataclasses.replace(drawn, merger_time=float(merger_time))
        planned.append(Injection(k, source, network_snr, gps_start + source.merger_time))
    return planned


@dataclass(frozen=True)
class Render:
    """One injection as it lies in the file, all detectors: ``strain`` (3, n) covers file
    samples ``start .. start + n - 1`` (``start`` may be negative: cut at the file start)."""

    injection: Injection
    start: int
    strain: np.ndarray
    snr: np.ndarray  # (3,) per-detector optimal SNR, sqrt(sum of squares) = injection.snr
    snr_2s: float
    distance: float  # Mpc
    delay: np.ndarray  # (3,) s, arrival after the geocentre


def render_injection(
    injection: Injection, gps_start: int, sample_rate: int = SAMPLE_RATE
) -> Render:
    """Project, delay and rescale one injection: the whole waveform, on the file's samples.

    The window is padded to a power of two so that the PSD of the SNR (cached per length)
    comes in a few sizes only, whatever the number of injections.
    """
    source = injection.source
    hp, hc, t_first = physics.polarisations(source, physics.REFERENCE_DISTANCE_MPC, sample_rate)
    fplus, fcross, delay = physics.antenna_patterns(
        source.ra, source.dec, source.psi, injection.gps_time
    )
    first = (source.merger_time + t_first) * sample_rate  # file index of hp[0]
    margin = int(np.ceil(MAX_DELAY * sample_rate)) + 2
    n_time = 1 << int(np.ceil(np.log2(hp.size + 2 * margin)))
    start = int(np.floor(first)) - margin
    strain = physics.project_waveform(
        hp, hc, first - start, n_time, fplus, fcross, delay, sample_rate
    )
    scale, snr_i = physics.snr_scale(strain, injection.snr, sample_rate)
    strain *= scale
    before, after = G2NET_WINDOW
    a = int(round((source.merger_time - before) * sample_rate))
    window = np.zeros((3, int(round((before + after) * sample_rate))))
    ours, theirs = _overlap(strain, start, a, window.shape[-1])
    window[:, theirs] = strain[:, ours]
    snr_2s = float(np.sqrt(np.sum(physics.optimal_snr(window, sample_rate) ** 2)))
    return Render(
        injection=injection,
        start=start,
        strain=strain,
        snr=snr_i,
        snr_2s=snr_2s,
        distance=physics.REFERENCE_DISTANCE_MPC / scale if scale > 0 else float("inf"),
        delay=delay,
    )


def _injection_row(render: Render) -> list[str]:
    """A row of ``injections.csv`` (INJECTION_COLUMNS); times to the microsecond."""
    inj, s = render.injection, render.injection.source
    fmt = "{:.9g}".format
    network_snr = float(np.sqrt(np.sum(render.snr**2)))
    source = [
        s.mass1, s.mass2, *s.spin1, *s.spin2, render.distance,
        s.ra, s.dec, s.psi, s.inclination, s.phase,
    ]  # fmt: skip
    return [
        f"{inj.gps_time:.6f}", fmt(network_snr), *map(fmt, render.snr), fmt(render.snr_2s),
        *(f"{inj.gps_time + d:.6f}" for d in render.delay), *map(fmt, source),
    ]  # fmt: skip


def _overlap(strain: np.ndarray, start: int, a: int, n: int) -> tuple[slice, slice] | None:
    """Where ``strain`` (3, m), covering samples ``start ..``, meets samples ``a .. a + n - 1``:
    (its slice, the span's slice), or None."""
    lo, hi = max(start, a), min(start + strain.shape[-1], a + n)
    if lo >= hi:
        return None
    return slice(lo - start, hi - start), slice(lo - a, hi - a)


# --- writers (the classes are in data.sim.frames) ------------------------------------------


_WRITERS = {"gwf": GWFWriter, "hdf5": HDF5Writer}


# --- the file set --------------------------------------------------------------------------


def _whole(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def _check_args(
    out: Path, duration, seed, every, fmt, sample_rate, gps_start, segment, overwrite
) -> None:
    _whole("--duration (seconds)", duration, 1)
    _whole("--seed", seed, 0)
    _whole("--gps-start", gps_start, 0)
    _whole("--segment (seconds)", segment, 1)
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if (
        isinstance(sample_rate, bool)
        or not isinstance(sample_rate, (int, np.integer))
        or sample_rate % SAMPLE_RATE
        or not SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE
    ):
        raise ValueError(
            f"--sample-rate must be a multiple of {SAMPLE_RATE} Hz from {SAMPLE_RATE} to "
            f"{MAX_SAMPLE_RATE}, got {sample_rate!r}"
        )
    if not (isinstance(every, (int, float, np.number)) and np.isfinite(every)) or (
        every != 0 and every < min_injections_every()
    ):
        raise ValueError(
            f"--injections-every must be 0 (no injections) or at least "
            f"{min_injections_every():g} s (the longest in-band chirp of the prior, "
            f"{injection_lead():g} s from 20 Hz, plus {TAIL:g} s of ringdown), got {every!r}"
        )
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"{out}: directory is not empty; pass overwrite=True (--overwrite)")


def _remove_own_outputs(out: Path) -> None:
    for pattern in (f"?-??_SYNTH-*-*.{fmt}" for fmt in FORMATS):
        for path in [*out.glob(pattern), *out.glob(pattern + _PARTIAL)]:
            path.unlink()
    for name in (INJECTIONS_FILE, CONFIG_FILE):
        for path in (out / name, out / (name + _PARTIAL)):
            path.unlink(missing_ok=True)


def generate(
    out: str | Path,
    duration: int,
    seed: int,
    snr: str = DEFAULT_SNR,
    injections_every: float = DEFAULT_INJECTIONS_EVERY,
    fmt: str = "gwf",
    sample_rate: int = SAMPLE_RATE,
    gps_start: int = int(physics.GPS_REFERENCE),
    segment: int = DEFAULT_SEGMENT,
    noise: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Write ``duration`` s of H1, L1, V1 strain from ``gps_start`` and ``injections.csv``.

    ``segment`` s are generated and written at a time (one GWF frame each); the files do not
    depend on it. ``noise=False`` writes the injections alone (for checks). Files are written
    as ``*.partial`` and renamed when complete; ``synth_long.yaml`` comes last. ``overwrite``
    removes this generator's own outputs and leaves anything else in ``out`` alone. Raises
    ValueError naming the option for bad input. Returns a summary (settings, file paths,
    ``n_injections``, ``seconds`` of wall time, ``speed`` = strain seconds per wall second).
    """
    out = Path(out)
    _check_args(out, duration, seed, injections_every, fmt, sample_rate, gps_start, segment,
                overwrite)  # fmt: skip
    try:
        snr_dist = samples.parse_snr(snr)
    except ValueError as e:
        raise ValueError(f"--snr: {e}") from None
    duration, sample_rate, gps_start = int(duration), int(sample_rate), int(gps_start)
    out.mkdir(parents=True, exist_ok=True)
    _remove_own_outputs(out)

    planned = plan_injections(seed, gps_start, duration, injections_every, snr_dist)
    if injections_every and not planned:
        log.warning("--duration %d s is shorter than --injections-every: no injections", duration)
    # A waveform starts at most ~33 s (15 Hz, 7 + 7 Msun) before its merger; render each one
    # well before the segment that reaches its start. Memory: the renders in this horizon.
    m_min = samples.MASS_RANGE[0] * lal.MSUN_SI
    ahead = 2.0 * lalsimulation.SimInspiralChirpTimeBound(
        physics.F_START_MIN, m_min, m_min, samples.SPIN_MAX, samples.SPIN_MAX
    )
    paths = {det: strain_path(out, det, gps_start, duration, fmt) for det in DETECTORS}
    partial = {det: p.with_name(p.name + _PARTIAL) for det, p in paths.items()}
    n_total, n_segment = duration * sample_rate, segment * sample_rate
    noise_source = Noise(seed, sample_rate) if noise else None
    first_sample = gps_start * sample_rate  # absolute index of the file's first sample

    start_time = time.perf_counter()
    with contextlib.ExitStack() as stack:
        writers = {}
        for det in DETECTORS:
            writers[det] = _WRITERS[fmt](partial[det], det, gps_start, sample_rate)
            stack.callback(writers[det].close)
        table = stack.enter_context((out / (INJECTIONS_FILE + _PARTIAL)).open("w", newline=""))
        csv_writer = csv.writer(table)
        csv_writer.writerow(INJECTION_COLUMNS)
        bar = stack.enter_context(
            progress_bar(total=duration, desc="synth-long", unit="s", disable=not progress)
        )
        pending = list(reversed(planned))  # pop() gives the next in time
        active: list[Render] = []
        for offset in range(0, n_total, n_segment):
            n = min(n_segment, n_total - offset)
            end = offset + n
            if noise_source is not None:
                strain = noise_source.read(first_sample + offset, n)
            else:
                strain = np.zeros((3, n))
            while pending and (pending[-1].source.merger_time - ahead) * sample_rate < end:
                render = render_injection(pending.pop(), gps_start, sample_rate)
                if max(render.start, 0) < offset:
                    raise RuntimeError(
                        f"injection {render.injection.index} starts at sample {render.start}, "
                        f"before the segment being written ({offset}): render horizon too short"
                    )
                csv_writer.writerow(_injection_row(render))
                active.append(render)
            for render in active:
                if (where := _overlap(render.strain, render.start, offset, n)) is not None:
                    strain[:, where[1]] += render.strain[:, where[0]]
            active = [r for r in active if r.start + r.strain.shape[1] > end]
            for i, det in enumerate(DETECTORS):
                writers[det].write(offset, strain[i])
            bar.update(n / sample_rate)
    seconds = time.perf_counter() - start_time

    for det in DETECTORS:
        partial[det].rename(paths[det])
    (out / (INJECTIONS_FILE + _PARTIAL)).rename(out / INJECTIONS_FILE)
    settings = dict(
        duration=duration,
        seed=int(seed),
        gps_start=gps_start,
        sample_rate=sample_rate,
        format=fmt,
        snr=str(snr_dist),
        injections_every=float(injections_every),
        n_injections=len(planned),
        noise=bool(noise),
        segment=int(segment),
        channels={det: channel_name(det) for det in DETECTORS},
        files={det: paths[det].name for det in DETECTORS},
        approximant=physics.APPROXIMANT,
        psd={det: physics.PSD_CURVES[det] for det in DETECTORS},
        fir_duration=FIR_DURATION,
        lalsuite=lal.__version__,
    )
    (out / CONFIG_FILE).write_text(yaml.safe_dump(settings, sort_keys=False))
    summary = dict(
        out=str(out),
        **settings,
        paths={det: str(p) for det, p in paths.items()},
        seconds=seconds,
        speed=duration / seconds if seconds > 0 else float("inf"),
    )
    log.info(
        "wrote %d s x 3 detectors at %d Hz (%d injections) to %s in %.1f s (%.0f x real time)",
        duration, sample_rate, len(planned), out, seconds, summary["speed"],
    )  # fmt: skip
    return summary


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="g2net-synth-long",
        description="Write long synthetic H1/L1/V1 strain (GWF or HDF5) with BBH injections.",
    )
    ap.add_argument("--out", type=Path, required=True, help="output directory")
    ap.add_argument("--duration", type=int, required=True, help="seconds of strain (>= 1)")
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument(
        "--snr",
        default=DEFAULT_SNR,
        help="network optimal SNR of the injections: uniform:LO,HI | normal:MU,SIGMA,MIN | "
        f"fixed:X (default {DEFAULT_SNR})",
    )
    ap.add_argument(
        "--injections-every",
        type=float,
        default=DEFAULT_INJECTIONS_EVERY,
        help=f"mean spacing of the injections in s, >= {min_injections_every():g}; 0 for none "
        f"(default {DEFAULT_INJECTIONS_EVERY:g})",
    )
    ap.add_argument("--format", default="gwf", help="gwf (default) or hdf5")
    ap.add_argument("--sample-rate", type=int, default=SAMPLE_RATE, help="Hz (default 2048)")
    ap.add_argument(
        "--gps-start",
        type=int,
        default=int(physics.GPS_REFERENCE),
        help=f"GPS second of the first sample (default {int(physics.GPS_REFERENCE)}, O3)",
    )
    ap.add_argument(
        "--segment",
        type=int,
        default=DEFAULT_SEGMENT,
        help=f"seconds generated and written at a time, one GWF frame (default {DEFAULT_SEGMENT})",
    )
    ap.add_argument("--no-noise", action="store_true", help="write the injections alone")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing output")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    # generate() reports every bad argument as a ValueError naming it: a user error (exit 2).
    with cli_errors(ap.prog, user_errors=(ValueError,)):
        summary = generate(
            args.out,
            args.duration,
            args.seed,
            snr=args.snr,
            injections_every=args.injections_every,
            fmt=args.format,
            sample_rate=args.sample_rate,
            gps_start=args.gps_start,
            segment=args.segment,
            noise=not args.no_noise,
            overwrite=args.overwrite,
            progress=not args.quiet,
        )
    print(
        f"{summary['duration']} s of H1, L1, V1 at {summary['sample_rate']} Hz with "
        f"{summary['n_injections']} injections in {summary['out']} "
        f"({summary['speed']:.0f} x real time)"
    )


if __name__ == "__main__":
    main()
