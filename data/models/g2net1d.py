"""1D CNNs on whitened strain, registered with timm: ``import data.models`` and then
``timm.create_model("g2net_1d_small", num_classes=1, in_chans=3)`` builds one like any timm
model. Input ``(B, 3, T)`` float32 whitened strain (rows H1, L1, V1 at 2048 Hz; T >=
:data:`MIN_LENGTH`), output ``(B, num_classes)`` logits. The designs: docs/training.md.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from timm.models import build_model_with_cfg, register_model
from torch import nn

N_DETECTORS = 3
MIN_LENGTH = 512  # total time downsampling of every model here
WAVE_MODELS: list[str] = []  # every name registered by this module


def _cfg(**kwargs) -> dict:
    # timm's config is image-shaped (C, H, W) and asserts a 3-tuple: a wave is (3, 1, T).
    return {"num_classes": 1, "input_size": (N_DETECTORS, 1, 4096), "first_conv": None,
            "classifier": "head.fc", **kwargs}


default_cfgs = {
    "g2net_1d_v3": _cfg(),
    "g2net_1d_v3_w32": _cfg(),
    "g2net_1d_small": _cfg(),
    "g2net_1d_tiny": _cfg(),
    "g2net_1d_coinc": _cfg(),
    "g2net_1d_coinc_wide": _cfg(),
}


def _register(fn: Callable) -> Callable:
    WAVE_MODELS.append(fn.__name__)
    return register_model(fn)


def _check_in_chans(in_chans: int) -> None:
    if in_chans != N_DETECTORS:
        raise ValueError(f"1D G2Net models take the {N_DETECTORS} detectors H1, L1, V1 as input "
                         f"channels: in_chans must be {N_DETECTORS}, got {in_chans}")


def _check_input(x: torch.Tensor, name: str) -> None:
    if x.ndim != 3 or x.shape[1] != N_DETECTORS or x.shape[-1] < MIN_LENGTH:
        raise ValueError(f"{name} takes whitened strain (batch, {N_DETECTORS}, time >= "
                         f"{MIN_LENGTH}), got shape {tuple(x.shape)}")


# ---------------------------------------------------------------------------------------------
# Layers


class GeM(nn.Module):
    """Generalised-mean pooling over non-overlapping windows of ``kernel_size`` samples:
    ``mean(clamp(x, eps)^p)^(1/p)`` with a learnt p (p=1 average, p->inf max).

    (B, C, T) -> (B, C, T // kernel_size). Computed in float32 even under autocast: x^3 of
    activations overflows float16.
    """

    def __init__(self, kernel_size: int, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.kernel_size = kernel_size
        self.p = nn.Parameter(torch.full((1,), p))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            p = self.p.float()
            y = F.avg_pool1d(x.float().clamp(min=self.eps).pow(p), self.kernel_size)
            return y.pow(1.0 / p).to(x.dtype)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, eps={self.eps}"


def _conv(c_in: int, c_out: int, k: int, bias: bool = False) -> nn.Conv1d:
    return nn.Conv1d(c_in, c_out, k, padding=k // 2, bias=bias)


class AvgMaxPool(nn.Module):
    """(B, C, T) -> (B, 2C): global average and maximum over time, concatenated."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(dim=-1), x.amax(dim=-1)], dim=1)


class ResBlock(nn.Module):
    """SiLU(drop_path(residual(x)) + shortcut(x)); downsampling by GeM pooling on both paths.

    residual: conv k -> BN -> SiLU -> conv k -> BN [-> GeM /downsample]. shortcut: identity,
    or conv k -> BN [-> GeM /downsample] when the channels or the length change (as 3rd place
    did: a k-wide shortcut conv, not 1x1). (B, c_in, T) -> (B, c_out, T // downsample).
    """

    def __init__(self, c_in: int, c_out: int, k: int, downsample: int = 1,
                 drop_path: float = 0.0):
        super().__init__()

        def pool() -> list[nn.Module]:  # each path its own GeM (its own p)
            return [GeM(downsample)] if downsample > 1 else []

        self.residual = nn.Sequential(_conv(c_in, c_out, k), nn.BatchNorm1d(c_out), nn.SiLU(),
                                      _conv(c_out, c_out, k), nn.BatchNorm1d(c_out), *pool())
        if c_in != c_out or downsample > 1:
            self.shortcut = nn.Sequential(_conv(c_in, c_out, k), nn.BatchNorm1d(c_out), *pool())
        else:
            self.shortcut = nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop_path(self.residual(x)) + self.shortcut(x))


