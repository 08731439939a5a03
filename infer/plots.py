"""Pictures: a sample's CQT beside its raw and whitened strain, training curves, ROC, AUC vs SNR.

    python -m infer.plots cqt    --data DIR --id ID [--cache CACHE | --run FOLD_DIR] [--out F]
    python -m infer.plots curves --run runs/NAME/fold0 [--out F]
    python -m infer.plots roc    --submission S --truth T [--out F]
    python -m infer.plots snr    --submission S --truth T [--out F] [snr_bins=[0,4,...]]

(``g2net-plots`` is the same command.) Every function writes one PNG (matplotlib's Agg
backend, no display needed) and returns its path; the command prints it. Exit status as
every stage's (:mod:`data.cli`): 2 for inputs it cannot use, 1 for a failed read or write.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from data import layout, rundir  # noqa: E402
from data.cli import cli_errors  # noqa: E402

log = logging.getLogger(__name__)

DPI = 110


def _save(fig, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI)
    plt.close(fig)
    return out


# ---------------------------------------------------------------------------------------------
# CQT preview


def plot_cqt(
    strain: np.ndarray,
    image: np.ndarray,
    whitened: np.ndarray,
    freqs: np.ndarray,
    times: np.ndarray,
    out: str | Path,
    title: str = "",
    merger_time: float | None = None,
) -> Path:
    """One sample: |CQT| per detector (log-frequency, one colour bar), raw and whitened strain.

    strain: (3, 4096) raw strain at 2048 Hz; image: (3, n_bins, n_frames) |CQT| of the whitened
    strain; whitened: (3, 4096), unit variance; freqs (n_bins,) Hz and times (n_frames,) s: the
    CQT's bin centres and frame centres (``CQT.frequencies``, ``CQT.frame_times``);
    merger_time: s from the sample start (e.g. from ``truth.csv``), drawn as a dashed line.
    """
    image = np.asarray(image, dtype=np.float32)
    t = np.arange(strain.shape[-1]) / layout.SAMPLE_RATE
    fig, axes = plt.subplots(3, 3, figsize=(14, 8), layout="constrained",
                             gridspec_kw={"width_ratios": [1.4, 1, 1]}, sharex="col")
    vmax = float(image.max()) or 1.0
    for d, det in enumerate(layout.DETECTORS):
        ax = axes[d, 0]
        mesh = ax.pcolormesh(times, freqs, image[d], shading="nearest", cmap="viridis",
                             vmin=0.0, vmax=vmax)
        ax.set_yscale("log")
        ticks = [f for f in (16, 32, 64, 128, 256, 512, 1024) if freqs[0] <= f <= freqs[-1] * 1.01]
        ax.set_yticks(ticks, [str(f) for f in ticks])
        ax.minorticks_off()
        ax.set_ylabel(f"{det}\nfrequency (Hz)")
        axes[d, 1].plot(t, strain[d], lw=0.5, color="0.3")
        axes[d, 1].set_ylabel("strain")
        axes[d, 2].plot(t, whitened[d], lw=0.5, color="tab:blue")
        axes[d, 2].set_ylabel("whitened")
    fig.colorbar(mesh, ax=axes[:, 0], label="|CQT| (whitened)", location="left", pad=0.02)
    axes[0, 0].set_title("constant-Q transform")
    axes[0, 1].set_title("raw strain")
    axes[0, 2].set_title("whitened strain")
    for ax in axes[-1]:
        ax.set_xlabel("time (s)")
    if merger_time is not None:
        for ax in axes.flat:
            ax.axvline(merger_time, color="tab:red", ls="--", lw=0.8, alpha=0.8)
    if title:
        fig.suptitle(title)
    return _save(fig, out)


def _find_split(root: Path, sample_id: str) -> str:
    for split in layout.SPLITS:
        if layout.sample_path(root, split, sample_id).is_file():
            return split
    raise layout.DataError(f"{root}: no train or test file for id {sample_id}")


def preview_transform(cache: str | Path | None = None, run: str | Path | None = None):
    """The whiten + CQT transform and its ``transform`` dict: the one recorded with a trained
    model (``run``, a fold directory) or the one that made a cache (``cache``, its train store's
    config and PSD)."""
    import torch

    from data import store as zstore
    from data.config import from_dict
    from data.rundir import read_card
    from infer.predict.checkpoints import Fold
    from infer.predict.inputs import build_transform
    from preprocess.config import PreprocessConfig
    from preprocess.transforms import Transform

    if run is not None:
        fold = Fold(path=Path(run), card=read_card(Path(run)), model=torch.nn.Identity())
        return build_transform(fold), fold.card.transform
    if cache is None:
        raise ValueError("give --cache (a preprocessed cache) or --run (a trained fold)")
    path = Path(cache)
    if not (path / "zarr.json").is_file():
        path = path / "train.zarr"
    g = zstore.open_store(path)
    cfg = from_dict(PreprocessConfig, dict(g.attrs["config"]))
    psd = zstore.read_psd(g)  # checked against the store's recorded hash
    return Transform.from_config(cfg.whiten, cfg.cqt, psd), dict(g.attrs["transform"])


def cqt_preview(
    data: str | Path,
    sample_id: str,
    out: str | Path,
    cache: str | Path | None = None,
    run: str | Path | None = None,
    note: str = "",
    merger_time: float | None = None,
) -> Path:
    """Read sample ``sample_id`` of the data set at ``data`` (train or test), transform it with
    the cache's or the run's transform, and draw :func:`plot_cqt` (``note`` joins the title)."""
    import torch

    root = Path(data)
    split = _find_split(root, sample_id)
    strain = layout.load_sample(layout.sample_path(root, split, sample_id))
    transform, _ = preview_transform(cache, run)
    with torch.inference_mode():
        images, waves = transform.eval()(torch.from_numpy(np.array(strain))[None])
    title = f"{split} sample {sample_id}" + (f": {note}" if note else "")
    return plot_cqt(strain, images[0].float().numpy(), waves[0].float().numpy(),
                    transform.cqt.frequencies, transform.cqt.frame_times(strain.shape[-1]), out,
                    title, merger_time)


# ---------------------------------------------------------------------------------------------
# Training curves


def plot_run_curves(run: str | Path, out: str | Path | None = None) -> Path:
    """Loss (train, val), validation AUC and learning rate per epoch from ``run/history.csv``
    (the figure training draws, :func:`data.rundir.plot_curves`)."""
    run = Path(run)
    return rundir.plot_curves(rundir.read_history(run / rundir.HISTORY_FILE),
                              out or run / "curves.png", title=str(run))


# ---------------------------------------------------------------------------------------------
# ROC and AUC vs SNR


def roc_curve(target: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct threshold, from (0, 0) to (1, 1)."""
    order = np.argsort(-np.asarray(score, dtype=np.float64), kind="stable")
    s, y = np.asarray(score)[order], np.asarray(target)[order]
    last = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]  # end of each run of equal scores
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    return (np.r_[0, fp / max(fp[-1], 1)], np.r_[0, tp / max(tp[-1], 1)])


