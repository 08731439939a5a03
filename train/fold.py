"""One cross-validation fold's training: the store and the fold's rows checked, the model,
the Accelerator and the loaders set up, the run resumed from its last checkpoint, then
:func:`train.engine.train_one_epoch` and :func:`train.engine.evaluate` per epoch, the best
epoch's weights, model card and held-out predictions written (:mod:`data.rundir`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
import yaml

from data import devices, rundir
from data import store as zstore
from data.config import (
    MISSING,
    dict_diff,
    flat_dict,
    format_diff,
    save_config,
    to_dict,
)
from data.inputs.loader import StoreBlocks, batches
from preprocess.config import identity_drift
from train import checkpoints
from train.config import TrainConfig, TrainError
from train.engine import BatchTransform, TrainState, evaluate, train_one_epoch
from train.folds import stratified_folds
from train.model import build_model, check_input_size, init_from_run, input_kind, model_kwargs

log = logging.getLogger("train")


def open_training_store(path: str | Path):
    """The finished training store at ``path``; StoreError/TrainError say what is wrong."""
    g = zstore.require_complete(path)
    if g.attrs.get("split") != "train":
        raise TrainError(f"{path}: split {g.attrs.get('split')!r}, training needs the train store")
    missing = [k for k in ("channel_stats", "transform", "config") if k not in g.attrs]
    if missing:
        raise TrainError(f"{path}: store attributes missing: {', '.join(missing)}")
    # A store made by another version of the transform code (or whose record was edited)
    # would give models that inference, with this code, cannot feed the same inputs.
    drift = identity_drift(g.attrs["transform"], g.attrs["config"])
    if drift:
        raise TrainError(f"{path}: made by another version of the transform: "
                         f"{format_diff(drift, 'store', 'this code')}; re-run preprocessing "
                         "with --overwrite")
    zstore.read_psd(g)  # the model card carries it: it must still match its hash
    return g


def fold_rows(g, n_folds: int, fold_seed: int, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, validation rows) of fold ``fold``: stratified over the valid samples."""
    valid = np.asarray(g["valid"][:], dtype=bool)
    targets = np.asarray(g["targets"][:])
    rows = np.flatnonzero(valid)
    bad = rows[(targets[rows] != 0) & (targets[rows] != 1)]
    if bad.size:
        raise TrainError(f"{g.store_path}: row {bad[0]} has target {targets[bad[0]]}, not 0 or 1")
    try:
        folds = stratified_folds(targets[rows], n_folds, fold_seed)
    except ValueError as e:
        raise TrainError(f"{g.store_path}: {e}") from None
    return rows[folds != fold], rows[folds == fold]


def training_batches(cfg: TrainConfig, epoch: int, state: TrainState, train_ds: StoreBlocks,
                     train_loader, injection, batches_per_epoch: int):
    """(iterable of blocks, rows per batch, batches in the whole epoch) of epoch ``epoch``
    from ``state.batches_done`` on: the store's shuffled blocks, injected batches, or each
    store batch with an injected batch appended (``source: both``, twice the rows a step)."""
    start = state.batches_done  # non-zero only right after a resume
    if cfg.source == "inject":
        return (injection.train_batches(epoch, start, batches_per_epoch, cfg.batch_size,
                                        step=lambda: state.num_updates),
                cfg.batch_size, batches_per_epoch)
    train_ds.start_batch = start
    train_loader.set_epoch(epoch)
    n_batches = start + train_ds.plan().n_batches  # the epoch's plan: it varies with the epoch
    if cfg.source == "store":
        return train_loader, cfg.batch_size, n_batches
    injected = injection.train_batches(epoch, start, n_batches, cfg.batch_size,
                                       step=lambda: state.num_updates)
    both = (tuple(torch.cat([a, b]) for a, b in zip(stored, made))
            for stored, made in zip(batches(train_loader, cfg.batch_size), injected))
    return both, 2 * cfg.batch_size, n_batches


def device_loader(dataset: StoreBlocks, accelerator, num_workers: int):
    """A DataLoader of ``dataset``'s blocks that accelerate places on the device.

    ``StoreBlocks`` shards itself across ranks and workers, so accelerate's sharding is
    bypassed (``num_processes=1``): its IterableDatasetShard would make every rank read the
    whole store and keep a slice. The generator keeps worker seeding off the global RNG,
    which a resumed run restores and must find where the uninterrupted run left it.
    """
    from accelerate.data_loader import prepare_data_loader
    from torch.utils.data import DataLoader

    pin = accelerator.device.type == "cuda"
    loader = DataLoader(dataset, batch_size=None, num_workers=num_workers, pin_memory=pin,
                        generator=torch.Generator(), persistent_workers=False)
    return prepare_data_loader(loader, device=accelerator.device, num_processes=1, process_index=0,
                               put_on_device=True, dispatch_batches=False, non_blocking=pin)


