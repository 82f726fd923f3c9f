"""The training loop: data set in, run folder out.

A run folder holds config.json, spec.json, best.safetensors, last.safetensors, log.csv,
metrics.json and tensorboard/. `last` is written after every epoch with everything needed
to resume (optimiser moments, RNG state, counters); a resumed CPU run is bit-for-bit the
run that was never interrupted, because every random choice of an epoch is drawn from
a generator seeded by (seed, epoch) and torch's RNG state is restored.

`train()` reads in order: the run folder and config (`run_config`), torch's global state
for the run (`device.torch_globals`), the data (`run_data.load_run_data`), then a
`Trainer`: set up (`__init__`), `fit` (per epoch `run_epoch`, then `validate`), `finish`.
"""

from __future__ import annotations

import dataclasses
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

from fusionedge.card import write_card_or_warn
from fusionedge.metrics import primary_metric
from fusionedge.spec import ModelSpec
from fusionedge.training import distributed
from fusionedge.training.augment import augment_batch
from fusionedge.training.balance import balance_summary
from fusionedge.training.checkpoint import (
    Checkpoint,
    atomic_write_bytes,
    load_checkpoint,
    save_checkpoint,
)
from fusionedge.training.config import TrainConfig, config_from_json
from fusionedge.training.device import (
    autocast_context,
    make_scaler,
    resolve_device,
    torch_globals,
)
from fusionedge.training.distributed import DistContext
from fusionedge.training.efficient import (
    can_cache_embeddings,
    embed_all,
    freeze_encoders,
    maybe_compile,
)
from fusionedge.training.epoch import EpochDraws, draw_epoch, gradient_sync
from fusionedge.training.loss import TrainStep, training_loss
from fusionedge.training.model import FusedModel, count_parameters
from fusionedge.training.optim import make_ema, make_optimizer, make_schedule
from fusionedge.training.predict import evaluate_arrays, rows_to_torch
from fusionedge.training.pretrained import load_pretrained
from fusionedge.training.run_data import RunData, decoding_scratch, load_run_data
from fusionedge.training.runlog import RunLog
from fusionedge.training.specaugment import attach_spec_augment

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    spec: ModelSpec
    best_epoch: int
    best_metrics: dict[str, Any]
    epochs_run: int


class RunFolderError(ValueError):
    """The output folder holds another run, or there is nothing to resume."""


class TrainingDiverged(ValueError):
    """No epoch gave a finite validation score (NaN or infinite losses)."""


@dataclass
class TrainState:
    """The counters that carry a run from one epoch to the next (JSON in last.safetensors)."""

    epoch: int = 0
    step: int = 0
    best: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped: bool = False  # absent from checkpoints written before early stopping

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainState:
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def run_config(run_dir: Path, config: TrainConfig | None, resume: bool) -> TrainConfig:
    """The run's configuration: the given one for a new run, config.json to resume."""
    last_path = run_dir / "last.safetensors"
    if not resume:
        if last_path.exists():
            raise RunFolderError(
                f"{run_dir} already holds a training run; pass --resume to "
                "continue it or choose another --out"
            )
        return config or TrainConfig()
    if config is not None:
        raise RunFolderError(
            "--resume continues the run with its own config.json; "
            "do not pass a config or --set with it"
        )
    if not last_path.is_file():
        raise RunFolderError(f"nothing to resume: {last_path} does not exist")
    return config_from_json((run_dir / "config.json").read_text())


