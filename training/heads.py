"""Task heads: logits from the fused embedding, the loss, and the `scores` output."""

from __future__ import annotations

import torch
from torch import nn

from fusionedge.training.registry import HEADS


class Head(nn.Module):
    """A linear (or one-hidden-layer) map to logits; subclasses define loss and scores."""

    def __init__(
        self, embed_dim: int, num_logits: int, hidden: int = 0, dropout: float = 0.1
    ) -> None:
        super().__init__()
        if hidden:
            self.net = nn.Sequential(
                nn.Linear(embed_dim, hidden),
                nn.GELU(),
                nn.Dropout(dropout),
                nn.Linear(hidden, num_logits),
            )
        else:
            self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(embed_dim, num_logits))

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.net(embedding)


class MulticlassHead(Head):
    def __init__(self, embed_dim: int, num_outputs: int, **kwargs) -> None:
        super().__init__(embed_dim, num_outputs, **kwargs)

    def loss(
        self, logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        return nn.functional.cross_entropy(logits.float(), targets, weight=class_weights)

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.float(), dim=1)


class BinaryHead(Head):
    """One logit; scores are [P(labels[0]), P(labels[1])] so columns match the labels."""

    def __init__(self, embed_dim: int, num_outputs: int, **kwargs) -> None:
        if num_outputs != 2:
            raise ValueError(f"a binary head has two labels, got {num_outputs}")
        super().__init__(embed_dim, 1, **kwargs)

    def loss(
        self, logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        pos_weight = None if class_weights is None else class_weights[1:] / class_weights[0]
        return nn.functional.binary_cross_entropy_with_logits(
            logits.float().squeeze(1), targets.float(), pos_weight=pos_weight
        )

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(logits.float())
        return torch.cat([1 - p, p], dim=1)


class MultilabelHead(Head):
    def __init__(self, embed_dim: int, num_outputs: int, **kwargs) -> None:
        super().__init__(embed_dim, num_outputs, **kwargs)

    def loss(
        self, logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        return nn.functional.binary_cross_entropy_with_logits(
            logits.float(), targets, pos_weight=class_weights
        )

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits.float())


class RegressionHead(Head):
    """Predicts standardised targets; scores are mapped back to the target's own units.

    target_mean and target_std come from the training split and travel in the spec, so
    targets in the thousands train as well as targets near 1.
    """

    def __init__(
        self,
        embed_dim: int,
        num_outputs: int,
        target_mean: float = 0.0,
        target_std: float = 1.0,
        **kwargs,
    ) -> None:
        super().__init__(embed_dim, num_outputs, **kwargs)
        if not target_std > 0:
            raise ValueError(f"target_std must be positive, got {target_std}")
        self.register_buffer("target_mean", torch.tensor(float(target_mean)))
        self.register_buffer("target_std", torch.tensor(float(target_std)))

    def loss(
        self, logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        # Smooth L1: robust to the odd mislabelled target that MSE would chase.
        standard = (targets - self.target_mean) / self.target_std
        return nn.functional.smooth_l1_loss(logits.float(), standard)

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.float() * self.target_std + self.target_mean


HEADS.register("multiclass")(MulticlassHead)
HEADS.register("binary")(BinaryHead)
HEADS.register("multilabel")(MultilabelHead)
HEADS.register("regression")(RegressionHead)
