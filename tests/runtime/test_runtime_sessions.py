"""Session options of the Predictor: optimisation levels, the optimised-graph cache, IO binding."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fusionedge.runtime import ModelFileError, Predictor
from fusionedge.runtime.bench import random_batch
from fusionedge.runtime.sessions import (
    SPINNING_KEY,
    cached_model_path,
    copy_options,
    open_session,
    session_options,
)


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


# ------------------------------------------------------------------ open_session, copy_options

CPU = ["CPUExecutionProvider"]


def caller_options() -> Any:
    """Options a caller might reuse: every setting open_session's cache could touch differs
    from ONNX Runtime's default, and optimized_model_filepath is left empty."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.add_session_config_entry(SPINNING_KEY, "0")
    options.log_severity_level = 3
    return options


def settings(options: Any) -> dict[str, Any]:
    """What a caller set: the properties open_session's cache changes on its copy, and
    the spinning entry."""
    return {
        "intra_op_num_threads": options.intra_op_num_threads,
        "graph_optimization_level": options.graph_optimization_level,
        "optimized_model_filepath": options.optimized_model_filepath,
        "log_severity_level": options.log_severity_level,
        SPINNING_KEY: options.get_session_config_entry(SPINNING_KEY),
    }


def settable_properties(cls: type) -> list[str]:
    """Every property with a setter, on the class or any base (not only its own vars)."""
    return sorted(
        name
        for name in dir(cls)
        if isinstance(getattr(cls, name, None), property) and getattr(cls, name).fset is not None
    )


def thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


def test_open_session_leaves_the_callers_options_as_they_were(
    model_path: Path, tmp_path: Path
) -> None:
    import onnxruntime as ort

    options = caller_options()
    before = settings(options)
    assert before["optimized_model_filepath"] == ""
    cache = tmp_path / "cache"
    # First open: a cache miss, where the copy is told where to save the optimised graph.
    first = open_session(model_path, options, CPU, cache_dir=cache)
    assert settings(options) == before
    # Second open with the same object: a cache hit, where the copy's optimisation is off.
    second = open_session(model_path, options, CPU, cache_dir=cache)
    assert settings(options) == before
    assert options.optimized_model_filepath == ""
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    # The caller's options still make a plain session, and it writes no file anywhere.
    open_session(model_path, options, CPU)
    assert settings(options) == before
    assert {p.relative_to(tmp_path) for p in tmp_path.rglob("*")} == {
        Path("cache"),
        cached_model_path(model_path, cache, CPU, "basic").relative_to(tmp_path),
    }
    # Each session got the caller's settings, through the copy.
    for session in (first, second):
        used = session.get_session_options()
        assert used.intra_op_num_threads == 3
        assert used.get_session_config_entry(SPINNING_KEY) == "0"
        assert used.log_severity_level == 3
    assert (
        first.get_session_options().graph_optimization_level
        == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    )
    assert (
        second.get_session_options().graph_optimization_level
        == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )


def test_open_session_writes_the_cache_where_cached_model_path_says(
    model_path: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    session = open_session(model_path, caller_options(), CPU, cache_dir=cache)
    expected = cached_model_path(model_path, cache, CPU, "basic")  # the options' level
    assert [p.name for p in cache.iterdir()] == [expected.name]  # no temporary left beside it
    assert expected.stat().st_size > 0
    # The cached file is a model that gives the same scores as the original.
    plain = open_session(model_path, caller_options(), CPU)
    cached = open_session(expected, caller_options(), CPU)
    inputs = random_batch(Predictor.from_path(model_path, providers="cpu"), 3)
    for s in (session, cached):
        assert np.abs(s.run(["scores"], inputs)[0] - plain.run(["scores"], inputs)[0]).max() <= 1e-5


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc")
@pytest.mark.parametrize("warm_cache", [False, True])
def test_open_session_runs_the_requested_intra_op_threads(
    model_path: Path, tmp_path: Path, warm_cache: bool
) -> None:
    # ONNX Runtime's intra-op pool starts threads - 1 workers (the caller's thread is the
    # other): a session that ignored the options would start one per core, or none.
    options = caller_options()
    cache = tmp_path / "cache"
    if warm_cache:
        open_session(model_path, options, CPU, cache_dir=cache)
    for threads in (1, 4):
        options.intra_op_num_threads = threads
        before = thread_count()
        session = open_session(model_path, options, CPU, cache_dir=cache)
        assert thread_count() - before == threads - 1
        assert options.intra_op_num_threads == threads
        assert options.optimized_model_filepath == ""
        del session


def test_copy_options_carries_every_settable_property() -> None:
    import onnxruntime as ort

    names = settable_properties(ort.SessionOptions)
    assert {"intra_op_num_threads", "graph_optimization_level", "optimized_model_filepath"} <= set(
        names
    )
    defaults = ort.SessionOptions()
    options = ort.SessionOptions()
    for name in names:
        setattr(options, name, other_value(name, getattr(defaults, name)))
    changed = [n for n in names if getattr(options, n) != getattr(defaults, n)]
    assert changed == names  # every property differs from the default, so copying shows
    options.add_session_config_entry(SPINNING_KEY, "0")

    copy = copy_options(options)
    assert copy is not options
    for name in names:
        assert getattr(copy, name) == getattr(options, name), name
    assert copy.get_session_config_entry(SPINNING_KEY) == "0"
    # The copy is independent: changing it leaves the original alone.
    copy.intra_op_num_threads = 1
    copy.optimized_model_filepath = "elsewhere.onnx"
    assert options.intra_op_num_threads != 1
    assert options.optimized_model_filepath != "elsewhere.onnx"


def test_copy_options_leaves_an_unset_config_entry_unset() -> None:
    import onnxruntime as ort

    copy = copy_options(ort.SessionOptions())
    with pytest.raises(RuntimeError):
        copy.get_session_config_entry(SPINNING_KEY)
    assert copy_options(session_options(spinning=True)).intra_op_num_threads == 0


def other_value(name: str, default: Any) -> Any:
    """A valid value of the property that differs from ONNX Runtime's default."""
    if isinstance(default, bool):
        return not default
    if isinstance(default, int) and not hasattr(type(default), "__members__"):
        return {"log_severity_level": 3, "log_verbosity_level": 1}.get(name, default + 2)
    if isinstance(default, str):
        return f"{name}_value"
    members = [m for m in type(default).__members__.values() if m != default]  # pybind enum
    assert members, f"{name}: no other value of {type(default).__name__}"
    return members[-1]


def test_the_cache_keys_on_the_level_the_options_ask_for(model_path: Path, tmp_path: Path) -> None:
    """A graph optimised at BASIC is not served to a caller whose options ask for ALL."""
    cache = tmp_path / "cache"
    open_session(model_path, session_options(optimization="basic"), CPU, cache_dir=cache)
    open_session(model_path, session_options(optimization="all"), CPU, cache_dir=cache)
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        cached_model_path(model_path, cache, CPU, level).name for level in ("basic", "all")
    )


def test_an_optimized_model_path_and_a_cache_are_refused_together(
    model_path: Path, tmp_path: Path
) -> None:
    options = caller_options()
    options.optimized_model_filepath = str(tmp_path / "mine.onnx")
    with pytest.raises(ValueError, match=r"optimized_model_filepath .* cache_dir"):
        open_session(model_path, options, CPU, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists() and not (tmp_path / "mine.onnx").exists()
