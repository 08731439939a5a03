"""``g2net-matched-filter`` / ``python -m infer.matched_filter``: the bank's statistic for every
sample of a split, written like a submission and scored like a model.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from data import devices, layout
from data.progress import progress_bar
from infer.matched_filter.bank import (
    APPROXIMANT,
    DEFAULT_MIN_MATCH,
    DEFAULT_SPIN_MAX,
    DEFAULT_TIME_STEP,
    MatchedFilterError,
    build_bank,
    check_placement,
    lal_modules,
)
from infer.matched_filter.filter import bank_statistic, fitting_factors
from preprocess.config import WhitenConfig
from preprocess.psd import training_psd

log = logging.getLogger(__name__)


def _injections(n: int, seed: int) -> np.ndarray:
    """``n`` noise-free signals drawn from the generator's prior: (n, 3, 4096) strain."""
    _, _, physics = lal_modules()
    from data.sim.samples import draw_source

    rng = np.random.default_rng(seed)
    return np.stack([physics.project(draw_source(rng)) for _ in range(n)])


def _summary_stats(x: np.ndarray) -> dict:
    return {"median": float(np.median(x)), "p10": float(np.percentile(x, 10)),
            "min": float(np.min(x)), "n": int(x.size)}


def run(
    data: str | Path,
    out: str | Path,
    split: str = "test",
    truth: str | Path | None = None,
    min_match: float = DEFAULT_MIN_MATCH,
    spin_max: float = DEFAULT_SPIN_MAX,
    time_step: int = DEFAULT_TIME_STEP,
    n_psd: int | None = None,
    device: str = "auto",
    batch_size: int = 16,
    template_chunk: int = 64,
    n_fitting: int = 0,
    seed: int = 0,
    snr_bins: list[float] | None = None,
    report: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Filter every sample of ``split`` with the bank; write ``out`` (``id,target``, target =
    the network SNR statistic, in label-file order: ``sample_submission.csv`` for test).

    With ``truth``: score like a model (:func:`infer.score.score`). With ``n_fitting``: the
    bank's fitting factors on that many injections from the prior. Returns a JSON-able summary
    (also written to ``report`` if given).
    """
    from infer.score import align_truth, read_truth, score

    check_placement(min_match, spin_max)
    data = Path(data)
    if not data.is_dir():
        raise MatchedFilterError(f"{data}: data directory does not exist")
    dev = devices.process_device(device)
    lal_modules()  # fail before reading anything
    index = layout.build_index(data, split)
    if len(index) == 0:
        raise MatchedFilterError(f"{data}: split {split} has no samples")
    table = None
    if truth is not None:
        table = read_truth(truth)
        align_truth(table, index.ids, str(truth))

    start = time.perf_counter()
    whiten = WhitenConfig()  # stage one's defaults: its PSD, exactly
    psd, n_used = training_psd(layout.build_index(data, "train", check_files=False),
                               whiten.n_psd if n_psd is None else n_psd, whiten.alpha)
    t_psd = time.perf_counter() - start
    bank = build_bank(psd, device=dev, time_step=time_step, min_match=min_match,
                      spin_max=spin_max, seed=seed)
    t_bank = time.perf_counter() - start - t_psd
    log.info("bank: %d templates in %.1f s (PSD from %d target-0 samples in %.1f s)",
             len(bank), t_bank, n_used, t_psd)

    stat = np.empty(len(index))
    filter_start = time.perf_counter()
    with progress_bar(total=len(index), desc=f"matched filter {split}", unit="sample",
                      disable=not progress, dynamic_ncols=True) as bar:
        for lo in range(0, len(index), batch_size):
            rows = range(lo, min(lo + batch_size, len(index)))
            x = np.stack([layout.load_sample(index.path(i)) for i in rows])
            stat[lo : lo + len(rows)] = bank_statistic(x, bank, template_chunk)
            bar.update(len(rows))
    filter_seconds = time.perf_counter() - filter_start
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    layout.write_labels(out, index.ids, [repr(float(s)) for s in stat])

    summary = {
        "submission": str(out),
        "data": str(data),
        "split": split,
        "n": len(index),
        "device": str(dev),
        "bank": {"n_templates": len(bank), "approximant": APPROXIMANT, "min_match": min_match,
                 "spin_max": spin_max, "seed": seed, "time_step": time_step,
                 "seconds": round(t_bank, 2)},
        "psd": {"n_samples": n_used, "seconds": round(t_psd, 2)},
        "filter_seconds": round(filter_seconds, 2),
        "samples_per_s": round(len(index) / filter_seconds, 2) if filter_seconds > 0 else None,
    }
    if n_fitting > 0:
        ff = fitting_factors(_injections(n_fitting, seed + 1), bank, template_chunk)
        summary["fitting_factor"] = {"detector": _summary_stats(ff["detector"].ravel()),
                                     "network": _summary_stats(ff["network"])}
    if table is not None:
        if snr_bins is None:
            from infer.config import InferConfig

            snr_bins = InferConfig().snr_bins
        summary["metrics"] = score(index.ids, stat, table, snr_bins, str(truth))
    if report is not None:
        Path(report).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> None:
    """The console entry point; returns None (``sys.exit(main())`` must mean success)."""
    ap = argparse.ArgumentParser(
        prog="g2net-matched-filter",
        description="Matched-filter search over an IMRPhenomD template bank: the realistic "
        "detection ceiling of a G2Net-layout data set (the oracle knows each signal).",
    )
    ap.add_argument("--data", type=Path, required=True, help="data set root (Kaggle layout)")
    ap.add_argument("--split", default="test", choices=layout.SPLITS)
    ap.add_argument("--out", type=Path, required=True, help="submission CSV to write (id,target)")
    ap.add_argument("--truth", type=Path, help="truth.csv to score against (AUC per SNR bin)")
    ap.add_argument("--min-match", type=float, default=DEFAULT_MIN_MATCH,
                    help="bank density: the match every placed point of the prior has with "
                    f"some template; sets the bank size (default {DEFAULT_MIN_MATCH})")
    ap.add_argument("--spin-max", type=float, default=DEFAULT_SPIN_MAX,
                    help="aligned spin of the templates within +-this; 0 = non-spinning "
                    f"(default {DEFAULT_SPIN_MAX})")
    ap.add_argument("--seed", type=int, default=0, help="template placement seed")
    ap.add_argument("--time-step", type=int, default=DEFAULT_TIME_STEP, choices=(1, 2),
                    help="samples between the merger times searched: 1, or 2 (half the FFT "
                    f"work, same AUC) (default {DEFAULT_TIME_STEP})")
    ap.add_argument("--n-psd", type=int, default=None,
                    help="target-0 training samples averaged into the PSD (default: the "
                    "preprocess default, 2000)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto)")
    ap.add_argument("--batch-size", type=int, default=16, help="samples per batch")
    ap.add_argument("--template-chunk", type=int, default=64, help="templates per batch")
    ap.add_argument("--fitting-factors", type=int, default=0, metavar="N",
                    help="also measure the bank's fitting factor on N injections from the prior")
    ap.add_argument("--report", type=Path, help="write the summary (bank, timing, AUC) as JSON")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for name in ("batch_size", "template_chunk"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    from data.cli import cli_errors
    from infer.config import InferError

    # One voice with every stage (data.cli): exit 2 for input it cannot use, 1 for a failed
    # read or write.
    with cli_errors(ap.prog, user_errors=(MatchedFilterError, InferError)):
        summary = run(
            args.data, args.out, split=args.split, truth=args.truth, min_match=args.min_match,
            spin_max=args.spin_max, time_step=args.time_step, n_psd=args.n_psd,
            device=args.device, batch_size=args.batch_size, template_chunk=args.template_chunk,
            n_fitting=args.fitting_factors, seed=args.seed, report=args.report,
            progress=not args.quiet,
        )
    print(f"{summary['n']} samples x {summary['bank']['n_templates']} templates in "
          f"{summary['filter_seconds']:.1f} s ({summary['samples_per_s']} samples/s on "
          f"{summary['device']}) -> {summary['submission']}")
    if "fitting_factor" in summary:
        d, n = summary["fitting_factor"]["detector"], summary["fitting_factor"]["network"]
        print(f"fitting factor on {n['n']} injections: per detector median {d['median']:.3f}, "
              f"10th percentile {d['p10']:.3f}; network median {n['median']:.3f}, "
              f"10th percentile {n['p10']:.3f}")
    if "metrics" in summary:
        from infer.score import format_scores

        print(format_scores(summary["metrics"]))
