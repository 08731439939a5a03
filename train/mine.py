"""Hard positives: the loud signals a trained model scores lowest, for the next run to meet
more often (``inject.hard_positives``), as hard negatives are the noise it scores highest.

Why: the search model misses a few loud signals (network SNR >= 15) that a matched filter
finds, and they are of kinds it rarely meets in training: light chirps (total mass under
30 Msun, 7 % of the bank's draws) and signals whose SNR sits mostly in one detector
(docs/search.md, "Where the rest is lost"). Drawing more of a kind for every SNR (e.g.
``inject.mass_power=-2``) traded quiet heavy signals for light ones. Mining asks the model
which loud sources it gets wrong, and the next run injects those sources (bank row, sky
position, polarisation angle, SNR; the merger time and the noise drawn afresh) as a share of
its signals: only loud ones, so the quiet signals the sensitive volume rests on keep their
share.

    python -m train.mine --run runs/search1d_cur --out hard_positives.csv

draws ``--n`` signals at SNRs from ``--snr`` with the run's own injection settings (its bank,
noise, whitening) and writes the ``--keep`` the run's model scored lowest, one row each:
``row, ra, dec, psi, snr, logit`` and the bank's source parameters. Shapes and units: see
:class:`data.inject.injector.Sources`.
"""

from __future__ import annotations

import argparse
import csv
import logging
from pathlib import Path

import torch

from data.config import ConfigError, load_config
from data.inject.bank import PARAMS
from data.inject.injector import Sources, batch_generator
from data.inject.snr import SNRPrior
from data.progress import progress_bar
from train.config import TrainConfig, TrainError

log = logging.getLogger("train.mine")

COLUMNS = ("row", "ra", "dec", "psi", "snr", "logit")
_MINE = 3  # the generators' key (training uses 1, validation 2): draws of their own


def _fold_dir(run: Path) -> Path:
    from infer.predict.checkpoints import find_checkpoints

    dirs = find_checkpoints(run)
    if len(dirs) > 1:
        log.warning("%s holds %d folds; mining with %s", run, len(dirs), dirs[0])
    return dirs[0]


@torch.no_grad()
def mine_positives(run: str | Path, n: int = 32768, keep: int = 2048,
                   snr: str = "uniform:12,50", seed: int = 0, batch_size: int = 256,
                   device: str | torch.device = "cpu", progress: bool = True) -> dict:
    """Score ``n`` signals injected at SNRs from ``snr`` with run ``run``'s model (its best
    weights, in eval mode, exactly as its validation scores them) and return the ``keep``
    lowest as columns: ``row, ra, dec, psi, snr, logit`` (each (keep,) numpy) and the bank's
    parameters of those rows (``mass1``, ...). The injections are the run's own (its
    ``inject`` settings, noise and whitening), every sample a coherent signal."""
    from infer.predict.checkpoints import load_fold
    from train import inject
    from train.engine import BatchTransform
    from train.fold import fold_rows, open_training_store

    if not 0 < keep <= n:
        raise TrainError(f"keep: need 0 < keep <= n ({n}), got {keep}")
    if batch_size < 1:
        raise TrainError(f"batch_size: need at least 1, got {batch_size}")
    fold_dir = _fold_dir(Path(run))
    try:
        cfg = load_config(TrainConfig, fold_dir / "config.yaml")
    except ConfigError as e:
        raise TrainError(f"{fold_dir}: {e}") from None
    if cfg.source == "store":
        raise TrainError(f"{run}: trained on a store without injections; mining needs the "
                         "run's inject settings (its bank and noise)")
    try:
        prior = SNRPrior.parse(snr)
    except ValueError as e:
        raise TrainError(f"snr: {e}") from None
    device = torch.device(device)
    fold = load_fold(fold_dir)
    model = fold.model.to(device)
    g = open_training_store(cfg.store)
    train_rows, _ = fold_rows(g, cfg.n_folds, cfg.fold_seed, cfg.fold)
    kind = fold.card.input
    injection = inject.build(cfg, g, kind, train_rows, device, rank=0)
    injector = injection.injector
    injector.snr = prior
    # The model's input as its card records it (its training's statistics and image size).
    card = fold.card
    to_input = BatchTransform(mean=tuple(card.channel_stats["mean"]),
                              std=tuple(card.channel_stats["std"]),
                              image_size=tuple(card.image_size) if card.image_size else None,
                              n_frames=int(g["images"].shape[-1]), kind=kind)
    parts: list[tuple[Sources, torch.Tensor]] = []
    bar = progress_bar(total=n, desc="mining", unit="signal", disable=not progress)
    for first in range(0, n, batch_size):
        m = min(batch_size, n - first)
        gen = batch_generator(seed, _MINE, first, device=injector.device)
        src = injector.draw(m, gen)
        x = injection.noise.batch(m, gen).to(torch.float32) + injector.render(src)
        logits = model(to_input(injection.to_stored(x))).squeeze(1).float()
        parts.append((src, logits))
        bar.update(m)
    bar.close()
    logit = torch.cat([p[1] for p in parts]).cpu()
    fields = {f: torch.cat([getattr(p[0], f) for p in parts]).cpu() for f in
              ("row", "ra", "dec", "psi", "snr")}
    order = torch.argsort(logit)[:keep]
    out = {f: v[order].numpy() for f, v in fields.items()}
    out["logit"] = logit[order].numpy()
    params = injector.bank_params[out["row"]]
    out.update({p: params[:, k] for k, p in enumerate(PARAMS)})
    log.info("mined %d of %d signals at SNR %s: logits %.2f to %.2f (all %d: median %.2f)",
             keep, n, snr, out["logit"][0], out["logit"][-1], n, float(logit.median()))
    return out


def write_positives(path: str | Path, mined: dict) -> None:
    """``mined`` (:func:`mine_positives`) as CSV, written whole or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = [*COLUMNS, *PARAMS]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for k in range(len(mined["row"])):
            w.writerow([int(mined["row"][k]), *(f"{float(mined[c][k]):.9g}" for c in cols[1:])])
    tmp.replace(path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m train.mine",
        description="Hard positives for inject.hard_positives: the loud signals a trained "
                    "run's model scores lowest, drawn with the run's own injection settings.")
    p.add_argument("--run", required=True, help="a trained run (or fold) directory")
    p.add_argument("--out", required=True, help="the CSV to write")
    p.add_argument("--n", type=int, default=32768, help="signals to draw and score")
    p.add_argument("--keep", type=int, default=2048, help="how many of the lowest to keep")
    p.add_argument("--snr", default="uniform:12,50",
                   help="their network SNRs (forms as inject.snr)")
    p.add_argument("--seed", type=int, default=0, help="the draws' seed")
    p.add_argument("--batch-size", type=int, default=256, help="signals per model call")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if any)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    from data.cli import cli_errors
    from infer.config import InferError

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    # Errors the user can fix (a run that cannot be mined, a bad --snr or --keep): exit 2.
    with cli_errors("g2net-mine-positives", user_errors=(TrainError, InferError)):
        mined = mine_positives(args.run, args.n, args.keep, args.snr, args.seed,
                               args.batch_size, device, progress=not args.quiet)
        write_positives(args.out, mined)
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
