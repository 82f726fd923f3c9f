"""The model file's contract: the names training, export and the runtime must agree on.

docs/ARCHITECTURE.md, "The model contract". Every layer may import this module (it
imports nothing), so each name is written here once: a file written by one release and
read by another meets the same names, and a rename is one edit.
"""

from __future__ import annotations

from pathlib import Path

# ONNX metadata keys.
SPEC_KEY = "fusionedge.spec"  # the ModelSpec as JSON: preprocessing, labels, parts
PRECISION_KEY = "fusionedge.precision"  # "int8" / "fp16" on a converted copy
PART_KEY = "fusionedge.part"  # which part of a split model a file is

# Graph inputs: one per modality of the spec, in spec order, then the presence mask.
INPUT_NAMES = {"image": "image", "audio": "audio", "text": "tokens"}
PRESENT = "present"
# Graph outputs, in this order.
OUTPUT_NAMES = ("scores", "embedding")

# Split models: model.onnx -> model.split/ with one file per part.
FUSION_PART = "fusion"
FRONTEND_PART = "audio_frontend"


def split_folder(model_path: str | Path) -> Path:
    """model.onnx -> model.split (the folder the split parts go into)."""
    path = Path(model_path)
    return path.with_name(path.stem + ".split")


def embedding_input(modality: str) -> str:
    """The fusion part's input name for one modality's embedding."""
    return f"{modality}_embedding"