def plot_roc(target: np.ndarray, scores: dict[str, np.ndarray], out: str | Path,
             aucs: dict[str, float | None] | None = None) -> Path:
    """ROC curves of several scores (e.g. {"model": pred, "oracle": oracle}) on one plot."""
    fig, ax = plt.subplots(figsize=(5.5, 5), layout="constrained")
    for name, s in scores.items():
        fpr, tpr = roc_curve(target, s)
        auc = (aucs or {}).get(name)
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc:.4f})" if auc is not None else name)
    ax.plot([0, 1], [0, 1], ":", color="0.5", label="chance")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_aspect("equal")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return _save(fig, out)


def plot_auc_vs_snr(result: dict, out: str | Path) -> Path:
    """AUC per SNR bin (model and oracle) from :func:`infer.score.score`'s result."""
    bins = result["snr_bins"]
    if not bins:
        raise layout.DataError("no SNR bins to plot (the truth file has no snr column)")
    labels = [f"{b['lo']:g}–{b['hi']:g}" if b["hi"] is not None else f"{b['lo']:g}+" for b in bins]
    x = np.arange(len(bins))

    def values(key):
        return np.array([b[key] if b[key] is not None else np.nan for b in bins], dtype=float)

    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    ax.plot(x, values("auc"), "o-", lw=2.2, label=f"model (all: {_fmt(result['auc'])})")
    for name, auc in result.get("others", {}).items():
        ys = np.array([b["others"].get(name) if b.get("others", {}).get(name) is not None
                       else np.nan for b in bins], dtype=float)
        ax.plot(x, ys, "^:" if name == "bank" else ".-", lw=1.2,
                label=f"{name} (all: {_fmt(auc)})")
    if result.get("oracle_auc") is not None:
        ax.plot(x, values("oracle_auc"), "s--", label=f"oracle (all: {_fmt(result['oracle_auc'])})")
    for xi, b in zip(x, bins):
        ax.annotate(f"n={b['n_pos']}", (xi, 0.5), textcoords="offset points", xytext=(0, 4),
                    ha="center", fontsize=8, color="0.4")
    ax.axhline(0.5, color="0.7", lw=0.8)
    ax.set_xticks(x, labels)
    ax.set_ylim(0.45, 1.01)
    ax.set_xlabel("network SNR of the signals (every noise sample is a negative in every bin)")
    ax.set_ylabel("ROC AUC")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=2, frameon=False)
    ax.grid(alpha=0.3)
    return _save(fig, out)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def plots_for_scores(ids, pred, truth, result: dict, out_dir: str | Path) -> dict[str, Path]:
    """``roc.png`` and (with an snr column) ``auc_vs_snr.png`` in ``out_dir``."""
    from infer.score import align_truth

    out_dir = Path(out_dir)
    t = align_truth(truth, ids, "truth")
    scores = {"model": np.asarray(pred)}
    aucs = {"model": result["auc"], "oracle": result["oracle_auc"]}
    if "oracle" in t:
        scores["oracle"] = t["oracle"]
    paths = {"roc": plot_roc(t["target"], scores, out_dir / "roc.png", aucs)}
    if result["snr_bins"]:
        paths["auc_vs_snr"] = plot_auc_vs_snr(result, out_dir / "auc_vs_snr.png")
    return paths