def check_inputs(cfg: TrainConfig, g, run: Path) -> tuple[str, tuple[int, ...], tuple[int, ...]]:
    """(input kind, the store's image shape, the model's input size) for ``cfg`` on store
    ``g``; TrainError for a model the store cannot feed or a run that would be overwritten."""
    kind = input_kind(cfg.model.name)
    if kind not in g:
        raise TrainError(f"{cfg.store}: model {cfg.model.name} reads whitened strain, but the "
                         "store has no waves array: preprocess with save_waves=true")
    if kind == "waves" and cfg.image_size is not None:
        raise TrainError(f"image_size: {cfg.model.name} reads whitened strain, not images; "
                         "leave image_size unset")
    image_shape = tuple(g["images"].shape[1:])
    size = (tuple(cfg.image_size) if cfg.image_size is not None
            else image_shape[1:] if kind == "images" else tuple(g["waves"].shape[2:]))
    if cfg.resume is None and checkpoints.checkpoint_dirs(run):
        raise TrainError(f"{run} already holds checkpoints: pass resume=auto to continue that "
                         "run, or choose another name/out")
    return kind, image_shape, size


def make_accelerator(cfg: TrainConfig, run: Path):
    """The fold's Accelerator: processes and devices from the launcher, checkpoints under
    ``run``; TrainError when the launch and Accelerate disagree."""
    from accelerate import Accelerator
    from accelerate.utils import GradientAccumulationPlugin, ProjectConfiguration

    launched = int(os.environ.get("WORLD_SIZE", "1"))
    # accelerate sets up CPU processes as a group only with cpu=True (ACCELERATE_USE_CPU):
    # `accelerate launch --multi_gpu` on a machine without accelerators (or with
    # CUDA_VISIBLE_DEVICES="") would otherwise start independent single-process runs writing
    # the same directory.
    n_gpus = devices.cuda_device_count()
    if n_gpus:
        # Accelerate's group on CUDA is NCCL, which cannot share a GPU between processes: it
        # would fail at the first collective, after all the set-up (or a rank beyond the last
        # GPU would fail to select its device). Say what to launch instead, first.
        devices.check_one_process_per_gpu(devices.local_world_size(launched), n_gpus)
    cpu_group = launched > 1 and not devices.accelerator_available()
    if cpu_group and devices.local_rank() == 0:
        log.warning("%d processes and no accelerator: a CPU process group (gloo)", launched)
    accelerator = Accelerator(
        cpu=cpu_group,
        # Epochs are cut to whole accumulation cycles (StoreBlocks batch_multiple), so
        # syncing on the loader's end is not needed; it would fire early (blocks, not batches).
        gradient_accumulation_plugin=GradientAccumulationPlugin(
            num_steps=cfg.grad_accum, sync_with_dataloader=False),
        project_config=ProjectConfiguration(
            project_dir=str(run), automatic_checkpoint_naming=True,
            total_limit=cfg.checkpoint_total_limit, logging_dir=str(run / checkpoints.LOGS_DIR)),
        log_with=cfg.log_with or None,  # check_trackers: each is installed
    )
    if accelerator.num_processes != launched:
        raise TrainError(f"the launcher started {launched} processes but accelerate joined "
                         f"{accelerator.num_processes}; check the launch flags")
    return accelerator


def record_config(cfg: TrainConfig, run: Path) -> None:
    """Write the resolved config to the run (main process); on a resume, warn of every key
    that changed since the run began."""
    if cfg.resume == "auto" and (run / checkpoints.CONFIG_FILE).is_file():
        changed = config_changes(yaml.safe_load((run / checkpoints.CONFIG_FILE).read_text()),
                                 to_dict(cfg))
        if changed:
            log.warning("resuming with a changed config (%s): the run continues, but it is "
                        "not the run it would have been", ", ".join(changed))
    run.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run / checkpoints.CONFIG_FILE)


