"""Fixtures for the training tests; the helpers themselves live in support.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from support import write_dataset


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, and on a busy 2-core machine two spinning
    intra-op threads made them ~30x slower. Training with config.threads also sets the
    global count; the previous value is put back after each test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 3-class image + audio + text data set (16 kHz WAVs, resampled to the spec)."""
    return write_dataset(tmp_path_factory.mktemp("data3"))


@pytest.fixture(scope="session")
def make_dataset(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """write_dataset into a fresh temporary folder."""

    def make(**kwargs: Any) -> Path:
        return write_dataset(tmp_path_factory.mktemp("data"), **kwargs)

    return make
