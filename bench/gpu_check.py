"""One command for a GPU box: every GPU and multi-process path of the project, run for real,
with a table of checks, figures and pass/fail (``make gpu-check``; issue 17).

    .venv/bin/python bench/gpu_check.py [--out runs/gpu-check] [--dry-run] [--n 2000]

On a machine with CUDA it runs the full check (about 5-8 minutes on one modern GPU); without
one, or with ``--dry-run``, the same steps at tiny sizes on the CPU, so that the script itself
is tested in ``make test`` (tests/bench/test_gpu_check.py). Every step runs the project's own
commands in subprocesses, as a user would. The table and ``gpu_check.json`` land in ``--out``;
the exit status is 1 when any check fails.

Checks: the suite's CUDA tests; every CQT implementation on the device against the CPU; stage
one on the device beside the CPU (samples/s, and the stores agree) and with 4 processes
sharing the GPU; one short bf16 epoch of a CQT model and of a 1D CNN, each with and without
``compile``, and a resume; how far a resumed run drifts from an uninterrupted one; an epoch
on signals injected on the device, and what an injected batch costs beside a step; inference
from the store and from the raw files agreeing; the search on a few minutes of strain. Peak
GPU memory of each step is sampled with nvidia-smi where there is one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

PY = sys.executable


@dataclass
class Check:
    name: str
    status: str = "skip"  # pass, FAIL, skip
    figure: str = ""
    seconds: float = 0.0
    peak_mib: float | None = None
    detail: str = field(default="", repr=False)


class PeakMemory:
    """Peak GPU memory used on the machine while the block runs (nvidia-smi, every 0.2 s);
    None without nvidia-smi."""

    def __enter__(self):
        self.peak, self.stop = None, threading.Event()
        self.tool = shutil.which("nvidia-smi")
        if self.tool:
            self.thread = threading.Thread(target=self._poll, daemon=True)
            self.thread.start()
        return self

    def _poll(self):
        while not self.stop.is_set():
            out = subprocess.run([self.tool, "--query-gpu=memory.used",
                                  "--format=csv,noheader,nounits"], capture_output=True,
                                 text=True).stdout.split()
            if out:
                used = max(float(x) for x in out)
                self.peak = used if self.peak is None else max(self.peak, used)
            self.stop.wait(0.2)

    def __exit__(self, *exc):
        self.stop.set()
        if self.tool:
            self.thread.join()


def sh(*cmd: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """A command of the project, from the repository root; its output kept for the report."""
    return subprocess.run([str(c) for c in cmd], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def launch(n: int, *args: str, mixed: str = "no", env: dict | None = None,
           timeout: float = 600) -> subprocess.CompletedProcess:
    multi = ["--multi_gpu"] if n > 1 else []
    return sh(PY, "-m", "accelerate.commands.launch", *multi, "--num_processes", str(n),
              "--num_machines", "1", "--mixed_precision", mixed, "--dynamo_backend", "no",
              "--main_process_port", str(free_port()), *args, env=env, timeout=timeout)


def free_port() -> int:
    from data.devices import free_port as port

    return port()


def ok(proc: subprocess.CompletedProcess) -> None:
    if proc.returncode != 0:
        raise RuntimeError(f"exit {proc.returncode}: {proc.stderr[-1500:]}")


def run_check(checks: list[Check], name: str, fn, *args) -> Check:
    """Run one check: fn returns its figure (str); any exception is a FAIL with its text."""
    check = Check(name)
    checks.append(check)
    start = time.perf_counter()
    with PeakMemory() as mem:
        try:
            result = fn(*args)
            if result is None:
                check.status = "skip"
            else:
                check.status, check.figure = "pass", result
        except SkipCheck as e:
            check.status, check.figure = "skip", str(e)
        except Exception as e:  # a failed check is reported, and the others still run
            check.status, check.figure = "FAIL", f"{type(e).__name__}: {str(e)[:300]}"
            check.detail = repr(e)
    check.seconds = round(time.perf_counter() - start, 1)
    check.peak_mib = mem.peak
    print(f"{check.status:>4}  {name}: {check.figure}  ({check.seconds} s)", flush=True)
    return check


class SkipCheck(Exception):
    """Not applicable here (e.g. no GPU for the suite's CUDA tests)."""


# ---------------------------------------------------------------------------------------------
# The checks


def suite_cuda_tests(gpu: bool) -> str:
    if not gpu:
        raise SkipCheck("no CUDA device: the suite's CUDA tests skip")
    proc = sh(PY, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
              "tests/preprocess/test_transforms.py", "tests/preprocess/test_pipeline.py",
              "-k", "cuda or gpus", timeout=900)
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-300:]
    if proc.returncode != 0 or "skipped" in last and "passed" not in last:
        raise RuntimeError(last)
    return last


