"""Fusions: combine M modality embeddings [N, M, D] into one [N, D] embedding.

Missing modalities have already been replaced by learned placeholders when a fusion runs,
so each fusion sees a full [N, M, D] tensor; `present` is passed for fusions that can use
it to ignore placeholders. Adding a fusion is one class plus one registry line.
"""

from __future__ import annotations

import torch
from torch import nn

from fusionedge.training.registry import FUSIONS


class ConcatFusion(nn.Module):
    """Concatenate, then an MLP: the strong baseline for a handful of modalities."""

    def __init__(self, num_modalities: int, embed_dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(num_modalities * embed_dim, embed_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(embed_dim, embed_dim),
        )

    def forward(self, tokens: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        return self.mlp(tokens.flatten(1))


class SumFusion(nn.Module):
    """Sum of the embeddings, normalised: order-free and the cheapest."""

    def __init__(self, num_modalities: int, embed_dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(embed_dim)
        self.mlp = nn.Sequential(nn.GELU(), nn.Dropout(dropout), nn.Linear(embed_dim, embed_dim))

    def forward(self, tokens: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm(tokens.sum(dim=1)))


class AttentionFusion(nn.Module):
    """A learned query attends over modality tokens (plus a modality-type embedding).

    Placeholders of missing modalities are masked out of the attention, so the weight
    goes to what is really there; the query token itself is always attendable, which
    keeps a sample with nothing present well defined.
    """

    def __init__(
        self, num_modalities: int, embed_dim: int, heads: int = 4, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.kind = nn.Parameter(torch.zeros(1, num_modalities, embed_dim))
        nn.init.normal_(self.kind, std=0.02)
        self.norm = nn.LayerNorm(embed_dim)
        self.attn = nn.MultiheadAttention(embed_dim, heads, dropout=dropout, batch_first=True)
        self.mlp = nn.Sequential(
            nn.LayerNorm(embed_dim),
            nn.Linear(embed_dim, 2 * embed_dim),
            nn.GELU(),
            nn.Linear(2 * embed_dim, embed_dim),
        )

    def forward(self, tokens: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        n = tokens.shape[0]
        keys = self.norm(torch.cat([self.query.expand(n, -1, -1), tokens + self.kind], dim=1))
        ignore = torch.cat([torch.zeros_like(present[:, :1]), ~present], dim=1)
        fused, _ = self.attn(keys[:, :1], keys, keys, key_padding_mask=ignore, need_weights=False)
        fused = fused.squeeze(1)
        return fused + self.mlp(fused)


class GatedFusion(nn.Module):
    """Per-sample softmax gates over projected modality embeddings (a mixture of experts)."""

    def __init__(self, num_modalities: int, embed_dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.gate = nn.Linear(num_modalities * embed_dim, num_modalities)
        self.proj = nn.Linear(embed_dim, embed_dim)
        self.mlp = nn.Sequential(nn.GELU(), nn.Dropout(dropout), nn.Linear(embed_dim, embed_dim))

    def forward(self, tokens: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        logits = self.gate(tokens.flatten(1))
        # A missing modality's placeholder gets no weight: -inf before the softmax would
        # give NaN when nothing is present, so a large negative constant is used instead.
        logits = logits.masked_fill(~present, -1e4)
        weights = torch.softmax(logits, dim=1).unsqueeze(-1)
        return self.mlp((weights * self.proj(tokens)).sum(dim=1))


class LateFusion(nn.Module):
    """Decision-level fusion: each modality's own linear map, combined over the modalities
    present only (placeholders take no part).

    With the default linear head, the logits are then the mean ("late") or the sum
    ("poe") of one linear classifier per modality. The sum of logits is a product of
    experts: softmax(sum of l_m) is proportional to the product of softmax(l_m), so
    modalities that agree reinforce each other and an unsure one (flat logits) barely
    moves the answer. Neither can learn that one modality's feature means something only
    together with another's; in exchange, a modality that looks unfamiliar at run time
    (a new speaker, another camera) cannot derail the others through a shared layer.
    """

    def __init__(
        self, num_modalities: int, embed_dim: int, dropout: float = 0.1, combine: str = "mean"
    ) -> None:
        super().__init__()
        if combine not in ("mean", "sum"):
            raise ValueError(f"combine: expected 'mean' or 'sum', got {combine!r}")
        self.combine = combine
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Dropout(dropout), nn.Linear(embed_dim, embed_dim))
            for _ in range(num_modalities)
        )

    def forward(self, tokens: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        outputs = torch.stack([e(tokens[:, i]) for i, e in enumerate(self.experts)], dim=1)
        weights = present.to(outputs.dtype).unsqueeze(-1)
        if self.combine == "mean":
            weights = weights / weights.sum(dim=1, keepdim=True).clamp(min=1)
        return (outputs * weights).sum(dim=1)


def product_of_experts(num_modalities: int, embed_dim: int, dropout: float = 0.1) -> nn.Module:
    return LateFusion(num_modalities, embed_dim, dropout, combine="sum")


FUSIONS.register("concat")(ConcatFusion)
FUSIONS.register("sum")(SumFusion)
FUSIONS.register("attention")(AttentionFusion)
FUSIONS.register("gated")(GatedFusion)
FUSIONS.register("late")(LateFusion)
FUSIONS.register("poe")(product_of_experts)
