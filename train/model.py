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


def init_from_run(net: torch.nn.Module, fold_dir: str | Path, model_name: str, kind: str,
                  transform: dict) -> None:
    """Load the best weights of the trained fold ``fold_dir`` into ``net`` (pretrain, then
    fine-tune): TrainError unless that fold trained the same model on the same input kind made
    by the same transform (``transform``: the training store's identity; for a ``waves``
    model only the whitening's part of it matters)."""
    from safetensors.torch import load_file

    from data import rundir
    from data.config import dict_diff, format_diff
    from preprocess.config import identity_for

    fold_dir = Path(fold_dir)
    if not (fold_dir / rundir.CARD_FILE).is_file() and (fold_dir / "fold0").is_dir():
        raise TrainError(f"init_from: {fold_dir} is a run with folds; name one of them "
                         f"({fold_dir}/fold0, ...)")
    try:
        card = rundir.read_card(fold_dir)
        rundir.verify_weights(card, fold_dir / rundir.WEIGHTS_FILE)
    except rundir.CardError as e:
        raise TrainError(f"init_from: {e}") from None
    if card.model_name != model_name:
        raise TrainError(f"init_from: {fold_dir} trained {card.model_name}, this run "
                         f"model.name={model_name}")
    if card.input != kind:
        raise TrainError(f"init_from: {fold_dir} reads {card.input}, {model_name} {kind}")
    drift = dict_diff(identity_for(card.transform, kind), identity_for(transform, kind))
    if drift:
        raise TrainError(f"init_from: {fold_dir} was trained on inputs made another way: "
                         f"{format_diff(drift, 'that run', 'this store')}")
    state = load_file(str(fold_dir / rundir.WEIGHTS_FILE))
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise TrainError(f"init_from: {fold_dir}: weights do not fit: {e}") from None
