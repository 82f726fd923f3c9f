"""Reading a fusionedge ONNX file: its spec from the metadata, with clear errors."""

from __future__ import annotations

from pathlib import Path

from fusionedge.contract import SPEC_KEY
from fusionedge.spec import ModelSpec, SpecError


class ModelFileError(ValueError):
    """The file is not an ONNX model, or not one fusionedge wrote (or can read)."""


def spec_from_metadata(metadata: dict[str, str], path: str | Path) -> ModelSpec:
    """The ModelSpec stored under `fusionedge.spec`.

    Raises:
        ModelFileError: no fusionedge metadata (an ONNX file from another tool), or a spec
            this version cannot read (for example a newer schema version).
    """
    if SPEC_KEY not in metadata:
        keys = sorted(metadata) or "none"
        raise ModelFileError(
            f"{path}: no '{SPEC_KEY}' metadata (metadata keys: {keys}); this ONNX file was "
            "not exported by `fusionedge export`, which stores the preprocessing and labels "
            "the runtime needs"
        )
    try:
        return ModelSpec.from_json(metadata[SPEC_KEY])
    except SpecError as e:
        raise ModelFileError(f"{path}: its fusionedge spec cannot be read: {e}") from e
