"""Projecting gravitational waves onto the detectors in torch, batched, on any device: antenna
patterns and geocentre-to-detector delays from the detectors' tensors, and the projected strain
with each delay applied as a fractional shift in the frequency domain.

The same physics as :mod:`data.sim.physics` (lalsuite, numpy, one source at a time), written
for batches of sources on the training device (issue 18). Angles in radians, times in seconds,
strain dimensionless; detectors in ``DETECTORS`` order (H1, L1, V1).

Why fractional: rounding each delay to whole samples (as ml4gw's ``shift_responses`` does) is
up to 0.49 ms off at 2048 Hz, about 0.9 rad of phase at 300 Hz, which breaks the coherence
between detectors that a network statistic (and a model) relies on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from data.layout import DETECTORS, SAMPLE_RATE

SPEED_OF_LIGHT = 299792458.0  # m/s (lal.C_SI)
EDGE_RAMP = 128  # samples of half-Hann ramp at each end of a polarisation buffer


@dataclass(frozen=True)
class Detectors:
    """The detectors' response tensors ``D`` (n_det, 3, 3) and vertices (n_det, 3) in metres,
    Earth-fixed coordinates, float64: lal's cached detectors."""

    names: tuple[str, ...]
    response: torch.Tensor
    vertex: torch.Tensor

    @classmethod
    def from_lal(cls, names: tuple[str, ...] = DETECTORS) -> Detectors:
        import lal

        sites = [lal.cached_detector_by_prefix[n] for n in names]
        response = torch.from_numpy(np.array([s.response for s in sites], dtype=np.float64))
        vertex = torch.from_numpy(np.array([s.location for s in sites], dtype=np.float64))
        return cls(tuple(names), response, vertex)

    def to(self, device: torch.device | str) -> Detectors:
        return Detectors(self.names, self.response.to(device), self.vertex.to(device))


def gmst(gps: float) -> float:
    """Greenwich mean sidereal time (rad, in [0, 2 pi)) at GPS time ``gps`` (lal's, which is
    not wrapped: ~1e5 rad today, too large for float32's 7 digits)."""
    import lal

    return float(lal.GreenwichMeanSiderealTime(lal.LIGOTimeGPS(gps))) % (2 * math.pi)


