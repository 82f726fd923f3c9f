"""Gradient accumulation, frozen encoders (with cached embeddings) and optional compile."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from support import read_log, read_weights, tiny_config

from fusionedge.spec import ModelSpec, SpecError
from fusionedge.training import trainer
from fusionedge.training.loss import TrainStep
from fusionedge.training.model import FusedModel
from fusionedge.training.trainer import train

NO_AUGMENT = ("augment.image.rotate_deg=0", "augment.image.scale=0", "augment.image.translate=0")


def initial_weights(run: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """The weights the trainer starts from: its seed, then the model built from the spec."""
    torch.manual_seed(seed)
    spec = ModelSpec.from_json((run / "spec.json").read_text())
    return {f"model.{k}": v for k, v in FusedModel(spec).state_dict().items()}


def test_accumulation_steps_once_per_group_and_learns(dataset: Path, tmp_path: Path) -> None:
    # 48 samples in batches of 8: 6 batches, 3 optimiser steps per epoch.
    train(dataset, tmp_path, tiny_config("epochs=5", "batch_size=8", "accumulate_steps=2"))
    rows = read_log(tmp_path)
    assert [int(r["step"]) for r in rows] == [3 * e for e in range(1, 6)]
    assert float(rows[-1]["val_accuracy"]) >= 0.9


def test_uneven_accumulation_group_still_steps(dataset: Path, tmp_path: Path) -> None:
    # 3 batches of 16 with groups of 2: one full group and one of a single batch.
    train(dataset, tmp_path, tiny_config("epochs=2", "accumulate_steps=2"), progress=False)
    assert [int(r["step"]) for r in read_log(tmp_path)] == [2, 4]


def test_all_encoders_frozen_trains_on_cached_embeddings(
    dataset: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch
) -> None:
    calls = []
    embed_all = trainer.embed_all
    monkeypatch.setattr(trainer, "embed_all", lambda *a, **k: calls.append(1) or embed_all(*a, **k))
    config = tiny_config("epochs=20", "freeze_encoders=[image, audio, text]", *NO_AUGMENT)
    with caplog.at_level(logging.INFO, logger="fusionedge.training.trainer"):
        train(dataset, tmp_path, config, progress=False)
    assert calls == [1]  # once per run, not per epoch
    assert "trained on cached embeddings" in caplog.text
    acc = [float(r["val_accuracy"]) for r in read_log(tmp_path)]
    assert acc[-1] >= 0.9, acc
    start = initial_weights(tmp_path)
    for name in ("last.safetensors", "best.safetensors"):  # best holds the weight average
        got = read_weights(tmp_path / name)
        encoders = [k for k in got if k.startswith("model.encoders.")]
        assert encoders
        for k in encoders:
            assert torch.equal(got[k], start[k]), f"{name}: {k} changed"
        trained = [k for k in got if k.startswith(("model.fusion.", "model.head."))]
        assert any(not torch.equal(got[k], start[k]) for k in trained)


def test_one_frozen_encoder_keeps_its_weights_and_the_others_train(
    dataset: Path, tmp_path: Path
) -> None:
    train(dataset, tmp_path, tiny_config("epochs=2", "freeze_encoders=[image]"), progress=False)
    got, start = read_weights(tmp_path / "last.safetensors"), initial_weights(tmp_path)
    image = [k for k in got if k.startswith("model.encoders.image.")]
    audio = [k for k in got if k.startswith("model.encoders.audio.") and "weight" in k]
    assert image and audio
    assert all(torch.equal(got[k], start[k]) for k in image)  # BatchNorm statistics too
    assert any(not torch.equal(got[k], start[k]) for k in audio)


def test_freeze_encoders_names_are_checked() -> None:
    with pytest.raises(SpecError, match="freeze_encoders: unknown modality 'video'"):
        tiny_config("freeze_encoders=[video]")
    with pytest.raises(SpecError, match="accumulate_steps"):
        tiny_config("accumulate_steps=0")


def test_compile_is_skipped_cleanly_without_a_compiler(
    monkeypatch, caplog: pytest.LogCaptureFixture
) -> None:
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    from support import tiny_spec

    module = TrainStep(FusedModel(tiny_spec()), tiny_config(), None)
    with caplog.at_level(logging.WARNING):
        assert trainer.maybe_compile(module, torch.device("cpu")) is module
    assert "compile: skipped" in caplog.text


@pytest.mark.slow
def test_compiled_training_learns_and_saves_plain_weights(dataset: Path, tmp_path: Path) -> None:
    # ~2 minutes on 2 CPU cores, nearly all of it inductor compiling the first epoch.
    import shutil

    if not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        pytest.skip("no C++ compiler for inductor")
    train(dataset, tmp_path, tiny_config("epochs=2", "compile=true"), progress=False)
    assert float(read_log(tmp_path)[-1]["val_accuracy"]) >= 0.9
    assert not [k for k in read_weights(tmp_path / "last.safetensors") if "_orig_mod" in k]