def resume_latest(accelerator, run: Path, state) -> None:
    """resume=auto: drop unfinished checkpoints, verify the latest complete one and load it
    (model, optimizer, scheduler, RNG states, ``state``); nothing when there is none."""
    if accelerator.is_main_process:
        for p in checkpoints.remove_incomplete_checkpoints(run):
            log.warning("removed unfinished checkpoint %s", p)
    accelerator.wait_for_everyone()
    latest = checkpoints.latest_checkpoint(run)
    if latest is None:
        log.info("resume=auto: no checkpoint in %s, starting afresh", run)
    else:
        # Every rank checks, so that all of them stop together on a damaged checkpoint.
        if not checkpoints.verify_checkpoint(latest):
            log.warning("%s was saved before checkpoints carried checksums: loading it "
                        "unverified", latest)
        accelerator.load_state(str(latest))
        last = checkpoints.checkpoint_dirs(run)[-1][0]
        accelerator.project_configuration.iteration = last + 1
        log.info("resumed from %s: epoch %d, batch %d, update %d", latest, state.epoch + 1,
                 state.batches_done, state.num_updates)


def train_fold(cfg: TrainConfig) -> dict:
    """Train fold ``cfg.fold``; returns the fold's summary (best epoch and AUC, run directory)."""
    from accelerate.utils import set_seed
    from timm.optim import create_optimizer_v2
    from timm.scheduler import CosineLRScheduler
    from timm.utils import ModelEmaV3

    run = checkpoints.fold_dir(cfg.out, cfg.name, cfg.fold)
    g = open_training_store(cfg.store)
    train_rows, val_rows = fold_rows(g, cfg.n_folds, cfg.fold_seed, cfg.fold)
    kind, image_shape, size = check_inputs(cfg, g, run)

    # Same initial weights on every rank and in every run with this seed (DDP would
    # broadcast rank 0's anyway); built before the accelerator so that a model or image
    # size that cannot work fails before any process group or run directory exists.
    if cfg.deterministic:
        devices.deterministic_algorithms()
    set_seed(cfg.seed)
    net = build_model(cfg.model)
    check_input_size(net, cfg.model.name, size)
    resuming = cfg.resume == "auto" and bool(checkpoints.checkpoint_dirs(run))
    if cfg.init_from is not None and not resuming:  # a resume loads its own weights
        init_from_run(net, cfg.init_from, cfg.model.name, kind, dict(g.attrs["transform"]))
        log.info("weights from %s", cfg.init_from)

    accelerator = make_accelerator(cfg, run)
    if not accelerator.is_main_process:
        log.setLevel(logging.WARNING)
    set_seed(cfg.seed, device_specific=True)  # each rank its own augmentation draws

    rank, world = accelerator.process_index, accelerator.num_processes
    train_ds = StoreBlocks(cfg.store, train_rows, batch_size=cfg.batch_size, shuffle=True,
                           seed=cfg.seed, buffer_chunks=cfg.loader.shuffle_buffer_chunks,
                           rank=rank, world_size=world, batch_multiple=cfg.grad_accum,
                           arrays=(kind,))
    val_ds = StoreBlocks(cfg.store, val_rows, batch_size=cfg.batch_size, shuffle=False,
                         buffer_chunks=cfg.loader.shuffle_buffer_chunks, rank=rank,
                         world_size=world, arrays=(kind,))
    injection = None
    if cfg.source != "store":
        # Imported here: injections need lalsuite (the synth extra); training on a store not.
        try:
            from train import inject
        except ImportError as e:
            raise TrainError(f"source={cfg.source} needs lalsuite (pip install -e '.[synth]'): "
                             f"{e}") from None

        injection = inject.build(cfg, g, kind, train_rows, accelerator.device, rank)
    if cfg.source == "inject":
        per_epoch = cfg.inject.samples_per_epoch // (cfg.batch_size * world)
        batches_per_epoch = per_epoch // cfg.grad_accum * cfg.grad_accum
        what = (f"inject.samples_per_epoch={cfg.inject.samples_per_epoch} over {world} "
                "process(es)")
    else:
        batches_per_epoch = train_ds.plan().n_batches
        what = f"{train_ds.indices.size} training samples over {world} process(es)"
    updates_per_epoch = batches_per_epoch // cfg.grad_accum
    if updates_per_epoch < 1:
        raise TrainError(
            f"fold {cfg.fold}: {what} make no full step of batch_size={cfg.batch_size} x "
            f"grad_accum={cfg.grad_accum}"
        )
    val_batches = None
    if injection is not None and cfg.inject.validation == "injections":
        val_batches = injection.validation_set(
            cfg.inject.n_validation, cfg.inject.validation_seed, cfg.batch_size, rank, world,
            noise=inject.validation_noise(cfg, g, val_rows, injection, accelerator.device))

    if accelerator.is_main_process:
        record_config(cfg, run)
    if cfg.log_with:  # main process only (accelerate); one W&B run per fold, grouped by name
        accelerator.init_trackers(cfg.name, config=flat_dict(cfg),
                                  init_kwargs={"wandb": {"name": f"fold{cfg.fold}",
                                                         "group": cfg.name}})
    accelerator.wait_for_everyone()

    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    optimizer = create_optimizer_v2(net, opt="adamw", lr=cfg.lr, weight_decay=cfg.weight_decay)
    prepared, optimizer = accelerator.prepare(net, optimizer)
    model = prepared
    if cfg.compile:
        # After DDP's wrapping, as Accelerate's own dynamo plugin does: dynamo's DDPOptimizer
        # then splits the graph at DDP's gradient buckets, so communication still overlaps the
        # backward pass (compiled first, DDP sees one opaque module and all-reduces at the end).
        model = torch.compile(prepared)
    unwrapped = accelerator.unwrap_model(model, keep_torch_compile=False)
    ema = (ModelEmaV3(unwrapped, decay=cfg.ema_decay, use_warmup=cfg.ema_warmup,
                      warmup_power=3 / 4) if cfg.ema else None)
    total = cfg.epochs * updates_per_epoch
    warmup = min(int(round(cfg.warmup_epochs * updates_per_epoch)), total - 1)
    # Stepped by hand per optimizer step (t_in_epochs=False): accelerate does not wrap it.
    scheduler = CosineLRScheduler(optimizer, t_initial=total - warmup, lr_min=cfg.min_lr,
                                  warmup_t=warmup, warmup_lr_init=cfg.min_lr, warmup_prefix=True,
                                  t_in_epochs=False)
    state = TrainState()
    accelerator.register_for_checkpointing(state)
    if ema is not None:
        accelerator.register_for_checkpointing(ema)

    def save_checkpoint() -> None:
        path = Path(accelerator.save_state())
        accelerator.wait_for_everyone()  # every rank's RNG state is on disk
        if accelerator.is_main_process:
            checkpoints.mark_complete(path, {"epoch": state.epoch,
                                             "batches_done": state.batches_done,
                                             "num_updates": state.num_updates})
            log.info("checkpoint %s (%d epochs and %d batches done)", path, state.epoch,
                     state.batches_done)
        accelerator.wait_for_everyone()

    if cfg.resume == "auto":
        resume_latest(accelerator, run, state)

    stats = rundir.input_stats(g, kind)
    to_input = BatchTransform(mean=tuple(stats["mean"]), std=tuple(stats["std"]),
                    image_size=tuple(cfg.image_size) if cfg.image_size else None,
                    n_frames=image_shape[-1], channels_last=cfg.channels_last, kind=kind)
    train_loader = device_loader(train_ds, accelerator, cfg.loader.num_workers)
    val_loader = device_loader(val_ds, accelerator, cfg.loader.num_workers)
    # Uncompiled: eval mode (BatchNorm, dropout) would make the compiled graph recompile at
    # every switch; evaluation is a small share of the work. Still DDP-wrapped: its forward
    # broadcasts rank 0's buffers (BatchNorm statistics), so every rank predicts its share of
    # the validation set with the statistics best.safetensors will hold.
    eval_model = ema.module if ema is not None else prepared
    ids = np.asarray(g["ids"][:])
    log.info(
        "fold %d/%d: %d train, %d validation samples; %s on %s %s on %d process(es) (%s, %s); "
        "%d updates per epoch; run %s", cfg.fold, cfg.n_folds, train_ds.indices.size,
        val_ds.indices.size, cfg.model.name, kind, "x".join(map(str, size)), world,
        accelerator.device, accelerator.mixed_precision, updates_per_epoch, run,
    )

    for epoch in range(state.epoch, cfg.epochs):
        scheduler.step_update(num_updates=state.num_updates)
        batches_, batch_size, n_batches = training_batches(cfg, epoch, state, train_ds,
                                                           train_loader, injection,
                                                           batches_per_epoch)
        train = train_one_epoch(
            model, batches_, optimizer, scheduler, accelerator, state, to_input=to_input,
            aug=cfg.augment, batch_size=batch_size, n_batches=n_batches,
            clip_grad=cfg.clip_grad, ema=ema, ema_target=unwrapped,
            checkpoint_every_steps=cfg.checkpoint_every_steps, save_checkpoint=save_checkpoint,
            progress=cfg.progress,
        )
        train_ds.start_batch = 0
        val = evaluate(eval_model, val_batches or val_loader, accelerator, to_input=to_input,
                       batch_size=cfg.batch_size)
        state.epoch += 1
        state.batches_done = 0
        state.loss_sum, state.loss_count = 0.0, 0
        scheduler.step(state.epoch)  # no-op for a per-update schedule; timm's epoch hook
        row = {"epoch": state.epoch, "train_loss": train["train_loss"], "val_loss": val["loss"],
               "val_auc": val["auc"], "lr": train["lr"], "samples_per_s": train["samples_per_s"]}
        state.history.append(row)
        accelerator.log({k: v for k, v in row.items() if k != "epoch"}, step=state.epoch)
        improved = val["auc"] > state.best_auc
        if improved:
            state.best_auc, state.best_epoch = val["auc"], state.epoch
        if improved and accelerator.is_main_process:
            card = model_card(cfg, g, state.best_epoch, state.best_auc,
                              injection.record if injection is not None else None)
            rundir.write_fold(run, card,
                              (ema.module if ema is not None else unwrapped).state_dict())
            if val_batches is None:  # validated on the store's fold: out-of-fold predictions
                rundir.write_oof(run / rundir.OOF_FILE, ids[val["index"]], val["target"],
                                 val["logit"])
        save_checkpoint()
        if accelerator.is_main_process:
            record_history(run, state.history, cfg)
        accelerator.print(
            f"epoch {state.epoch}/{cfg.epochs}  train_loss {row['train_loss']:.4f}  "
            f"val_loss {row['val_loss']:.4f}  val_auc {row['val_auc']:.4f}  lr {row['lr']:.2e}  "
            f"{row['samples_per_s']:.0f} samples/s  (best {state.best_auc:.4f} at epoch "
            f"{state.best_epoch})"
        )

    if accelerator.is_main_process and state.history:
        record_history(run, state.history, cfg)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return {"run": str(run), "best_epoch": state.best_epoch, "best_auc": state.best_auc}


