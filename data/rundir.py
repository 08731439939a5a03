"""The run directory's contract: what training leaves in ``runs/NAME/fold{k}/`` and every
later reader (inference, the plots, the demo, benches) reads through these functions only:
the model card ``model.json``, the weights ``best.safetensors`` and their hash, the held-out
predictions ``oof.csv`` and the per-epoch ``history.csv`` with its figure::

    config.yaml        the resolved TrainConfig      } training's own files
    checkpoints/       resumable training state      } (train.checkpoints)
    best.safetensors   the best epoch's weights (EMA weights when ``ema`` is on):
                       ``timm.create_model(model_name, **model_kwargs)`` loads them strictly
    model.json         the model card (:class:`ModelCard`): model, input kind, channel
                       statistics, the store's transform identity and PSD, the weights' hash
    oof.csv            id,target,pred,logit of the held-out fold at the best epoch
    history.csv        epoch,train_loss,val_loss,val_auc,lr,samples_per_s (epoch 1 = first pass)
    curves.png         loss, validation AUC and learning rate per epoch
    logs/NAME/         the trackers' files with ``log_with`` (tensorboard: events.out.tfevents.*)

Once every fold has its ``oof.csv``, ``OUT/NAME/oof.csv`` joins them (every valid training
sample's out-of-fold prediction once).

It lives on the shared floor because training writes it and inference, which may not import
``train``, reads it. It knows nothing about timm or torch.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from data.config import ConfigError, from_dict, to_dict
from data.layout import DataError

CARD_FILE = "model.json"
WEIGHTS_FILE = "best.safetensors"
OOF_FILE = "oof.csv"  # id,target,pred,logit: the fold's held-out predictions (write_oof)
CARD_SCHEMA = 1
INPUT_KINDS = ("images", "waves")


class CardError(ValueError):
    """A model card or weights file that is missing, damaged, or of a newer schema."""


@dataclass
class ModelCard:
    """Everything inference needs to rebuild a trained model and to make its inputs exactly as
    its training inputs were made. The card carries:

    - the model: ``model_name``, ``model_kwargs`` (``num_classes``, ``in_chans``, ...);
    - its input: ``input`` (``"images"``: the store's float16 |CQT| array, ``"waves"``: its
      whitened strain), ``image_size`` (``[H, W]`` the images were resized to, or None),
      ``channel_stats`` (per-channel ``mean``/``std`` of that array in the training store);
    - how that input is made: ``transform`` (the store's transform identity,
      :func:`preprocess.config.transform_identity`), ``preprocess_config`` (the store's full
      preprocessing config), ``psd`` (the (3, n_freq) training PSD in 1/Hz, ``psd_df`` Hz apart:
      whitening raw strain needs it) and ``store_schema_version``;
    - the training result: ``fold``, ``best_epoch``, ``best_auc``, and the fold assignment
      (``n_folds``, ``fold_seed``: ensembles fitted on out-of-fold predictions need equal ones);
    - ``weights_sha256``: the SHA-256 of ``best.safetensors``, so damaged or swapped weights are
      refused rather than used;
    - ``card_schema``: this format's version. A card of a newer schema is refused.
    """

    model_name: str
    model_kwargs: dict
    input: Literal["images", "waves"]
    image_size: list[int] | None
    channel_stats: dict  # {"mean": [3 floats], "std": [3 floats]}
    transform: dict  # the store's transform identity
    preprocess_config: dict
    psd: list[list[float]]  # (3, n_freq) 1/Hz
    psd_df: float  # Hz between PSD points, from 0 Hz
    store_schema_version: int
    weights_sha256: str
    fold: int
    best_epoch: int
    best_auc: float
    n_folds: int
    fold_seed: int
    # What the model was trained on: {"source": store|inject|both, "store", "inject": the
    # bank, noise, SNR distribution and fractions of the injections (None for store),
    # "init_from": the run whose weights it started from}. None on cards written before.
    training: dict | None = None
    card_schema: int = CARD_SCHEMA


def describe_training(card: ModelCard) -> str:
    """One line on what the card's model was trained on (its ``training`` record), for logs:
    ``injections (20000 IMRPhenomPv2 waveforms, SNR uniform:2,16, noise store) from runs/pre``."""
    t = card.training
    if not t:
        return "the labelled store (a card from before training records)"
    what = {"store": "the labelled store", "both": "the labelled store and injections",
            "inject": "injections"}.get(t.get("source"), str(t.get("source")))
    inj = t.get("inject")
    if inj:
        bank = inj.get("bank", {})
        what += (f" ({bank.get('n_used', '?')} {bank.get('prior', {}).get('approximant', '?')} "
                 f"waveforms, SNR {inj.get('snr')}, noise {inj.get('noise')})")
    if t.get("init_from"):
        what += f", starting from {t['init_from']}"
    return what


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB pieces."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# Whitened strain has unit variance in Gaussian noise by construction (preprocess.transforms
# .Whiten), so models reading ``waves`` get it as it is: these are its recorded statistics.
WAVES_STATS = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}


def input_stats(g, input: str) -> dict:
    """Per-channel ``{"mean", "std"}`` that normalise the ``input`` array of store ``g``."""
    return dict(g.attrs["channel_stats"]) if input == "images" else dict(WAVES_STATS)


def card_from_store(g, *, model_name: str, model_kwargs: dict, input: str = "images",
                    image_size: list[int] | None = None, fold: int = 0, best_epoch: int = 0,
                    best_auc: float = float("nan"), n_folds: int = 5,
                    fold_seed: int = 42, training: dict | None = None) -> ModelCard:
    """A card for a model trained on the finished train store ``g`` (a Zarr group): the input
    description (statistics, transform identity, config, PSD) comes from the store, the rest
    from the arguments. ``weights_sha256`` is filled in by :func:`write_fold`."""
    from data import store as zstore

    if input not in INPUT_KINDS:
        raise CardError(f"input: {input!r} is not one of {INPUT_KINDS}")
    return ModelCard(
        model_name=model_name,
        model_kwargs=dict(model_kwargs),
        input=input,
        image_size=list(image_size) if image_size is not None else None,
        channel_stats=input_stats(g, input),
        transform=dict(g.attrs["transform"]),
        preprocess_config=dict(g.attrs["config"]),
        psd=zstore.read_psd(g).tolist(),  # checked against the store's recorded hash
        psd_df=float(g.attrs["psd_df"]),
        store_schema_version=int(g.attrs["schema_version"]),
        weights_sha256="",
        fold=fold,
        best_epoch=best_epoch,
        best_auc=best_auc,
        n_folds=n_folds,
        fold_seed=fold_seed,
        training=training,
    )


def write_fold(fold_dir: str | Path, card: ModelCard, state_dict: dict) -> ModelCard:
    """Save ``state_dict`` as ``best.safetensors`` and then the card naming its hash, each
    atomically; returns the card written.

    Weights first: a kill between the two leaves the old card, whose hash no longer matches
    the new weights, so the pair is refused rather than mixed.
    """
    from safetensors.torch import save_file

    fold_dir = Path(fold_dir)
    fold_dir.mkdir(parents=True, exist_ok=True)
    weights = fold_dir / WEIGHTS_FILE
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    tmp = weights.with_name(weights.name + ".tmp")
    save_file(tensors, tmp)
    os.replace(tmp, weights)
    card = dataclasses.replace(card, weights_sha256=file_sha256(weights))
    write_card(fold_dir / CARD_FILE, card)
    return card


def write_card(path: str | Path, card: ModelCard) -> None:
    """Write ``card`` as JSON, atomically (a reader never sees half a card)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(to_dict(card), indent=1) + "\n")
    os.replace(tmp, path)


