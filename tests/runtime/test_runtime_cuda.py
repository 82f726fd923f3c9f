"""ONNX Runtime on CUDA (`python -m pytest -m cuda`; skipped where the CUDA provider does not
really start). The figures of these paths come from benchmarks/gpu_check.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_runtime_sessions import sample_inputs

from fusionedge.runtime import Predictor


def cuda_works(model: Path) -> bool:
    try:
        return Predictor.from_path(model, providers=["cuda"]).providers[0] == (
            "CUDAExecutionProvider"
        )
    except Exception:
        return False


pytestmark = pytest.mark.cuda


@pytest.fixture(scope="module")
def cuda_model(model_path: Path) -> Path:
    if not cuda_works(model_path):
        pytest.skip("ONNX Runtime's CUDA provider does not start here")
    return model_path


@pytest.mark.parametrize("io_binding", [False, True])
def test_cuda_scores_match_cpu(cuda_model: Path, io_binding: bool) -> None:
    cpu = Predictor.from_path(cuda_model, providers="cpu")
    gpu = Predictor.from_path(cuda_model, providers=["cuda"], strict=True, io_binding=io_binding)
    assert gpu.providers[0] == "CUDAExecutionProvider" and gpu.io_binding == io_binding
    for n in (1, 7):
        inputs = sample_inputs(cpu, n)
        assert np.abs(cpu.run(inputs)[0] - gpu.run(inputs)[0]).max() <= 1e-3


def test_auto_picks_cuda_and_binds_io(cuda_model: Path) -> None:
    predictor = Predictor.from_path(cuda_model)
    assert predictor.providers[0] == "CUDAExecutionProvider"
    assert predictor.io_binding and predictor.missing_providers == []
