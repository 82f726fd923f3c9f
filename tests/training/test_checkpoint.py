"""Checkpoints: safetensors + JSON metadata, a full round trip of training state, no pickle."""

from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from support import tiny_spec

from fusionedge.spec import ModelSpec
from fusionedge.training.checkpoint import (
    FORMAT,
    CheckpointError,
    atomic_write_bytes,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from fusionedge.training.config import TrainConfig
from fusionedge.training.model import FusedModel
from fusionedge.training.optim import make_optimizer

N = 4


def batch(spec: ModelSpec, seed: int) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    inputs = {
        "image": torch.randint(0, 256, (N, 16, 16, 3), generator=g, dtype=torch.uint8),
        "audio": 0.3 * torch.randn(N, spec.audio.num_samples, generator=g),
        "text": torch.randint(0, spec.text.tokenizer.vocab_size, (N, 10), generator=g),
    }
    present = torch.rand(N, 3, generator=g) < 0.8
    return inputs, present, torch.arange(N) % len(spec.labels)


def step(model: FusedModel, optimizer: torch.optim.Optimizer, seed: int) -> None:
    inputs, present, target = batch(model.spec, seed)
    model.train()
    logits, _ = model.logits_and_embedding(inputs, present)
    optimizer.zero_grad()
    model.loss(logits, target).backward()
    optimizer.step()


@pytest.fixture
def trained() -> tuple[FusedModel, torch.optim.Optimizer]:
    """A tiny model and its AdamW (two param groups) after three steps."""
    torch.manual_seed(0)
    spec = tiny_spec(fusion="attention")
    model = FusedModel(spec)
    optimizer = make_optimizer(model, TrainConfig())
    assert isinstance(optimizer, torch.optim.AdamW)
    for seed in range(3):
        step(model, optimizer, seed)
    return model, optimizer


def test_round_trip_of_weights_optimizer_and_rng(trained, tmp_path: Path) -> None:
    model, optimizer = trained
    path = tmp_path / "last.safetensors"
    state = {"epoch": 3, "step": 42, "best": 0.75, "best_epoch": 2, "stopped": False}
    torch.manual_seed(1234)
    rng_at_save = torch.get_rng_state()
    save_checkpoint(path, model.spec, model, state, optimizer)
    torch.rand(100)  # move the RNG on; the checkpoint must hold the state at save time

    ckpt = load_checkpoint(path)
    assert ckpt.spec == model.spec
    assert ckpt.state == state
    assert torch.equal(ckpt.rng, rng_at_save)
    own = model.state_dict()
    assert set(ckpt.model) == set(own)
    for key, value in own.items():
        assert ckpt.model[key].dtype == value.dtype, key
        assert torch.equal(ckpt.model[key], value), key

    # A fresh model + optimiser restored from the file takes exactly the step the
    # original takes: weights, both moments, step counts and hyper-parameters came back.
    torch.manual_seed(99)
    restored = FusedModel(ckpt.spec)
    restored.load_state_dict(ckpt.model)
    restored_opt = make_optimizer(restored, TrainConfig())
    restored_opt.load_state_dict(ckpt.optimizer)
    original_state = optimizer.state_dict()
    loaded_state = restored_opt.state_dict()
    assert loaded_state["param_groups"] == json.loads(json.dumps(original_state["param_groups"]))
    assert set(loaded_state["state"]) == set(original_state["state"])
    for index, values in original_state["state"].items():
        for key, value in values.items():
            assert torch.equal(loaded_state["state"][index][key], value), (index, key)

    torch.manual_seed(7)
    step(model, optimizer, seed=10)
    torch.manual_seed(7)
    step(restored, restored_opt, seed=10)
    for key, value in model.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value), key


