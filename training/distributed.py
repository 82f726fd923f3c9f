"""Training on several processes: torchrun's environment, sharding, and rank-0-only writes.

    torchrun --nproc_per_node 2 -m fusionedge.cli train --data D --out R
    torchrun --nnodes 2 --node_rank 0 --master_addr HOST --nproc_per_node 8 \\
        -m fusionedge.cli train --data D --out R

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK (and MASTER_ADDR/PORT); `fusionedge train`
reads them, so the same command line trains on one process or many. What each process
does:

- it joins the process group (NCCL with device cuda:LOCAL_RANK on GPUs, gloo on CPU);
- every rank draws the same epoch order from the trainer's (seed, epoch) generator and
  trains on its own slice (order[rank::world_size] after trimming the order to a multiple
  of world_size), so the ranks see disjoint samples and the order stays reproducible;
- gradients are averaged by DistributedDataParallel, so the weights (and the weight
  average) stay identical on every rank;
- batch_size is per process: one optimiser step sees batch_size * world_size samples.
  The learning rate is not scaled; raise optim.lr yourself if you want the linear rule;
- rank 0 alone evaluates on the whole validation split and writes the run folder; the
  others wait at a barrier and are told whether to stop.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job; world_size 1 is a plain single-process run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str = ""

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = DistContext()


def env_context() -> DistContext:
    """The torchrun variables of this process, or a single-process context without them.

    Raises:
        ValueError: the variables are set but malformed.
    """
    if "WORLD_SIZE" not in os.environ:
        return DistContext()
    try:
        world = int(os.environ["WORLD_SIZE"])
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    except ValueError as e:
        raise ValueError(
            f"torchrun environment: RANK/WORLD_SIZE/LOCAL_RANK must be integers ({e})"
        ) from e
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"torchrun environment: RANK={rank} is not in [0, WORLD_SIZE={world})")
    return DistContext(rank, world, local_rank, max(1, local_world))


def device_for(requested: str, ctx: DistContext) -> str:
    """The device name a rank trains on: each local rank gets its own GPU.

    Raises:
        ValueError: one fixed "cuda:N" asked for by several processes on one machine.
    """
    if not ctx.enabled:
        return requested
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda":
        return f"cuda:{ctx.local_rank}"
    if requested.startswith("cuda:") and ctx.local_world_size > 1:
        raise ValueError(
            f"device: {requested!r} names one GPU, but {ctx.local_world_size} processes run "
            "on this machine; use device=cuda (each process takes cuda:LOCAL_RANK) or auto"
        )
    return requested


def init(ctx: DistContext, device: torch.device) -> DistContext:
    """Joins the process group (no-op for a single process); returns ctx with its backend."""
    if not ctx.enabled:
        return ctx
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        # A rank that dies leaves the others waiting; a bounded timeout ends the job
        # instead of hanging it forever.
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    log.info("rank %d of %d (%s, %s)", ctx.rank, ctx.world_size, backend, device)
    return DistContext(ctx.rank, ctx.world_size, ctx.local_rank, ctx.local_world_size, backend)


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def broadcast(ctx: DistContext, value: Any) -> Any:
    """Rank 0's value (a picklable object) on every rank."""
    if not ctx.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(ctx: DistContext, value: Any) -> list[Any]:
    """Every rank's value, in rank order, on every rank."""
    if not ctx.enabled:
        return [value]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, value)
    return out


def shard(order: np.ndarray, ctx: DistContext) -> np.ndarray:
    """This rank's positions in the epoch order: every world_size-th after trimming.

    Trimming (at most world_size - 1 samples, different ones each epoch because the order
    is shuffled) keeps the ranks disjoint and gives each the same number of batches, which
    DDP needs (a rank with one batch more would wait forever for the others' gradients).
    Returns positions into `order`, so per-draw arrays (modality dropout) shard alike.
    """
    if not ctx.enabled:
        return np.arange(len(order))
    usable = len(order) - len(order) % ctx.world_size
    return np.arange(ctx.rank, usable, ctx.world_size)


def check_size(n_train: int, ctx: DistContext) -> None:
    """Raises ValueError when some rank would get no training sample."""
    if ctx.enabled and n_train < ctx.world_size:
        raise ValueError(
            f"{ctx.world_size} processes but only {n_train} training samples: every process "
            "needs at least one; use fewer processes (--nproc_per_node) or more data"
        )


def sync_buffers(model: torch.nn.Module, ctx: DistContext) -> None:
    """Rank 0's buffers (BatchNorm statistics) on every rank.

    DDP broadcasts them at the start of each forward, but each rank's own batch updates
    them during it; copying them again before the weight-average update keeps that
    average identical on every rank, so any rank's checkpoint would be the same.
    """
    if not ctx.enabled:
        return
    for buffer in model.buffers():
        if buffer.dtype.is_floating_point or buffer.dtype == torch.long:
            dist.broadcast(buffer.data, src=0)


def mean(ctx: DistContext, value: float) -> float:
    """The mean of a number over the ranks (each rank's epoch loss -> the job's)."""
    if not ctx.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.float64)
    if ctx.backend == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return float(tensor.item()) / ctx.world_size


def sync_rng(ctx: DistContext) -> None:
    """Rank 0's torch RNG state on every rank.

    Ranks draw different amounts from it (dropout on the unimodal terms depends on how
    many samples of their batch have each modality), while a checkpoint holds rank 0's
    state only; giving every rank that state after each epoch makes a resumed run repeat
    the uninterrupted one exactly.
    """
    if ctx.enabled:
        torch.set_rng_state(broadcast(ctx, torch.get_rng_state()))


def summary(
    ctx: DistContext, batch_size: int, accumulate_steps: int, shards: list[Any]
) -> dict[str, Any]:
    """What metrics.json records about the processes.

    Args:
        ctx: This job.
        batch_size: The config's batch_size (per process).
        accumulate_steps: The config's accumulate_steps.
        shards: Per rank (from gather), the samples it trained on in this invocation and
            the sample indices of its last epoch.
    """
    orders = [set(order.tolist()) for _, order in shards if order is not None]
    return {
        "world_size": ctx.world_size,
        "backend": ctx.backend,
        "batch_size_per_process": batch_size,
        # Samples behind one optimiser step, all processes together.
        "global_batch_size": batch_size * accumulate_steps * ctx.world_size,
        # Samples each rank trained on in this invocation (all epochs; a resumed run
        # counts from where it resumed), and how many samples of the last epoch more
        # than one rank saw (0: the shards are disjoint).
        "train_samples_per_rank": [int(n) for n, _ in shards],
        "last_epoch_samples_per_rank": [len(o) for o in orders],
        "last_epoch_shared_samples": sum(map(len, orders)) - len(set().union(*orders)),
    }