def thread_count(config: TrainConfig, ctx: DistContext) -> int:
    """config.threads; under torchrun a share of the cores; else 0 (torch's default)."""
    if config.threads or not ctx.enabled:
        return config.threads
    # Processes on one machine share its cores; torch's default of one thread per core
    # in every process would oversubscribe them.
    return max(1, (os.cpu_count() or 1) // ctx.local_world_size)


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
    return the same result. torch's thread count and global RNG are as before on return.

    Raises:
        RunFolderError: out already holds a run (without resume), or holds none (with it).
        ManifestError: the data set has problems.
    """
    run_dir = Path(out)
    config = run_config(run_dir, config, resume)
    ctx = distributed.env_context()
    device = resolve_device(distributed.device_for(config.device, ctx))
    with (
        torch_globals(thread_count(config, ctx), config.seed, device),
        decoding_scratch(run_dir) as scratch,
    ):
        checkpoint = load_checkpoint(run_dir / "last.safetensors") if resume else None
        spec = checkpoint.spec if checkpoint else None
        run_data = load_run_data(data, config, ctx, spec, scratch)
        # Joined after decoding: a data set error is raised by every rank alike, before
        # any of them waits for the others.
        ctx = distributed.init(ctx, device)
        trainer = Trainer(run_dir, config, run_data, ctx, device, checkpoint)
        trainer.fit(progress and ctx.is_main)
        return trainer.finish()


class Trainer:
    """One run on decoded data: set up here, then fit() and finish()."""

    def __init__(
        self,
        run_dir: Path,
        config: TrainConfig,
        data: RunData,
        ctx: DistContext,
        device: torch.device,
        checkpoint: Checkpoint | None,
    ) -> None:
        self.run_dir, self.config, self.data = run_dir, config, data
        self.spec, self.ctx, self.device = data.spec, ctx, device
        self.model = FusedModel(self.spec).to(device)
        if checkpoint is None:  # a new run: pretrained encoders start from their folders
            load_pretrained(self.model)
        attach_spec_augment(self.model, config.augment.audio.spec_augment)
        self.frozen = freeze_encoders(self.model, config)
        self.optimizer = make_optimizer(self.model, config)
        self.ema = make_ema(self.model, config.ema_decay)
        self.state = TrainState()
        if checkpoint is not None:
            self.restore(checkpoint)
        elif ctx.is_main:
            self.create_run_folder()
        self.metric, self.higher_better = primary_metric(self.spec.task)
        self.schedule = make_schedule(config, len(data.train), ctx)
        self.scaler = make_scaler(device, config.amp)
        self.rows = self.training_rows()
        self.weights = (
            None if data.loss_weights is None else torch.from_numpy(data.loss_weights).to(device)
        )
        self.step_module = self.make_step_module()
        # This rank's draws of the last epoch and its running sample count (for metrics.json).
        self.seen: dict[str, Any] = {"samples": 0, "order": None}

    # -- set-up ------------------------------------------------------------------------

    def restore(self, checkpoint: Checkpoint) -> None:
        """Weights, optimiser, RNG, weight average and counters of a resumed run."""
        self.model.load_state_dict(checkpoint.model)
        self.optimizer.load_state_dict(checkpoint.optimizer)
        torch.set_rng_state(checkpoint.rng)
        if self.ema is not None and checkpoint.ema is not None:
            self.ema.load_state_dict(checkpoint.ema)
        elif self.ema is not None:
            log.warning(
                "%s has no weight average; starting one from the resumed weights",
                self.run_dir / "last.safetensors",
            )
        self.state = TrainState.from_dict(checkpoint.state)
        if self.ctx.is_main:
            # Temporary files of a write that the kill interrupted (checkpoint.py).
            for stale in self.run_dir.glob(".*.tmp"):
                stale.unlink(missing_ok=True)
        log.info("resuming %s after epoch %d", self.run_dir, self.state.epoch)

    def create_run_folder(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.run_dir / "config.json", self.config.to_json().encode())
        atomic_write_bytes(self.run_dir / "spec.json", self.spec.to_json().encode())
        log.info(
            "model: %s parameters, modalities %s, task %s, device %s",
            f"{count_parameters(self.model):,}",
            "+".join(self.spec.modalities),
            self.spec.task,
            self.device,
        )

    def training_rows(self) -> Callable[[np.ndarray], dict[str, torch.Tensor]]:
        """Rows of the training data as tensors: the inputs (read from disk when the data
        set was decoded there), or the cached embeddings when frozen encoders allow."""
        train = self.data.train
        if not (self.frozen and can_cache_embeddings(self.spec, self.config, self.frozen)):
            return lambda idx: rows_to_torch(train.rows(idx))
        t0 = time.perf_counter()
        encoded = embed_all(self.model, train, self.device)
        log.info(
            "encoders %s frozen: trained on cached embeddings (computed in %.2f s)",
            "+".join(self.frozen),
            time.perf_counter() - t0,
        )
        targets = torch.from_numpy(train.targets)
        return lambda idx: {"encoded": encoded[idx], "targets": targets[idx]}

    def make_step_module(self) -> torch.nn.Module | None:
        """The module a batch's loss runs through; None: training_loss called directly."""
        step_module: torch.nn.Module | None = None
        if self.ctx.enabled:
            # Every parameter of every registered part gets a gradient from training_loss
            # (missing modalities go through torch.where, the unimodal terms reuse the fused
            # path), so DDP needs no search for unused parameters.
            step_module = torch.nn.parallel.DistributedDataParallel(
                TrainStep(self.model, self.config, self.weights),
                device_ids=[self.device] if self.device.type == "cuda" else None,
            )
        if self.config.compile:
            step_module = maybe_compile(
                step_module or TrainStep(self.model, self.config, self.weights), self.device
            )
        return step_module

    # -- fit ---------------------------------------------------------------------------

    def fit(self, progress: bool) -> None:
        """Epochs until config.epochs or early stopping; rank 0 validates and writes."""
        run_log = RunLog(self.run_dir, self.config.tensorboard) if self.ctx.is_main else None
        if run_log is not None:
            run_log.truncate_after(self.state.epoch)
        try:
            while self.state.epoch < self.config.epochs and not self.state.stopped:
                epoch = self.state.epoch + 1
                started = time.perf_counter()
                losses = self.run_epoch(epoch, progress)
                train_loss = distributed.mean(self.ctx, float(np.mean(losses)))
                distributed.sync_rng(self.ctx)
                if run_log is not None:
                    self.validate(epoch, train_loss, started, run_log)
                # The others only need rank 0's verdict.
                self.state = distributed.broadcast(self.ctx, self.state)
        finally:
            if run_log is not None:
                run_log.close()

    def run_epoch(self, epoch: int, progress: bool = False) -> list[float]:
        """One pass over the training arrays; returns the batch losses.

        With config.accumulate_steps k, the optimiser steps once per k batches.
        """
        self.model.train()
        for m in self.frozen:
            # Frozen means frozen: BatchNorm statistics and dropout of the encoder stay off.
            self.model.encoders[m].eval()
        train = self.data.train
        draws = draw_epoch(
            self.config, self.spec, train.targets, train.present, epoch, self.ctx, self.device
        )
        self.seen["order"] = draws.order
        self.seen["samples"] += len(draws.order)
        starts = range(0, len(draws.order), self.config.batch_size)
        batches: Iterable[int] = starts
        if progress:
            from tqdm import tqdm

            label = f"epoch {epoch}/{self.config.epochs}"
            batches = tqdm(starts, desc=label, leave=False, unit="batch")
        return [self.train_batch(draws, i, start, len(starts)) for i, start in enumerate(batches)]

    def train_batch(self, draws: EpochDraws, i: int, start: int, n_batches: int) -> float:
        """Forward and backward of the i-th batch; the optimiser steps after a group's last."""
        k = self.config.accumulate_steps
        first, last = i % k == 0, (i + 1) % k == 0 or i + 1 == n_batches
        # Batches in this accumulation group: the last group of an epoch may be shorter,
        # and its mean loss is still a mean over its own batches.
        group_size = min(k, n_batches - (i - i % k))
        span = slice(start, start + self.config.batch_size)
        batch = self.rows(draws.order[span])
        keys = ("encoded",) if "encoded" in batch else self.spec.modalities
        inputs = {m: batch[m].to(self.device, non_blocking=True) for m in keys}
        inputs = augment_batch(inputs, self.config.augment, self.spec, draws.generator)
        mask = torch.from_numpy(draws.present[span]).to(self.device)
        target = batch["targets"].to(self.device)
        if first:
            for group in self.optimizer.param_groups:
                group["lr"] = self.schedule(self.state.step)
            self.optimizer.zero_grad(set_to_none=True)
        with gradient_sync(self.step_module, last):
            with autocast_context(self.device, self.config.amp):
                loss = self.loss(inputs, mask, target)
            self.scaler.scale(loss / group_size if group_size > 1 else loss).backward()
        if last:
            self.optimizer_step()
        return loss.item()

    def loss(
        self, inputs: dict[str, torch.Tensor], mask: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        if self.step_module is None:
            return training_loss(self.model, inputs, mask, target, self.config, self.weights)
        return self.step_module(inputs, mask, target)

    def optimizer_step(self) -> None:
        if self.config.optim.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            distributed.sync_buffers(self.model, self.ctx)
            self.ema.update_parameters(self.model)
            for m in self.frozen:
                # The average of a constant can move by rounding; keep it exactly equal.
                self.ema.module.encoders[m].load_state_dict(self.model.encoders[m].state_dict())
        self.state.step += 1

    # -- validate ----------------------------------------------------------------------

    def evaluated_model(self) -> torch.nn.Module:
        """What validation scores and best.safetensors holds: the weight average if any."""
        return self.model if self.ema is None else self.ema.module

    def validate(self, epoch: int, train_loss: float, started: float, run_log: RunLog) -> None:
        """Scores val, keeps the best weights, logs the epoch and writes last.safetensors."""
        val = evaluate_arrays(self.evaluated_model(), self.spec, self.data.val, self.device)
        score = val["metrics"][self.metric]
        improved = self.record(epoch, score)
        if improved:
            best_spec = self.spec.replace(metrics={"val": val["metrics"], "epoch": epoch})
            save_checkpoint(self.run_dir / "best.safetensors", best_spec, self.evaluated_model())
        row = {
            "epoch": epoch,
            "step": self.state.step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": train_loss,
            "val_loss": val["loss"],
            f"val_{self.metric}": score,
            "seconds": round(time.perf_counter() - started, 2),
        }
        if "macro_f1" in val["metrics"] and self.metric != "macro_f1":
            row["val_macro_f1"] = val["metrics"]["macro_f1"]
        run_log.write(row)
        # After the log row: a run killed in between re-runs this epoch on resume, and
        # truncate_after drops the row it wrote, so log.csv never has a hole.
        save_checkpoint(
            self.run_dir / "last.safetensors",
            self.spec,
            self.model,
            self.state.to_dict(),
            self.optimizer,
            self.ema,
        )
        log.info(
            "epoch %d: train loss %.4f, val loss %.4f, val %s %.4f%s",
            *(epoch, train_loss, val["loss"], self.metric, score),
            " (best)" if improved else "",
        )
        if self.state.stopped:
            log.info("stopping early: no val improvement for %d epochs", self.config.patience)

    def record(self, epoch: int, score: float) -> bool:
        """Counts the epoch in the state; True when score is the best so far. A NaN or
        infinite score (a diverged run) is never the best."""
        best = self.state.best
        better = best is None or (score > best if self.higher_better else score < best)
        improved = math.isfinite(score) and better
        self.state.epoch = epoch
        self.state.bad_epochs = 0 if improved else self.state.bad_epochs + 1
        patience = self.config.patience
        self.state.stopped = bool(patience) and self.state.bad_epochs >= patience
        if improved:
            self.state.best, self.state.best_epoch = score, epoch
        return improved

    # -- finish ------------------------------------------------------------------------

    def finish(self) -> TrainResult:
        """The best checkpoint's result; rank 0 writes spec.json and metrics.json."""
        shards = distributed.gather(self.ctx, (self.seen["samples"], self.seen["order"]))
        distributed.barrier(self.ctx)  # rank 0's best.safetensors is complete before others read it
        best_path = self.run_dir / "best.safetensors"
        if not best_path.is_file():
            raise TrainingDiverged(
                f"val {self.metric} was not a finite number after any of the "
                f"{self.state.epoch} epochs, so {self.run_dir} has no best.safetensors: "
                "the run diverged; lower optim.lr, or look for NaN/inf in the data"
            )
        best = load_checkpoint(best_path)
        val = best.spec.metrics.get("val", {})
        result = TrainResult(self.run_dir, best.spec, self.state.best_epoch, val, self.state.epoch)
        if self.ctx.is_main:
            atomic_write_bytes(self.run_dir / "spec.json", best.spec.to_json().encode())
            summary = json.dumps(self.summary(val, shards), indent=2)
            atomic_write_bytes(self.run_dir / "metrics.json", summary.encode())
            write_card_or_warn(self.run_dir)  # after metrics.json, which it reads
        distributed.shutdown(self.ctx)
        return result

    def summary(self, val: dict[str, Any], shards: list[Any]) -> dict[str, Any]:
        """metrics.json: the best epoch, its val metrics and how the data was used."""
        config, state = self.config, self.state
        targets, weights = self.data.train.targets, self.data.loss_weights
        summary = {
            "best_epoch": state.best_epoch,
            "epochs_run": state.epoch,
            f"best_val_{self.metric}": state.best,
            "val": val,
            "balance": balance_summary(config, self.spec, targets, weights),
            # How many val groups training also saw (zeros when the lines have no group).
            "val_groups": self.data.val_groups,
            # Where the data set was: export checks parity on its validation samples.
            "data": str(self.data.manifest_path.resolve()),
        }
        if self.ctx.enabled:
            summary["distributed"] = distributed.summary(
                self.ctx, config.batch_size, config.accumulate_steps, shards
            )
        return summary