def _frame(ra: torch.Tensor, dec: torch.Tensor, psi: torch.Tensor, gmst_rad: torch.Tensor
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The wave frame's X, Y axes and the unit vector towards the source, each (B, 3), in
    Earth-fixed coordinates (lal's XLALComputeDetAMResponse conventions)."""
    # The Greenwich hour angle of the source, reduced in float64 before any float32 cos/sin.
    gha = torch.remainder(gmst_rad.to(torch.float64) - ra.to(torch.float64),
                          2 * math.pi).to(ra.dtype)
    cg, sg = torch.cos(gha), torch.sin(gha)
    cd, sd = torch.cos(dec), torch.sin(dec)
    cp, sp = torch.cos(psi), torch.sin(psi)
    x = torch.stack([-cp * sg - sp * cg * sd, -cp * cg + sp * sg * sd, sp * cd], dim=-1)
    y = torch.stack([sp * sg - cp * cg * sd, sp * cg + cp * sg * sd, cp * cd], dim=-1)
    n = torch.stack([cd * cg, -cd * sg, sd], dim=-1)
    return x, y, n


def antenna_patterns(ra: torch.Tensor, dec: torch.Tensor, psi: torch.Tensor,
                     gmst_rad: torch.Tensor | float, detectors: Detectors
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """F+ and Fx, each (B, n_det), for sources at right ascension ``ra``, declination ``dec``
    and polarisation angle ``psi`` (each (B,)) at sidereal time ``gmst_rad``: F+ = X.D.X -
    Y.D.Y, Fx = X.D.Y + Y.D.X with D each detector's response tensor."""
    gmst_rad = torch.as_tensor(gmst_rad, dtype=torch.float64, device=ra.device)
    x, y, _ = _frame(ra, dec, psi, gmst_rad)
    d = detectors.response.to(device=ra.device, dtype=ra.dtype)
    dx = torch.einsum("kij,bj->bki", d, x)
    dy = torch.einsum("kij,bj->bki", d, y)
    fplus = torch.einsum("bi,bki->bk", x, dx) - torch.einsum("bi,bki->bk", y, dy)
    fcross = torch.einsum("bi,bki->bk", x, dy) + torch.einsum("bi,bki->bk", y, dx)
    return fplus, fcross


def geocentre_delays(ra: torch.Tensor, dec: torch.Tensor, gmst_rad: torch.Tensor | float,
                     detectors: Detectors) -> torch.Tensor:
    """(B, n_det) seconds by which the wave reaches each detector after the geocentre:
    -(vertex . n) / c, n the unit vector towards the source."""
    gmst_rad = torch.as_tensor(gmst_rad, dtype=torch.float64, device=ra.device)
    _, _, n = _frame(ra, dec, torch.zeros_like(ra), gmst_rad)
    vertex = detectors.vertex.to(device=ra.device, dtype=ra.dtype)
    return -(n @ vertex.T) / SPEED_OF_LIGHT


def project(hp: torch.Tensor, hc: torch.Tensor, first: torch.Tensor, n_time: int,
            fplus: torch.Tensor, fcross: torch.Tensor, delay: torch.Tensor,
            sample_rate: int = SAMPLE_RATE, pad: int = 2 * EDGE_RAMP) -> torch.Tensor:
    """``F+ h+ + Fx hx`` per detector, delayed, in a window of ``n_time`` samples:
    (B, n_det, n_time), the batched torch form of :func:`data.sim.physics.project_waveform`.

    ``hp``, ``hc``: (B, n) polarisations at ``sample_rate``; ``first``: (B,) the window
    index (fractional) of their first sample at the geocentre; ``fplus``, ``fcross``, ``delay``
    (s): (B, n_det). The waveform goes at whole-sample precision into a buffer with ``pad``
    samples of room either side of the window, cut with a half-Hann ramp of ``pad / 2``
    samples where it leaves the buffer; the fractional sample and each detector's delay are
    one phase factor in the frequency domain (never rounded to whole samples).
    """
    b, n = hp.shape
    n_buf = n_time + 2 * pad
    start = first.to(torch.float64) + pad  # buffer index of hp[:, 0]
    whole = torch.floor(start + 0.5)
    frac = (start - whole).to(hp.dtype)
    # Scatter each waveform to its whole-sample place: buffer index j holds h[j - whole].
    j = torch.arange(n_buf, device=hp.device)
    k = j[None, :] - whole.to(torch.long)[:, None]
    inside = (k >= 0) & (k < n)
    k = k.clamp(0, n - 1)
    buf = torch.stack([torch.where(inside, torch.gather(h, 1, k), torch.zeros((), dtype=h.dtype,
                                                                              device=h.device))
                       for h in (hp, hc)], dim=1)  # (B, 2, n_buf)
    m = pad // 2
    ramp = 0.5 * (1.0 - torch.cos(math.pi * (torch.arange(m, device=hp.device,
                                                          dtype=hp.dtype) + 0.5) / m))
    buf[..., :m] *= ramp
    buf[..., -m:] *= ramp.flip(0)

    spectrum = torch.fft.rfft(buf, dim=-1)  # (B, 2, n_freq)
    freqs = torch.fft.rfftfreq(n_buf, 1.0 / sample_rate, device=hp.device, dtype=hp.dtype)
    shift = frac[:, None] / sample_rate + delay  # (B, n_det) seconds
    phase = torch.exp(-2j * math.pi * freqs[None, None, :] * shift[..., None])
    det = (fplus[..., None] * spectrum[:, None, 0] + fcross[..., None] * spectrum[:, None, 1])
    strain = torch.fft.irfft(det * phase, n=n_buf, dim=-1)
    return strain[..., pad:pad + n_time].contiguous()