# Keys that may change between a run and its resumption without changing what it computes;
# a change to any other key (epochs too: it stretches the cosine schedule) is reported.
_RESUMABLE = {"resume", "out", "loader.num_workers", "checkpoint_every_steps",
              "checkpoint_total_limit", "progress", "log_with"}


def config_changes(old: dict, new: dict) -> list[str]:
    """Dotted keys whose values differ between two ``to_dict`` configs, except _RESUMABLE and
    keys that ``old`` (a run saved by an earlier version) lacks and ``new`` holds at their
    default: a key added with the old behaviour as its default changes nothing."""
    off_default = {k for k, _, _ in dict_diff(to_dict(TrainConfig()), new)}
    return [f"{k}: {'absent' if a is MISSING else a} -> {b}" for k, a, b in dict_diff(old, new)
            if k not in _RESUMABLE and not (a is MISSING and k not in off_default)]


def model_card(cfg: TrainConfig, g, best_epoch: int, best_auc: float,
               injection: dict | None = None) -> rundir.ModelCard:
    """The fold's model card (:mod:`data.rundir`): the model and its training result from
    ``cfg``, the description of its inputs from the training store ``g``, and what it was
    trained on (``training``: the source, the injections' bank, noise and SNRs, the run it
    started from)."""
    training = {"source": cfg.source, "store": str(cfg.store), "inject": injection,
                "init_from": cfg.init_from}
    return rundir.card_from_store(
        g, model_name=cfg.model.name, model_kwargs=model_kwargs(cfg.model),
        input=input_kind(cfg.model.name),
        image_size=list(cfg.image_size) if cfg.image_size is not None else None,
        fold=cfg.fold, best_epoch=best_epoch, best_auc=best_auc, n_folds=cfg.n_folds,
        fold_seed=cfg.fold_seed, training=training)


def record_history(run: Path, history: list[dict], cfg: TrainConfig) -> None:
    """The run's history.csv and its curves.png, rewritten after every epoch."""
    history_file = run / rundir.HISTORY_FILE
    rundir.write_history(history_file, history)
    rundir.plot_curves(rundir.read_history(history_file), run / rundir.CURVES_FILE,
                       title=f"{cfg.name} fold {cfg.fold}: {cfg.model.name}")
