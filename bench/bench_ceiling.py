"""How high can any detector's AUC go on a synthetic set? Upper bounds from the likelihood ratio.

    .venv/bin/python bench/bench_ceiling.py --data quality-data/data --out runs/ceiling
        [--split test] [--limit N] [--jobs 2] [--compare NAME=SUBMISSION.csv ...]

The oracle (``truth.csv``) is a search statistic with the true template; it is not a bound. A
bound is the Neyman-Pearson one: the likelihood ratio of the data computed by a detector that
is *told* each sample's source (for a noise sample, the source the generator drew for its oracle
template, which is independent of its data). No statistic of the data alone beats it at any
false-alarm rate, so no model's AUC can exceed its AUC on the same samples. Two such detectors:

- ``genie_all``: told everything (masses, spins, sky, polarisation, phase, distance, merger
  time): ln L at the true template (:func:`data.sim.likelihood.log_likelihood_ratio`);
- ``genie_time``: told everything but the merger time, which it averages over the generator's
  prior, uniform in 1.3-1.9 s (:func:`data.sim.likelihood.time_marginal_log_likelihood_ratio`);
- ``genie_time_snr``: told neither the merger time nor the network SNR (for a set whose SNR
  distribution is uniform), averaging over both priors.

Every detector that works from the data alone knows less than ``genie_time_snr``, so its AUC,
and that of every model, bank and ensemble, lies below ``genie_time_snr``'s (to the accuracy of
Whittle's approximation of the Gaussian likelihood, which the oracle uses too). The genies'
knowledge of the amplitude matters: a noise sample whose drawn template is loud is easy to
call noise for a detector expecting that template at that SNR, so ``genie_all`` and
``genie_time`` are much looser bounds than ``genie_time_snr``.

The samples are regenerated from the set's ``synth.yaml`` (seed and sizes) and every
regenerated strain is checked against its file on disk, so the bound is for the very samples
the models are scored on. Writes OUT/genie_all.csv, OUT/genie_time.csv, OUT/genie_time_snr.csv
(submission-shaped: ``id,target`` = ln L) and OUT/ceiling.json (the scores overall and per SNR
bin, beside the oracle and each ``--compare`` submission), and prints the table.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data import layout  # noqa: E402
from data.progress import progress_bar  # noqa: E402
from data.sim import likelihood, physics, samples  # noqa: E402
from infer.config import InferConfig  # noqa: E402
from infer.predict.submission import submission_order  # noqa: E402
from infer.score import align_truth, format_scores, read_truth, score  # noqa: E402


def genie_statistics(args: tuple[str, samples.PlannedSample, str]) -> tuple[float, ...]:
    """ln L of one sample told everything; everything but the merger time; and (for a uniform
    SNR distribution, else NaN) everything but the merger time and the SNR."""
    root, item, snr = args
    snr = samples.parse_snr(snr)
    sample = samples.make_sample(np.random.default_rng(item.seed), item.target, snr)
    on_disk = layout.load_sample(layout.sample_path(root, item.split, item.id))
    if not np.array_equal(on_disk, sample.strain):
        raise SystemExit(
            f"{item.id}: the regenerated strain differs from the file on disk; the set was made "
            "with other settings or another lalsuite than this one (see its synth.yaml)"
        )
    scale = physics.REFERENCE_DISTANCE_MPC / sample.distance
    network_snr = float(np.sqrt(np.sum(sample.snr**2)))  # the drawn SNR of its template
    known = likelihood.log_likelihood_ratio(sample.strain, sample.signal[None])[0]
    times = samples.MERGER_TIME_RANGE
    no_time = likelihood.time_marginal_log_likelihood_ratio(sample.strain, sample.source, scale,
                                                            times)
    no_snr = (likelihood.time_marginal_log_likelihood_ratio(sample.strain, sample.source, scale,
                                                            times, snr_range=snr.params,
                                                            network_snr=network_snr)
              if snr.kind == "uniform" else float("nan"))
    return float(known), no_time, no_snr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="the synthetic set (with truth.csv)")
    ap.add_argument("--out", required=True, help="directory for the CSVs and ceiling.json")
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=None, help="only the first N samples")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes")
    ap.add_argument("--compare", nargs="*", default=[], metavar="NAME=CSV",
                    help="submissions of the same samples to score beside the bounds")
    args = ap.parse_args()

    root = Path(args.data)
    meta = yaml.safe_load((root / "synth.yaml").read_text())
    split = [i for i in samples.plan(meta["seed"], meta["n_train"], meta["n_test"])
             if i.split == args.split]
    items = split[: args.limit]
    if not items:
        raise SystemExit(f"{root}: split {args.split} has no samples")
    truth = read_truth(root / "truth.csv")
    ids = [i.id for i in items]
    align_truth(truth, ids, "truth.csv")  # before the long part
    others = {}
    for spec in args.compare:  # each a submission of the whole split; its first --limit rows
        name, _, path = spec.partition("=")
        sub_ids, values = layout.read_labels(path)
        order = submission_order(sub_ids, [i.id for i in split], path, f"split {args.split}")
        others[name] = values[order][: len(ids)]

    start = time.perf_counter()
    work = [(str(root), item, meta["snr"]) for item in items]
    stats = []
    with multiprocessing.Pool(args.jobs) as pool, progress_bar(
            total=len(work), desc="likelihood ratios", unit="sample", dynamic_ncols=True) as bar:
        for item in pool.imap(genie_statistics, work, chunksize=16):
            stats.append(item)
            bar.update(1)
    seconds = time.perf_counter() - start
    genies = dict(zip(("genie_all", "genie_time", "genie_time_snr"),
                      (np.asarray(x) for x in zip(*stats))))
    if np.isnan(genies["genie_time_snr"]).all():
        del genies["genie_time_snr"]  # the set's SNR distribution is not uniform
    tightest = list(genies)[-1]

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, values in genies.items():
        layout.write_labels(out / f"{name}.csv", ids, [repr(float(v)) for v in values])
    bound = genies.pop(tightest)
    result = score(ids, bound, truth, InferConfig().snr_bins, "truth.csv",
                   others={**genies, **others})
    result["model_name"] = tightest
    result.update(data=str(root), split=args.split, seconds=round(seconds, 1), jobs=args.jobs)
    (out / "ceiling.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{len(ids)} samples in {seconds:.0f} s; 'model' below is {tightest}")
    print(format_scores(result))


if __name__ == "__main__":
    main()