def read_card(path: str | Path) -> ModelCard:
    """The card at ``path`` (a ``model.json``, or the fold directory holding one).

    CardError, naming the file, when it is missing, not JSON, of a newer ``card_schema``,
    missing a key, or has a key or value this code does not know.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CARD_FILE
    if not path.is_file():
        raise CardError(f"{path}: model card missing (training writes it with the weights)")
    try:
        values = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CardError(f"{path}: not a readable model card ({e}); re-train or restore it"
                        ) from None
    if not isinstance(values, dict):
        raise CardError(f"{path}: not a model card (a JSON object is expected)")
    schema = values.get("card_schema")
    if not isinstance(schema, int):
        raise CardError(f"{path}: no card_schema: not a model card of this project (or one "
                        "written before model cards existed; re-train)")
    if schema > CARD_SCHEMA:
        raise CardError(f"{path}: card_schema {schema} is newer than this code's "
                        f"{CARD_SCHEMA}; upgrade g2net-spectrogram to read it")
    required = [f.name for f in dataclasses.fields(ModelCard)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [k for k in required if k not in values]
    if missing:
        raise CardError(f"{path}: missing key(s) {', '.join(missing)}")
    try:
        card = from_dict(ModelCard, values)
    except (ConfigError, TypeError) as e:
        raise CardError(f"{path}: {e}") from None
    return card


def verify_weights(card: ModelCard, weights: str | Path) -> None:
    """CardError unless the file at ``weights`` is the one the card was written for."""
    weights = Path(weights)
    if not weights.is_file():
        raise CardError(f"{weights}: weights file missing")
    got = file_sha256(weights)
    if got != card.weights_sha256:
        raise CardError(
            f"{weights}: SHA-256 {got[:12]}... does not match its model card's "
            f"weights_sha256 {card.weights_sha256[:12]}...: the file is damaged or was replaced; "
            "restore it or re-train the fold"
        )


def write_oof(path: str | Path, ids, target, logit) -> None:
    """``id,target,pred,logit``: hex ids (``ids`` as stored: uint64), 0/1 targets, the
    probability and the model's logit, both as the shortest text that reads back to the same
    float (issue 17: 7 digits made every p above 1 - 5e-8 a 1, ties in the OOF AUC and in a
    stack's inputs; the logit never saturates)."""
    import csv

    from data.layout import int_to_id
    from data.metrics import probability

    logit = np.asarray(logit, dtype=np.float64)
    with Path(path).open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "target", "pred", "logit"])
        for sid, t, p, z in zip(int_to_id(ids), target, probability(logit), logit):
            w.writerow([sid, int(t), repr(float(p)), repr(float(z))])


