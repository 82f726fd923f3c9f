"""Training on a CUDA GPU with mixed precision (`python -m pytest -m cuda`; skipped without one)."""

from __future__ import annotations

import json

import pytest
import torch
from support import tiny_config

from fusionedge.training.checkpoint import load_checkpoint
from fusionedge.training.trainer import train

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize("amp", [True, False])
def test_training_on_cuda_learns_and_saves_cpu_tensors(dataset, tmp_path, amp):
    config = tiny_config("device=cuda", f"amp={str(amp).lower()}", "epochs=6")
    result = train(dataset, tmp_path / "run", config, progress=False)
    assert result.best_metrics["accuracy"] > 0.8
    rows = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert len(rows) == 1 + 6
    weights = load_checkpoint(tmp_path / "run" / "best.safetensors").model
    assert all(t.device.type == "cpu" and torch.isfinite(t.float()).all() for t in weights.values())
    assert json.loads((tmp_path / "run" / "config.json").read_text())["device"] == "cuda"
