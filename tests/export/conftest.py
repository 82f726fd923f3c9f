"""Fixtures for the export tests: tiny random models, each exported once per session."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from support import tiny_spec
from torch import nn

from fusionedge.export.onnx_export import export_onnx
from fusionedge.spec import ModelSpec
from fusionedge.training.model import FusedModel


@dataclass
class Exported:
    """A tiny model in eval mode and its exported ONNX file."""

    model: FusedModel
    path: Path
    facts: dict[str, Any]

    @property
    def spec(self) -> ModelSpec:
        return self.model.spec


def randomize(model: FusedModel, seed: int = 0) -> FusedModel:
    """Makes a freshly built model less degenerate than its init, so a wrong export shows.

    A new model has BatchNorm statistics 0/1, all-zero placeholders and queries, and a head
    whose softmax is nearly uniform (score errors shrink ~100x there); random statistics,
    random placeholders and a sharper head make every part of the graph count.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.normal_(0.0, 0.3, generator=g)
                module.running_var.uniform_(0.5, 2.0, generator=g)
                module.weight.uniform_(0.5, 1.5, generator=g)
                module.bias.normal_(0.0, 0.2, generator=g)
        for p in model.parameters():
            if not p.any():
                p.normal_(0.0, 0.5, generator=g)
        last = [m for m in model.head.modules() if isinstance(m, nn.Linear)][-1]
        last.weight.mul_(6.0)
    return model.eval()


def build_model(seed: int = 0, **spec_kwargs: Any) -> FusedModel:
    torch.manual_seed(seed)
    return randomize(FusedModel(tiny_spec(**spec_kwargs)), seed)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread (see tests/training/conftest.py); the previous
    count is put back after each module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def export_tiny(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Exported]:
    """export_tiny(**tiny_spec kwargs) -> Exported; each distinct model is exported once."""
    cache: dict[tuple, Exported] = {}
    root = tmp_path_factory.mktemp("exported")

    def export(**spec_kwargs: Any) -> Exported:
        key = tuple(sorted((k, repr(v)) for k, v in spec_kwargs.items()))
        if key not in cache:
            model = build_model(**spec_kwargs)
            path = root / f"model{len(cache)}.onnx"
            facts = export_onnx(model, path)
            cache[key] = Exported(model, path, facts)
        return cache[key]

    return export