def read_oof(path: str | Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(ids, target int array, logit float64 array) of an ``oof.csv``. A file written before
    logits were kept (``id,target,pred``) gives the logits of its rounded probabilities."""
    import csv

    with Path(path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    ids = [r["id"] for r in rows]
    target = np.array([int(r["target"]) for r in rows])
    if rows and "logit" in rows[0]:
        return ids, target, np.array([float(r["logit"]) for r in rows])
    p = np.clip(np.array([float(r["pred"]) for r in rows]), 1e-12, 1 - 1e-12)
    return ids, target, np.log(p) - np.log1p(-p)


HISTORY_FILE = "history.csv"
CURVES_FILE = "curves.png"  # plot_curves of the history
# epoch (1 = the first pass), mean training BCE, validation BCE and AUC, the learning rate at
# the epoch's end, training samples per second (all processes)
HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "val_auc", "lr", "samples_per_s")


def write_history(path: str | Path, history: list[dict]) -> None:
    """One row per epoch dict (the keys of HISTORY_COLUMNS)."""
    with Path(path).open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=HISTORY_COLUMNS)
        w.writeheader()
        for row in history:
            w.writerow({k: row[k] for k in HISTORY_COLUMNS})


def read_history(path: str | Path) -> dict[str, np.ndarray]:
    """``history.csv`` columns as float arrays (empty cells -> NaN)."""
    with Path(path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise DataError(f"{path}: no epochs recorded")
    return {k: np.array([float(r[k]) if r[k] not in ("", None) else np.nan for r in rows])
            for k in rows[0]}


def plot_curves(history: dict[str, np.ndarray], out: str | Path, title: str = "") -> Path:
    """Loss (train, validation), validation AUC (best epoch marked) and learning rate against
    epoch, from :func:`read_history`'s columns; one PNG at ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = history
    epoch = h["epoch"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4), layout="constrained")
    axes[0].plot(epoch, h["train_loss"], "o-", label="train")
    axes[0].plot(epoch, h["val_loss"], "o-", label="validation")
    axes[0].set_ylabel("BCE loss")
    axes[0].legend()
    axes[1].plot(epoch, h["val_auc"], "o-", color="tab:green")
    if np.isfinite(h["val_auc"]).any():
        best = int(np.nanargmax(h["val_auc"]))
        axes[1].annotate(f"best {h['val_auc'][best]:.4f}", (epoch[best], h["val_auc"][best]),
                         textcoords="offset points", xytext=(0, -14), ha="center")
    axes[1].set_ylabel("validation AUC")
    axes[2].plot(epoch, h["lr"], "o-", color="tab:red")
    axes[2].set_ylabel("learning rate")
    axes[2].ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
