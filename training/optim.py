"""The optimiser, its learning-rate schedule and the weight average (EMA)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
from torch.optim.swa_utils import AveragedModel

from fusionedge.training.config import TrainConfig
from fusionedge.training.distributed import DistContext

# Parameters with one of these name parts get no weight decay: the placeholders of
# missing modalities, position embeddings and the attention fusion's query and
# modality-kind embeddings are learned values, not weights to shrink towards zero. (The
# match is by name part, so the BERT encoder's `query` projection is not decayed either.)
NO_DECAY = ("placeholders", "position", "query", "kind")


def lr_at(step: int, total: int, warmup: int, config: TrainConfig) -> float:
    """Linear warmup to optim.lr, then cosine decay to optim.lr * min_lr_ratio."""
    peak = config.optim.lr
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    floor = config.optim.min_lr_ratio
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_schedule(config: TrainConfig, n_train: int, ctx: DistContext) -> Callable[[int], float]:
    """The learning rate of each optimiser step, for n_train training samples."""
    samples_per_rank = n_train // ctx.world_size
    batches_per_epoch = math.ceil(samples_per_rank / config.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / config.accumulate_steps)
    warmup = max(1, round(config.optim.warmup_epochs * steps_per_epoch))
    return functools.partial(
        lr_at, total=steps_per_epoch * config.epochs, warmup=warmup, config=config
    )


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
