"""Execution providers: what is asked for, what a session really got, and how that is told."""

from __future__ import annotations

import logging
from pathlib import Path

import onnxruntime as ort
import pytest

from fusionedge.runtime import Predictor, ProviderError
from fusionedge.runtime.providers import nvidia_driver_loads, requested_providers

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
LOGGER = "fusionedge.runtime.providers"


def skip_if_cuda_works(model_path: Path) -> None:
    session = ort.InferenceSession(str(model_path), providers=[CUDA, CPU])
    if CUDA in session.get_providers():
        pytest.skip("a CUDA GPU really works here")


def test_auto_ends_with_cpu_active_and_reports_it(model_path: Path) -> None:
    requested = requested_providers("auto")
    cuda_can_start = CUDA in ort.get_available_providers() and nvidia_driver_loads()
    assert requested == ([CUDA, CPU] if cuda_can_start else [CPU])
    with Predictor.from_path(model_path, providers="auto") as p:
        assert p.providers == p.session.get_providers()
        assert p.providers[-1] == CPU
        assert p.missing_providers == [x for x in requested if x not in p.providers]
        assert p.predict(text="red").label in ("blue", "green", "red")


def test_cpu_only_is_active_without_a_warning(model_path: Path, caplog) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    for providers in ("cpu", ["CPU"], [CPU]):
        with Predictor.from_path(model_path, providers=providers) as p:
            assert p.providers == [CPU]
            assert p.missing_providers == []
    assert not [r for r in caplog.records if r.name == LOGGER]


def test_cuda_that_cannot_run_is_logged_and_listed_as_missing(model_path: Path, caplog) -> None:
    skip_if_cuda_works(model_path)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    with Predictor.from_path(model_path, providers=["cuda", "cpu"]) as p:
        assert p.providers == [CPU]
        assert p.missing_providers == [CUDA]
        assert p.predict(text="red").label in ("blue", "green", "red")  # it still runs
    warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert CUDA in warnings[0].getMessage() and CPU in warnings[0].getMessage()


def test_strict_raises_when_cuda_is_not_active(model_path: Path) -> None:
    skip_if_cuda_works(model_path)
    with pytest.raises(ProviderError, match=rf"\['{CUDA}'\] requested but not active"):
        Predictor.from_path(model_path, providers=["cuda", "cpu"], strict=True)
    assert issubclass(ProviderError, RuntimeError)


@pytest.mark.filterwarnings("ignore:Specified provider")
def test_a_provider_missing_from_this_build_is_reported(model_path: Path, caplog) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    if "CoreMLExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime build has CoreML")
    with Predictor.from_path(model_path, providers=["coreml", "cpu"]) as p:
        assert p.missing_providers == ["CoreMLExecutionProvider"]
        assert p.providers == [CPU]
    assert any("CoreMLExecutionProvider" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("providers", ["tpu", ["cpu", "NotAnExecutionProvider"], ["gpu"]])
def test_an_unknown_provider_is_refused_listing_the_available_ones(
    model_path: Path, providers
) -> None:
    with pytest.raises(ValueError, match="unknown execution provider") as info:
        Predictor.from_path(model_path, providers=providers)
    for name in ort.get_available_providers():
        assert name in str(info.value)


def test_an_empty_provider_list_is_refused(model_path: Path) -> None:
    with pytest.raises(ValueError, match="non-empty list"):
        Predictor.from_path(model_path, providers=[])


def test_auto_asks_for_cuda_only_where_the_driver_loads(monkeypatch) -> None:
    """A machine without an NVIDIA driver is not asked for CUDA: ONNX Runtime would log an
    error on every session, for a GPU that is not there."""
    from fusionedge.runtime import providers

    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    monkeypatch.setattr(providers, "nvidia_driver_loads", lambda: False)
    assert requested_providers("auto") == [CPU]
    monkeypatch.setattr(providers, "nvidia_driver_loads", lambda: True)
    assert requested_providers("auto") == [CUDA, CPU]
    assert requested_providers("cuda") == [CUDA]  # asked by name: asked, and reported
