"""The training loss: the fused prediction's loss plus each modality's alone."""

from __future__ import annotations

import torch

from fusionedge.training.config import TrainConfig
from fusionedge.training.model import FusedModel


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
