"""The model a training run builds: a timm model by name (our 1D CNNs registered with it by
``import data.models``), from local pretrained weights when the config names a file, and the
input kind it reads (CQT ``images`` or whitened ``waves``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from train.config import ModelConfig, TrainError


def model_kwargs(cfg: ModelConfig) -> dict:
    """Everything ``timm.create_model`` needs besides the name and ``pretrained``."""
    return {"num_classes": 1, "in_chans": 3, "drop_rate": cfg.drop_rate,
            "drop_path_rate": cfg.drop_path_rate}


def input_kind(model_name: str) -> str:
    """``"waves"`` for the 1D CNNs of :mod:`data.models.g2net1d`, ``"images"`` for every
    other model."""
    import data.models

    return "waves" if model_name in data.models.g2net1d.WAVE_MODELS else "images"


def build_model(cfg: ModelConfig) -> torch.nn.Module:
    import timm

    import data.models  # noqa: F401  (registers the 1D CNNs with timm)

    kwargs = model_kwargs(cfg)
    try:
        if cfg.pretrained_file is None:
            return timm.create_model(cfg.name, pretrained=False, **kwargs)
        if not Path(cfg.pretrained_file).is_file():
            raise TrainError(f"model.pretrained_file: {cfg.pretrained_file} does not exist")
        # timm adapts the stem to in_chans and drops a classifier of another size.
        overlay = dict(file=str(cfg.pretrained_file))
        return timm.create_model(cfg.name, pretrained=True, pretrained_cfg_overlay=overlay,
                                 **kwargs)
    except TrainError:
        raise
    except Exception as e:  # timm: RuntimeError for an unknown name, others for bad weights
        raise TrainError(f"model.name={cfg.name}: cannot create the model: {e}") from None


def check_input_size(model: torch.nn.Module, name: str, shape: tuple[int, ...]) -> None:
    """One forward pass on zeros (CPU, eval mode) of one sample of ``shape`` (an image's (H, W)
    or the strain's (T,)): a size the model cannot take fails here."""
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, 3, *shape))
    except Exception as e:
        what = ("images of size " + "x".join(map(str, shape)) if len(shape) == 2
                else f"strain of {shape[0]} samples")
        raise TrainError(
            f"model {name} cannot take {what} "
            f"(set image_size=[H,W] or choose another model): {type(e).__name__}: {e}"
        ) from None
    finally:
        model.train()
    if tuple(out.shape) != (1, 1):
        raise TrainError(f"model {name}: output shape {tuple(out.shape)}, expected (1, 1)")
