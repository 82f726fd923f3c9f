"""Cheaper training: frozen encoders, embeddings cached from them, and torch.compile.

Freezing an encoder keeps its weights (and, because it runs in eval mode, its BatchNorm
statistics) as they were loaded or initialised. When every encoder of the model is frozen
and no augmentation changes their inputs, a sample's embeddings are the same in every
epoch: the trainer computes them once (embed_all) and the epochs train the placeholders,
fusion and head on them; benchmarks/frozen_encoders.py measures the difference.
"""

from __future__ import annotations

import logging

import torch

from fusionedge.arrays import SampleArrays
from fusionedge.spec import ModelSpec
from fusionedge.training.config import TrainConfig
from fusionedge.training.model import FusedModel

log = logging.getLogger(__name__)


def freeze_encoders(model: FusedModel, config: TrainConfig) -> tuple[str, ...]:
    """Stops the encoders of config.freeze_encoders from training; returns those frozen."""
    frozen = tuple(m for m in config.freeze_encoders if m in model.spec.modalities)
    for m in set(config.freeze_encoders) - set(frozen):
        log.warning("freeze_encoders: this model has no %s encoder; ignored", m)
    for m in frozen:
        model.encoders[m].requires_grad_(False)
    if "audio" in frozen and config.augment.audio.spec_augment.enabled:
        log.warning(
            "augment.audio.spec_augment has no effect on a frozen audio encoder "
            "(it runs in eval mode, as frozen encoders do)"
        )
    return frozen


def can_cache_embeddings(spec: ModelSpec, config: TrainConfig, frozen: tuple[str, ...]) -> bool:
    """True when every encoder is frozen and no augmentation changes their inputs: then
    each sample's embeddings are the same in every epoch and are computed once."""
    if set(frozen) != set(spec.modalities):
        return False
    augmented = [m for m in spec.modalities if getattr(config.augment, m).enabled]
    if augmented:
        log.info(
            "encoders frozen but augment.%s is on: embeddings are computed every step "
            "(turn it off to train on cached embeddings)",
            "/".join(augmented),
        )
    return not augmented


@torch.no_grad()
def embed_all(
    model: FusedModel, arrays: SampleArrays, device: torch.device, batch: int = 256
) -> torch.Tensor:
    """Every sample's modality embeddings [N, M, D] (eval mode), kept on the CPU."""
    model.eval()
    out = []
    for i in range(0, len(arrays), batch):
        rows = arrays.rows(slice(i, i + batch))
        inputs = {m: torch.from_numpy(rows[m]).to(device) for m in model.spec.modalities}
        out.append(model.encode(inputs).float().cpu())
    return torch.cat(out)


def maybe_compile(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """torch.compile(module), or module itself (with a warning) where torch cannot compile.

    Inductor needs a C++ compiler on CPU and Triton on CUDA; compiling is lazy, so what
    is missing is checked here rather than failing at the first step.
    """
    import shutil

    reason = None
    if not hasattr(torch, "compile"):
        reason = f"torch {torch.__version__} has no torch.compile"
    elif device.type == "cpu" and not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        reason = "no C++ compiler (c++, g++ or clang++) on PATH for inductor on CPU"
    elif device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            reason = "Triton is not installed"
    if reason is None:
        try:
            return torch.compile(module)
        except RuntimeError as e:
            reason = str(e)
    log.warning("compile: skipped, training runs uncompiled (%s)", reason)
    return module