# ---------------------------------------------------------------------------------------------
# Searches over long strain (infer.search)


def plot_timeline(times: np.ndarray, scores: np.ndarray, trigger_times: np.ndarray,
                  trigger_scores: np.ndarray, injection_times: np.ndarray | None,
                  injection_found: np.ndarray | None, out: str | Path, t0: float,
                  statistic: str = "ranking statistic (ensemble logit)") -> Path:
    """Zero-lag window scores against time (each at its window's trigger time, s from GPS
    ``t0``), the triggers as dots, injections as vertical lines (green: found at the strictest
    FAR threshold, red: not)."""
    fig, ax = plt.subplots(figsize=(12, 4), layout="constrained")
    order = np.argsort(times)
    ax.plot(times[order] - t0, scores[order], lw=0.6, color="0.4", label="windows")
    ax.plot(trigger_times - t0, trigger_scores, "o", ms=3, color="C0", label="triggers")
    if injection_times is not None:
        for i, t in enumerate(injection_times):
            found = injection_found is not None and bool(injection_found[i])
            ax.axvline(t - t0, color="C2" if found else "C3", lw=0.8, alpha=0.7,
                       label=("injection, found" if found else "injection, missed")
                       if i == 0 else None)
    ax.set_xlabel(f"time since GPS {t0:.0f} (s)")
    ax.set_ylabel(statistic)
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, out)


