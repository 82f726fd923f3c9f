"""Fixtures for the runtime tests: a tiny trained model exported once per session.

Training and export need torch; the runtime tests themselves use only numpy and
onnxruntime (test_runtime_no_torch.py proves it in a fresh interpreter).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support import tiny_spec, train_and_export, write_dataset

from fusionedge.runtime import Predictor


@pytest.fixture(scope="session")
def runtime_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 3-class image + audio + text data set (16 kHz WAVs, 20x24 PNGs)."""
    return write_dataset(tmp_path_factory.mktemp("runtime_data"))


@pytest.fixture(scope="session")
def model_path(runtime_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny image + audio + text model, trained a few epochs and exported."""
    return train_and_export(runtime_data, tmp_path_factory.mktemp("runtime_model"))


@pytest.fixture(scope="session")
def image_text_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained image + text model (no audio), for inputs a model does not take."""
    import torch

    from fusionedge.export.onnx_export import export_onnx
    from fusionedge.training.model import FusedModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("runtime_model_it") / "image_text.onnx"
    export_onnx(FusedModel(tiny_spec(("image", "text"))).eval(), path)
    return path


@pytest.fixture(scope="session")
def predictor(model_path: Path) -> Iterator[Predictor]:
    with Predictor.from_path(model_path, providers="cpu", threads=1) as p:
        yield p
