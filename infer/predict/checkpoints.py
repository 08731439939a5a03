"""The trained folds an ensemble is made of: found under ``--runs`` or named, each loaded from
its model card (:mod:`data.rundir`) with its weights' hash checked, and refused when the folds,
or a store and the folds, disagree on how their inputs were made (:class:`MismatchError`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from data import store as zstore
from data.config import dict_diff, format_diff
from data.rundir import (
    CARD_FILE,
    WEIGHTS_FILE,
    ModelCard,
    describe_training,
    read_card,
    verify_weights,
)
from infer.config import InferError
from preprocess.config import identity_drift, identity_for

log = logging.getLogger(__name__)


class MismatchError(InferError):
    """A model used on images made another way than its training images, or folds that disagree."""


@dataclass
class Fold:
    """One trained model of the ensemble and what it needs to see its inputs as in training."""

    path: Path  # the fold directory
    card: ModelCard
    model: torch.nn.Module = field(repr=False)
    member: int = 0  # which run of the ensemble (``--runs A B ...``) the fold belongs to

    @property
    def name(self) -> str:
        return str(self.path)

    @property
    def identity(self) -> dict:
        """The part of the training store's transform identity this model's input depends on,
        with the store's schema version."""
        return {"store_schema_version": self.card.store_schema_version,
                **identity_for(self.card.transform, self.card.input)}


def _fold_number(path: Path) -> int:
    m = re.fullmatch(r"fold(\d+)", path.name)
    return int(m.group(1)) if m else -1


def find_checkpoints(runs: str | Path | None, checkpoints: list[str] = ()) -> list[Path]:
    """Fold directories to ensemble: the ``checkpoints`` named, else every ``fold*`` under ``runs``.

    ``runs`` may also be a single fold directory. A checkpoint is a fold directory or the
    ``best.safetensors`` inside one. Raises InferError when nothing usable is found.
    """
    if checkpoints and runs is not None:
        raise InferError("give either --runs or checkpoints=[...], not both")
    if checkpoints:
        dirs = []
        for c in checkpoints:
            p = Path(c)
            d = p.parent if p.suffix == ".safetensors" else p
            if p.suffix == ".safetensors" and p.name != WEIGHTS_FILE:
                raise InferError(f"{p}: a checkpoint is a {WEIGHTS_FILE} or a fold directory")
            if not (d / WEIGHTS_FILE).is_file():
                raise InferError(f"{d / WEIGHTS_FILE}: checkpoint not found")
            dirs.append(d)
        return dirs
    if runs is None:
        raise InferError("no models: give --runs runs/NAME or checkpoints=[...]")
    runs = Path(runs)
    if (runs / WEIGHTS_FILE).is_file():
        return [runs]
    if not runs.is_dir():
        raise InferError(f"{runs}: run directory does not exist")
    folds = sorted((d for d in runs.glob("fold*") if d.is_dir()), key=_fold_number)
    unfinished = [d for d in folds if not (d / WEIGHTS_FILE).is_file()]
    if unfinished:
        log.warning("skipping fold directories without %s: %s", WEIGHTS_FILE,
                    ", ".join(str(d) for d in unfinished))
    found = [d for d in folds if (d / WEIGHTS_FILE).is_file()]
    if not found:
        raise InferError(f"{runs}: no fold*/{WEIGHTS_FILE} found (has training finished?)")
    return found


def load_fold(fold_dir: str | Path) -> Fold:
    """Read the model card, check the weights' hash, build the timm model and load the weights
    strictly; eval mode. CardError / MismatchError / InferError name the file and the cause."""
    import timm
    from safetensors.torch import load_file

    import data.models  # noqa: F401  (registers the 1D CNNs with timm)

    fold_dir = Path(fold_dir)
    card = read_card(fold_dir / CARD_FILE)
    card_path = fold_dir / CARD_FILE
    if card.store_schema_version != zstore.SCHEMA_VERSION:
        raise MismatchError(
            f"{card_path}: store_schema_version: model {card.store_schema_version}, this code "
            f"{zstore.SCHEMA_VERSION}; re-train or use the matching code version"
        )
    drift = identity_drift(card.transform, card.preprocess_config)
    if drift:
        raise MismatchError(f"{card_path}: trained on inputs made by another version of the "
                            f"transform: {format_diff(drift, 'model', 'this code')}; re-train")
    # One logit from the 3 detector rows is the contract.
    kwargs = card.model_kwargs
    if (kwargs.get("num_classes"), kwargs.get("in_chans")) != (1, 3):
        raise InferError(f"{card_path}: model_kwargs must give num_classes 1 and in_chans 3, "
                         f"got {kwargs.get('num_classes')} and {kwargs.get('in_chans')}")
    weights = fold_dir / WEIGHTS_FILE
    verify_weights(card, weights)
    model = timm.create_model(card.model_name, pretrained=False, **kwargs)
    try:
        model.load_state_dict(load_file(weights, device="cpu"), strict=True)
    except RuntimeError as e:
        raise InferError(f"{weights}: weights do not fit {card.model_name}: {e}") from None
    model.eval()
    return Fold(path=fold_dir, card=card, model=model)


def load_folds(runs: list[str | Path | None], checkpoints: list[str] = (),
               check_card: Callable[[Path, ModelCard], None] | None = None) -> list[Fold]:
    """Every fold of every run to ensemble, ``member`` = the run's position in ``runs``
    (``[None]`` with ``checkpoints``: the folds named). ``check_card(fold_dir, card)`` vets each
    card before its weights load (the search's own demands); :func:`check_folds` at the end."""
    if len(runs) > 1 and checkpoints:
        raise InferError("give either several --runs or checkpoints=[...], not both")
    folds = []
    for member, run in enumerate(runs):
        for d in find_checkpoints(run, list(checkpoints)):
            if check_card is not None:
                check_card(d, read_card(d / CARD_FILE))
            fold = load_fold(d)
            fold.member = member
            folds.append(fold)
            log.info("%s: %s trained on %s", d, fold.card.model_name,
                     describe_training(fold.card))
    check_folds(folds)
    return folds


def check_folds(folds: list[Fold]) -> None:
    """All folds must read the same inputs: the same transform identity (the PSD's hash
    included) and store schema, as far as each model's input kind depends on them.

    Folds may differ in architecture, input kind, image size and channel statistics: each
    model gets its own input preparation.
    """
    first = folds[0]
    for other in folds[1:]:
        keys = set(first.identity) & set(other.identity)
        diff = dict_diff({k: first.identity[k] for k in keys},
                         {k: other.identity[k] for k in keys})
        if diff:
            names = ((first.path.name, other.path.name) if first.path.name != other.path.name
                     else (first.name, other.name))
            raise MismatchError(
                f"checkpoints disagree on their inputs ({first.name} vs {other.name}): "
                + format_diff(diff, *names)
            )


def check_store(folds: list[Fold], attrs: dict, store_path: str | Path) -> None:
    """The store's arrays must be made exactly like the models' training inputs, by this code."""
    made = attrs.get("transform", {})
    drift = identity_drift(made, attrs.get("config", {}))
    if drift:
        raise MismatchError(f"{store_path}: made by another version of the transform: "
                            f"{format_diff(drift, 'store', 'this code')}; re-run preprocessing")
    for fold in folds:
        store = {"store_schema_version": attrs.get("schema_version"),
                 **identity_for(made, fold.card.input)}
        diff = dict_diff(fold.identity, store)
        if diff:
            raise MismatchError(
                f"{store_path} was made differently from the training inputs of {fold.name}: "
                + format_diff(diff, "model", "store")
            )
