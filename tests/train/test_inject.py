"""Training with injections (issue 18), end to end on CPU: the images made on the device from
injected strain are stage one's images; runs on a store's noise, on simulated noise and on long
strain in GWF files; validation on frozen injections; exact resume after SIGKILL; pretrain
then fine-tune with ``init_from``; and what the model card records."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from data import store as zstore
from data.config import from_dict
from data.inject.bank import BankSpec, make_bank
from data.rundir import read_card
from preprocess.config import PreprocessConfig
from preprocess.transforms import Whiten
from tests.conftest import kill_training_mid_epoch

REPO = Path(__file__).resolve().parents[2]
TINY1D = str(REPO / "configs" / "train" / "tiny1d.yaml")
TINY = str(REPO / "configs" / "train" / "tiny.yaml")


@pytest.fixture(scope="module")
def real_store(tmp_path_factory):
    """64 generator samples (the real physics) through stage one with the whitened strain
    kept, in chunks of 8; and a 32-waveform bank."""
    from data.sim.samples import generate
    from preprocess import pipeline
    from preprocess.config import load_preset

    root = tmp_path_factory.mktemp("inject")
    generate(root / "data", n_train=64, n_test=0, seed=4, snr="fixed:20", progress=False)
    cfg = load_preset("default", ["store.chunk_size=8", "batch_size=8", "whiten.n_psd=32",
                                  "save_waves=true", "device=cpu"])
    pipeline.run(root / "data", root / "cache", cfg, splits=("train",), progress=False)
    make_bank(root / "bank.zarr", BankSpec(n=32, seed=2, chunk_size=16), progress=False)
    return root / "cache" / "train.zarr", root / "bank.zarr", root / "data"


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "train", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    if proc.returncode != 0:
        raise AssertionError(f"training failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path)


def test_injected_strain_becomes_stage_ones_images(real_store):
    """Raw strain whitened and turned into images by what training builds from the store's
    record (train.inject.stored_form) equals what stage one stored for those samples."""
    from data import layout
    from train.inject import stored_form

    store, _, data = real_store
    g = zstore.require_complete(store)
    ids = layout.int_to_id(np.asarray(g["ids"][:16]))
    raw = np.stack([np.load(layout.sample_path(data, "train", i)) for i in ids])
    cfg = from_dict(PreprocessConfig, g.attrs["config"])
    whitened = Whiten.from_config(cfg.whiten, zstore.read_psd(g))(torch.from_numpy(raw))
    for kind in ("images", "waves"):
        made = stored_form(g, kind, torch.device("cpu"))(whitened).numpy()
        stored = np.asarray(g[kind][:16])
        assert made.dtype == stored.dtype == np.float16
        # Stage one computed these in batches of 8; float32 sums of another batch size may
        # round a value to the neighbouring float16 now and then.
        diff = np.abs(made.astype(np.float32) - stored.astype(np.float32))
        assert (diff <= 2e-3 * np.abs(stored.astype(np.float32)) + 1e-6).all()
        assert (made == stored).mean() > 0.99


def _card_training(fold: Path) -> dict:
    return read_card(fold).training


@pytest.fixture(scope="module")
def pretrained(real_store, tmp_path_factory):
    """A 1D model trained on injections into the store's noise, validated on the fold's
    labelled samples: (its fold directory, training's stderr)."""
    store, bank, _ = real_store
    out = tmp_path_factory.mktemp("pre")
    proc = _run("--config", TINY1D, f"store={store}", f"out={out}", "n_folds=4", "batch_size=8",
                "epochs=1", f"inject.bank={bank}", "name=pre", "source=inject",
                "inject.samples_per_epoch=64", "inject.incoherent_fraction=0.2",
                "inject.incoherent_kinds=[swap]", "inject.swap_detector=snr",
                "inject.swap_keep_snr=true", "inject.snr=power-law:-3,4,100",
                "inject.mass_power=-2")
    return out / "pre" / "fold0", proc.stderr


@pytest.mark.timeout(600)
def test_train_on_injections_then_fine_tune(real_store, pretrained, tmp_path):
    """The injection run's card; a run initialised from it on the labelled store; a CQT model
    on injections with images made per batch, both sources at once."""
    store, bank, _ = real_store
    common = ["--config", TINY1D, f"store={store}", f"out={tmp_path}", "n_folds=4",
              "batch_size=8", "epochs=1", f"inject.bank={bank}"]
    fold, stderr = pretrained
    assert "inject: 32 waveforms" in stderr
    training = _card_training(fold)
    assert training["source"] == "inject"
    assert training["inject"]["snr"] == "power-law:-3,4,100"
    assert training["inject"]["bank"]["n"] == 32 and training["inject"]["noise"] == "store"
    assert training["inject"]["incoherent_fraction"] == 0.2
    assert training["inject"]["incoherent_kinds"] == ["swap"]
    assert training["inject"]["swap_detector"] == "snr"
    assert training["inject"]["swap_keep_snr"] is True
    assert training["inject"]["mass_power"] == -2.0
    assert (fold / "oof.csv").is_file()  # validated on the store's fold: out-of-fold rows

    # Fine-tune: the weights it starts from are pre's best.
    out = _run(*common, "name=fine", f"init_from={fold}", "lr=1e-9", "min_lr=1e-9")
    assert f"weights from {fold}" in out.stderr
    assert _card_training(tmp_path / "fine" / "fold0")["init_from"] == str(fold)
    pre, fine = _weights(fold / "best.safetensors"), _weights(tmp_path / "fine" / "fold0" /
                                                            "best.safetensors")
    conv = [k for k in pre if k.endswith("weight") and pre[k].ndim == 3][0]
    assert torch.allclose(pre[conv], fine[conv], atol=1e-6)

    # Another model, or another input kind, cannot start from it.
    bad = subprocess.run([sys.executable, "-m", "train", *common, "name=bad", f"init_from={fold}",
                          "model.name=g2net_1d_small"], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2
    assert "init_from" in bad.stderr and "g2net_1d_tiny" in bad.stderr

    # A CQT model on injections (images made per batch on the device) and source=both.
    _run("--config", TINY, f"store={store}", f"out={tmp_path}", "n_folds=4", "batch_size=8",
         "epochs=1", f"inject.bank={bank}", "name=cqt", "source=both")
    assert _card_training(tmp_path / "cqt" / "fold0")["source"] == "both"


@pytest.mark.timeout(600)
def test_simulated_and_strain_noise_with_frozen_validation(real_store, tmp_path):
    """Noise from the generator's PSDs, and from long strain in GWF files, each validated on
    frozen injections: the card says so, and no out-of-fold file is written."""
    from data.sim.frames import GWFWriter, strain_path
    from data.sim.physics import coloured_noise

    store, bank, _ = real_store
    common = ["--config", TINY1D, f"store={store}", f"out={tmp_path}", "n_folds=4",
              "batch_size=8", "epochs=1", f"inject.bank={bank}", "source=inject",
              "inject.samples_per_epoch=48", "inject.validation=injections",
              "inject.n_validation=24"]
    _run(*common, "name=gauss", "inject.noise=gaussian")
    fold = tmp_path / "gauss" / "fold0"
    assert _card_training(fold)["inject"]["noise"] == "gaussian"
    assert not (fold / "oof.csv").exists()

    rng = np.random.default_rng(0)
    strain = np.concatenate([coloured_noise(rng, 4096 * 4) for _ in range(2)], axis=1)
    items = []
    for row, ifo in enumerate(("H1", "L1", "V1")):
        path = strain_path(tmp_path / "strain", ifo, 1_300_000_000, 16, "gwf")
        path.parent.mkdir(exist_ok=True)
        w = GWFWriter(path, ifo, 1_300_000_000, 2048)
        w.write(0, strain[row])
        w.close()
        items.append(f"{ifo}={path}")
    out = _run(*common, "name=s1", "inject.noise=strain", f"inject.strain=[{','.join(items)}]",
               "inject.strain_psd=local")
    assert "inject: strain noise" in out.stderr
    training = _card_training(tmp_path / "s1" / "fold0")["inject"]
    assert training["strain_psd"] == "local" and len(training["strain"]) == 3


@pytest.mark.timeout(600)
def test_resume_after_sigkill_is_exact_with_injections(real_store, tmp_path):
    """Kill -9 after a mid-epoch checkpoint of an injection run, resume=auto: the same
    weights as no kill (each batch's injections are a function of where it falls)."""
    store, bank, _ = real_store
    args = ["--config", TINY1D, f"store={store}", "n_folds=4", "batch_size=8", "epochs=2",
            f"inject.bank={bank}", "source=inject", "inject.samples_per_epoch=160",
            "checkpoint_every_steps=4", "seed=3", "inject.curriculum_start=20",
            "inject.curriculum_steps=30", "name=r"]
    _run(*args, f"out={tmp_path / 'a'}")
    fold_b = tmp_path / "b" / "r" / "fold0"
    latest = kill_training_mid_epoch([*args, f"out={tmp_path / 'b'}"], fold_b, timeout=240)
    done = _run(*args, f"out={tmp_path / 'b'}", "resume=auto")
    assert f"resumed from {latest}" in done.stderr
    a = _weights(tmp_path / "a" / "r" / "fold0" / "best.safetensors")
    b = _weights(fold_b / "best.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_config_errors(real_store, tmp_path):
    store, bank, _ = real_store
    base = [sys.executable, "-m", "train", "--config", TINY1D, f"store={store}",
            f"out={tmp_path}", "n_folds=4", "batch_size=8"]
    cases = [
        (["source=inject"], "inject.bank: source=inject needs a waveform bank"),
        (["source=inject", f"inject.bank={bank}", "inject.snr=gauss:1"], "inject.snr: bad SNR"),
        (["source=inject", f"inject.bank={bank}", "inject.merger_window=[0.5,1.99]"],
         "max-merger-time"),
        (["source=inject", f"inject.bank={tmp_path}/none"], "no waveform bank here"),
        (["source=inject", f"inject.bank={bank}", "inject.noise=strain"], "inject.strain"),
    ]
    for extra, message in cases:
        out = subprocess.run([*base, *extra], cwd=REPO, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 2, (extra, out.stderr[-2000:])
        assert message in out.stderr, (extra, out.stderr[-2000:])


def test_inference_reads_what_a_model_was_trained_on(real_store, pretrained, tmp_path):
    """The injection run's card through inference's loader: what it says in its log."""
    store, _, _ = real_store
    out = subprocess.run([sys.executable, "-m", "infer", "--runs", str(pretrained[0].parent),
                          "--store", str(store), "--out", str(tmp_path / "s.csv"), "--quiet"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert ("g2net_1d_tiny trained on injections (32 IMRPhenomPv2 waveforms, SNR "
            "power-law:-3,4,100, noise store)") in out.stderr


@pytest.mark.timeout(600)
def test_two_processes_draw_their_own_injections(real_store, tmp_path, launch):
    """Each process's batches differ (the seed holds the process), the frozen validation set
    is the same whatever the number of processes, and a two-process gloo run with an odd
    validation set (padded per process) finishes."""
    from train import inject
    from train.config import InjectConfig, TrainConfig

    store, bank, _ = real_store
    g = zstore.require_complete(store)
    cfg = TrainConfig(store=str(store), source="inject",
                      inject=InjectConfig(bank=str(bank), snr="fixed:10"))
    rows = np.arange(int(g.attrs["n"]))
    made = [inject.build(cfg, g, "waves", rows, torch.device("cpu"), rank=r) for r in (0, 1)]
    first = [next(m.train_batches(0, 0, 1, 8, step=lambda: 0))[0] for m in made]
    assert not torch.equal(first[0], first[1])
    again = next(inject.build(cfg, g, "waves", rows, torch.device("cpu"), rank=0)
                 .train_batches(0, 0, 1, 8, step=lambda: 0))[0]
    assert torch.equal(first[0], again)
    one = made[0].validation_set(21, 5, 8, rank=0, world=1)
    two = [made[0].validation_set(21, 5, 8, rank=r, world=2) for r in (0, 1)]
    assert len(two[0]) == len(two[1])  # every process evaluates as many batches
    index = torch.cat([b[2] for part in two for b in part])
    assert sorted(index[index >= 0].tolist()) == list(range(21))
    whole = torch.cat([b[0] for b in one])
    for part in two:
        for x, _, i in part:
            keep = i >= 0
            assert torch.equal(x[keep], whole[i[keep]])

    proc = launch(2, "train", "--config", TINY1D, f"store={store}", f"out={tmp_path}",
                  "n_folds=4", "batch_size=8", "epochs=1", f"inject.bank={bank}",
                  "source=inject", "inject.samples_per_epoch=64", "inject.validation=injections",
                  "inject.n_validation=21", "name=ddp", timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "on 2 process(es)" in proc.stderr
    assert read_card(tmp_path / "ddp" / "fold0").training["source"] == "inject"


def test_frozen_validation_is_drawn_at_the_curriculums_end(real_store):
    """With a curriculum (lower bound 30 falling to 5), the frozen validation injections have
    the SNRs of the distribution trained for (uniform 5-6 here), not the curriculum's start:
    their SNRs, read back from the injector, all lie in [5, 6]."""
    from train import inject
    from train.config import InjectConfig, TrainConfig

    store, bank, _ = real_store
    g = zstore.require_complete(store)
    cfg = TrainConfig(store=str(store), source="inject",
                      inject=InjectConfig(bank=str(bank), snr="uniform:5,6",
                                          curriculum_start=30, curriculum_steps=100))
    made = inject.build(cfg, g, "waves", np.arange(int(g.attrs["n"])), torch.device("cpu"),
                        rank=0)
    snrs = []
    original = made.injector.inject

    def recording(*args, **kwargs):
        out = original(*args, **kwargs)
        snrs.append(out.snr[out.target == 1])
        return out

    made.injector.inject = recording
    made.validation_set(32, 5, 16, rank=0, world=1)
    snr = torch.cat(snrs)
    assert snr.numel() > 5 and ((snr >= 5) & (snr <= 6)).all(), snr


def test_training_without_lalsuite(train_store, real_store, tmp_path):
    """A plain install has no lalsuite: training on a store still works, and a run with
    injections says what to install (lal and lalsimulation hidden from the process)."""
    hide = ("import sys, runpy; sys.modules['lal'] = None; sys.modules['lalsimulation'] = None;"
            " sys.argv = ['train'] + sys.argv[1:]; runpy.run_module('train', run_name='__main__')")
    base = [sys.executable, "-c", hide, "--config", TINY, "n_folds=4", "batch_size=16",
            "epochs=1", f"out={tmp_path}"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    ok = subprocess.run([*base, f"store={train_store}", "name=plain"], cwd=REPO,
                        capture_output=True, text=True, timeout=300, env=env)
    assert ok.returncode == 0, ok.stderr[-3000:]
    store, bank, _ = real_store
    bad = subprocess.run([*base, f"store={store}", "name=inj", "source=inject",
                          f"inject.bank={bank}", "batch_size=8"], cwd=REPO,
                         capture_output=True, text=True, timeout=300, env=env)
    assert bad.returncode == 2, bad.stderr[-3000:]
    assert "source=inject needs lalsuite" in bad.stderr


def _hdf5_strain(directory: Path, strain: np.ndarray, t0: int) -> list[str]:
    """(3, N) strain as three GWOSC-style HDF5 files; their IFO=PATH items."""
    from data.sim.frames import HDF5Writer, strain_path

    items = []
    for row, ifo in enumerate(("H1", "L1", "V1")):
        path = strain_path(directory, ifo, t0, strain.shape[1] // 2048, "hdf5")
        path.parent.mkdir(parents=True, exist_ok=True)
        w = HDF5Writer(path, ifo, t0, 2048)
        w.write(0, strain[row])
        w.close()
        items.append(f"{ifo}={path}")
    return items


def test_hard_negatives_are_the_search_files_windows(real_store, tmp_path):
    """inject.hard_negatives: a g2net-search hard_negatives.csv's rows (each detector's window
    start, GPS) become target-0 samples cut from the strain at exactly those times, whitened
    as the plain noise is, in place of plain-noise samples only, at the configured share; a
    row off the strain is left out with a warning; the card records the file."""
    from data.config import load_config
    from data.inject.injector import batch_generator
    from data.sim.physics import coloured_noise
    from train.config import TrainConfig
    from train.inject import build

    store, bank, _ = real_store
    t0 = 1_300_000_000
    rng = np.random.default_rng(5)
    strain = coloured_noise(rng, 2048 * 32)
    items = _hdf5_strain(tmp_path / "strain", strain, t0)
    # Each detector from its own time, as a time slide pairs them; the last row is off the
    # strain (a search of other data).
    starts = np.array([[3.0, 10.5, 21.25], [12.0, 5.0, 0.5], [27.0, 1.0, 14.0],
                       [40.0, 2.0, 3.0]])
    csv_path = tmp_path / "hard_negatives.csv"
    lines = ["slide,score,H1,L1,V1"] + [
        f"{k + 1},{2.0 - k}," + ",".join(f"{t0 + s:.6f}" for s in row)
        for k, row in enumerate(starts)]
    csv_path.write_text("\n".join(lines) + "\n")
    common = ["source=inject", f"inject.bank={bank}", "inject.noise=strain",
              f"inject.strain=[{','.join(items)}]", "inject.strain_psd=local",
              "inject.positive_fraction=0.5", "inject.incoherent_fraction=0.1",
              f"inject.hard_negatives={csv_path}", "inject.hard_negative_fraction=0.2"]
    cfg = load_config(TrainConfig, TINY1D, [f"store={store}", *common])
    g = zstore.require_complete(store)
    inj = build(cfg, g, "waves", np.arange(8), torch.device("cpu"), 0)
    assert inj.hard.shape == (3, 3)
    # The reference: the raw strain cut at the file's times, whitened by the noise's whitening.
    raw = np.stack([np.stack([strain[d, int(s * 2048):int(s * 2048) + 4096]
                              for d, s in enumerate(row)]) for row in starts[:3]])
    ref = inj.noise.whiten(torch.from_numpy(raw)).float().to(torch.float16)
    n_hard = n_zero = 0
    for b in range(40):
        x, target = inj.batch(64, batch_generator(0, 1, 0, b))
        for i in np.flatnonzero(target.numpy() == 0):
            same = [bool(torch.equal(x[i], r)) for r in ref]
            n_hard += any(same)
            n_zero += 1
        # A positive is never a hard window: signals are added to plain noise only.
        for i in np.flatnonzero(target.numpy() == 1)[:4]:
            assert not any(torch.equal(x[i], r) for r in ref)
    share = n_hard / (40 * 64)
    assert 0.16 < share < 0.24, share  # 0.2 of each batch, 2,560 samples
    assert n_zero - n_hard > 0  # plain noise and incoherent negatives remain
    # Through the command: the card records the file, the off-strain row is named.
    out = _run("--config", TINY1D, f"store={store}", f"out={tmp_path}", "n_folds=4",
               "batch_size=8", "epochs=1", "inject.samples_per_epoch=16",
               "inject.validation=injections", "inject.n_validation=8", "name=hard", *common)
    assert "1 of 4 windows" in out.stderr
    hard = _card_training(tmp_path / "hard" / "fold0")["inject"]["hard_negatives"]
    assert hard == {"file": str(csv_path), "n": 3, "fraction": 0.2}


def test_hard_negative_errors(real_store, tmp_path):
    """Hard negatives without strain noise, a fraction without a file, a share larger than the
    plain noise's, and a file whose windows all lie off the strain: exit 2, the key named."""
    from data.sim.physics import coloured_noise

    store, bank, _ = real_store
    items = _hdf5_strain(tmp_path / "strain", coloured_noise(np.random.default_rng(1), 2048 * 8),
                         1_300_000_000)
    off = tmp_path / "off.csv"
    off.write_text("slide,score,H1,L1,V1\n1,1.0,1200000000.0,1200000001.0,1200000002.0\n")
    base = [sys.executable, "-m", "train", "--config", TINY1D, f"store={store}",
            f"out={tmp_path}", "n_folds=4", "batch_size=8", "source=inject",
            f"inject.bank={bank}"]
    strain = ["inject.noise=strain", f"inject.strain=[{','.join(items)}]"]
    cases = [
        ([f"inject.hard_negatives={off}", "inject.hard_negative_fraction=0.1"],
         "inject.hard_negatives: needs noise=strain"),
        ([*strain, "inject.hard_negative_fraction=0.1"], "inject.hard_negatives: give both"),
        ([*strain, f"inject.hard_negatives={off}", "inject.hard_negative_fraction=0.6"],
         "inject.hard_negative_fraction: must be in [0, 1 - positive_fraction"),
        ([*strain, f"inject.hard_negatives={off}", "inject.hard_negative_fraction=0.1"],
         "none of the 1 windows"),
        ([*strain, f"inject.hard_negatives={tmp_path / 'none.csv'}",
          "inject.hard_negative_fraction=0.1"], "not a g2net-search hard_negatives.csv"),
    ]
    for extra, message in cases:
        out = subprocess.run([*base, *extra], cwd=REPO, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 2, (extra, out.stderr[-2000:])
        assert message in out.stderr, (extra, out.stderr[-2000:])


def test_mining_hard_positives_then_training_on_them(real_store, pretrained, tmp_path):
    """python -m train.mine on a run trained with injections keeps the --keep signals its model
    scored lowest of --n (with --keep n the same draws, sorted: the first k are the kept), at
    SNRs from --snr, each row's masses the bank's own; a run given them as
    inject.hard_positives makes that share of its signals from them (their SNRs), never its
    frozen validation set; the card records the file."""
    from data.config import load_config
    from data.inject.bank import PARAMS, open_bank
    from data.inject.injector import batch_generator
    from train.config import TrainConfig
    from train.inject import build
    from train.mine import mine_positives

    store, bank, _ = real_store
    fold, _ = pretrained
    kw = dict(n=48, snr="uniform:12,50", batch_size=16, progress=False)
    every = mine_positives(fold.parent, keep=48, **kw)
    assert (np.diff(every["logit"]) >= 0).all()
    assert len(np.unique(every["logit"])) > 40  # the model's scores, not a constant
    assert ((every["snr"] >= 12) & (every["snr"] <= 50)).all()
    params = open_bank(bank).params
    for k, p in enumerate(PARAMS):
        np.testing.assert_array_equal(every[p], params[every["row"], k])
    path = tmp_path / "hard_positives.csv"
    subprocess.run([sys.executable, "-m", "train.mine", "--run", str(fold.parent), "--out",
                    str(path), "--n", "48", "--keep", "10", "--batch-size", "16", "--quiet"],
                   cwd=REPO, check=True, capture_output=True, timeout=300)
    rows = np.genfromtxt(path, delimiter=",", names=True)
    assert len(rows) == 10
    for col in ("row", "ra", "dec", "psi", "snr", "logit", "mass1"):
        np.testing.assert_allclose(rows[col], every[col][:10], rtol=1e-6)

    common = [f"store={store}", "source=inject", f"inject.bank={bank}",
              f"inject.hard_positives={path}", "inject.hard_positive_fraction=0.5"]
    cfg = load_config(TrainConfig, TINY1D, common)
    inj = build(cfg, zstore.require_complete(store), "waves", np.arange(8),
                torch.device("cpu"), 0)
    mined = set(np.round(rows["snr"], 4))
    hits = signals = 0
    for b in range(20):
        gen = batch_generator(0, 1, 0, b)
        out = inj._inject(inj.noise.batch(64, gen), gen, 0)
        snr = np.round(out.snr[out.kind == 1].numpy(), 4)
        hits += sum(s in mined for s in snr)
        signals += len(snr)
        assert not any(s in mined for s in np.round(out.snr[out.kind != 1].numpy(), 4))
    assert abs(hits / signals - 0.5) < 4 * np.sqrt(0.25 / signals), (hits, signals)
    gen = batch_generator(1, 2, 0)
    out = inj._inject(inj.noise.batch(64, gen), gen, 0, training=False)
    assert not any(s in mined for s in np.round(out.snr.numpy(), 4))
    # Through the command: the card records the file.
    _run("--config", TINY1D, f"out={tmp_path}", "n_folds=4", "batch_size=8", "epochs=1",
         "inject.samples_per_epoch=16", "name=hp", *common)
    hard = _card_training(tmp_path / "hp" / "fold0")["inject"]["hard_positives"]
    assert hard == {"file": str(path), "n": 10, "fraction": 0.5}


def test_hard_positive_errors(real_store, pretrained, tmp_path):
    """A fraction without a file, a fraction above 1, a file of another bank (a row past its
    end; masses that differ from its rows'), a file that is not one: exit 2, the key named;
    mining a run trained without injections, or keeping more than it draws: exit 2, said."""
    store, bank, _ = real_store
    fold, _ = pretrained
    good = tmp_path / "good.csv"
    subprocess.run([sys.executable, "-m", "train.mine", "--run", str(fold.parent), "--out",
                    str(good), "--n", "8", "--keep", "4", "--batch-size", "8", "--quiet"],
                   cwd=REPO, check=True, capture_output=True, timeout=300)
    text = good.read_text().splitlines()
    header = text[0].split(",")
    past, moved = tmp_path / "past.csv", tmp_path / "moved.csv"
    row = text[1].split(",")
    past.write_text("\n".join([text[0], ",".join(["40", *row[1:]])]) + "\n")
    row[header.index("mass1")] = str(float(row[header.index("mass1")]) + 3.0)
    moved.write_text("\n".join([text[0], ",".join(row)]) + "\n")
    base = [sys.executable, "-m", "train", "--config", TINY1D, f"store={store}",
            f"out={tmp_path}", "n_folds=4", "batch_size=8", "source=inject",
            f"inject.bank={bank}", "inject.samples_per_epoch=16", "epochs=1"]
    cases = [
        (["inject.hard_positive_fraction=0.1"], "inject.hard_positives: give both"),
        ([f"inject.hard_positives={good}", "inject.hard_positive_fraction=1.5"],
         "inject.hard_positive_fraction: must lie in [0, 1]"),
        ([f"inject.hard_positives={past}", "inject.hard_positive_fraction=0.1"],
         "do not all lie in inject.bank's 32"),
        ([f"inject.hard_positives={moved}", "inject.hard_positive_fraction=0.1"],
         "masses differ"),
        ([f"inject.hard_positives={tmp_path / 'none.csv'}", "inject.hard_positive_fraction=0.1"],
         "not a python -m train.mine file"),
    ]
    for extra, message in cases:
        out = subprocess.run([*base, *extra], cwd=REPO, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 2, (extra, out.stderr[-2000:])
        assert message in out.stderr, (extra, out.stderr[-2000:])
    store_run = tmp_path / "store_run"
    subprocess.run([sys.executable, "-m", "train", "--config", TINY1D, f"store={store}",
                    f"out={store_run}", "n_folds=4", "batch_size=8", "epochs=1", "name=s"],
                   cwd=REPO, check=True, capture_output=True, timeout=300)
    for args, message in ((["--run", str(store_run / "s")], "without injections"),
                          (["--run", str(fold.parent), "--n", "4", "--keep", "5"], "keep")):
        out = subprocess.run([sys.executable, "-m", "train.mine", *args, "--out",
                              str(tmp_path / "x.csv"), "--quiet"], cwd=REPO,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 2 and message in out.stderr, (args, out.stderr[-2000:])