def cqt_on_device(device: str) -> str:
    """Every CQT implementation on the device against the CPU, on whitened-noise batches."""
    from data.config import load_config
    from data.devices import ieee_fp32
    from data.sim import physics
    from preprocess.config import PreprocessConfig
    from preprocess.spectral import estimate_psd
    from preprocess.transforms import IMPLS, Transform

    rng = np.random.default_rng(0)
    x = np.stack([physics.coloured_noise(rng) for _ in range(16)])
    psd = estimate_psd(x, 0.25)
    worst = []
    for preset in ("default", "seed"):
        cfg = load_config(PreprocessConfig, REPO / "configs" / "preprocess" / f"{preset}.yaml")
        for impl in IMPLS:
            cfg.cqt.impl = impl
            cpu = Transform.from_config(cfg.whiten, cfg.cqt, psd).eval()
            dev = Transform.from_config(cfg.whiten, cfg.cqt, psd).to(device).eval()
            # IEEE float32 as stage one computes (cuDNN would use TF32 by default)
            with torch.no_grad(), ieee_fp32():
                a = cpu(torch.from_numpy(x))[0]
                b = dev(torch.from_numpy(x).to(device))[0].cpu()
            rel = float((a - b).abs().max() / a.abs().max())
            worst.append((rel, f"{preset}/{impl}"))
            if rel > 1e-3:
                raise RuntimeError(f"{preset}/{impl}: max |difference| {rel:.2e} of the peak")
    rel, where = max(worst)
    return f"max |device - CPU| {rel:.1e} of the peak ({where}), {len(worst)} transforms"


def stage_one(work: Path, device: str, n: int) -> str:
    """Stage one on the device and on the CPU: samples/s of each, stores within float16."""
    data = work / "data"
    if not data.is_dir():
        ok(sh(PY, "-m", "data.sim.samples", "--out", data, "--n-train", n, "--n-test", n // 4,
              "--seed", 1, "--quiet", "--jobs", 2))
    rates = {}
    for dev in dict.fromkeys([device, "cpu"]):
        cache = work / f"cache-{dev.replace(':', '')}"
        start = time.perf_counter()
        ok(sh(PY, "-m", "preprocess", "--data", data, "--out", cache, "--no-progress",
              "--overwrite", "save_waves=true", f"device={dev}"))
        rates[dev] = 1.25 * n / (time.perf_counter() - start)
    if device != "cpu":
        a = _images(work / f"cache-{device.replace(':', '')}")
        b = _images(work / "cache-cpu")
        diff = float(np.abs(a - b).max() / np.abs(b).max())
        if diff > 2e-3:
            raise RuntimeError(f"device and CPU stores differ by {diff:.1e} of the peak")
    shutil.copytree(work / f"cache-{device.replace(':', '')}", work / "cache", dirs_exist_ok=True)
    return ", ".join(f"{d}: {r:.0f} samples/s" for d, r in rates.items()) + " (whole command)"


def _images(cache: Path) -> np.ndarray:
    from data import store as zstore

    return np.asarray(zstore.open_store(cache / "train.zarr")["images"][:], dtype=np.float32)


