"""fusionedge: train, export and run multimodal (image + audio + text) models at the edge.

The top-level package is numpy-only: the spec, manifest data sets, host-side
preprocessing and the tokenizer. Training lives in fusionedge.training (torch), export in
fusionedge.export, and the torch-free runtime in fusionedge.runtime.
"""

from fusionedge.spec import (
    AudioSpec,
    ComponentSpec,
    ImageSpec,
    ModelSpec,
    SpecError,
    TextSpec,
    TokenizerSpec,
)
from fusionedge.version import __version__

__all__ = [
    "AudioSpec",
    "ComponentSpec",
    "ImageSpec",
    "ModelSpec",
    "SpecError",
    "TextSpec",
    "TokenizerSpec",
    "__version__",
]
