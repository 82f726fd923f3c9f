"""The training loop: data set in, run folder out.

A run folder holds config.json, spec.json, best.safetensors, last.safetensors, log.csv,
metrics.json and tensorboard/. `last` is written after every epoch with everything needed
to resume (optimiser moments, RNG state, counters); a resumed CPU run is bit-for-bit the
run that was never interrupted, because every random choice of an epoch is drawn from
a generator seeded by (seed, epoch) and torch's RNG state is restored.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel

from fusionedge.arrays import load_arrays
from fusionedge.manifest import group_overlap, hold_out, missing_classes, read_manifest
from fusionedge.metrics import primary_metric
from fusionedge.spec import ModelSpec
from fusionedge.training import distributed
from fusionedge.training.augment import augment_batch
from fusionedge.training.balance import (
    balance_summary,
    check_balance_options,
    class_weights,
    epoch_order,
)
from fusionedge.training.build import build_spec
from fusionedge.training.checkpoint import atomic_write_bytes, load_checkpoint, save_checkpoint
from fusionedge.training.config import TrainConfig, config_from_json
from fusionedge.training.device import autocast_context, make_scaler, resolve_device
from fusionedge.training.distributed import DistContext
from fusionedge.training.efficient import (
    can_cache_embeddings,
    embed_all,
    freeze_encoders,
    maybe_compile,
)
from fusionedge.training.model import FusedModel, count_parameters
from fusionedge.training.predict import evaluate_arrays, to_torch
from fusionedge.training.pretrained import load_pretrained
from fusionedge.training.runlog import RunLog
from fusionedge.training.specaugment import attach_spec_augment

log = logging.getLogger(__name__)

NO_DECAY = ("placeholders", "position", "query", "kind")


@dataclass
class TrainResult:
    run_dir: Path
    spec: ModelSpec
    best_epoch: int
    best_metrics: dict[str, Any]
    epochs_run: int


class RunFolderError(ValueError):
    """The output folder holds another run, or there is nothing to resume."""


def lr_at(step: int, total: int, warmup: int, config: TrainConfig) -> float:
    """Linear warmup to optim.lr, then cosine decay to optim.lr * min_lr_ratio."""
    peak = config.optim.lr
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    floor = config.optim.min_lr_ratio
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue  # a frozen encoder (config.freeze_encoders)
        skip = p.ndim <= 1 or any(part in name.split(".") for part in NO_DECAY)
        (no_decay if skip else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": config.optim.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if config.optim.name == "sgd":
        return torch.optim.SGD(
            groups, lr=config.optim.lr, momentum=config.optim.momentum, nesterov=True
        )
    return torch.optim.AdamW(groups, lr=config.optim.lr)


def make_ema(model: torch.nn.Module, decay: float) -> AveragedModel | None:
    """An exponential moving average of the weights and the BatchNorm statistics."""
    if decay == 0:
        return None

    def average(averaged: torch.Tensor, current: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        # Warm-up (as in timm's ModelEmaV2): early on the average follows the weights
        # closely, so a short run on a small data set is not judged on its initial weights.
        d = min(decay, (1 + float(count)) / (10 + float(count)))
        # The same average written as a step towards current: exact for weights that do
        # not move (a frozen encoder), where averaged * d + current * (1 - d) drifts by
        # an ulp per step.
        return averaged + (current - averaged) * (1 - d)

    return AveragedModel(model, avg_fn=average, use_buffers=True)


def drop_modalities(
    present: np.ndarray, spec: ModelSpec, config: TrainConfig, rng: np.random.Generator
) -> np.ndarray:
    """Hides modalities at random, but never every modality a sample has."""
    p = np.array([config.modality_dropout.get(m, 0.0) for m in spec.modalities])
    kept = present & ~(rng.random(present.shape) < p)
    emptied = ~kept.any(axis=1) & present.any(axis=1)
    kept[emptied] = present[emptied]
    return kept


def training_loss(
    model: FusedModel,
    inputs: dict[str, torch.Tensor],
    present: torch.Tensor,
    target: torch.Tensor,
    config: TrainConfig,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """The fused loss plus, weighted, the loss of each modality alone.

    The unimodal terms reuse the encoders' outputs and go through the same fusion and
    head with only one modality marked present, so they train exactly the path a
    deployed model takes when the other inputs are missing. `weights` are the class
    weights of the head's loss (training/balance.py), None for an unweighted loss.
    inputs may instead hold "encoded" [N, M, D]: embeddings cached from frozen encoders.
    """
    encoded = inputs["encoded"] if "encoded" in inputs else model.encode(inputs)
    loss = model.loss(model.head(model.fuse(encoded, present)), target, weights)
    if config.unimodal_loss_weight == 0 or present.shape[1] == 1:
        return loss
    terms = []
    for j in range(present.shape[1]):
        rows = present[:, j].nonzero().squeeze(1)
        if rows.numel() == 0:
            continue
        only = torch.zeros_like(present[rows])
        only[:, j] = True
        logits = model.head(model.fuse(encoded[rows], only))
        terms.append(model.loss(logits, target[rows], weights))
    if terms:
        loss = loss + config.unimodal_loss_weight * torch.stack(terms).sum()
    return loss


class TrainStep(torch.nn.Module):
    """training_loss as a module's forward: DistributedDataParallel synchronises the
    gradients of what runs inside a wrapped module's forward, and training_loss calls the
    model's encode/fuse/head directly, which a wrapped FusedModel would not see."""

    def __init__(
        self, model: FusedModel, config: TrainConfig, weights: torch.Tensor | None
    ) -> None:
        super().__init__()
        self.model, self.config, self.weights = model, config, weights

    def forward(
        self, inputs: dict[str, torch.Tensor], present: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        return training_loss(self.model, inputs, present, target, self.config, self.weights)


def run_epoch(
    model: FusedModel,
    optimizer: torch.optim.Optimizer,
    ema: AveragedModel | None,
    scaler: torch.amp.GradScaler,
    tensors: dict[str, torch.Tensor],
    present: np.ndarray,
    epoch: int,
    state: dict[str, Any],
    schedule: Callable[[int], float],
    config: TrainConfig,
    device: torch.device,
    progress: bool,
    weights: torch.Tensor | None = None,
    ctx: DistContext = distributed.SINGLE,
    step_module: torch.nn.Module | None = None,
    seen: dict[str, Any] | None = None,
) -> list[float]:
    """One pass over the training arrays; returns the batch losses.

    Every random choice (order or balanced draws, modality dropout, augmentation) comes
    from generators seeded by (seed, epoch), which is what makes a resumed run repeat
    exactly; the augmentation generator lives on the training device.

    With several processes (ctx), every rank draws the same order and trains on its own
    slice of it; step_module is then the DDP-wrapped TrainStep that averages gradients.
    With config.accumulate_steps k, the optimiser steps once per k batches. `seen`, when
    given, receives the sample indices of this epoch ("order") and a running count.
    """
    spec = model.spec
    model.train()
    frozen = [m for m in config.freeze_encoders if m in model.encoders]
    for m in frozen:
        # Frozen means frozen: BatchNorm statistics and dropout of the encoder stay off.
        model.encoders[m].eval()
    rng = np.random.default_rng([config.seed, epoch])
    order = epoch_order(config, spec, tensors["targets"].numpy(), rng)
    # Offset by rank so that two ranks do not augment their samples with the same draws;
    # rank 0 (and a single process) keeps the seed it always had.
    seed = int(rng.integers(2**62)) + ctx.rank
    generator = torch.Generator(device=device).manual_seed(seed)
    if config.sampler == "shuffle":
        # Per sample (each is used once): the same draws as before samplers existed.
        present = drop_modalities(present, spec, config, rng)[order]
    else:
        # Per draw: a sample drawn twice is not hidden the same way twice.
        present = drop_modalities(present[order], spec, config, rng)
    if ctx.enabled:
        mine = distributed.shard(order, ctx)
        order, present = order[mine], present[mine]
    if seen is not None:
        seen["order"] = order
        seen["samples"] = seen.get("samples", 0) + len(order)
    losses = []
    starts = range(0, len(order), config.batch_size)
    batches: Iterable[int] = starts
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc=f"epoch {epoch}/{config.epochs}", leave=False, unit="batch")
    k = config.accumulate_steps
    for i, start in enumerate(batches):
        first, last = i % k == 0, (i + 1) % k == 0 or i + 1 == len(starts)
        # Batches in this accumulation group: the last group of an epoch may be shorter,
        # and its mean loss is still a mean over its own batches.
        group_size = min(k, len(starts) - (i - i % k))
        idx = torch.from_numpy(order[start : start + config.batch_size])
        keys = ("encoded",) if "encoded" in tensors else spec.modalities
        inputs = {m: tensors[m][idx].to(device, non_blocking=True) for m in keys}
        inputs = augment_batch(inputs, config.augment, spec, generator)
        mask = torch.from_numpy(present[start : start + config.batch_size]).to(device)
        target = tensors["targets"][idx].to(device)
        if first:
            for group in optimizer.param_groups:
                group["lr"] = schedule(state["step"])
            optimizer.zero_grad(set_to_none=True)
        # DDP averages gradients across ranks on every backward unless told not to; within
        # an accumulation group only the last backward needs to.
        ddp = getattr(step_module, "_orig_mod", step_module)  # under torch.compile too
        sync = (
            ddp.no_sync()
            if isinstance(ddp, torch.nn.parallel.DistributedDataParallel) and not last
            else contextlib.nullcontext()
        )
        with sync:
            with autocast_context(device, config.amp):
                if step_module is None:
                    loss = training_loss(model, inputs, mask, target, config, weights)
                else:
                    loss = step_module(inputs, mask, target)
            scaler.scale(loss / group_size if group_size > 1 else loss).backward()
        losses.append(loss.item())
        if not last:
            continue
        if config.optim.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        if ema is not None:
            distributed.sync_buffers(model, ctx)
            ema.update_parameters(model)
            for m in frozen:
                # The average of a constant can move by rounding; keep it exactly equal.
                ema.module.encoders[m].load_state_dict(model.encoders[m].state_dict())
        state["step"] += 1
    return losses


