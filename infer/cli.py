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
from data.config import ConfigError, load_config, to_dict
from data.modelcard import CardError
from data.store import StoreError
from infer.config import InferConfig
from infer.predict import (
    InferError,
    build_transform,
    check_folds,
    check_store,
    find_checkpoints,
    find_sample_submission,
    load_fold,
    predict,
    raw_inputs,
    store_inputs,
    submission_order,
    write_submission,
)

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
CONFIG_FILE = "infer.yaml"


def run(
    out: str | Path,
    cfg: InferConfig,
    runs: str | Path | None = None,
    store: str | Path | None = None,
    data: str | Path | None = None,
    split: str = "test",
    sample_submission: str | Path | None = None,
    truth: str | Path | None = None,
    accelerator=None,
    progress: bool = True,
) -> dict:
    """Predict, write the submission (main process only) and, with ``truth``, score and plot.

    Exactly one of ``store`` (a finished image store) and ``data`` (a Kaggle-layout root,
    transformed on the fly with the models' recorded transform) is the input. Returns a summary:
    ``submission``, ``n``, ``n_invalid``, ``folds``, ``views``, ``seconds``, ``samples_per_s``
    and, with ``truth``, ``metrics``.
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
    folds = [load_fold(d) for d in find_checkpoints(runs, cfg.checkpoints)]
    check_folds(folds)
    share = dict(rank=accelerator.process_index, world_size=accelerator.num_processes)
    transform = None
    if store is not None:
        inputs = store_inputs(store, cfg.batch_size, **share)
        check_store(folds, inputs.attrs, store)
        if sample_submission is None:
            sample_submission = find_sample_submission(inputs.attrs, None)
    else:
        inputs = raw_inputs(data, split, cfg.batch_size, **share)
        transform = build_transform(folds[0])  # check_folds: every fold has this transform
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

    start = time.perf_counter()
    pred = predict(folds, inputs, cfg, accelerator, transform=transform, progress=progress)
    seconds = time.perf_counter() - start
    target = pred.target[order]
    summary = {
        "submission": str(out),
        "n": len(ids),
        "n_invalid": int((~pred.valid).sum()),
        "folds": pred.folds,
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
            summary["metrics"] = score_submission(ids, target, truth_table, str(truth), cfg,
                                                  out.parent)
    accelerator.wait_for_everyone()
    return summary


def score_submission(ids, target, table: dict, truth_name: str, cfg: InferConfig,
                     out_dir: Path) -> dict:
    """Score against a truth table (:func:`infer.score.read_truth`) and write
    ``metrics.json``, ``roc.png`` and ``auc_vs_snr.png`` in ``out_dir``."""
    from infer.plots import plots_for_scores
    from infer.score import score

    result = score(ids, np.asarray(target), table, cfg.snr_bins, truth_name)
    result["truth"] = truth_name
    result["plots"] = {k: str(v) for k, v in
                       plots_for_scores(ids, target, table, result, out_dir).items()}
    (out_dir / METRICS_FILE).write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(
        prog="g2net-infer",
        description="Predict a G2Net test split with an ensemble of trained folds.",
    )
    ap.add_argument("--runs", type=Path, help="run directory (runs/NAME with fold*/) or one fold")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--store", type=Path, help="preprocessed image store, e.g. CACHE/test.zarr")
    src.add_argument("--data", type=Path, help="raw data set root (Kaggle layout)")
    ap.add_argument("--split", default="test", choices=layout.SPLITS, help="with --data")
    ap.add_argument("--out", type=Path, required=True, help="submission CSV to write")
    ap.add_argument("--sample-submission", type=Path,
                    help="ids and order of the submission (default: found next to the data)")
    ap.add_argument("--truth", type=Path, help="CSV with id,target[,snr,oracle] to score against")
    ap.add_argument("--config", type=Path, help="inference config YAML")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    ap.add_argument("overrides", nargs="*", help="config overrides key=value")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from accelerate import Accelerator

    accelerator = Accelerator()
    try:
        cfg = load_config(InferConfig, args.config, args.overrides)
        summary = run(
            args.out, cfg, runs=args.runs, store=args.store, data=args.data, split=args.split,
            sample_submission=args.sample_submission, truth=args.truth,
            accelerator=accelerator, progress=not args.quiet,
        )
    except (InferError, StoreError, layout.DataError, ConfigError, CardError) as e:
        ap.exit(2, f"{ap.prog}: error: {e}\n")
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
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
