"""A training run's per-epoch history: ``history.csv`` (written by training, read by the
demo and the plots) and the training-curves figure drawn from it, in one place below both
stages (``infer`` may not import ``train``)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from data.layout import DataError

HISTORY_FILE = "history.csv"
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
