"""The model file's contract: the names training, export and the runtime must agree on.

docs/ARCHITECTURE.md, "The model contract". Every layer may import this module (it
imports nothing), so each name is written here once: a file written by one release and
read by another meets the same names, and a rename is one edit.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fusionedge.spec import ModelSpec

# ONNX metadata keys.
SPEC_KEY = "fusionedge.spec"  # the ModelSpec as JSON: preprocessing, labels, parts
PRECISION_KEY = "fusionedge.precision"  # "int8" / "fp16" on a converted copy
PART_KEY = "fusionedge.part"  # which part of a split model a file is
# sha256 of the file's bytes without this entry ("sha256:<hex>"; fusionedge.integrity).
DIGEST_KEY = "fusionedge.digest"
# Seeded inputs' scores as the file computed them at export, as JSON (fusionedge.integrity).
GOLDEN_KEY = "fusionedge.golden"

# Graph inputs: one per modality of the spec, in spec order, then the presence mask.
INPUT_NAMES = {"image": "image", "audio": "audio", "text": "tokens"}
PRESENT = "present"
# Dtypes of the graph inputs (numpy names: this module imports no numpy).
INPUT_DTYPES = {"image": "uint8", "audio": "float32", "text": "int64"}
PRESENT_DTYPE = "bool"
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


def input_layout(spec: ModelSpec) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Graph input name -> (numpy dtype name, shape without the batch dimension).

    In graph order: the spec's modalities (image HWC RGB, audio PCM at the spec's rate,
    text token ids padded to max_length), then the presence mask, one column per modality.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    if spec.image is not None:
        shapes["image"] = (spec.image.height, spec.image.width, 3)
    if spec.audio is not None:
        shapes["audio"] = (spec.audio.num_samples,)
    if spec.text is not None:
        shapes["text"] = (spec.text.max_length,)
    layout = {INPUT_NAMES[m]: (INPUT_DTYPES[m], shapes[m]) for m in spec.modalities}
    layout[PRESENT] = (PRESENT_DTYPE, (len(spec.modalities),))
    return layout


def modality_subsets(modalities: Sequence[str], empty: bool = False) -> list[tuple[str, ...]]:
    """Every subset of the modalities, smallest first, each in the given order; the
    empty subset first when asked for (a model must still answer with nothing present)."""
    sizes = range(0 if empty else 1, len(modalities) + 1)
    return [c for r in sizes for c in itertools.combinations(modalities, r)]


def subset_name(modalities: Iterable[str]) -> str:
    """How reports name a subset: the modalities sorted and joined, "audio+image";
    "none" for the empty one. Sorted, so a subset has one name whatever the spec's order."""
    return "+".join(sorted(modalities)) or "none"
