"""``python -m infer.search.compare``: several searches of the same injections side by side, by
sensitive distance at false-alarm-rate thresholds (:mod:`infer.search.sensitivity`), with
paired-bootstrap intervals on their ratios.

    python -m infer.search.compare --searches neural=search_nn mf=search_mf \\
        --injections long/injections.csv [--snr-prior uniform:4,50] [--far 1/day 1/month 1/year] \\
        [--reference mf] [--bootstrap 2000] --out compare/

Several strains searched apart pool into one comparison: one injections file per strain, and
per search its directories in the same order, comma-separated
(``--searches neural=nn_a,nn_b mf=mf_a,mf_b --injections a/injections.csv b/injections.csv``).

Writes ``sensitivity.md`` (the table it prints, and found injections by network SNR and
total mass where the injections give mass1 and mass2), ``sensitivity.json`` and
``sensitivity.png`` into ``--out``. Exit status as every stage's (:mod:`data.cli`): 2 for
inputs it cannot use.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import yaml

from data.cli import cli_errors
from data.config import ConfigError
from infer.config import InferError
from infer.search.config import far_per_year
from infer.search.sensitivity import (
    DEFAULT_FAR,
    N_BOOTSTRAP,
    SearchInjections,
    compare_searches,
    efficiency,
    found_at,
    found_by_mass,
    sensitive_distance,
    sensitive_volume,
    uniform_prior,
)

PROG = "g2net-search-compare"
SYNTH_CONFIG = "synth_long.yaml"  # data.sim.long_strain.CONFIG_FILE, without importing lal
HOUR_PER_YEAR = far_per_year("1/hour")


def parse_searches(items: list[str]) -> dict[str, list[Path]]:
    """``["neural=a,b", "mf=c,d"]`` -> {"neural": [Path("a"), Path("b")], ...} (one directory
    per injections file); ConfigError if an item is not NAME=DIR[,DIR...] or a name repeats."""
    out = {}
    for item in items:
        name, sep, directories = item.partition("=")
        dirs = directories.split(",")
        if not sep or not name or not all(dirs):
            raise ConfigError(f"--searches {item!r}: expected NAME=DIR[,DIR...]")
        if name in out:
            raise ConfigError(f"--searches: the name {name!r} is given twice")
        out[name] = [Path(d) for d in dirs]
    return out


def snr_prior_beside(injections: Path) -> str:
    """The SNR distribution g2net-synth-long recorded in the synth_long.yaml beside its
    injections.csv; ConfigError naming the file when there is none."""
    path = injections.parent / SYNTH_CONFIG
    if not path.is_file():
        raise ConfigError(f"no --snr-prior given and no {path} beside the injections to read it "
                          "from: give --snr-prior uniform:LO,HI (g2net-synth-long's --snr)")
    snr = (yaml.safe_load(path.read_text()) or {}).get("snr")
    if not snr:
        raise ConfigError(f"{path}: no 'snr' key: give --snr-prior uniform:LO,HI")
    return str(snr)


def snr_prior_of(injections: list[Path]) -> str:
    """The one SNR distribution of every injections file's synth_long.yaml (a pooled volume
    needs one prior); ConfigError where they differ."""
    priors = {str(p): snr_prior_beside(p) for p in injections}
    if len(set(priors.values())) > 1:
        raise ConfigError("the injections were drawn from different SNR priors ("
                          + ", ".join(f"{p}: {v}" for p, v in priors.items())
                          + "): pool only injections of one prior")
    return next(iter(priors.values()))


def format_table(table: dict) -> str:
    """The markdown table: one row per FAR threshold and search."""
    ref = table["reference"]
    boot = table.get("bootstrap")
    level = f"{100 * boot['level']:g} %" if boot else ""
    lines = [f"| FAR | search | found / analysed | sensitive distance (Mpc) | ratio to {ref} |"
             + (f" {level} |" if boot else ""),
             "|---|---|---:|---:|---:|" + ("---:|" if boot else "")]
    for row in table["rows"]:
        for name, c in row["searches"].items():
            found = "—" if c["found"] is None else str(c["found"])
            dist = (f"{c['distance_mpc']:.1f} ± {c['distance_err_mpc']:.1f}" if c["resolved"]
                    else "— (not resolved)")
            ratio = "—" if c["ratio"] is None else f"{c['ratio']:.3f}"
            line = f"| {row['far']} | {name} | {found} / {c['analysed']} | {dist} | {ratio} |"
            if boot:
                ci = c.get("ratio_interval")
                line += f" {ci[0]:.3f}–{ci[1]:.3f} |" if ci else " — |"
            lines.append(line)
    diffs = [(row["far"], d) for row in table["rows"] for d in row.get("differences", [])]
    if diffs:  # each pair of other searches, measured on the same resampled injections
        lines += ["", f"| FAR | difference of ratios to {ref} | value | {level} |",
                  "|---|---|---:|---:|"]
        lines += [f"| {far} | {d['b']} − {d['a']} | {_signed(d['difference'])} | "
                  f"{_signed(d['interval'][0])} to {_signed(d['interval'][1])} |"
                  for far, d in diffs]
    return "\n".join(lines)


def _signed(x: float) -> str:
    """+0.012 or −0.012 (a typographic minus, as the table's "b − a")."""
    return f"{x:+.3f}".replace("-", "−")


def _bin_label(lo: float, hi: float) -> str:
    if lo == 0:
        return f"< {hi:g}"
    return f"≥ {lo:g}" if np.isinf(hi) else f"{lo:g}–{hi:g}"


def format_by_mass(by_mass: list[dict]) -> str:
    """Markdown: per threshold, found / analysed by network SNR (rows) and total mass."""
    blocks = []
    for t in by_mass:
        snr, mass = t["snr_bins"], t["mass_bins"]
        heads = [_bin_label(lo, hi) for lo, hi in zip(mass[:-1], mass[1:])]
        lines = [f"Found / analysed at FAR <= {t['far']}, by network SNR and total mass "
                 "(mass1 + mass2, Msun):", "",
                 "| search | network SNR | " + " | ".join(heads) + " |",
                 "|---|---|" + "---:|" * len(heads)]
        for name, c in t["searches"].items():
            for i, (lo, hi) in enumerate(zip(snr[:-1], snr[1:])):
                row = [f"{f} / {n}" for f, n in zip(c["found"][i], c["analysed"][i])]
                lines.append(f"| {name} | {_bin_label(lo, hi)} | " + " | ".join(row) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def plot(read: dict[str, SearchInjections], table: dict, snr_prior: str, out: Path) -> Path:
    """Left: fraction found vs network SNR per search and resolved threshold; right: sensitive
    distance vs FAR per search (log FAR from its resolution to 1/hour), with a 1-sigma band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lo, hi = uniform_prior(snr_prior)
    bins = np.linspace(lo, hi, 11)
    centres = 0.5 * (bins[:-1] + bins[1:])
    styles = ["-", "--", ":", "-."]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), layout="constrained")
    for k, (name, s) in enumerate(read.items()):
        colour = f"C{k}"
        a = s.analysed
        for i, row in enumerate(table["rows"]):
            if row["searches"][name]["resolved"]:
                found = found_at(s.far_per_year, a, row["far_per_year"])
                frac, _, err = efficiency(s.snr[a], found[a], bins)
                left.errorbar(centres, frac, yerr=err, color=colour, ls=styles[i % 4],
                              marker="o", ms=3, capsize=2, label=f"{name}, FAR <= {row['far']}")
        res = s.far_resolution_per_year
        if res is None or res > HOUR_PER_YEAR:
            continue
        fars = np.geomspace(res, HOUR_PER_YEAR, 40)
        dist = np.array([sensitive_distance(*sensitive_volume(
            s.snr[a], s.distance[a], found_at(s.far_per_year, a, f)[a], snr_prior))
            for f in fars])
        right.plot(fars, dist[:, 0], color=colour, label=name)
        right.fill_between(fars, dist[:, 0] - dist[:, 1], dist[:, 0] + dist[:, 1],
                           color=colour, alpha=0.25)
    for row in table["rows"]:  # the table's thresholds, for reading the curves there
        right.axvline(row["far_per_year"], color="0.6", ls=":", lw=1)
        right.annotate(row["far"], (row["far_per_year"], 1), xycoords=("data", "axes fraction"),
                       fontsize=7, color="0.4", ha="right", va="top", rotation=90)
    left.set(xlabel="injected network SNR", ylabel="fraction found", ylim=(-0.02, 1.05),
             title=f"SNR prior {snr_prior}")
    right.set(xscale="log", xlabel="FAR threshold (per year)",
              ylabel="sensitive distance (Mpc)", title="from each search's FAR resolution")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=8)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> None:
    """The console entry point; returns None."""
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    ap.add_argument("--searches", nargs="+", required=True, metavar="NAME=DIR[,DIR...]",
                    help="g2net-search --out directories (found.csv, summary.json), named; "
                         "one per injections file, comma-separated, to pool several strains")
    ap.add_argument("--injections", type=Path, nargs="+", required=True,
                    help="the injections.csv the searches looked for (with distance), one per "
                         "strain searched")
    ap.add_argument("--snr-prior", help="the injections' network-SNR distribution, "
                    "uniform:LO,HI; default: the snr of synth_long.yaml beside --injections")
    ap.add_argument("--bootstrap", type=int, default=N_BOOTSTRAP, metavar="N",
                    help="paired-bootstrap resamples for the ratios' 95 %% intervals "
                         f"(default {N_BOOTSTRAP}; 0: none)")
    ap.add_argument("--far", nargs="+", default=list(DEFAULT_FAR), metavar="N/UNIT",
                    help="FAR thresholds (default: 1/day 1/month 1/year)")
    ap.add_argument("--reference", help="the search the ratios are to (default: the first)")
    ap.add_argument("--out", type=Path, required=True, help="output directory")
    args = ap.parse_args(argv)
    with cli_errors(PROG, user_errors=(InferError,)):
        searches = parse_searches(args.searches)
        if args.bootstrap < 0:
            raise ConfigError(f"--bootstrap {args.bootstrap}: give 0 (none) or more")
        snr_prior = args.snr_prior or snr_prior_of(args.injections)
        table, read = compare_searches(searches, args.injections, snr_prior, args.far,
                                       args.reference, args.bootstrap)
        args.out.mkdir(parents=True, exist_ok=True)
        text = format_table(table)
        by_mass = found_by_mass(read, table)  # [] where the injections give no masses
        (args.out / "sensitivity.md").write_text(
            f"# Sensitivity (SNR prior {table['snr_prior']}, injections "
            f"{' '.join(map(str, args.injections))})\n\n"
            + text + "\n" + (f"\n{format_by_mass(by_mass)}\n" if by_mass else ""))
        info = {"searches": {n: [str(d) for d in ds] for n, ds in searches.items()},
                "injections": [str(p) for p in args.injections], **table, "by_mass": by_mass}
        (args.out / "sensitivity.json").write_text(json.dumps(info, indent=1) + "\n")
        plot(read, table, snr_prior, args.out / "sensitivity.png")
    print(text)


if __name__ == "__main__":
    main()
