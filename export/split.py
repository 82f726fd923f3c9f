"""`fusionedge export --split`: one ONNX file per modality encoder and one for fusion + head
(and, for log-mel audio encoders, one for the front end).

The parts are cut from the same FusedModel the single file comes from, so composed on the
same inputs they compute the same scores (checked against PyTorch like the single file,
see check_split_parity). The file layout and the contract between the parts are in
runtime/split.py, which reads them. Each part is sealed with its own digest, and the
fusion part carries the golden cases of the parts composed (export/integrity.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fusionedge.contract import (
    FRONTEND_PART,
    FUSION_PART,
    INPUT_NAMES,
    OUTPUT_NAMES,
    PART_KEY,
    SPEC_KEY,
    embedding_input,
)
from fusionedge.export.integrity import seal, split_golden_cases
from fusionedge.export.onnx_export import DEFAULT_OPSET, example_inputs, export_module
from fusionedge.spec import ModelSpec
from fusionedge.training.model import FusedModel


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


class FrontendPart(nn.Module):
    """An audio encoder's log-mel alone: PCM [N, S] (any S >= n_fft) -> [N, 1, n_mels, F]."""

    def __init__(self, model: FusedModel) -> None:
        super().__init__()
        self.logmel = model.encoders["audio"].logmel

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.logmel(audio)


class AudioBodyPart(nn.Module):
    """An audio encoder after its log-mel: [N, 1, n_mels, F] -> embedding [N, D]."""

    def __init__(self, model: FusedModel) -> None:
        super().__init__()
        self.encoder = model.encoders["audio"]

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        return self.encoder.encode_logmel(logmel).float()


def has_frontend(model: FusedModel) -> bool:
    """Whether the audio encoder is a log-mel front end and a body (MelEncoder): then the
    front end gets its own file, so a live loop can compute the log-mel of new audio only."""
    encoder = model.encoders["audio"] if "audio" in model.spec.modalities else None
    return all(hasattr(encoder, name) for name in ("logmel", "encode_logmel"))


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


def export_audio_parts(
    model: FusedModel, audio: torch.Tensor, folder: Path, spec_json: str, opset: int
) -> dict[str, dict[str, Any]]:
    """audio_frontend.onnx (PCM of any length -> log-mel) and audio.onnx (log-mel ->
    embedding). The front end's sample axis is dynamic: fed the newest hop of audio (plus
    the DFT's overlap) it gives just the new frames."""
    n_fft = model.spec.audio.n_fft
    samples = torch.export.Dim("samples", min=n_fft, max=1 << 24)
    facts = {
        FRONTEND_PART: export_module(
            FrontendPart(model),
            {"audio": audio},
            folder / f"{FRONTEND_PART}.onnx",
            ("logmel",),
            {SPEC_KEY: spec_json, PART_KEY: FRONTEND_PART},
            "fusionedge split model: the audio log-mel front end (audio -> logmel)",
            opset,
            dynamic={"audio": {1: samples}},
        )
    }
    with torch.no_grad():
        logmel = FrontendPart(model)(audio)
    facts["audio"] = export_module(
        AudioBodyPart(model),
        {"logmel": logmel},
        folder / "audio.onnx",
        ("embedding",),
        {SPEC_KEY: spec_json, PART_KEY: "audio"},
        "fusionedge split model: the audio encoder after its front end (logmel -> embedding)",
        opset,
    )
    return facts


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
        with torch.no_grad():
            embeddings[embedding_input(m)] = part(**{name: examples[name]})
        if m == "audio" and has_frontend(model):
            facts.update(export_audio_parts(model, examples["audio"], tmp, spec_json, opset))
            continue
        facts[m] = export_module(
            part,
            {name: examples[name]},
            tmp / f"{m}.onnx",
            ("embedding",),
            {SPEC_KEY: spec_json, PART_KEY: m},
            f"fusionedge split model: the {m} encoder ({name} -> embedding)",
            opset,
        )
    facts[FUSION_PART] = export_module(
        FusionPart(model),
        {**embeddings, "present": examples["present"]},
        tmp / f"{FUSION_PART}.onnx",
        OUTPUT_NAMES,
        {SPEC_KEY: spec_json, PART_KEY: FUSION_PART},
        "fusionedge split model: fusion and head (<modality>_embedding, present -> scores)",
        opset,
    )
    seal_parts(tmp, spec, facts)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return facts


def seal_parts(folder: Path, spec: ModelSpec, facts: dict[str, dict[str, Any]]) -> None:
    """Gives every part its digest, and the fusion part the golden cases of the parts
    composed (export/integrity.py); each part's facts get its digest and final size."""
    golden = split_golden_cases(folder, spec)
    for name, part in facts.items():
        path = folder / f"{name}.onnx"
        part |= seal(path, golden if name == FUSION_PART else None)
        part["bytes"] = path.stat().st_size
