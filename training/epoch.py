"""What one epoch draws: the sample order, the hidden modalities, the augmentation seed.

Every random choice of an epoch comes from generators seeded by (seed, epoch), which is
what makes a resumed run repeat exactly.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from fusionedge.spec import ModelSpec
from fusionedge.training import distributed
from fusionedge.training.balance import epoch_order
from fusionedge.training.config import TrainConfig
from fusionedge.training.distributed import DistContext


@dataclass(frozen=True)
class EpochDraws:
    """This rank's samples of one epoch, in order.

    Attributes:
        order: Sample indices into the training arrays, one per draw.
        present: bool [len(order), M]: the modalities each draw shows the model.
        generator: The augmentation generator, on the training device.
    """

    order: np.ndarray
    present: np.ndarray
    generator: torch.Generator


def drop_modalities(
    present: np.ndarray, spec: ModelSpec, config: TrainConfig, rng: np.random.Generator
) -> np.ndarray:
    """Hides modalities at random, but never every modality a sample has."""
    p = np.array([config.modality_dropout.get(m, 0.0) for m in spec.modalities])
    kept = present & ~(rng.random(present.shape) < p)
    emptied = ~kept.any(axis=1) & present.any(axis=1)
    kept[emptied] = present[emptied]
    return kept


def draw_epoch(
    config: TrainConfig,
    spec: ModelSpec,
    targets: np.ndarray,
    present: np.ndarray,
    epoch: int,
    ctx: DistContext,
    device: torch.device,
) -> EpochDraws:
    """The order (or balanced draws), modality dropout and augmentation seed of an epoch.

    With several processes every rank draws the same order and keeps its own slice.
    """
    rng = np.random.default_rng([config.seed, epoch])
    order = epoch_order(config, spec, targets, rng)
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
    return EpochDraws(order, present, generator)


def gradient_sync(
    step_module: torch.nn.Module | None, last: bool
) -> contextlib.AbstractContextManager:
    """DDP's no_sync() for every backward of an accumulation group but its last.

    DDP averages gradients across ranks on every backward unless told not to; within a
    group only the last backward needs to.
    """
    ddp = getattr(step_module, "_orig_mod", step_module)  # under torch.compile too
    if isinstance(ddp, torch.nn.parallel.DistributedDataParallel) and not last:
        return ddp.no_sync()
    return contextlib.nullcontext()
