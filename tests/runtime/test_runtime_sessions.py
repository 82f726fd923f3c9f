"""Session options of the Predictor: optimisation levels, the optimised-graph cache, IO binding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fusionedge.runtime import ModelFileError, Predictor
from fusionedge.runtime.bench import random_batch
from fusionedge.runtime.sessions import session_options


def sample_inputs(predictor: Predictor, n: int = 3) -> dict[str, np.ndarray]:
    return random_batch(predictor, n)


@pytest.mark.parametrize("level", ["disable", "basic", "extended"])
def test_every_optimisation_level_gives_the_same_scores(model_path: Path, level: str) -> None:
    reference = Predictor.from_path(model_path, providers="cpu")
    other = Predictor.from_path(model_path, providers="cpu", optimization=level)
    inputs = sample_inputs(reference)
    assert np.abs(reference.run(inputs)[0] - other.run(inputs)[0]).max() <= 1e-5


def test_an_unknown_optimisation_level_is_refused() -> None:
    with pytest.raises(ValueError, match=r"optimization must be one of .*'all'"):
        session_options(optimization="max")


def test_the_optimised_graph_is_cached_once_and_reused(model_path: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = Predictor.from_path(model_path, providers="cpu", cache_dir=cache)
    files = list(cache.iterdir())
    assert len(files) == 1 and files[0].suffix == ".onnx"
    assert not [f for f in cache.iterdir() if f.name.startswith(".")]  # no temporary left
    stamp = files[0].stat().st_mtime_ns
    second = Predictor.from_path(model_path, providers="cpu", cache_dir=cache)
    assert files[0].stat().st_mtime_ns == stamp  # loaded, not written again
    assert second.spec == first.spec  # the metadata survives the optimised copy
    inputs = sample_inputs(first)
    assert np.abs(first.run(inputs)[0] - second.run(inputs)[0]).max() <= 1e-6
    # A different model (here: another optimisation level) gets its own entry.
    Predictor.from_path(model_path, providers="cpu", cache_dir=cache, optimization="basic")
    assert len(list(cache.iterdir())) == 2


def test_io_binding_gives_the_same_outputs(model_path: Path) -> None:
    plain = Predictor.from_path(model_path, providers="cpu", io_binding=False)
    bound = Predictor.from_path(model_path, providers="cpu", io_binding=True)
    assert bound.io_binding and not plain.io_binding
    # "auto" binds only where it pays: on CUDA.
    assert not Predictor.from_path(model_path, providers="cpu").io_binding
    inputs = sample_inputs(plain, 4)
    for a, b in zip(plain.run(inputs), bound.run(inputs), strict=True):
        assert a.shape == b.shape and np.array_equal(a, b)


def test_a_model_file_that_is_not_onnx_names_itself(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(ModelFileError, match=r"model\.onnx: ONNX Runtime cannot load it"):
        Predictor.from_path(bad, cache_dir=tmp_path / "cache")
    assert not any((tmp_path / "cache").iterdir())  # nothing half-written is left
