"""Fixtures the reliability tests share."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import tiny_spec


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny model (image, audio, text), exported and sealed: what the runtime
    does with inputs and files, not what the weights learned, is under test."""
    import torch

    from fusionedge.export.onnx_export import export_onnx
    from fusionedge.training.model import FusedModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_model") / "model.onnx"
    export_onnx(FusedModel(tiny_spec()).eval(), path)
    return path
