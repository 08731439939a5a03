"""Stage one's pure transforms: whitening and the constant-Q transform (the PSDs they use:
:mod:`preprocess.spectral`).

Everything here works on in-memory arrays or tensors; reading ``.npy`` files and writing Zarr
live in ``preprocess.pipeline``. Shapes use ``(batch, detector, time)`` with 3 detectors
(H1, L1, V1) sampled at 2048 Hz; strain is dimensionless (~1e-20).

- :class:`Whiten`: Tukey window, rFFT, divide by the ASD, smooth band-pass, irFFT; unit
  variance in Gaussian noise.
- :class:`CQT`: nnAudio's ``CQT1992v2`` magnitude, either called directly (``"nnaudio"``) or
  with the same kernels cropped to their non-zero taps and convolved per group of bins
  (``"grouped"``), which gives the same numbers faster.
- :class:`Transform`: whiten then CQT; what the preprocess pipeline and inference call.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from data.layout import DETECTORS, N_TIME, SAMPLE_RATE
from preprocess.spectral import tukey

# --------------------------------------------------------------------------------------------
# Whitening


def bandpass_gain(
    freqs: np.ndarray, highpass: float | None, lowpass: float | None, ramp: float
) -> np.ndarray:
    """Amplitude gain in [0, 1] at ``freqs`` (Hz): 1 on [highpass, lowpass], raised-cosine
    ramps of width ``ramp`` Hz outside (0 below highpass - ramp, 0 above lowpass + ramp).

    A smooth edge keeps the filter's impulse response short (~1 / ramp seconds) where a
    brick wall would ring through the whole 2 s sample.
    """
    gain = np.ones_like(freqs, dtype=np.float64)
    if highpass is not None:
        t = np.clip((freqs - (highpass - ramp)) / ramp, 0.0, 1.0)
        gain *= 0.5 - 0.5 * np.cos(np.pi * t)
    if lowpass is not None:
        t = np.clip((lowpass + ramp - freqs) / ramp, 0.0, 1.0)
        gain *= 0.5 - 0.5 * np.cos(np.pi * t)
    return gain


class Whiten(nn.Module):
    """Frequency-domain whitening by a fixed noise ASD, with a smooth band-pass.

    forward: x (B, 3, T) float32 or float64 strain -> (B, 3, T) float32, whitened so that
    Gaussian noise with the given PSD has unit variance where the Tukey window is flat.

    Steps: remove each row's mean (gwpy's ``detrend='constant'``), multiply by a Tukey(alpha)
    window, rFFT, multiply by ``gain(f) / ASD(f)``, irFFT, scale by ``sqrt(2 / fs)`` (gwpy's
    normalisation: white noise of one-sided PSD 1 has variance fs / 2) and by
    ``1 / sqrt(band power fraction)`` so the band-pass does not lower the variance.

    The arithmetic is float64: nothing here squares strain (which would underflow float32),
    but raw G2Net strain is dominated by noise below 15 Hz at ~100x the in-band amplitude,
    and a float32 FFT's rounding, spread over all bins, would cost two of float32's seven
    digits in band. Float64 FFTs of (B, 3, 4096) are a small part of the transform's time
    on CPU (the output is float32). Devices without float64 (Apple MPS) are not supported.

    psd: (3, n_freq) float64 one-sided PSD in 1/Hz on a grid from 0 to fs / 2; interpolated
    linearly (as an ASD, like gwpy) onto the rFFT grid of each input length.
    alpha: Tukey window shape. highpass, lowpass: band edges in Hz (None = no edge).
    ramp: width in Hz of the raised-cosine band edges (default 4 Hz: full gain from
    ``highpass`` up, zero below ``highpass - 4``).
    """

    def __init__(
        self,
        psd,
        alpha: float,
        highpass: float | None,
        lowpass: float | None,
        sample_rate: int = SAMPLE_RATE,
        ramp: float = 4.0,
        n_time: int = N_TIME,
    ):
        super().__init__()
        psd = np.asarray(psd, dtype=np.float64)
        if psd.ndim != 2:
            raise ValueError(f"psd must be (detector, frequency), got shape {psd.shape}")
        if not np.isfinite(psd).all():
            raise ValueError("psd contains NaN or Inf")
        self.alpha = float(alpha)
        self.highpass = highpass
        self.lowpass = lowpass
        self.sample_rate = sample_rate
        self.ramp = float(ramp)
        self.n_time = n_time
        self.register_buffer("psd", torch.from_numpy(psd.copy()))
        # Derived from psd and the settings: rebuilt, not saved, with the module.
        window, response = self._design(n_time)
        self.register_buffer("window", window, persistent=False)
        self.register_buffer("response", response, persistent=False)
        self.register_buffer("window_response", torch.fft.rfft(window) * response,
                             persistent=False)

    @classmethod
    def from_config(cls, whiten_cfg, psd) -> "Whiten":
        """Build from a ``WhitenConfig`` and a (3, n_freq) float64 PSD (1/Hz)."""
        return cls(psd, alpha=whiten_cfg.alpha, highpass=whiten_cfg.highpass,
                   lowpass=whiten_cfg.lowpass, sample_rate=SAMPLE_RATE, ramp=whiten_cfg.ramp)

    def _design(self, n_time: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Tukey window (n_time,) and real filter gain / ASD (3, n_time // 2 + 1), float64."""
        psd = self.psd.cpu().numpy()
        fs = self.sample_rate
        grid = np.linspace(0.0, fs / 2, psd.shape[-1])
        freqs = np.fft.rfftfreq(n_time, 1.0 / fs)
        asd = np.stack([np.interp(freqs, grid, np.sqrt(p)) for p in psd])
        gain = bandpass_gain(freqs, self.highpass, self.lowpass, self.ramp)
        passed = gain > 0
        if (asd[:, passed] <= 0).any():
            raise ValueError("psd is zero inside the pass band: cannot whiten")
        inv_asd = np.zeros_like(asd)
        inv_asd[:, passed] = 1.0 / asd[:, passed]
        # Fraction of white-noise power the band keeps (one-sided bins; DC and Nyquist count
        # once), so the output has unit variance whatever the band.
        weight = np.full(freqs.shape, 2.0)
        weight[0] = 1.0
        if n_time % 2 == 0:
            weight[-1] = 1.0
        fraction = np.sum(weight * gain**2) / np.sum(weight)
        response = inv_asd * gain * math.sqrt(2.0 / fs) / math.sqrt(fraction)
        return torch.from_numpy(tukey(n_time, self.alpha)), torch.from_numpy(response)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_time = x.shape[-1]
        if n_time == self.n_time:
            window, response, window_response = self.window, self.response, self.window_response
        else:
            window, response = (t.to(x.device) for t in self._design(n_time))
            window_response = torch.fft.rfft(window) * response
        x = x.to(torch.float64)
        # The mean is removed after the FFT: rFFT((x - m) w) = rFFT(x w) - m rFFT(w), which
        # spares two passes over the batch (they were 7.5 of 23 ms for 64 windows on one
        # core); exact but for float64 rounding, far below the float32 output's.
        spec = torch.fft.rfft(x * window, dim=-1).mul_(response)
        spec.sub_(x.mean(dim=-1, keepdim=True) * window_response)
        return torch.fft.irfft(spec, n=n_time, dim=-1).to(torch.float32)