def test_sgd_momentum_round_trips(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = FusedModel(tiny_spec())
    config = TrainConfig(optim=TrainConfig().optim.__class__(name="sgd"))
    optimizer = make_optimizer(model, config)
    step(model, optimizer, 0)
    save_checkpoint(tmp_path / "c.safetensors", model.spec, model, {"epoch": 1}, optimizer)
    fresh = make_optimizer(FusedModel(model.spec), config)
    fresh.load_state_dict(load_checkpoint(tmp_path / "c.safetensors").optimizer)
    got, want = fresh.state_dict()["state"], optimizer.state_dict()["state"]
    assert set(got) == set(want)
    for index in want:
        assert torch.equal(got[index]["momentum_buffer"], want[index]["momentum_buffer"])


def test_weights_only_checkpoint_has_no_optimizer(trained, tmp_path: Path) -> None:
    model, _ = trained
    path = tmp_path / "best.safetensors"
    save_checkpoint(path, model.spec.replace(metrics={"val": {"accuracy": 0.5}}), model)
    ckpt = load_checkpoint(path)
    assert ckpt.optimizer is None and ckpt.rng is None and ckpt.state == {}
    assert ckpt.spec.metrics == {"val": {"accuracy": 0.5}}


def test_load_model_gives_the_same_predictions(trained, tmp_path: Path) -> None:
    model, _ = trained
    path = tmp_path / "best.safetensors"
    save_checkpoint(path, model.spec, model)
    loaded = load_model(path)
    assert not loaded.training
    model.eval()
    inputs, present, _ = batch(model.spec, 5)
    names = {"image": "image", "audio": "audio", "text": "tokens"}
    with torch.no_grad():
        want = model(**{names[m]: x for m, x in inputs.items()}, present=present)
        got = loaded(**{names[m]: x for m, x in inputs.items()}, present=present)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_file_is_plain_safetensors_with_the_spec_in_metadata(trained, tmp_path: Path) -> None:
    model, optimizer = trained
    path = tmp_path / "last.safetensors"
    save_checkpoint(path, model.spec, model, {"epoch": 1}, optimizer)
    raw = path.read_bytes()
    # The safetensors layout: u64 little-endian header size, then a JSON header.
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + size])
    meta = header["__metadata__"]
    assert meta["format"] == FORMAT
    assert ModelSpec.from_json(meta["fusionedge.spec"]) == model.spec
    assert json.loads(meta["state"]) == {"epoch": 1}
    assert all(isinstance(v, str) for v in meta.values())
    tensors = {k for k in header if k != "__metadata__"}
    assert {f"model.{k}" for k in model.state_dict()} <= tensors
    assert "rng.torch" in tensors
    assert any(k.startswith("optim.") for k in tensors)
    # Every entry is a tensor, every tensor is read by safe_open alone.
    with safe_open(str(path), framework="pt") as f:
        assert set(f.keys()) == tensors
        assert f.metadata() == meta
        for key in f.keys():  # noqa: SIM118 (not a dict)
            assert isinstance(f.get_tensor(key), torch.Tensor)


def test_no_pickle_is_used_to_load(trained, tmp_path: Path, monkeypatch) -> None:
    model, optimizer = trained
    path = tmp_path / "last.safetensors"
    save_checkpoint(path, model.spec, model, {"epoch": 1}, optimizer)
    assert b"\x80\x04\x95" not in path.read_bytes()[:64]  # no pickle protocol 4 stream

    def refuse(*args, **kwargs):
        raise AssertionError("pickle was used")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    ckpt = load_checkpoint(path)
    FusedModel(ckpt.spec).load_state_dict(ckpt.model)
    load_model(path)


def test_foreign_safetensors_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(CheckpointError, match="not a fusionedge checkpoint") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert FORMAT in str(info.value)
    save_file({"weight": torch.zeros(2)}, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="metadata format is 'pt'"):
        load_checkpoint(path)


def test_random_bytes_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "noise.safetensors"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="not a readable safetensors checkpoint") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_empty_and_missing_files_are_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.safetensors"):
        load_checkpoint(empty)
    with pytest.raises(CheckpointError, match=r"missing\.safetensors"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_torch_save_pickle_is_refused_without_unpickling(tmp_path: Path, monkeypatch) -> None:
    torch.manual_seed(0)
    model = FusedModel(tiny_spec())
    path = tmp_path / "model.pt"
    torch.save({"model": model.state_dict()}, path)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called"))
    with pytest.raises(CheckpointError, match="not a readable safetensors checkpoint") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    with pytest.raises(CheckpointError):
        load_model(path)


def test_weights_that_do_not_fit_the_spec_are_refused(trained, tmp_path: Path) -> None:
    model, _ = trained
    path = tmp_path / "c.safetensors"
    other = tiny_spec(fusion="concat")  # a different fusion: other parameter names
    save_checkpoint(path, other, model)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(path)


def test_image_normalisation_that_disagrees_with_the_spec_is_refused(tmp_path: Path) -> None:
    """mean/std live in the spec (the file's metadata) and in buffers (the graph): weights
    whose buffers say otherwise than their spec are refused, not exported."""
    spec = tiny_spec()
    model = FusedModel(spec)
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, spec, model)
    assert load_model(path).encoders["image"].mean.equal(model.encoders["image"].mean)
    with torch.no_grad():
        model.encoders["image"].mean += 1.0
    save_checkpoint(path, spec, model)
    with pytest.raises(CheckpointError, match=r"encoders\.image\.mean .* spec's image mean"):
        load_model(path)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "run" / "last.safetensors"
    atomic_write_bytes(path, b"old")
    assert path.read_bytes() == b"old"

    def broken_fsync(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(path, b"new" * 1000)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.safetensors"]  # no temp left
    monkeypatch.undo()
    atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new"
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.safetensors"]


def test_format_tag_without_a_spec_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "half.safetensors"
    save_file({"model.w": torch.zeros(1)}, str(path), metadata={"format": FORMAT})
    with pytest.raises(CheckpointError, match="half"):
        load_checkpoint(path)