class Extractor(nn.Sequential):
    """One detector's front end: (B, 1, T) -> (B, n, T // 2) by conv k=127 -> BN -> SiLU ->
    conv k=127 -> GeM /2. 127 samples = 62 ms at 2048 Hz: a few cycles at 20-60 Hz."""

    def __init__(self, n: int, k: int = 127):
        super().__init__(_conv(1, n, k, bias=True), nn.BatchNorm1d(n), nn.SiLU(),
                         _conv(n, n, k, bias=True), GeM(2))


# ---------------------------------------------------------------------------------------------
# Models


class _WaveModel(nn.Module):
    """What every model here shares: ``forward`` = head(features), timm's classifier access
    (``head.fc``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head.fc


class G2Net1DV3(_WaveModel):
    """3rd place's 1D design (module docstring). Length: T -> T/2 (extractor) -> T/8 (first
    block) -> T/32 (branches) -> T/128 -> T/512 (trunk); 8 steps for T = 4096.

    ``self.extractor_hl`` and ``self.branch_hl`` are applied to H1 and to L1: one set of
    weights for both LIGO detectors. The two run as one batch of 2B single-detector rows, so
    in training mode their BatchNorm statistics are pooled over H1 and L1 together.
    """

    def __init__(self, width: int = 16, head_hidden: int = 256, in_chans: int = 3,
                 num_classes: int = 1, drop_rate: float = 0.0, drop_path_rate: float = 0.0):
        super().__init__()
        _check_in_chans(in_chans)
        # num_features: the pooled width the head reads (avg and max of the trunk's 8 * width
        # channels); head_hidden_size: the pre-logits width (timm's names for both).
        self.in_chans, self.num_classes, self.num_features = in_chans, num_classes, 16 * width
        self.head_hidden_size = head_hidden
        n = width
        # Stochastic depth rises linearly over the residual blocks in order of depth:
        # 2 in the extractors, 2 in the branches, 4 in the trunk.
        dpr = torch.linspace(0, drop_path_rate, 8).tolist()

        def front() -> nn.Sequential:
            return nn.Sequential(Extractor(n), ResBlock(n, n, 31, 4, dpr[0]),
                                 ResBlock(n, n, 31, 1, dpr[1]))

        def branch(c: int) -> nn.Sequential:
            return nn.Sequential(ResBlock(c, c, 31, 4, dpr[2]), ResBlock(c, c, 31, 1, dpr[3]))

        self.extractor_hl, self.extractor_v = front(), front()
        self.branch_hl, self.branch_v, self.branch_joint = branch(n), branch(n), branch(3 * n)
        self.trunk = nn.Sequential(
            ResBlock(6 * n, 4 * n, 15, 4, dpr[4]), ResBlock(4 * n, 4 * n, 15, 1, dpr[5]),
            ResBlock(4 * n, 8 * n, 7, 4, dpr[6]), ResBlock(8 * n, 8 * n, 7, 1, dpr[7]),
        )
        self.head = nn.Sequential()
        self.head.pool = AvgMaxPool()
        self.head.mlp = nn.Sequential(
            nn.Linear(16 * n, head_hidden), nn.BatchNorm1d(head_hidden), nn.Dropout(drop_rate),
            nn.SiLU(),
            nn.Linear(head_hidden, head_hidden), nn.BatchNorm1d(head_hidden),
            nn.Dropout(drop_rate), nn.SiLU(),
        )
        self.head.fc = nn.Linear(head_hidden, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T) -> (B, 8 * width, T // 512)."""
        _check_input(x, type(self).__name__)
        b, _, t = x.shape
        # H1 and L1 through one set of weights, as one batch: rows [H1 of every sample, L1 of
        # every sample] (a plain reshape would interleave them per sample).
        hl = self.extractor_hl(x[:, :2].transpose(0, 1).reshape(2 * b, 1, t))
        v = self.extractor_v(x[:, 2:])
        h, l1 = hl[:b], hl[b:]
        hl_b = self.branch_hl(hl)
        joint = self.branch_joint(torch.cat([h, l1, v], dim=1))
        x = torch.cat([hl_b[:b], hl_b[b:], self.branch_v(v), joint], dim=1)
        return self.trunk(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head.fc(self.head.mlp(self.head.pool(x)))

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head.fc = (nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0
                        else nn.Identity())


class _PooledLinear(_WaveModel):
    """A head of global average+max pooling, dropout and a linear layer over ``width``
    channels (``head.pool``, ``head.drop``, ``head.fc``), as timm's classifiers are reset."""

    def _make_head(self, width: int, num_classes: int, drop_rate: float) -> None:
        self.num_features = 2 * width
        self.head = nn.Sequential()
        self.head.pool = AvgMaxPool()
        self.head.drop = nn.Dropout(drop_rate)
        self.reset_classifier(num_classes)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head.fc(self.head.drop(self.head.pool(x)))

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 \
            else nn.Identity()


class G2Net1DSmall(_PooledLinear):
    """Five blocks of conv -> BN -> SiLU -> max pool over the three detectors together.

    Length: T -> T/4 -> T/16 -> T/64 -> T/256 -> T/512 (8 steps for T = 4096, 250 ms
    each), then global average+max pool, dropout, linear. ``drop_path_rate`` has no effect
    (no residual blocks).
    """

    kernels = (63, 31, 15, 7, 7)
    channels = (16, 32, 64, 64, 64)
    pools = (4, 4, 4, 4, 2)

    def __init__(self, in_chans: int = 3, num_classes: int = 1, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, channels: tuple[int, ...] | None = None):
        super().__init__()
        _check_in_chans(in_chans)
        self.in_chans, self.num_classes = in_chans, num_classes
        if channels is not None:
            self.channels = tuple(channels)
        layers, c_in = [], in_chans
        for k, c, p in zip(self.kernels, self.channels, self.pools):
            layers += [_conv(c_in, c, k), nn.BatchNorm1d(c), nn.SiLU(), nn.MaxPool1d(p)]
            c_in = c
        self.features = nn.Sequential(*layers)
        self._make_head(c_in, num_classes, drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T) -> (B, channels[-1], T // 512)."""
        _check_input(x, type(self).__name__)
        return self.features(x)


class G2Net1DCoinc(_PooledLinear):
    """A coincidence design for searches: one encoder, shared by the three detectors, reads
    each detector's whitened strain alone; a small fusion head reads the three feature maps
    together. Length: T -> T/256 in the encoder (16 steps of 125 ms for T = 4096).

    :meth:`forward_detectors` and :meth:`forward_fusion` split the model where the detectors
    meet: a time slide pairs one window's H1 with another's L1 and V1, so a search computes
    each window's per-detector features once and runs only the fusion head per slide (about
    1 % of the multiply-adds at the default widths; the first fusion conv is done per detector
    in :meth:`forward_detectors`, so a slide starts with a sum). Like 3rd place's 1D design,
    detectors share weights (whitened noise looks alike in all three); the fusion head knows
    which is which by their position.
    """

    kernels = (63, 31, 15, 7)
    pools = (4, 4, 4, 4)

    def __init__(self, in_chans: int = 3, num_classes: int = 1, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, channels: tuple[int, ...] = (8, 16, 32, 32),
                 fusion: int = 64):
        super().__init__()
        _check_in_chans(in_chans)
        self.in_chans, self.num_classes = in_chans, num_classes
        layers, c_in = [], 1
        for k, c, p in zip(self.kernels, channels, self.pools):
            layers += [_conv(c_in, c, k), nn.BatchNorm1d(c), nn.SiLU(), nn.MaxPool1d(p)]
            c_in = c
        self.encoder = nn.Sequential(*layers)
        self.fusion = nn.Sequential(
            _conv(N_DETECTORS * c_in, fusion, 3), nn.BatchNorm1d(fusion), nn.SiLU(),
            _conv(fusion, fusion, 3), nn.BatchNorm1d(fusion), nn.SiLU(), nn.MaxPool1d(2),
        )
        self._make_head(fusion, num_classes, drop_rate)

    def forward_detectors(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T) whitened strain -> (B, 3, F, T // 256): each detector's encoder features
        through its share of the fusion head's first conv (F = ``fusion`` channels). A conv
        over the three detectors' concatenated features is the sum of per-detector convs, so
        each row still depends on its own detector only, and a slide is left with a sum,
        not the first conv (60 % of the head's multiply-adds)."""
        _check_input(x, type(self).__name__)
        b, d, t = x.shape
        f = self.encoder(x.reshape(b * d, 1, t)).reshape(b, d, -1, t // 256)
        conv = self.fusion[0]
        w = conv.weight.view(conv.out_channels, d, -1, conv.kernel_size[0])  # (F, 3, C, k)
        return torch.stack([F.conv1d(f[:, i], w[:, i], padding=conv.padding)
                            for i in range(d)], dim=1)

    def forward_fusion(self, p: torch.Tensor) -> torch.Tensor:
        """(B, 3, F, T') per-detector rows (from any windows) -> (B, num_classes)."""
        return self.forward_head(self.fusion[1:](p.sum(dim=1)))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T) -> (B, fusion, T // 512)."""
        return self.fusion[1:](self.forward_detectors(x).sum(dim=1))


# ---------------------------------------------------------------------------------------------
# timm entry points


def _create(variant: str, cls: type[nn.Module], pretrained: bool, **kwargs) -> nn.Module:
    return build_model_with_cfg(cls, variant, pretrained, **kwargs)


@_register
def g2net_1d_v3(pretrained: bool = False, **kwargs) -> nn.Module:
    """3rd place's 1D design at width 16 (~1.5 M parameters)."""
    return _create("g2net_1d_v3", G2Net1DV3, pretrained, **{"width": 16, **kwargs})


@_register
def g2net_1d_v3_w32(pretrained: bool = False, **kwargs) -> nn.Module:
    """3rd place's 1D design at width 32 (~5.8 M parameters)."""
    return _create("g2net_1d_v3_w32", G2Net1DV3, pretrained, **{"width": 32, **kwargs})


@_register
def g2net_1d_small(pretrained: bool = False, **kwargs) -> nn.Module:
    """Five conv blocks, ~0.11 M parameters: trains on a CPU."""
    return _create("g2net_1d_small", G2Net1DSmall, pretrained, **kwargs)


@_register
def g2net_1d_tiny(pretrained: bool = False, **kwargs) -> nn.Module:
    """``g2net_1d_small`` at half the width (channels 8-16-32-32-32, ~0.03 M parameters,
    about a quarter of its multiply-adds): the demo's and the tests' 1D model."""
    return _create("g2net_1d_tiny", G2Net1DSmall, pretrained,
                   **{"channels": (8, 16, 32, 32, 32), **kwargs})


@_register
def g2net_1d_coinc(pretrained: bool = False, **kwargs) -> nn.Module:
    """The search's model: a per-detector encoder (channels 8-16-32-32, shared) and a fusion
    head, split for cheap time slides (~0.05 M parameters)."""
    return _create("g2net_1d_coinc", G2Net1DCoinc, pretrained, **kwargs)


@_register
def g2net_1d_coinc_wide(pretrained: bool = False, **kwargs) -> nn.Module:
    """``g2net_1d_coinc`` with its encoder twice as wide (channels 16-32-64-64, ~0.13 M
    parameters, ~3.5x the encoder's multiply-adds; the fusion head as before, so a time slide
    costs the same). Tried for the light chirps the narrow encoder misses and measured worse:
    0.824 of the matched filter at 1/month against 0.866, no light chirp more at SNR 8-12
    (docs/search.md, "The recipe again"); not the search's model."""
    return _create("g2net_1d_coinc_wide", G2Net1DCoinc, pretrained,
                   **{"channels": (16, 32, 64, 64), **kwargs})
