"""`fusionedge export --split`: one ONNX file per modality encoder and one for fusion + head.

The parts are cut from the same FusedModel the single file comes from, so composed on the
same inputs they compute the same scores (checked against PyTorch like the single file,
see check_split_parity). The file layout and the contract between the parts are in
runtime/split.py, which reads them.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fusionedge.export.onnx_export import DEFAULT_OPSET, SPEC_KEY, example_inputs, export_module
from fusionedge.runtime.split import FUSION_PART, PART_KEY, embedding_input
from fusionedge.training.model import INPUT_NAMES, FusedModel


class EncoderPart(nn.Module):
    """One modality's encoder alone: its model input -> embedding [N, D].

    The keyword names are the model inputs', since the exporter names graph inputs after
    them; only the encoder's own is given.
    """

    def __init__(self, model: FusedModel, modality: str) -> None:
        super().__init__()
        self.modality = modality
        self.encoder = model.encoders[modality]

    def forward(
        self,
        image: torch.Tensor | None = None,
        audio: torch.Tensor | None = None,
        tokens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = {"image": image, "audio": audio, "text": tokens}[self.modality]
        return self.encoder(x).float()


class FusionPart(nn.Module):
    """Placeholders, fusion and head: embeddings by modality + present -> (scores, embedding)."""

    def __init__(self, model: FusedModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        image_embedding: torch.Tensor | None = None,
        audio_embedding: torch.Tensor | None = None,
        text_embedding: torch.Tensor | None = None,
        present: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        given = {"image": image_embedding, "audio": audio_embedding, "text": text_embedding}
        encoded = torch.stack([given[m] for m in self.model.spec.modalities], dim=1)
        embedding = self.model.fuse(encoded, present)
        return self.model.head.scores(self.model.head(embedding)), embedding.float()


def export_split(
    model: FusedModel, folder: str | Path, opset: int = DEFAULT_OPSET
) -> dict[str, dict[str, Any]]:
    """Writes folder/{<modality>.onnx..., fusion.onnx}; returns the facts of each part.

    The folder is replaced as a whole, so parts of an older export never mix with these.
    """
    spec = model.spec
    model = model.cpu().eval()
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    examples = {k: torch.from_numpy(v) for k, v in example_inputs(spec, batch=2).items()}
    spec_json = spec.to_json(indent=None)
    facts: dict[str, dict[str, Any]] = {}
    embeddings = {}
    for m in spec.modalities:
        name = INPUT_NAMES[m]
        part = EncoderPart(model, m)
        facts[m] = export_module(
            part,
            {name: examples[name]},
            tmp / f"{m}.onnx",
            ("embedding",),
            {SPEC_KEY: spec_json, PART_KEY: m},
            f"fusionedge split model: the {m} encoder ({name} -> embedding)",
            opset,
        )
        with torch.no_grad():
            embeddings[embedding_input(m)] = part(**{name: examples[name]})
    facts[FUSION_PART] = export_module(
        FusionPart(model),
        {**embeddings, "present": examples["present"]},
        tmp / f"{FUSION_PART}.onnx",
        ("scores", "embedding"),
        {SPEC_KEY: spec_json, PART_KEY: FUSION_PART},
        "fusionedge split model: fusion and head (<modality>_embedding, present -> scores)",
        opset,
    )
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return facts
