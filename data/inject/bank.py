"""The waveform bank: sources drawn once from a prior, their two polarisations stored
merger-aligned at the sample rate, float32, with the source parameters, in a Zarr store
(``python -m data.inject.bank``, ``g2net-bank``). Training draws from it to inject signals on the
fly (:mod:`data.inject.injector`): the sky position, polarisation angle, merger time and SNR
are drawn per injection, so one waveform serves many samples.

Layout (``BANK/``, a Zarr v3 group; every chunk crc32c-checksummed, the metadata sealed when
the bank is finished, like every store here, :mod:`data.store`)::

    polarisations  (n, 2, length) float32   h+ and hx at 1000 Mpc; sample ``merger_index`` is
                                            the merger (t = 0) to within ``merger_offset``
    params         (n, len(PARAMS)) float64 the source of each row, columns ``PARAMS``
    done           (n_chunks,) bool         chunk k is written (resume skips it)

``merger_offset`` (a column of ``params``, in samples, in [-0.5, 0.5]): the waveform's t = 0
lies at index ``merger_index + merger_offset``; lalsimulation's first sample is not on our
grid, and the remaining fraction is kept rather than rounded (the projection applies it as a
phase, never as a whole-sample shift).

Chunk k's sources are drawn from ``numpy.random.default_rng([seed, k])``: a bank is a pure
function of its arguments, whatever the number of processes and however often it was
resumed.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import multiprocessing
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from data import devices
from data import store as zstore
from data.inject.projection import EDGE_RAMP
from data.layout import SAMPLE_RATE
from data.sim import physics

log = logging.getLogger(__name__)

BANK_SCHEMA = 1
PARAMS = ("mass1", "mass2", "spin1x", "spin1y", "spin1z", "spin2x", "spin2y", "spin2z",
          "inclination", "phase", "merger_offset")
DEFAULT_CHUNK = 256
# Room the projection needs before the latest merger it places: its buffer reaches
# ``2 * EDGE_RAMP`` samples before the window, plus the largest geocentre-to-detector delay
# (21.3 ms at V1, 44 samples) and a fractional sample.
LEAD_ROOM = 2 * EDGE_RAMP + 48
POST_MERGER = 0.25  # s kept after the merger: the ringdown of 7 Msun + 7 Msun lasts ~10 ms


class BankError(ValueError):
    """A bank that is missing, unfinished, damaged, or made with other arguments."""


@dataclass(frozen=True)
class Prior:
    """What the bank's sources are drawn from. Masses are detector-frame solar masses, each
    uniform on ``mass_range`` (``mass1 >= mass2``); spins uniform in magnitude to ``spin_max``,
    directions isotropic (``spins="isotropic"``, precessing: the generator's prior) or along
    the orbital angular momentum (``"aligned"``, G2Net 1st place's); inclination isotropic,
    phase uniform. ``approximant``: any lalsimulation approximant by name."""

    mass_range: tuple[float, float] = (7.0, 50.0)
    spin_max: float = 0.99
    spins: str = "isotropic"
    approximant: str = physics.APPROXIMANT

    def check(self) -> None:
        lo, hi = self.mass_range
        if not 0 < lo <= hi:
            raise BankError(f"mass range {list(self.mass_range)}: need 0 < lo <= hi")
        if not 0 <= self.spin_max < 1:
            raise BankError(f"spin_max {self.spin_max}: need 0 <= spin_max < 1")
        if self.spins not in ("isotropic", "aligned"):
            raise BankError(f"spins {self.spins!r}: isotropic or aligned")


@dataclass(frozen=True)
class BankSpec:
    """Everything that fixes a bank's bytes; a resume must be asked for the same."""

    n: int
    seed: int = 0
    prior: Prior = field(default_factory=Prior)
    # The latest merger time (s after the window's start) a 2-s sample will put a signal at:
    # fixes how much inspiral is kept, and the start frequency (the generator's rule: the
    # chirp starts START_MARGIN before the window does).
    max_merger_time: float = 1.9
    chunk_size: int = DEFAULT_CHUNK
    sample_rate: int = SAMPLE_RATE

    @property
    def merger_index(self) -> int:
        return math.ceil(self.max_merger_time * self.sample_rate) + LEAD_ROOM

    @property
    def length(self) -> int:
        return self.merger_index + math.ceil(POST_MERGER * self.sample_rate)

    def record(self) -> dict:
        """The arguments as the bank's attributes hold them (JSON: tuples become lists)."""
        return {"n": self.n, "seed": self.seed,
                "max_merger_time": self.max_merger_time, "chunk_size": self.chunk_size,
                "sample_rate": self.sample_rate,
                "prior": {**asdict(self.prior), "mass_range": list(self.prior.mass_range)}}


def _spin(rng: np.random.Generator, prior: Prior) -> tuple[float, float, float]:
    magnitude = rng.uniform(0.0, prior.spin_max)
    if prior.spins == "aligned":
        return (0.0, 0.0, float(magnitude * rng.choice((-1.0, 1.0))))
    cos_theta = rng.uniform(-1.0, 1.0)
    phi = rng.uniform(0.0, 2 * np.pi)
    sin_theta = math.sqrt(1.0 - cos_theta**2)
    return (float(magnitude * sin_theta * math.cos(phi)),
            float(magnitude * sin_theta * math.sin(phi)), float(magnitude * cos_theta))


def draw_sources(spec: BankSpec, chunk: int) -> list[physics.Source]:
    """Chunk ``chunk``'s sources (sky and time are drawn at injection, so left at 0 here; the
    merger time is the bank's latest, which sets the start frequency)."""
    rng = np.random.default_rng([spec.seed, chunk])
    sl = zstore.chunk_slice(chunk, spec.n, spec.chunk_size)
    out = []
    for _ in range(sl.stop - sl.start):
        m = rng.uniform(*spec.prior.mass_range, size=2)
        s = (_spin(rng, spec.prior), _spin(rng, spec.prior))
        if m[1] > m[0]:  # keep each spin with its own mass
            m, s = m[::-1], s[::-1]
        out.append(physics.Source(
            mass1=float(m[0]), mass2=float(m[1]), spin1=s[0], spin2=s[1],
            inclination=float(np.arccos(rng.uniform(-1.0, 1.0))),
            phase=float(rng.uniform(0.0, 2 * np.pi)), ra=0.0, dec=0.0, psi=0.0,
            merger_time=spec.max_merger_time))
    return out


def merger_aligned(hp: np.ndarray, hc: np.ndarray, t_first: float, merger_index: int,
                   length: int, sample_rate: int) -> tuple[np.ndarray, float]:
    """(2, length) float64 with ``hp[k]``, ``hc[k]`` at index ``round(merger_index + t_first *
    fs) + k`` (cut where they leave the buffer), and the merger's offset from
    ``merger_index`` in samples (in [-0.5, 0.5])."""
    exact = merger_index + t_first * sample_rate  # buffer index of hp[0]
    whole = math.floor(exact + 0.5)
    out = np.zeros((2, length))
    k0, k1 = max(0, -whole), min(hp.size, length - whole)
    if k1 > k0:
        out[0, whole + k0:whole + k1] = hp[k0:k1]
        out[1, whole + k0:whole + k1] = hc[k0:k1]
    return out, whole - exact


def make_chunk(spec: BankSpec, chunk: int) -> tuple[int, np.ndarray, np.ndarray]:
    """(chunk, polarisations (m, 2, length) float32, params (m, len(PARAMS)) float64)."""
    sources = draw_sources(spec, chunk)
    pol = np.empty((len(sources), 2, spec.length), dtype=np.float32)
    params = np.empty((len(sources), len(PARAMS)))
    for i, s in enumerate(sources):
        hp, hc, t_first = physics.polarisations(s, sample_rate=spec.sample_rate,
                                                approximant=spec.prior.approximant)
        buf, offset = merger_aligned(hp, hc, t_first, spec.merger_index, spec.length,
                                     spec.sample_rate)
        pol[i] = buf
        params[i] = (s.mass1, s.mass2, *s.spin1, *s.spin2, s.inclination, s.phase, offset)
    return chunk, pol, params


def _open_for_resume(path: Path, spec: BankSpec, overwrite: bool):
    """The bank at ``path`` to write into: a new one, or the one a killed run left with the
    same arguments. BankError for one made with others (unless ``overwrite``)."""
    if (path / "zarr.json").is_file() and not overwrite:
        g = zstore._open_group(path, "r+")
        recorded = g.attrs.get("bank")
        if recorded != spec.record() or g.attrs.get("bank_schema") != BANK_SCHEMA:
            raise BankError(f"{path}: a bank made with other arguments ({recorded}); pass "
                            "--overwrite to replace it, or another --out")
        if g.attrs.get("complete"):
            return g
        for p in zstore.remove_partials(path):
            log.warning("removed unfinished chunk file %s", p)
        log.info("%s: resuming (%d of %d chunks done)", path, int(zstore.done_chunks(g).sum()),
                 zstore.n_chunks(spec.n, spec.chunk_size))
        return g
    if path.exists() and any(path.iterdir()) and not (path / "zarr.json").is_file():
        raise BankError(f"{path}: exists and is not a bank; choose another --out")
    g = zstore._open_group(path, "w")
    n_chunks = zstore.n_chunks(spec.n, spec.chunk_size)
    g.create_array("polarisations", shape=(spec.n, 2, spec.length),
                   chunks=(spec.chunk_size, 2, spec.length), dtype="float32",
                   compressors=zstore.compressors("zstd", 3), fill_value=0,
                   config=zstore._WRITE_ALL)
    small = {"compressors": zstore._SMALL, "config": zstore._WRITE_ALL}
    g.create_array("params", shape=(spec.n, len(PARAMS)), chunks=(spec.chunk_size, len(PARAMS)),
                   dtype="float64", fill_value=0, **small)
    g.create_array("done", shape=(n_chunks,), chunks=(1,), dtype="bool", fill_value=False,
                   **small)
    zstore._for_writing(g, "done")[:] = False
    g.attrs.update({
        "bank_schema": BANK_SCHEMA, "bank": spec.record(), "params": list(PARAMS),
        "merger_index": spec.merger_index, "length": spec.length,
        "sample_rate": spec.sample_rate, "reference_distance_mpc": physics.REFERENCE_DISTANCE_MPC,
        "f_ref": physics.F_REF, "complete": False, "lalsimulation": _lalsim_version(),
    })
    return g


def _lalsim_version() -> str:
    import lalsimulation

    return str(getattr(lalsimulation, "__version__", "unknown"))


def make_bank(path: str | Path, spec: BankSpec, *, jobs: int = 1, overwrite: bool = False,
              progress: bool = True) -> dict:
    """Make (or finish) the bank at ``path``: every chunk not yet done, ``jobs`` processes,
    each chunk's data then its done flag; sealed once all are done. Returns its attributes."""
    from data.progress import progress_bar

    spec.prior.check()
    if spec.n < 1 or spec.chunk_size < 1 or jobs < 1:
        raise BankError("n, chunk_size and jobs must be at least 1")
    if not 0 < spec.max_merger_time <= 8:
        raise BankError(f"max_merger_time {spec.max_merger_time}: need 0 < t <= 8 s")
    try:  # one waveform first: a bad approximant or prior fails here, before any file
        physics.polarisations(draw_sources(spec, 0)[0], approximant=spec.prior.approximant)
    except (ValueError, RuntimeError) as e:
        raise BankError(f"approximant {spec.prior.approximant}: cannot make a waveform of this "
                        f"prior ({e})") from None
    path = Path(path)
    g = _open_for_resume(path, spec, overwrite)
    if g.attrs.get("complete"):
        return dict(g.attrs)
    todo = [int(c) for c in np.flatnonzero(~zstore.done_chunks(g))]
    pol, params, done = (zstore._for_writing(g, a) for a in ("polarisations", "params", "done"))
    slices = {c: zstore.chunk_slice(c, spec.n, spec.chunk_size) for c in todo}
    left = sum(sl.stop - sl.start for sl in slices.values())
    bar = progress_bar(total=spec.n, initial=spec.n - left, desc="bank", unit="waveform",
                       disable=not progress)
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        # jobs=1 in this process: no fork, readable tracebacks.
        imap = (stack.enter_context(multiprocessing.get_context("fork").Pool(jobs))
                .imap_unordered if jobs > 1 else map)
        for chunk, p, q in imap(_make_chunk_star, [(spec, c) for c in todo]):
            sl = slices[chunk]
            pol[sl] = p
            params[sl] = q
            done[chunk] = True  # after its data: a chunk counts only once it is all there
            bar.update(sl.stop - sl.start)
    bar.close()
    if not zstore.done_chunks(g).all():
        raise BankError(f"{path}: chunks still missing after the run")
    missing = zstore.missing_chunks(g)
    if missing:
        raise BankError(f"{path}: chunk files missing although done: {missing[:5]}; "
                        "re-run with --overwrite")
    seconds = time.perf_counter() - start
    g.attrs.update({"complete": True})
    zstore.seal(g)
    log.info("%s: %d waveforms (%d made now in %.1f s, %.0f waveforms/s with %d process(es))",
             path, spec.n, left, seconds, left / max(seconds, 1e-9), jobs)
    return {**dict(g.attrs), "made": left, "seconds": seconds}


def _make_chunk_star(args):
    return make_chunk(*args)


@dataclass
class Bank:
    """A finished bank held in memory: what the injector draws from."""

    path: str
    polarisations: np.ndarray  # (n, 2, length) float32, h+ and hx at 1000 Mpc
    params: np.ndarray  # (n, len(PARAMS)) float64
    merger_index: int
    sample_rate: int
    attrs: dict

    @property
    def merger_offset(self) -> np.ndarray:
        return self.params[:, PARAMS.index("merger_offset")]

    def describe(self) -> dict:
        """What a model card records of the bank its model was trained with."""
        return {"path": self.path, "n_used": int(len(self.params)),
                "metadata_sha256": self.attrs.get("metadata_sha256"), **self.attrs["bank"]}


def open_bank(path: str | Path, limit: int | None = None) -> Bank:
    """Read a finished bank (its first ``limit`` waveforms, all when None) into memory:
    ``length * 8`` bytes a waveform (38 KB at the defaults). BankError for a missing,
    unfinished or changed one; :class:`data.store.StoreDamaged` for a chunk failing its
    checksum."""
    path = Path(path)
    if not (path / "zarr.json").is_file():
        raise BankError(f"{path}: no waveform bank here (make one with python -m data.inject.bank)")
    g = zstore._open_group(path, "r")
    if g.attrs.get("bank_schema") != BANK_SCHEMA:
        raise BankError(f"{path}: not a waveform bank of schema {BANK_SCHEMA}")
    if not g.attrs.get("complete"):
        done = zstore.done_chunks(g)
        raise BankError(f"{path}: unfinished ({int(done.sum())} of {done.size} chunks); re-run "
                        "the same bank command to finish it")
    zstore.check_seal(g)
    n = int(g.attrs["bank"]["n"]) if limit is None else min(int(limit), int(g.attrs["bank"]["n"]))
    if n < 1:
        raise BankError(f"{path}: limit {limit} leaves no waveform")
    return Bank(str(path), np.asarray(g["polarisations"][:n]), np.asarray(g["params"][:n]),
                int(g.attrs["merger_index"]), int(g.attrs["sample_rate"]), dict(g.attrs))




PROG = "g2net-bank"


def main(argv: list[str] | None = None) -> None:
    from data.cli import RESUMES, cli_errors

    ap = argparse.ArgumentParser(
        prog=PROG, description="Make a waveform bank for training with injections (issue 18).",
        epilog="example: python -m data.inject.bank --out banks/default.zarr --n 100000")
    ap.add_argument("--out", required=True, help="the bank's directory (a Zarr store)")
    ap.add_argument("--n", type=int, required=True, help="number of waveforms")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--approximant", default=physics.APPROXIMANT,
                    help="any lalsimulation approximant (default %(default)s)")
    ap.add_argument("--mass-range", type=float, nargs=2, default=(7.0, 50.0), metavar=("LO", "HI"),
                    help="each component mass, detector-frame Msun (default 7 50)")
    ap.add_argument("--spin-max", type=float, default=0.99)
    ap.add_argument("--spins", choices=("isotropic", "aligned"), default="isotropic")
    ap.add_argument("--max-merger-time", type=float, default=1.9,
                    help="latest merger time in a 2-s sample the bank must serve (s, default 1.9)")
    ap.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK)
    ap.add_argument("--jobs", type=int, default=devices.cpu_threads(spare=0),
                    help="processes (default: the CPUs this process may use)")
    ap.add_argument("--overwrite", action="store_true", help="replace a bank made otherwise")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with cli_errors(PROG, user_errors=(BankError,), rerun=RESUMES):
        spec = BankSpec(n=args.n, seed=args.seed, max_merger_time=args.max_merger_time,
                        chunk_size=args.chunk_size,
                        prior=Prior(mass_range=tuple(args.mass_range), spin_max=args.spin_max,
                                    spins=args.spins, approximant=args.approximant))
        make_bank(args.out, spec, jobs=args.jobs, overwrite=args.overwrite,
                  progress=not args.quiet)


if __name__ == "__main__":
    main()