def stage_one_shared(work: Path, device: str, n_proc: int) -> str:
    """n_proc processes sharing the device (gloo between them): the store equals the
    one-process store."""
    cache = work / "cache-shared"
    proc = launch(n_proc, "-m", "preprocess", "--data", work / "data", "--out", cache,
                  "--no-progress", "--overwrite", "save_waves=true", f"device={device}",
                  env={} if device != "cpu" else {"CUDA_VISIBLE_DEVICES": ""})
    ok(proc)
    a, b = _images(cache), _images(work / "cache")
    if np.array_equal(a, b):
        return f"{n_proc} processes on {device}: byte-identical to one process"
    # On the CPU the processes must be byte-identical (the suite tests it); a GPU may sum in
    # another order from one launch to the next: within float16 rounding is what stage one
    # promises there, and the figure says how far.
    diff = float(np.abs(a - b).max() / np.abs(b).max())
    if device == "cpu" or diff > 2e-3:
        raise RuntimeError(f"{n_proc}-process store differs from the 1-process store by "
                           f"{diff:.2e} of the peak")
    return f"{n_proc} processes on {device}: within {diff:.1e} of one process (not bitwise)"


def train_epoch(work: Path, config: str, name: str, compile_: bool, mixed: str,
                extra: tuple[str, ...] = ()) -> str:
    """One short epoch through accelerate launch: samples/s from the run's history."""
    proc = launch(1, "-m", "train", "--config", REPO / "configs" / "train" / config,
                  f"store={work / 'cache' / 'train.zarr'}", f"out={work / 'runs'}",
                  f"name={name}", "fold=0", "epochs=1", "progress=false",
                  f"compile={str(compile_).lower()}", *extra, mixed=mixed, timeout=900)
    ok(proc)
    from data.rundir import read_history

    h = read_history(work / "runs" / name / "fold0" / "history.csv")
    return (f"{h['samples_per_s'][-1]:.0f} samples/s, val AUC {h['val_auc'][-1]:.3f} "
            f"({mixed}{', compiled' if compile_ else ''})")


def resume_drift(work: Path, config: str, mixed: str, extra: tuple[str, ...],
                 exact: bool) -> str:
    """Two epochs straight against the same two epochs with the second one resumed from the
    first one's checkpoint (the same config: the schedule depends on ``epochs``): how far the
    final weights drift. Exact on the CPU; on CUDA the run asks for deterministic=true, what
    exact resume needs there (docs/training.md), and the figure says how close it comes."""
    from safetensors.torch import load_file

    common = ["-m", "train", "--config", REPO / "configs" / "train" / config,
              f"store={work / 'cache' / 'train.zarr'}", f"out={work / 'runs'}", "fold=0",
              "epochs=2", "progress=false", "ema=false", *extra,
              *([] if exact else ["deterministic=true"])]
    ok(launch(1, *common, "name=straight", mixed=mixed, timeout=900))
    ok(launch(1, *common, "name=resumed", mixed=mixed, timeout=900))
    checkpoints = work / "runs" / "resumed" / "fold0" / "checkpoints"
    last = max(checkpoints.glob("checkpoint_*"), key=lambda p: int(p.name.split("_")[1]))
    shutil.rmtree(last)  # as if killed during the second epoch: resume from the first's
    second = launch(1, *common, "name=resumed", "resume=auto", mixed=mixed, timeout=900)
    ok(second)
    if "resumed from" not in second.stderr:
        raise RuntimeError("the second run did not resume")

    def final(name: str) -> dict:
        ckpt = work / "runs" / name / "fold0" / "checkpoints"
        newest = max(ckpt.glob("checkpoint_*"), key=lambda p: int(p.name.split("_")[1]))
        return load_file(newest / "model.safetensors")

    a, b = final("straight"), final("resumed")
    drift = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    if exact and drift != 0:
        raise RuntimeError(f"a resumed run drifted by {drift:.2e} where it must be exact")
    return (f"epoch 2 resumed from epoch 1's checkpoint: max |weight difference| from the "
            f"straight run {drift:.2e}{'' if exact else ' (deterministic=true)'}")