def train(
    data: str | Path,
    out: str | Path,
    config: TrainConfig | None = None,
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Trains a fused model on a manifest data set and writes a run folder.

    Args:
        data: Data set folder (or its manifest.jsonl).
        out: Run folder to create, or to continue with resume=True.
        config: Training configuration; with resume=True it must be None (the run's own
            config.json is used, so the resumed run is the same run).
        resume: Continue from out/last.safetensors.
        progress: Show a progress bar on stderr.

    Under torchrun (RANK, WORLD_SIZE and LOCAL_RANK set) every process calls this with
    the same arguments; see training/distributed.py for what each one does. All of them
    return the same result.

    Raises:
        RunFolderError: out already holds a run (without resume), or holds none (with it).
        ManifestError: the data set has problems.
    """
    run_dir = Path(out)
    last_path, best_path = run_dir / "last.safetensors", run_dir / "best.safetensors"
    if resume:
        if config is not None:
            raise RunFolderError(
                "--resume continues the run with its own config.json; "
                "do not pass a config or --set with it"
            )
        if not last_path.is_file():
            raise RunFolderError(f"nothing to resume: {last_path} does not exist")
        config = config_from_json((run_dir / "config.json").read_text())
    else:
        if last_path.exists():
            raise RunFolderError(
                f"{run_dir} already holds a training run; pass --resume to "
                "continue it or choose another --out"
            )
        config = config or TrainConfig()
    ctx = distributed.env_context()
    if config.threads:
        torch.set_num_threads(config.threads)
    elif ctx.enabled:
        # Processes on one machine share its cores; torch's default of one thread per
        # core in every process would oversubscribe them.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // ctx.local_world_size))

    manifest = read_manifest(data)
    train_records = manifest.split("train")
    val_records = manifest.split("val")
    if not train_records:
        raise RunFolderError(f"{manifest.path}: no samples in the train split")
    if not val_records:
        # Without a validation split early stopping and "best" have nothing to go on;
        # hold out a deterministic tenth of the training samples instead.
        train_records, val_records = hold_out(train_records)
        log.warning(
            "no val split in %s: holding out %d of the training samples (whole groups "
            "when the lines have a `group`)",
            manifest.path,
            len(val_records),
        )
    unseen = missing_classes(manifest, train_records)
    if unseen and ctx.is_main:
        log.warning(
            "no training sample has the label(s) %s: the model cannot learn them. With few "
            "groups, a whole label can hash into val or test; give those lines a `split`",
            ", ".join(map(repr, unseen)),
        )
    val_groups = group_overlap(train_records, val_records)
    if val_groups["seen_in_train"] and ctx.is_main:
        log.warning(
            "%d of %d val groups (%d of %d val samples with a group) also occur in the train "
            "split: validation, early stopping and best.safetensors then reward knowing those "
            "speakers or sessions, not handling new ones. Keep each group in one split: leave "
            "`split` out of the lines (the hash of their `group` picks one) or set it per group",
            val_groups["seen_in_train"],
            val_groups["n_groups"],
            val_groups["samples_in_seen_groups"],
            val_groups["n_samples"],
        )

    device = resolve_device(distributed.device_for(config.device, ctx))
    distributed.check_size(len(train_records), ctx)
    torch.manual_seed(config.seed)
    checkpoint = load_checkpoint(last_path) if resume else None
    spec = checkpoint.spec if checkpoint else build_spec(manifest, config, train_records)
    # Refused before decoding and before the run folder is made.
    check_balance_options(config, spec)
    t0 = time.perf_counter()
    train_arrays = load_arrays(train_records, spec, manifest.path)
    val_arrays = load_arrays(val_records, spec, manifest.path)
    loss_weights = class_weights(config, spec, train_arrays.targets)
    log.info(
        "decoded %d train + %d val samples in %.1f s",
        len(train_arrays),
        len(val_arrays),
        time.perf_counter() - t0,
    )

    # Joined after decoding: a data set error is raised by every rank alike, before any
    # of them waits for the others.
    ctx = distributed.init(ctx, device)
    model = FusedModel(spec).to(device)
    if checkpoint is None:  # a new run: pretrained encoders start from their folders
        load_pretrained(model)
    attach_spec_augment(model, config.augment.audio.spec_augment)
    frozen = freeze_encoders(model, config)
    optimizer = make_optimizer(model, config)
    ema = make_ema(model, config.ema_decay)
    state: dict[str, Any] = {
        "epoch": 0,
        "step": 0,
        "best": None,
        "best_epoch": 0,
        "bad_epochs": 0,
        "stopped": False,
    }
    if checkpoint:
        model.load_state_dict(checkpoint.model)
        optimizer.load_state_dict(checkpoint.optimizer)
        torch.set_rng_state(checkpoint.rng)
        if ema is not None and checkpoint.ema is not None:
            ema.load_state_dict(checkpoint.ema)
        elif ema is not None:
            log.warning(
                "%s has no weight average; starting one from the resumed weights", last_path
            )
        state = checkpoint.state
        if ctx.is_main:
            # Temporary files of a write that the kill interrupted (checkpoint.py).
            for stale in run_dir.glob(".*.tmp"):
                stale.unlink(missing_ok=True)
        log.info("resuming %s after epoch %d", run_dir, state["epoch"])
    elif ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(run_dir / "config.json", config.to_json().encode())
        atomic_write_bytes(run_dir / "spec.json", spec.to_json().encode())
        log.info(
            "model: %s parameters, modalities %s, task %s, device %s",
            f"{count_parameters(model):,}",
            "+".join(spec.modalities),
            spec.task,
            device,
        )

    run_log = RunLog(run_dir, config.tensorboard) if ctx.is_main else None
    if run_log is not None:
        run_log.truncate_after(state["epoch"])
    metric, higher_better = primary_metric(spec.task)
    samples_per_rank = len(train_arrays) // ctx.world_size
    batches_per_epoch = math.ceil(samples_per_rank / config.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / config.accumulate_steps)
    warmup = max(1, round(config.optim.warmup_epochs * steps_per_epoch))
    schedule = functools.partial(
        lr_at, total=steps_per_epoch * config.epochs, warmup=warmup, config=config
    )
    scaler = make_scaler(device, config.amp)
    tensors = to_torch(train_arrays)
    if frozen and can_cache_embeddings(spec, config, frozen):
        t_cache = time.perf_counter()
        tensors = {"encoded": embed_all(model, tensors, device), "targets": tensors["targets"]}
        log.info(
            "encoders %s frozen: trained on cached embeddings (computed in %.2f s)",
            "+".join(frozen),
            time.perf_counter() - t_cache,
        )
    weights = None if loss_weights is None else torch.from_numpy(loss_weights).to(device)
    # None: run_epoch calls training_loss itself (a plain single-process run).
    step_module: torch.nn.Module | None = None
    if ctx.enabled:
        # Every parameter of every registered part gets a gradient from training_loss
        # (missing modalities go through torch.where, the unimodal terms reuse the fused
        # path), so DDP needs no search for unused parameters.
        step_module = torch.nn.parallel.DistributedDataParallel(
            TrainStep(model, config, weights),
            device_ids=[device] if device.type == "cuda" else None,
        )
    if config.compile:
        step_module = maybe_compile(step_module or TrainStep(model, config, weights), device)
    seen: dict[str, Any] = {}
    try:
        while state["epoch"] < config.epochs and not state.get("stopped"):
            epoch = state["epoch"] + 1
            t_epoch = time.perf_counter()
            losses = run_epoch(
                model,
                optimizer,
                ema,
                scaler,
                tensors,
                train_arrays.present,
                epoch,
                state,
                schedule,
                config,
                device,
                progress and ctx.is_main,
                weights,
                ctx,
                step_module,
                seen,
            )
            train_loss = distributed.mean(ctx, float(np.mean(losses)))
            distributed.sync_rng(ctx)
            if not ctx.is_main:
                # Rank 0 evaluates and writes; the others only need its verdict.
                state = distributed.broadcast(ctx, state)
                continue
            eval_model = model if ema is None else ema.module
            val = evaluate_arrays(eval_model, spec, val_arrays, device)
            score = val["metrics"][metric]
            improved = state["best"] is None or (
                score > state["best"] if higher_better else score < state["best"]
            )
            state.update(epoch=epoch, bad_epochs=0 if improved else state["bad_epochs"] + 1)
            state["stopped"] = bool(config.patience) and state["bad_epochs"] >= config.patience
            if improved:
                state.update(best=score, best_epoch=epoch)
                best_spec = spec.replace(metrics={"val": val["metrics"], "epoch": epoch})
                save_checkpoint(best_path, best_spec, eval_model)
            row = {
                "epoch": epoch,
                "step": state["step"],
                "lr": optimizer.param_groups[0]["lr"],
                "train_loss": train_loss,
                "val_loss": val["loss"],
                f"val_{metric}": score,
                "seconds": round(time.perf_counter() - t_epoch, 2),
            }
            if "macro_f1" in val["metrics"] and metric != "macro_f1":
                row["val_macro_f1"] = val["metrics"]["macro_f1"]
            run_log.write(row)
            # After the log row: a run killed in between re-runs this epoch on resume, and
            # truncate_after drops the row it wrote, so log.csv never has a hole.
            save_checkpoint(last_path, spec, model, state, optimizer, ema)
            log.info(
                "epoch %d: train loss %.4f, val loss %.4f, val %s %.4f%s",
                epoch,
                row["train_loss"],
                val["loss"],
                metric,
                score,
                " (best)" if improved else "",
            )
            state = distributed.broadcast(ctx, state)
            if state["stopped"]:
                log.info("stopping early: no val improvement for %d epochs", config.patience)
                break
    finally:
        if run_log is not None:
            run_log.close()

    shards = distributed.gather(ctx, (seen.get("samples", 0), seen.get("order")))
    distributed.barrier(ctx)  # rank 0's best.safetensors is complete before others read it
    best = load_checkpoint(best_path)
    result = TrainResult(
        run_dir, best.spec, state["best_epoch"], best.spec.metrics.get("val", {}), state["epoch"]
    )
    if not ctx.is_main:
        distributed.shutdown(ctx)
        return result
    atomic_write_bytes(run_dir / "spec.json", best.spec.to_json().encode())
    summary = {
        "best_epoch": state["best_epoch"],
        "epochs_run": state["epoch"],
        f"best_val_{metric}": state["best"],
        "val": best.spec.metrics.get("val", {}),
        "balance": balance_summary(config, spec, train_arrays.targets, loss_weights),
        # How many val groups training also saw (zeros when the lines have no group).
        "val_groups": val_groups,
        # Where the data set was: export checks parity on its validation samples.
        "data": str(manifest.path.resolve()),
    }
    if ctx.enabled:
        summary["distributed"] = distributed.summary(
            ctx, config.batch_size, config.accumulate_steps, shards
        )
    atomic_write_bytes(run_dir / "metrics.json", json.dumps(summary, indent=2).encode())
    distributed.shutdown(ctx)
    return result