def plot_efficiency(snr: np.ndarray, found: dict[str, np.ndarray], analysed: np.ndarray,
                    bins: list[float], out: str | Path) -> Path:
    """Fraction of the analysed injections found, per network-SNR bin, one line per entry of
    ``found`` (label, e.g. "FAR <= 1/day" -> (n,) bool), with binomial 1-sigma error bars."""
    snr = np.asarray(snr)[analysed]
    edges = np.asarray(bins, dtype=float)
    which = np.digitize(snr, edges) - 1
    centres = 0.5 * (edges[:-1] + edges[1:])
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    for spec, flags in found.items():
        flags = np.asarray(flags)[analysed]
        n = np.array([(which == b).sum() for b in range(len(centres))])
        k = np.array([flags[which == b].sum() for b in range(len(centres))])
        has = n > 0
        eff = k[has] / n[has]
        err = np.sqrt(eff * (1 - eff) / n[has])
        ax.errorbar(centres[has], eff, yerr=err, marker="o", capsize=3,
                    label=spec)
    ax.set_xlim(edges[0], edges[-1])
    ax.set_xlabel("injected network SNR")
    ax.set_ylabel("fraction found")
    ax.set_ylim(-0.02, 1.05)
    ax.set_title(f"{int(analysed.sum())} injections analysed", fontsize=9)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return _save(fig, out)


# ---------------------------------------------------------------------------------------------
# CLI


PROG = "g2net-plots"


def main(argv: list[str] | None = None) -> None:
    """The console entry point: draws one picture and prints its path; returns None."""
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("cqt", help="CQT preview of one sample beside its raw and whitened strain")
    p.add_argument("--data", type=Path, required=True, help="data set root (Kaggle layout)")
    p.add_argument("--id", required=True, help="sample id (train or test)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--cache", type=Path, help="preprocessed cache (or its train.zarr)")
    src.add_argument("--run", type=Path, help="a trained fold directory (its recorded transform)")
    p.add_argument("--out", type=Path, help="PNG (default cqt_ID.png)")
    p = sub.add_parser("curves", help="training curves from history.csv")
    p.add_argument("--run", type=Path, required=True, help="fold directory")
    p.add_argument("--out", type=Path, help="PNG (default RUN/curves.png)")
    for name, default, what in (("roc", "roc.png", "ROC curve"),
                                ("snr", "auc_vs_snr.png", "AUC per SNR bin")):
        p = sub.add_parser(name, help=f"{what} of a submission against a truth file")
        p.add_argument("--submission", type=Path, required=True)
        p.add_argument("--truth", type=Path, required=True)
        p.add_argument("--out", type=Path, help=f"PNG (default next to the submission: {default})")
        p.add_argument("overrides", nargs="*", help="inference config key=value (snr_bins=...)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from infer.config import InferError

    with cli_errors(PROG, user_errors=(InferError,)):
        if args.command == "cqt":
            path = cqt_preview(args.data, args.id, args.out or Path(f"cqt_{args.id}.png"),
                               cache=args.cache, run=args.run)
        elif args.command == "curves":
            path = plot_run_curves(args.run, args.out)
        else:
            from data.config import load_config
            from infer.config import InferConfig
            from infer.score import align_truth, read_truth, score

            cfg = load_config(InferConfig, None, args.overrides)
            ids, pred = layout.read_labels(args.submission)
            truth = read_truth(args.truth)
            result = score(ids, pred, truth, cfg.snr_bins, str(args.truth))
            out_dir = args.submission.parent
            if args.command == "roc":
                t = align_truth(truth, ids, str(args.truth))
                scores = {"model": pred, **({"oracle": t["oracle"]} if "oracle" in t else {})}
                path = plot_roc(t["target"], scores, args.out or out_dir / "roc.png",
                                {"model": result["auc"], "oracle": result["oracle_auc"]})
            else:
                path = plot_auc_vs_snr(result, args.out or out_dir / "auc_vs_snr.png")
    print(path)


if __name__ == "__main__":
    main()
