"""FusedModel: encoders per modality, placeholders for missing ones, a fusion and a head.

The forward signature is the ONNX model contract (docs/ARCHITECTURE.md, "The model
contract"): named inputs `image`, `audio`, `tokens` (those of the spec's modalities) and
`present`; outputs `scores` and `embedding`. Whatever subset of modalities `present`
marks, the model predicts.
"""

from __future__ import annotations

import torch
from torch import nn

from fusionedge.contract import INPUT_NAMES
from fusionedge.spec import ModelSpec
from fusionedge.training import bert as _bert  # noqa: F401  (fills the registries)
from fusionedge.training import encoders as _encoders  # noqa: F401
from fusionedge.training import fusion as _fusion  # noqa: F401
from fusionedge.training import heads as _heads  # noqa: F401
from fusionedge.training.registry import ENCODERS, FUSIONS, HEADS


class FusedModel(nn.Module):
    """A multimodal model built entirely from a ModelSpec."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        d = spec.embed_dim
        self.encoders = nn.ModuleDict(
            {
                m: ENCODERS[m].create(
                    spec.encoders[m].name,
                    spec=getattr(spec, m),
                    embed_dim=d,
                    **spec.encoders[m].params,
                )
                for m in spec.modalities
            }
        )
        # What the fusion sees for a missing modality: learned, so the model can tell
        # "no camera" from any real picture instead of seeing an all-zero embedding.
        self.placeholders = nn.Parameter(torch.zeros(len(spec.modalities), d))
        self.fusion = FUSIONS.create(
            spec.fusion.name, num_modalities=len(spec.modalities), embed_dim=d, **spec.fusion.params
        )
        self.head = HEADS.create(
            spec.head.name, embed_dim=d, num_outputs=spec.num_outputs, **spec.head.params
        )

    def encode(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Every modality's embedding, [N, M, D], whether present or not."""
        return torch.stack([self.encoders[m](inputs[m]) for m in self.spec.modalities], dim=1)

    def fuse(self, encoded: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Fused embedding [N, D]: missing modalities swapped for their placeholders."""
        placeholders = self.placeholders.to(encoded.dtype).unsqueeze(0)
        tokens = torch.where(present.unsqueeze(-1), encoded, placeholders)
        return self.fusion(tokens, present)

    def embed(self, inputs: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        """Fused embedding [N, D] from inputs keyed by modality name."""
        return self.fuse(self.encode(inputs), present)

    def logits_and_embedding(
        self, inputs: dict[str, torch.Tensor], present: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.embed(inputs, present)
        return self.head(embedding), embedding

    def forward(
        self,
        image: torch.Tensor | None = None,
        audio: torch.Tensor | None = None,
        tokens: torch.Tensor | None = None,
        present: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The model contract: returns (scores [N, C], embedding [N, D])."""
        given = {"image": image, "audio": audio, "text": tokens}
        missing = [INPUT_NAMES[m] for m in self.spec.modalities if given[m] is None]
        if missing or present is None:
            raise ValueError(
                f"inputs {missing + ([] if present is not None else ['present'])}"
                f" are required by this model (modalities {self.spec.modalities})"
            )
        logits, embedding = self.logits_and_embedding(
            {m: given[m] for m in self.spec.modalities}, present
        )
        return self.head.scores(logits), embedding.float()

    def loss(
        self, logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.head.loss(logits, targets, class_weights)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
