"""ONNX Runtime sessions as the Predictor opens them: options, providers, clear load errors.

Every choice here was measured on the default demo model (benchmarks/session_options.py,
figures in benchmarks/RESULTS.md):
- graph optimisation ORT_ENABLE_ALL: the layout transforms and Conv fusions it adds beat
  the lower levels at batch 1 and above;
- intra-op threads: ONNX Runtime's default (one per core) for offline use; the live loop
  asks for 1, since a small model at batch 1 gains little from a second thread and the
  capture threads need the core;
- spinning: idle intra-op threads spin-wait for work by default, which takes a core from
  the camera and microphone threads; live use turns it off;
- a cached optimised model: ORT_ENABLE_ALL rewrites the graph at every load; saving the
  result once and loading that file skips the rewrite. The fused kernels in it are
  specific to this ONNX Runtime version and CPU, so the cache key names both.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import threading
from contextlib import suppress
from pathlib import Path
from typing import Any

from fusionedge.runtime import cuda_libs
from fusionedge.runtime.model_file import ModelFileError

log = logging.getLogger(__name__)

SPINNING_KEY = "session.intra_op.allow_spinning"
# The config entries session_options may set. ONNX Runtime reads an entry by key but cannot
# list them, so copy_options carries these and no others.
CONFIG_KEYS = (SPINNING_KEY,)


def optimization_levels() -> dict[str, Any]:
    """Our names for ONNX Runtime's graph optimisation levels."""
    import onnxruntime as ort

    return {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }


def session_options(threads: int = 0, spinning: bool = True, optimization: str = "all") -> Any:
    """ort.SessionOptions for a fusionedge model.

    Args:
        threads: Intra-op threads; 0 leaves ONNX Runtime's default (one per core).
        spinning: Let idle intra-op threads spin-wait for work.
        optimization: "disable", "basic", "extended" or "all" (graph optimisation level).
    """
    import onnxruntime as ort

    levels = optimization_levels()
    if optimization not in levels:
        raise ValueError(f"optimization must be one of {sorted(levels)}, got {optimization!r}")
    options = ort.SessionOptions()
    options.graph_optimization_level = levels[optimization]
    if threads:
        options.intra_op_num_threads = threads
    if not spinning:
        options.add_session_config_entry(SPINNING_KEY, "0")
    return options


def copy_options(options: Any) -> Any:
    """A new ort.SessionOptions with options' settings: every attribute, and the config
    entries of CONFIG_KEYS. SessionOptions cannot be copied or pickled, hence by hand;
    initializers, custom-op libraries and providers added to options are not carried over.
    """
    import onnxruntime as ort

    copy = ort.SessionOptions()
    # Every plain setting is a property of the pybind class, so new ones are copied too.
    for name, attr in vars(type(options)).items():
        if isinstance(attr, property) and attr.fset is not None:
            setattr(copy, name, getattr(options, name))
    for key in CONFIG_KEYS:
        with suppress(RuntimeError):  # ONNX Runtime's answer for an entry never set
            copy.add_session_config_entry(key, options.get_session_config_entry(key))
    return copy


def load_errors() -> tuple[type[BaseException], ...]:
    """What ONNX Runtime raises when it cannot build a session: its own types (Fail,
    InvalidGraph, InvalidProtobuf, NotImplemented, ...: none derives from a builtin
    error) and RuntimeError, which its Python layer raises for provider problems."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    own = (c for c in vars(state).values() if isinstance(c, type) and issubclass(c, Exception))
    return (*own, RuntimeError)


def cached_model_path(path: Path, cache_dir: Path, providers: list[str], optimization: str) -> Path:
    """Where the optimised form of `path` is kept for this ONNX Runtime, CPU and providers."""
    import onnxruntime as ort

    digest = hashlib.sha256()
    digest.update(path.read_bytes())
    key = [ort.__version__, platform.machine(), platform.processor(), optimization, *providers]
    digest.update("\0".join(key).encode())
    return cache_dir / f"{path.stem}.{digest.hexdigest()[:16]}.ort.onnx"


def open_session(
    path: Path, options: Any, providers: list[str], cache_dir: Path | None = None
) -> Any:
    """An InferenceSession on path; with cache_dir, the optimised graph is saved once and
    later sessions load it instead of optimising again.

    options is left as it was: the cache changes settings on a copy (copy_options), so a
    caller may reuse one options object for several sessions.

    Raises:
        FileNotFoundError: no file at path.
        ModelFileError: ONNX Runtime cannot load the file as a model.
        ValueError: options already name a file for the optimised graph, and so does the
            cache.
    """
    import onnxruntime as ort

    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    source = path
    if cache_dir is not None:
        if options.optimized_model_filepath:
            raise ValueError(
                f"options.optimized_model_filepath is {options.optimized_model_filepath!r} "
                "and cache_dir is set: both save the optimised graph; pass one of them"
            )
        options = copy_options(options)
        # The level the options really ask for is part of the key: a graph optimised less
        # must not be served to a caller who asked for more.
        names = {level: name for name, level in optimization_levels().items()}
        level = names[options.graph_optimization_level]
        cached = cached_model_path(path, Path(cache_dir), providers, level)
        if cached.is_file():
            source = cached
            # Already optimised: optimising again would only cost load time.
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        else:
            cached.parent.mkdir(parents=True, exist_ok=True)
            # ONNX Runtime writes the file while it builds the session; a temporary name
            # and a rename keep a half-written cache from ever being loaded.
            writer = f"{os.getpid()}.{threading.get_ident()}"  # two threads may miss at once
            tmp = cached.with_name(f".{cached.name}.{writer}.tmp")
            options.optimized_model_filepath = str(tmp)
    if cuda_libs.needs_cuda_libraries(providers):
        # NVIDIA's pip libraries are on no loader path: loaded here, once per process,
        # or the CUDA provider falls back to the CPU (cuda_libs.py).
        cuda_libs.preload()
    try:
        session = ort.InferenceSession(str(source), options, providers=providers)
    except load_errors() as e:
        raise ModelFileError(f"{path}: ONNX Runtime cannot load it as a model: {e}") from e
    if cache_dir is not None and source == path and tmp.is_file():
        os.replace(tmp, cached)
        log.info("cached the optimised graph of %s at %s", path, cached)
    return session