def injection(work: Path, config: str, models: tuple[str, ...], mixed: str,
              extra: tuple[str, ...], judge_cost: bool = True) -> str:
    """Training on signals injected on the device (issue 18): a bank, one epoch of
    ``source=inject`` through accelerate launch, then bench/bench_inject.py's median cost of
    an injected batch (projection, whitening, SNR, and the CQT for a 2D model) against a
    training step of each model. FAIL when an injected batch costs more than a step (it
    would be the bottleneck), if ``judge_cost``: the dry run only reports the cost, since a
    timing on a shared CPU is no pass/fail (``make test`` runs it beside whatever else runs:
    there it once measured 300 %)."""
    bank = work / "bank.zarr"
    ok(sh(PY, "-m", "data.inject.bank", "--out", str(bank), "--n", "256", "--quiet"))
    proc = launch(1, "-m", "train", "--config", REPO / "configs" / "train" / config,
                  f"store={work / 'cache' / 'train.zarr'}", f"out={work / 'runs'}",
                  "name=inject", "fold=0", "epochs=1", "progress=false", "source=inject",
                  f"inject.bank={bank}", "inject.samples_per_epoch=512",
                  "inject.incoherent_fraction=0.2", *extra, mixed=mixed, timeout=900)
    ok(proc)
    out = work / "bench_inject.json"
    ok(sh(PY, str(REPO / "bench" / "bench_inject.py"), "--store",
          str(work / "cache" / "train.zarr"), "--bank", str(bank), "--repeats", "10",
          "--max-waveforms", "256", "--models", *models, "--json", str(out)))
    figures = json.loads(out.read_text())["models"]
    slow = [m for m, f in figures.items() if f["ratio"] >= 1]
    text = ", ".join(f"{m}: {1e3 * f['inject_s']:.1f} ms = {100 * f['ratio']:.1f} % of a "
                     f"{1e3 * f['step_s']:.1f} ms step" for m, f in figures.items())
    if slow and judge_cost:
        raise RuntimeError(f"an injected batch costs more than a training step: {text}")
    return text + (" (not judged: dry run)" if slow else "")


def inference_paths(work: Path, name: str) -> str:
    """The same run predicting the store and the raw files: the same submission."""
    runs = work / "runs" / name
    out_store, out_raw = work / "store.csv", work / "raw.csv"
    ok(sh(PY, "-m", "infer", "--runs", runs, "--store", work / "cache" / "test.zarr",
          "--out", out_store, "--quiet"))
    ok(sh(PY, "-m", "infer", "--runs", runs, "--data", work / "data", "--out", out_raw,
          "--quiet"))
    from data import layout

    ids_a, pa = layout.read_labels(out_store)
    ids_b, pb = layout.read_labels(out_raw)
    if ids_a != ids_b:
        raise RuntimeError("the two submissions list other ids")
    diff = float(np.abs(pa - pb).max())
    if diff > 1e-3:
        raise RuntimeError(f"store and raw predictions differ by up to {diff:.2e}")
    return f"{len(ids_a)} samples, max |store - raw| {diff:.1e}"


