"""``python -m infer`` / ``g2net-infer``: predict a test split with a fold ensemble; score it.

    python -m infer --runs runs/NAME --store CACHE/test.zarr --out submission.csv
                    [--sample-submission DIR/sample_submission.csv] [--truth truth.csv]
                    [--config configs/infer/default.yaml] [key=value ...]
    python -m infer --runs runs/NAME --data DIR --split test --out submission.csv ...
    accelerate launch -m infer ...           (several GPUs: each process predicts a share;
                                             one process per GPU, more is refused)

Writes ``--out`` (``id,target``: every id of sample_submission.csv in its order, if one is given
or found next to the data; else the input's order) and ``infer.yaml`` next to it (the resolved
config, checkpoints and inputs). With ``--truth``: ``metrics.json``, ``roc.png`` and
``auc_vs_snr.png`` next to ``--out``, and the AUC table on stdout.

Exit status (:mod:`data.cli`): 2 for inputs it cannot use (models, store, data, ids, config),
1 for a failed read or write (``OSError``), with one line ``g2net-infer: error: ...``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from data import devices, layout
from data.cli import cli_errors
from data.config import config_help, load_config, to_dict
from infer.config import InferConfig, InferError
from infer.predict.checkpoints import (
    check_store,
    load_folds,
)
from infer.predict.ensemble import fit_member_stack
from infer.predict.inputs import ensemble_transform, raw_inputs, store_inputs
from infer.predict.loop import predict
from infer.predict.submission import find_sample_submission, submission_order, write_submission

log = logging.getLogger(__name__)

PROG = "g2net-infer"
METRICS_FILE = "metrics.json"
CONFIG_FILE = "infer.yaml"


def run(
    out: str | Path,
    cfg: InferConfig,
    runs: str | Path | list | None = None,
    store: str | Path | None = None,
    data: str | Path | None = None,
    split: str = "test",
    sample_submission: str | Path | None = None,
    truth: str | Path | None = None,
    accelerator=None,
    progress: bool = True,
    bank: str | Path | None = None,
) -> dict:
    """Predict, write the submission (main process only) and, with ``truth``, score and plot.

    Exactly one of ``store`` (a finished image store) and ``data`` (a Kaggle-layout root,
    transformed on the fly with the models' recorded transform) is the input. ``runs``: one run
    directory or several (an ensemble of runs: CQT and 1D models may be mixed), each ensembling
    its folds. ``bank``: a matched-filter submission (:mod:`infer.matched_filter`) scored beside
    the models with ``truth``. Returns a summary: ``submission``, ``n``, ``n_invalid``,
    ``folds``, ``members``, ``views``, ``seconds``, ``samples_per_s``, ``stack`` (fitted
    weights, if any) and, with ``truth``, ``metrics``.
    """
    from accelerate import Accelerator

    if (store is None) == (data is None):
        raise InferError("give exactly one input: --store CACHE/test.zarr or --data DIR")
    accelerator = accelerator or Accelerator()
    if accelerator.device.type == "cuda":
        # Accelerate's group on CUDA is NCCL, which cannot share a GPU between processes
        # (preprocessing's gloo group can: run more I/O processes there).
        devices.check_one_process_per_gpu(devices.local_world_size(),
                                          devices.cuda_device_count())
    out = Path(out)
    run_list = [None] if runs is None else list(runs) if isinstance(runs, (list, tuple)) else [runs]
    folds = load_folds(run_list, cfg.checkpoints)
    member_names = ([str(r) for r in run_list] if run_list != [None]
                    else ["checkpoints"])
    stack = None
    if len(run_list) > 1 and cfg.members == "stack":
        stack = fit_member_stack([Path(r) for r in run_list], folds)
        log.info("stack weights %s, bias %.3f (fitted on %d out-of-fold samples)",
                 np.round(stack.weights, 4).tolist(), stack.bias, stack.n_fit)
    share = dict(rank=accelerator.process_index, world_size=accelerator.num_processes)
    transform = None
    kinds = tuple(sorted({f.card.input for f in folds}))
    if store is not None:
        inputs = store_inputs(store, cfg.batch_size, **share, arrays=kinds)
        check_store(folds, inputs.attrs, store)
        if sample_submission is None:
            sample_submission = find_sample_submission(inputs.attrs, None)
    else:
        inputs = raw_inputs(data, split, cfg.batch_size, **share)
        transform = ensemble_transform(folds)
        if sample_submission is None and split == "test":
            sample_submission = find_sample_submission(None, data)
    source = inputs.source
    if accelerator.is_main_process:
        log.info("%d checkpoint(s): %s; %d samples from %s", len(folds),
                 ", ".join(f.name for f in folds), len(inputs.ids), source)

    # Everything that can refuse the inputs does so before the (long) prediction.
    ids, order = inputs.ids, np.arange(len(inputs.ids))
    if sample_submission is not None:
        ids, _ = layout.read_labels(sample_submission)
        order = submission_order(inputs.ids, ids, source, str(sample_submission))
    truth_table = None
    if truth is not None:
        from infer.score import align_truth, read_truth

        truth_table = read_truth(truth)
        align_truth(truth_table, ids, str(truth))
    bank_scores = None
    if bank is not None:
        if truth is None:
            raise InferError("--bank is scored beside the models: give --truth too")
        bank_ids, bank_values = layout.read_labels(bank)
        bank_scores = bank_values[submission_order(bank_ids, ids, str(bank), "the predictions")]

    start = time.perf_counter()
    pred = predict(folds, inputs, cfg, accelerator, transform=transform, progress=progress,
                   stack=stack)
    seconds = time.perf_counter() - start
    target = pred.target[order]
    summary = {
        "submission": str(out),
        "n": len(ids),
        "n_invalid": int((~pred.valid).sum()),
        "folds": pred.folds,
        "members": member_names,
        "stack": (None if stack is None else
                  {"weights": stack.weights.tolist(), "bias": stack.bias, "n_fit": stack.n_fit}),
        "views": ["+".join(v) or "identity" for v in pred.views],
        "seconds": seconds,
        "samples_per_s": len(ids) / seconds if seconds > 0 else None,
    }
    if accelerator.is_main_process:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_submission(out, ids, target)
        (out.parent / CONFIG_FILE).write_text(yaml.safe_dump({
            "config": to_dict(cfg),
            "checkpoints": pred.folds,
            "input": source,
            "sample_submission": str(sample_submission) if sample_submission else None,
            "submission": str(out),
            "num_processes": accelerator.num_processes,
        }, sort_keys=False))
        if truth_table is not None:
            others = {}
            if len(member_names) > 1:
                others = {_short(name, member_names): pred.members[m][order]
                          for m, name in enumerate(member_names)}
            if bank_scores is not None:
                others["bank"] = bank_scores
            summary["metrics"] = score_submission(ids, target, truth_table, str(truth), cfg,
                                                  out.parent, others)
    accelerator.wait_for_everyone()
    return summary


def _short(name: str, names: list[str]) -> str:
    """A run directory's last component, if that tells the members apart."""
    last = [Path(n).name for n in names]
    return Path(name).name if len(set(last)) == len(last) else name


def score_submission(ids, target, table: dict, truth_name: str, cfg: InferConfig,
                     out_dir: Path, others: dict | None = None) -> dict:
    """Score against a truth table (:func:`infer.score.read_truth`), with ``others`` (named
    scores of the same ids: ensemble members, the matched-filter bank) beside the prediction,
    and write ``metrics.json``, ``roc.png`` and ``auc_vs_snr.png`` in ``out_dir``."""
    from infer.plots import plots_for_scores
    from infer.score import score

    result = score(ids, np.asarray(target), table, cfg.snr_bins, truth_name, others)
    result["truth"] = truth_name
    result["plots"] = {k: str(v) for k, v in
                       plots_for_scores(ids, target, table, result, out_dir).items()}
    (out_dir / METRICS_FILE).write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> None:
    """The console entry point; returns None (``sys.exit(main())`` must mean success)."""
    ap = argparse.ArgumentParser(
        prog=PROG,
        description="Predict a G2Net test split with an ensemble of trained folds.",
        epilog=config_help(InferConfig),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--runs", type=Path, nargs="+",
                    help="run directory (runs/NAME with fold*/) or one fold; several: an "
                         "ensemble of runs (members=mean|rank|stack)")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--store", type=Path, help="preprocessed image store, e.g. CACHE/test.zarr")
    src.add_argument("--data", type=Path, help="raw data set root (Kaggle layout)")
    ap.add_argument("--split", default="test", choices=layout.SPLITS, help="with --data")
    ap.add_argument("--out", type=Path, required=True, help="submission CSV to write")
    ap.add_argument("--sample-submission", type=Path,
                    help="ids and order of the submission (default: found next to the data)")
    ap.add_argument("--truth", type=Path, help="CSV with id,target[,snr,oracle] to score against")
    ap.add_argument("--bank", type=Path,
                    help="matched-filter submission (python -m infer.matched_filter) to score "
                         "beside the models (with --truth)")
    ap.add_argument("--config", type=Path, help="inference config YAML")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    ap.add_argument("overrides", nargs="*", help="config overrides key=value")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from accelerate import Accelerator

    accelerator = Accelerator()
    with cli_errors(PROG, user_errors=(InferError,)):
        cfg = load_config(InferConfig, args.config, args.overrides)
        summary = run(
            args.out, cfg, runs=args.runs, store=args.store, data=args.data, split=args.split,
            sample_submission=args.sample_submission, truth=args.truth, bank=args.bank,
            accelerator=accelerator, progress=not args.quiet,
        )
    accelerator.print(
        f"{summary['n']} predictions ({summary['n_invalid']} invalid -> 0.5) from "
        f"{len(summary['folds'])} checkpoint(s) x {len(summary['views'])} view(s) in "
        f"{summary['seconds']:.1f} s ({summary['samples_per_s'] or 0:.0f} samples/s) -> "
        f"{summary['submission']}"
    )
    if "metrics" in summary:
        from infer.score import format_scores

        m = summary["metrics"]
        accelerator.print(format_scores(m))
        accelerator.print(f"metrics and plots: {args.out.parent / METRICS_FILE}, "
                          + ", ".join(m["plots"].values()))


if __name__ == "__main__":
    main(sys.argv[1:])
