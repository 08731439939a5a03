"""Signal-to-noise ratios of injections, in torch: the optimal SNR of a batch of signals against
a PSD (the generator's definition, :func:`data.sim.physics.optimal_snr`), rescaling to a target
network SNR, and the distributions targets are drawn from, with an optional curriculum.

Shapes: signals (B, n_det, T) strain at ``sample_rate``; PSDs (n_det, T // 2 + 1) one-sided,
1/Hz, on the signal's own frequency grid; SNRs (B, n_det) or (B,).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from data.layout import SAMPLE_RATE

BAND = (20.0, 1000.0)  # Hz: the generator's SNR band (data.sim.physics.F_LOW, F_HIGH)


def optimal_snr(signal: torch.Tensor, psd: torch.Tensor, sample_rate: int = SAMPLE_RATE,
                band: tuple[float, float] = BAND) -> torch.Tensor:
    """Per-detector optimal SNR (B, n_det): rho_i^2 = 4 df sum_f |h_i(f)|^2 / S_i(f) over
    ``band``, h_i the DFT (times dt) of the signal as it lies in its window."""
    n = signal.shape[-1]
    dt = 1.0 / sample_rate
    freqs = torch.fft.rfftfreq(n, dt, dtype=torch.float64, device=signal.device)
    keep = (freqs >= band[0]) & (freqs <= band[1])
    spectrum = torch.fft.rfft(signal.to(torch.float64), dim=-1)[..., keep] * dt
    psd = psd.to(device=signal.device, dtype=torch.float64)[..., keep]
    rho2 = 4.0 / (n * dt) * torch.sum(spectrum.abs() ** 2 / psd, dim=-1)
    return torch.sqrt(rho2)


def rescale(signal: torch.Tensor, psd: torch.Tensor, network_snr: torch.Tensor,
            sample_rate: int = SAMPLE_RATE) -> tuple[torch.Tensor, torch.Tensor]:
    """``signal`` scaled to the network optimal SNR ``network_snr`` (B,), and the
    per-detector SNRs (B, n_det) after scaling."""
    rho = optimal_snr(signal, psd, sample_rate)
    network = torch.sqrt(torch.sum(rho**2, dim=-1))
    if not bool((network > 0).all()):
        raise ValueError("rescale: a signal with no power in the band has no SNR to scale")
    scale = network_snr.to(torch.float64) / network
    return signal * scale[:, None, None].to(signal.dtype), rho * scale[:, None]


@dataclass(frozen=True)
class SNRPrior:
    """The distribution injections' network SNRs are drawn from.

    ``uniform:LO,HI``; ``power-law:INDEX,LO,HI`` (density ~ rho^INDEX on [LO, HI]; aframe's
    -3 on [4, 100]); ``normal:MU,SIGMA,MIN`` (max(N(MU, SIGMA), MIN): G2Net 3rd place's
    3.6, 1, 1); ``fixed:X``. ``curriculum_start`` with ``curriculum_steps``: the lower bound
    (LO, or MIN) starts there and falls linearly to its value over that many steps (aframe's
    12 -> 4); networks generalise from low SNR to high, not the reverse (Schäfer et al. 2022).
    """

    kind: str
    params: tuple[float, ...]
    curriculum_start: float | None = None
    curriculum_steps: int = 0

    FORMS = {"uniform": "uniform:LO,HI", "power-law": "power-law:INDEX,LO,HI",
             "normal": "normal:MU,SIGMA,MIN", "fixed": "fixed:X"}

    @classmethod
    def parse(cls, spec: str, curriculum_start: float | None = None,
              curriculum_steps: int = 0) -> SNRPrior:
        """ValueError naming the spec and the expected form for anything else."""
        kind, sep, rest = str(spec).strip().partition(":")
        if not sep or kind not in cls.FORMS:
            raise ValueError(f"bad SNR spec {spec!r}: expected one of "
                             f"{', '.join(cls.FORMS.values())}")
        try:
            params = tuple(float(p) for p in rest.split(","))
        except ValueError:
            raise ValueError(f"bad SNR spec {spec!r}: {cls.FORMS[kind]} takes numbers") from None
        if len(params) != cls.FORMS[kind].count(",") + 1 or not all(map(math.isfinite, params)):
            raise ValueError(f"bad SNR spec {spec!r}: expected {cls.FORMS[kind]}")
        lo_ok = {"uniform": lambda p: 0 <= p[0] < p[1], "power-law": lambda p: 0 < p[1] < p[2],
                 "normal": lambda p: p[1] > 0 and p[2] >= 0, "fixed": lambda p: p[0] >= 0}
        if not lo_ok[kind](params):
            raise ValueError(f"bad SNR spec {spec!r}: {cls.FORMS[kind]} with 0 <= LO < HI, "
                             "SIGMA > 0, MIN >= 0, X >= 0")
        if curriculum_start is not None and (kind == "fixed" or curriculum_steps < 1
                                             or not curriculum_start > 0):
            raise ValueError("an SNR curriculum needs a range (not fixed:), a start > 0 and "
                             "steps >= 1")
        return cls(kind, params, curriculum_start, curriculum_steps)

    def lower_bound(self, step: int = 0) -> float:
        """The lower bound in force at training step ``step`` (the curriculum's, if any)."""
        lo = {"uniform": 0, "power-law": 1, "normal": 2}.get(self.kind)
        if lo is None:
            return self.params[0]
        final = self.params[lo]
        if self.curriculum_start is None:
            return final
        t = min(max(step, 0) / self.curriculum_steps, 1.0)
        return self.curriculum_start + t * (final - self.curriculum_start)

    def sample(self, n: int, generator: torch.Generator | None = None, step: int = 0,
               device: torch.device | str = "cpu") -> torch.Tensor:
        """(n,) float64 network SNRs at training step ``step``, drawn on the generator's device
        (a CUDA generator draws on its GPU) and returned on ``device``."""
        where = generator.device if generator is not None else "cpu"
        u = torch.rand(n, generator=generator, dtype=torch.float64, device=where).to(device)
        p = self.params
        if self.kind == "fixed":
            return torch.full((n,), p[0], dtype=torch.float64, device=device)
        if self.kind == "uniform":
            lo = self.lower_bound(step)
            return lo + u * (max(p[1], lo) - lo)
        if self.kind == "power-law":
            index, lo, hi = p[0], self.lower_bound(step), p[2]
            hi = max(hi, lo)
            if abs(index + 1) < 1e-12:  # density 1/rho: log-uniform
                return lo * (hi / lo) ** u
            a, b = lo ** (index + 1), hi ** (index + 1)  # inverse CDF
            return (a + u * (b - a)) ** (1 / (index + 1))
        z = torch.randn(n, generator=generator, dtype=torch.float64, device=where).to(device)
        return torch.clamp(p[0] + p[1] * z, min=self.lower_bound(step))