# --------------------------------------------------------------------------------------------
# Constant-Q transform


def _nnaudio_cqt(sample_rate, fmin, fmax, hop_length, bins_per_octave, filter_scale, window):
    from nnAudio.features import CQT1992v2

    with warnings.catch_warnings():
        # nnAudio warns "If fmax is given, n_bins will be ignored" every time fmax is set.
        warnings.simplefilter("ignore", SyntaxWarning)
        return CQT1992v2(
            sr=sample_rate,
            fmin=fmin,
            fmax=fmax,
            hop_length=hop_length,
            bins_per_octave=bins_per_octave,
            filter_scale=filter_scale,
            window=window,
            output_format="Magnitude",
            verbose=False,
        )


IMPLS = ("grouped", "fft", "nnaudio")

# Rows (sample x detector) per CQT call on CPU: the FFT path's intermediates take ~0.35 MB a
# row at the seed's settings, and 24 rows kept them in cache best of 6..96 (2-core EPYC).
_CPU_CHUNK_ROWS = 24
_FFT_BLOCK_BYTES = 1 << 20  # ~ one core's L2


class CQT(nn.Module):
    """Magnitude of nnAudio's ``CQT1992v2`` constant-Q transform over (B, C, T) signals.

    forward: x (B, C, T) float32 (float64 is cast) -> (B, C, n_bins, n_frames) float32,
    |CQT| with nnAudio's default "librosa" normalisation; n_frames = T // hop_length + 1.

    Three implementations of the same numbers, all with the kernels nnAudio builds:

    - ``"nnaudio"``: ``CQT1992v2`` itself on the B*C rows: every bin is convolved with
      W taps, W = the longest kernel's length rounded up to a power of two (2048 here), input
      reflect-padded by W // 2, output times sqrt(kernel length) per bin.
    - ``"grouped"``: a bin's kernel has only ceil(Q fs / f) non-zero taps (30 of 2048 at
      1 kHz for the seed's settings). Bins are split into groups of consecutive bins, each
      group cropped to the span [a, b) of its non-zero taps, and convolved with the padded
      input from offset a, which lands each frame exactly where nnAudio's lands (conv1d is a
      cross-correlation: frame t reads padded samples t * hop + j). Real and imaginary
      kernels share one conv1d call; sqrt(length) is folded into the kernels.
    - ``"fft"``: ``"grouped"`` for the short kernels, and for the long ones (length >=
      ``fft_min_length``) the same correlation through the FFT of the padded input. Frame t
      of bin k is c_k[t] = (1/N) sum_f X[f] G_k[f] exp(2 pi i f t hop / N) with X the
      length-N FFT of the padded input and G_k the kernel's spectrum (no wrap-around when
      N >= (n_frames - 1) hop + W). Sampling every hop-th lag folds the spectrum onto
      M = N / hop points, Y_k[m] = (1/N) sum_r X[m + rM] G_k[m + rM], so c_k is an M-point
      inverse FFT of Y_k. The fold over r is a batched matmul over m, (rows x 2 hop) @
      (2 hop x 2 bins) in real arithmetic, per block of bins. No spectrum is truncated: the
      result equals the direct convolution up to float32 rounding (tests check both against
      a float64 convolution). A kernel of l taps costs 2 l n_frames multiply-adds directly
      and a fixed ~4 N by FFT (plus the inverse FFT), so FFT wins for long kernels; the
      default threshold, 224 taps, was the fastest of 150..600 on a 2-core AVX-512 CPU.

    ``"grouped"`` and ``"fft"`` are pure tensor code and run on any device.
    """

    @classmethod
    def from_config(cls, cqt_cfg, impl: str | None = None) -> "CQT":
        """Build from a ``CQTConfig``; ``impl`` overrides the config's implementation."""
        return cls(
            sample_rate=SAMPLE_RATE,
            fmin=cqt_cfg.fmin,
            fmax=cqt_cfg.fmax,
            hop_length=cqt_cfg.hop_length,
            bins_per_octave=cqt_cfg.bins_per_octave,
            filter_scale=cqt_cfg.filter_scale,
            window=cqt_cfg.window,
            impl=impl or cqt_cfg.impl,
        )

    def __init__(
        self,
        sample_rate: int = SAMPLE_RATE,
        fmin: float = 20.0,
        fmax: float = 1024.0,
        hop_length: int = 32,
        bins_per_octave: int = 8,
        filter_scale: float = 1.0,
        window: str = "hann",
        impl: str = "grouped",
        bins_per_group: int | None = None,
        fft_min_length: int = 224,
        n_time: int = N_TIME,
    ):
        super().__init__()
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
        self.impl = impl
        self.sample_rate = sample_rate
        self.hop_length = hop_length
        self.n_time = n_time
        cqt = _nnaudio_cqt(sample_rate, fmin, fmax, hop_length, bins_per_octave, filter_scale,
                           window)
        self.kernel_width = int(cqt.kernel_width)
        self.n_bins = int(cqt.cqt_kernels_real.shape[0])
        self.frequencies = np.asarray(cqt.frequencies)
        if impl == "nnaudio":
            self.cqt = cqt
            return
        lengths = cqt.lenghts.double()
        # Kernels with the librosa factor sqrt(length) folded in; (n_bins, W) complex128.
        kernels = torch.complex(cqt.cqt_kernels_real[:, 0].double(),
                                cqt.cqt_kernels_imag[:, 0].double())
        kernels = kernels * torch.sqrt(lengths).view(-1, 1)
        # Bins are ordered low to high frequency, so long kernels come first.
        self.n_fft_bins = int((lengths >= fft_min_length).sum()) if impl == "fft" else 0
        self._kernels = kernels[: self.n_fft_bins]
        if self.n_fft_bins:
            # Matmul, inverse FFT and magnitude go block by block of bins, each block's
            # complex frames (M x rows x bins) no larger than _FFT_BLOCK_BYTES, so they stay
            # in cache between the three steps (+11% at the seed's settings).
            m = self._fft_length(n_time) // hop_length
            most = max(1, _FFT_BLOCK_BYTES // (8 * m * _CPU_CHUNK_ROWS))
            n_blocks = -(-self.n_fft_bins // most)
            size = -(-self.n_fft_bins // n_blocks)
            self.fft_blocks = [(s, min(s + size, self.n_fft_bins))
                               for s in range(0, self.n_fft_bins, size)]
            for i, kernels_i in enumerate(self._spectral_kernels(n_time)):
                self.register_buffer(f"spectral_kernels{i}", kernels_i, persistent=False)
        # Finer groups waste fewer zero taps but cost more conv1d calls: half an octave, at
        # least 8 bins, was fastest at both 40 and 8 bins per octave (bench_transform.py).
        bins_per_group = bins_per_group or max(8, bins_per_octave // 2)
        nonzero = kernels != 0
        self.groups: list[tuple[int, int, int, int]] = []  # (first bin, end bin, tap a, tap b)
        for s in range(self.n_fft_bins, self.n_bins, bins_per_group):
            e = min(s + bins_per_group, self.n_bins)
            taps = torch.nonzero(nonzero[s:e].any(dim=0)).flatten()
            a, b = int(taps[0]), int(taps[-1]) + 1
            # (2 * bins, 1, b - a): real kernels, then imaginary ones.
            weight = torch.cat([kernels[s:e, a:b].real, kernels[s:e, a:b].imag])
            self.register_buffer(f"weight{len(self.groups)}", weight.float().unsqueeze(1),
                                 persistent=False)
            self.groups.append((s, e, a, b))

    def n_frames(self, n_time: int) -> int:
        """Frames for a signal of n_time samples (nnAudio's centred framing)."""
        pad = self.kernel_width // 2
        return (n_time + 2 * pad - self.kernel_width) // self.hop_length + 1

    def output_shape(self, n_time: int) -> tuple[int, int]:
        """(n_bins, n_frames) for a signal of n_time samples."""
        return self.n_bins, self.n_frames(n_time)

    def frame_times(self, n_time: int) -> np.ndarray:
        """Centre time (s from the signal's start) of each frame: frame j is centred on sample
        j * hop_length (the signal is padded by half a kernel). ``self.frequencies`` holds each
        bin's centre frequency (Hz), as nnAudio computes it."""
        return np.arange(self.n_frames(n_time)) * self.hop_length / self.sample_rate

    def _fft_length(self, n_time: int) -> int:
        """N: the padded length rounded up to a multiple of hop (zeros beyond are harmless)."""
        padded = n_time + 2 * (self.kernel_width // 2)
        return -(-padded // self.hop_length) * self.hop_length

    def _spectral_kernels(self, n_time: int) -> list[torch.Tensor]:
        """The long kernels' spectra folded for the batched matmul, one float32
        (M, 2 hop, 2 bins) tensor per block of bins (``fft_blocks``).

        Entry [m, r, 2k] / [m, r, 2k + 1] multiplies Re / Im of X[m + rM] (rows 0..hop-1) or
        Im (rows hop..2 hop-1) into Re / Im of Y_k[m], so the matmul's output viewed as
        complex is Y (the output interleaves real and imaginary parts).
        """
        n_fft, hop = self._fft_length(n_time), self.hop_length
        m = n_fft // hop
        padded = torch.zeros(self.n_fft_bins, n_fft, dtype=torch.complex128)
        padded[:, : self.kernel_width] = self._kernels
        # G_k[f] = sum_j K_k[j] exp(+2 pi i f j / N) = N ifft(K_k); the 1/N of c_k goes in too.
        spectra = torch.fft.ifft(padded, dim=-1)  # (bins, N) = G / N
        g = spectra.reshape(self.n_fft_bins, hop, m).permute(2, 1, 0)  # (M, hop, bins)
        from_real = torch.stack([g.real, g.imag], dim=-1)  # Re X times (Re G, Im G)
        from_imag = torch.stack([-g.imag, g.real], dim=-1)  # Im X times (-Im G, Re G)
        folded = torch.cat([from_real, from_imag], dim=1)  # (M, 2 hop, bins, 2)
        folded = folded.reshape(m, 2 * hop, 2 * self.n_fft_bins).float()
        return [folded[..., 2 * s : 2 * e].contiguous() for s, e in self.fft_blocks]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Images must not depend on the caller's mixed precision: under autocast conv1d and
        # bmm would run in float16/bfloat16 (3 digits) and differ from the stored images.
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, n_time = x.shape
        rows = x.reshape(b * c, 1, n_time).to(torch.float32)
        if self.impl == "nnaudio":
            out = self.cqt(rows)
            return out.reshape(b, c, *out.shape[-2:])
        n_frames = self.n_frames(n_time)
        out = rows.new_empty(b * c, self.n_bins, n_frames)
        # On CPU, chunks of rows keep the intermediates in cache; a GPU prefers one call.
        chunk = b * c if rows.device.type != "cpu" else _CPU_CHUNK_ROWS
        for i in range(0, b * c, chunk):
            self._forward_rows(rows[i : i + chunk], out[i : i + chunk])
        return out.reshape(b, c, self.n_bins, n_frames)

    def _forward_rows(self, rows: torch.Tensor, out: torch.Tensor) -> None:
        """rows (R, 1, T) float32 -> writes |CQT| into out (R, n_bins, n_frames)."""
        n_time = rows.shape[-1]
        n_frames, hop = out.shape[-1], self.hop_length
        padded = F.pad(rows, (self.kernel_width // 2,) * 2, mode="reflect")
        for i, (s, e, a, b) in enumerate(self.groups):
            span = (n_frames - 1) * hop + (b - a)
            y = F.conv1d(padded[..., a : a + span], getattr(self, f"weight{i}"), stride=hop)
            g = e - s
            torch.sqrt(y[:, :g].square() + y[:, g:].square(), out=out[:, s:e])
        if self.n_fft_bins:
            n_rows, n_fft = rows.shape[0], self._fft_length(n_time)
            m = n_fft // hop
            if n_time == self.n_time:
                kernels = [getattr(self, f"spectral_kernels{i}")
                           for i in range(len(self.fft_blocks))]
            else:
                kernels = [k.to(rows.device) for k in self._spectral_kernels(n_time)]
            spec = torch.view_as_real(torch.fft.fft(padded[:, 0], n=n_fft, dim=-1))
            # (R, N, 2) -> (M, R, 2 hop): frequency m + rM's Re parts, then its Im parts.
            spec = spec.reshape(n_rows, hop, m, 2).permute(2, 0, 3, 1).reshape(m, n_rows, -1)
            for (s, e), kernels_i in zip(self.fft_blocks, kernels):
                folded = torch.bmm(spec, kernels_i).view(m, n_rows, e - s, 2)
                frames = torch.fft.ifft(torch.view_as_complex(folded), dim=0, norm="forward")
                frames = torch.view_as_real(frames[:n_frames].permute(1, 2, 0))  # (R, g, F, 2)
                re, im = frames[..., 0], frames[..., 1]
                torch.sqrt(re.square() + im.square(), out=out[:, s:e])


# --------------------------------------------------------------------------------------------
# Whiten + CQT


class Transform(nn.Module):
    """Whitening then CQT: raw strain -> (CQT image, whitened waves).

    forward: x (B, 3, 4096) float32/float64 strain -> (images (B, 3, n_bins, n_frames)
    float32 |CQT|, waves (B, 3, 4096) float32 whitened strain).
    """

    def __init__(self, whiten: Whiten, cqt: CQT, n_time: int = N_TIME):
        super().__init__()
        self.whiten = whiten
        self.cqt = cqt
        self.n_time = n_time

    @classmethod
    def from_config(cls, whiten_cfg, cqt_cfg, psd) -> "Transform":
        """Build from ``WhitenConfig``, ``CQTConfig`` and a (3, n_freq) float64 PSD."""
        return cls(Whiten.from_config(whiten_cfg, psd), CQT.from_config(cqt_cfg))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(3, n_bins, n_frames) of one sample's image."""
        return (len(DETECTORS), *self.cqt.output_shape(self.n_time))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        waves = self.whiten(x)
        return self.cqt(waves), waves