def search(work: Path, name: str, seconds: int) -> str:
    """A few minutes of long strain with injections searched with the trained run."""
    strain = work / "long"
    ok(sh(PY, "-m", "data.sim.long_strain", "--out", strain, "--duration", seconds,
          "--seed", 3, "--injections-every", 32, "--quiet", "--overwrite", timeout=900))
    start = time.perf_counter()
    ok(sh(PY, "-m", "infer.search", "--runs", work / "runs" / name, "--strain",
          f"H1={strain}/H-*.gwf", f"L1={strain}/L-*.gwf", f"V1={strain}/V-*.gwf",
          "--out", work / "search", "--slides", 2, "--injections", strain / "injections.csv",
          "--quiet", timeout=900))
    summary = json.loads((work / "search" / "summary.json").read_text())
    speed = summary["speed"]["strain_s_per_s"]
    found = summary.get("injections", {}).get("with_trigger", 0)
    return (f"{seconds} s of strain, zero lag {speed:.0f} s of strain per s, 2 slides, "
            f"{summary['triggers']['zero_lag']} triggers, {found} of "
            f"{summary.get('injections', {}).get('n', 0)} injections with a trigger "
            f"(whole command {time.perf_counter() - start:.0f} s)")


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "gpu-check")
    ap.add_argument("--dry-run", action="store_true",
                    help="tiny sizes on the CPU (the default without a CUDA device)")
    ap.add_argument("--n", type=int, help="training samples for stage one (default 2000; "
                    "dry run 64)")
    args = ap.parse_args(argv)
    gpu = torch.cuda.is_available() and not args.dry_run
    device = "cuda" if gpu else "cpu"
    n = args.n or (2000 if gpu else 64)
    work = args.out / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    mixed = "bf16" if gpu else "no"
    # Dry run: the tiny models and the CPU presets; full: the GPU models, compiled and not.
    cnn, wave = ("efficientnet_b0.yaml", "g2net_1d_v3.yaml") if gpu else ("tiny.yaml",
                                                                          "tiny1d.yaml")
    # One-epoch runs: the GPU configs' EMA (decay 0.999) needs its warm-up to say anything.
    small = ("ema_warmup=true",) if gpu else ("batch_size=16", "n_folds=2")
    print(f"gpu-check: {'GPU ' + torch.cuda.get_device_name(0) if gpu else 'dry run, CPU'}; "
          f"{n} training samples; work in {work}", flush=True)

    checks: list[Check] = []
    run_check(checks, "suite CUDA tests", suite_cuda_tests, gpu)
    run_check(checks, "CQT implementations, device vs CPU", cqt_on_device, device)
    run_check(checks, "stage one on the device vs CPU", stage_one, work, device, n)
    run_check(checks, f"stage one, {4 if gpu else 2} processes sharing the device",
              stage_one_shared, work, device, 4 if gpu else 2)
    for config, name in ((cnn, "cnn"), (wave, "wave")):
        for compile_ in ((False, True) if gpu else (False,)):
            label = f"train {config} 1 epoch{'' if mixed == 'no' else ' ' + mixed}"
            run_check(checks, f"{label}{' compiled' if compile_ else ''}",
                      train_epoch, work, config, f"{name}{'-c' if compile_ else ''}", compile_,
                      mixed, small)
    run_check(checks, "resume drift", resume_drift, work, wave, mixed, small, not gpu)
    run_check(checks, "training on injections, and their cost", injection, work, wave,
              ("g2net_1d_v3", "efficientnet_b0") if gpu else ("g2net_1d_tiny",
                                                              "test_efficientnet"), mixed, small,
              gpu)
    run_check(checks, "inference: store vs raw files", inference_paths, work, "cnn")
    run_check(checks, "search over long strain", search, work, "cnn", 180 if gpu else 128)

    width = max(len(c.name) for c in checks)
    lines = [f"{'check':<{width}}  {'':4}  {'s':>6}  {'peak MiB':>8}  figure"]
    for c in checks:
        peak = f"{c.peak_mib:.0f}" if c.peak_mib is not None else "n/a"
        lines.append(f"{c.name:<{width}}  {c.status:>4}  {c.seconds:>6}  {peak:>8}  {c.figure}")
    table = "\n".join(lines)
    print("\n" + table)
    failed = [c for c in checks if c.status == "FAIL"]
    report = {"device": torch.cuda.get_device_name(0) if gpu else "cpu (dry run)",
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
              "checks": [asdict(c) for c in checks], "failed": len(failed)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "gpu_check.txt").write_text(table + "\n")
    print(f"\n{len(checks) - len(failed)} passed or skipped, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
