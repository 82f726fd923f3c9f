"""Tiny training runs on small real data sets: learning, the run folder, refusals, repeats."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from support import LABELS, read_log, read_weights, tiny_config, write_dataset

from fusionedge.manifest import read_manifest
from fusionedge.spec import ModelSpec, SpecError
from fusionedge.training.checkpoint import load_checkpoint
from fusionedge.training.config import config_from_json
from fusionedge.training.torch_eval import evaluate_run
from fusionedge.training.trainer import RunFolderError, train

EPOCHS = 8


@pytest.fixture(scope="module")
def run(dataset: Path, tmp_path_factory: pytest.TempPathFactory):
    """One tiny 8-epoch run on the 3-class image + audio + text data set."""
    config = tiny_config(f"epochs={EPOCHS}")
    out = tmp_path_factory.mktemp("runs") / "run"
    result = train(dataset, out, config, progress=False)
    return out, result, config


def folder_state(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


def test_loss_falls_and_val_accuracy_rises_far_above_chance(run) -> None:
    out, result, _ = run
    rows = read_log(out)
    train_loss = [float(r["train_loss"]) for r in rows]
    val_loss = [float(r["val_loss"]) for r in rows]
    val_acc = [float(r["val_accuracy"]) for r in rows]
    assert train_loss[-1] < 0.5 * train_loss[0], train_loss
    assert val_loss[-1] < 0.5 * val_loss[0], val_loss
    assert max(val_acc) >= 0.9, val_acc  # chance is 1/3
    assert val_acc[-1] >= 0.9, val_acc
    assert result.best_metrics["accuracy"] == max(val_acc)
    assert result.best_epoch == 1 + int(np.argmax(val_acc))  # the first epoch at the best
    assert result.epochs_run == EPOCHS


def test_run_folder_holds_everything(run) -> None:
    out, result, config = run
    names = {p.name for p in out.iterdir()}
    assert {
        "config.json",
        "spec.json",
        "best.safetensors",
        "last.safetensors",
        "log.csv",
        "metrics.json",
    } <= names
    assert "tensorboard" not in names  # tensorboard=false
    assert not [n for n in names if n.endswith(".tmp")]
    assert config_from_json((out / "config.json").read_text()) == config

    spec = ModelSpec.from_json((out / "spec.json").read_text())
    assert spec == result.spec
    assert spec.modalities == ("image", "audio", "text")
    assert spec.task == "multiclass" and spec.labels == LABELS["multiclass"]
    assert spec.image == config.image and spec.audio == config.audio
    assert spec.text.max_length == config.text_max_length
    assert set("bluegrend") <= set(spec.text.tokenizer.vocab)  # learned from training text
    assert spec.metrics["epoch"] == result.best_epoch
    assert spec.metrics["val"]["accuracy"] == result.best_metrics["accuracy"]

    rows = read_log(out)
    assert [int(r["epoch"]) for r in rows] == list(range(1, EPOCHS + 1))
    steps = [int(r["step"]) for r in rows]
    assert steps == [3 * e for e in range(1, EPOCHS + 1)]  # 48 samples / batch 16
    assert {"lr", "train_loss", "val_loss", "val_accuracy", "val_macro_f1", "seconds"} <= set(
        rows[0]
    )

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["best_epoch"] == result.best_epoch
    assert metrics["epochs_run"] == EPOCHS
    assert metrics["best_val_accuracy"] == result.best_metrics["accuracy"]
    assert metrics["val"]["accuracy"] == result.best_metrics["accuracy"]

    best, last = (
        load_checkpoint(out / "best.safetensors"),
        load_checkpoint(out / "last.safetensors"),
    )
    assert best.spec == spec and best.optimizer is None
    assert last.state["epoch"] == EPOCHS and last.state["step"] == steps[-1]
    assert last.optimizer is not None and last.rng is not None


def test_evaluate_run_reports_fused_and_per_modality(run, dataset: Path) -> None:
    out, _, _ = run
    result = evaluate_run(out, dataset, "test", device="cpu")
    assert result["n"] == 12
    assert result["modalities"] == ["image", "audio", "text"]
    assert set(result["by_modality"]) == {"image", "audio", "text"}
    assert result["metrics"]["accuracy"] >= 0.9
    assert 0 <= result["metrics"]["macro_f1"] <= 1
    assert result["by_modality"]["text"]["n_present"] == 6  # every other sample has text
    assert result["by_modality"]["image"]["n_present"] == 12
    # "best" is the first epoch at the best fused accuracy, when one modality may not
    # have caught up yet; at least one carries the class alone by then.
    assert max(v["accuracy"] for v in result["by_modality"].values()) >= 0.9
    assert "loss" not in result
    # A checkpoint file works as well as its run folder.
    again = evaluate_run(out / "best.safetensors", dataset, "test", device="cpu")
    assert again["metrics"] == result["metrics"]
    # By the last epoch the unimodal losses have trained image and audio alone too.
    last = evaluate_run(out / "last.safetensors", dataset, "test", device="cpu")
    assert last["by_modality"]["image"]["accuracy"] >= 0.9, last["by_modality"]
    assert last["by_modality"]["audio"]["accuracy"] >= 0.9, last["by_modality"]


def test_second_train_into_the_same_folder_is_refused(run, dataset: Path) -> None:
    out, _, config = run
    before = folder_state(out)
    with pytest.raises(RunFolderError, match="already holds a training run") as info:
        train(dataset, out, config, progress=False)
    assert "--resume" in str(info.value)
    assert folder_state(out) == before


def test_resume_needs_a_run(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(RunFolderError, match="nothing to resume"):
        train(dataset, tmp_path / "empty", None, resume=True, progress=False)
    assert not (tmp_path / "empty").exists()


def test_resume_refuses_a_new_config(run, dataset: Path) -> None:
    out, _, config = run
    with pytest.raises(RunFolderError, match=r"own config\.json"):
        train(dataset, out, config, resume=True, progress=False)


def test_resuming_a_finished_run_changes_nothing(run, dataset: Path, tmp_path: Path) -> None:
    out, result, _ = run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    # The model card names the folder it describes, which the copy moved: all else is equal.
    before = folder_state(copy)
    again = train(dataset, copy, None, resume=True, progress=False)
    assert again.epochs_run == EPOCHS and again.best_epoch == result.best_epoch
    after = folder_state(copy)
    assert str(copy.name).encode() in after.pop("card.md")
    before.pop("card.md")
    assert after == before


def test_same_seed_on_cpu_gives_identical_weights(run, dataset: Path, tmp_path: Path) -> None:
    out, _, config = run
    train(dataset, tmp_path / "again", config, progress=False)
    first = read_weights(out / "last.safetensors")
    second = read_weights(tmp_path / "again" / "last.safetensors")
    assert set(first) == set(second)
    for key in first:
        assert torch.equal(first[key], second[key]), key
    losses = [r["train_loss"] for r in read_log(out)]
    assert [r["train_loss"] for r in read_log(tmp_path / "again")] == losses


def test_another_seed_gives_other_weights(dataset: Path, tmp_path: Path) -> None:
    a = train(dataset, tmp_path / "a", tiny_config("epochs=1", "seed=1"), progress=False)
    b = train(dataset, tmp_path / "b", tiny_config("epochs=1", "seed=2"), progress=False)
    wa = read_weights(a.run_dir / "last.safetensors")
    wb = read_weights(b.run_dir / "last.safetensors")
    assert not torch.equal(wa["model.placeholders"], wb["model.placeholders"])


def test_image_audio_only_grayscale_and_8khz(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", modalities=("image", "audio"), gray=True, rate=8000)
    # A 16 kHz model: the 8 kHz files are resampled up on loading.
    config = tiny_config(
        "epochs=5", "audio.sample_rate=16000", "audio.num_samples=6000", "model.fusion=gated"
    )
    result = train(data, tmp_path / "run", config, progress=False)
    assert result.spec.modalities == ("image", "audio")
    assert result.spec.text is None and result.spec.audio.sample_rate == 16000
    evaluation = evaluate_run(tmp_path / "run", data, "test", device="cpu")
    assert evaluation["n"] == 12
    assert {"accuracy", "macro_f1"} <= set(evaluation["metrics"])
    assert set(evaluation["by_modality"]) == {"image", "audio"}
    # The tones alone tell the classes apart (grey images only by brightness).
    assert evaluation["metrics"]["accuracy"] >= 0.9
    assert evaluation["by_modality"]["audio"]["accuracy"] >= 0.9


def test_binary_labels_train_a_binary_model(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", classes=("blue", "red"))
    result = train(data, tmp_path / "run", tiny_config("epochs=8"), progress=False)
    assert result.spec.task == "binary" and result.spec.labels == ("blue", "red")
    assert result.best_metrics["accuracy"] >= 0.9


def test_regression_trains_in_the_targets_units(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", modalities=("image", "audio"), task="regression")
    result = train(data, tmp_path / "run", tiny_config("epochs=8"), progress=False)
    spec = result.spec
    assert spec.task == "regression" and spec.labels == ("value",)
    train_labels = [r.label for r in read_manifest(data).split("train")]
    assert spec.head.params["target_mean"] == pytest.approx(np.mean(train_labels))
    assert spec.head.params["target_std"] == pytest.approx(np.std(train_labels))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "best_val_mae" in metrics and "mae" in metrics["val"]
    rows = read_log(tmp_path / "run")
    assert "val_mae" in rows[0]
    evaluation = evaluate_run(tmp_path / "run", data, "test", device="cpu")
    test_labels = np.array([r.label for r in read_manifest(data).split("test")])
    baseline = np.abs(test_labels - np.mean(train_labels)).mean()  # predicting the mean
    assert evaluation["metrics"]["mae"] < 0.5 * baseline, (evaluation["metrics"], baseline)


def test_multilabel_trains(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", modalities=("image", "audio"), task="multilabel")
    result = train(data, tmp_path / "run", tiny_config("epochs=8"), progress=False)
    assert result.spec.task == "multilabel" and result.spec.labels == ("a", "b", "c")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "best_val_macro_f1" in metrics
    evaluation = evaluate_run(tmp_path / "run", data, "test", device="cpu")
    assert {"accuracy", "micro_f1", "macro_f1"} <= set(evaluation["metrics"])
    # Each label is a colour channel and a tone.
    assert evaluation["metrics"]["macro_f1"] >= 0.8, evaluation["metrics"]


def test_without_a_val_split_a_tenth_of_train_is_held_out(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", per_split={"train": 10})
    result = train(data, tmp_path / "run", tiny_config("epochs=1"), progress=False)
    rows = read_log(tmp_path / "run")
    assert len(rows) == 1 and 0 <= float(rows[0]["val_accuracy"]) <= 1
    assert int(rows[0]["step"]) == 2  # 27 training samples in batches of 16
    assert result.epochs_run == 1


def test_a_task_that_does_not_fit_the_labels_is_refused(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"model\.task"):
        train(dataset, tmp_path / "run", tiny_config("model.task=regression"), progress=False)
    assert not (tmp_path / "run").exists()


def test_early_stopping_stops(dataset: Path, tmp_path: Path) -> None:
    # The val accuracy reaches 1.0 early and cannot improve on it: patience 2 stops the run.
    result = train(
        dataset, tmp_path / "run", tiny_config("epochs=30", "patience=2"), progress=False
    )
    rows = read_log(tmp_path / "run")
    assert result.epochs_run == len(rows) == result.best_epoch + 2 < 30
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs_run"] == len(rows)


def test_evaluating_an_empty_split_is_refused(run, tmp_path: Path) -> None:
    out, _, _ = run
    data = write_dataset(tmp_path / "data", per_split={"train": 2})
    with pytest.raises(ValueError, match="'test' split is empty"):
        evaluate_run(out, data, "test", device="cpu")


def test_train_leaves_torch_global_state_as_it_was(dataset: Path, tmp_path: Path) -> None:
    """A run seeds torch's RNG and may set its thread count; the caller's own random
    stream and thread setting are unchanged after it, and the run is still seeded."""
    threads = torch.get_num_threads()
    other = 2 if threads == 1 else 1
    torch.manual_seed(7)
    expected = torch.rand(4)
    torch.manual_seed(7)
    first = train(
        dataset, tmp_path / "a", tiny_config("epochs=1", f"threads={other}"), progress=False
    )
    assert torch.equal(torch.rand(4), expected)
    assert torch.get_num_threads() == threads
    torch.manual_seed(99)  # another caller state: the run's weights do not depend on it
    train(dataset, tmp_path / "b", tiny_config("epochs=1", f"threads={other}"), progress=False)
    a, b = (
        read_weights(first.run_dir / "last.safetensors"),
        read_weights(tmp_path / "b" / "last.safetensors"),
    )
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_whose_val_score_is_never_finite_says_it_diverged(tmp_path: Path) -> None:
    """NaN/inf val scores never count as the best; with no finite epoch there is no best
    checkpoint, and train() says why instead of failing to write or read one."""
    from fusionedge.training.trainer import TrainingDiverged

    data = write_dataset(
        tmp_path / "data",
        per_split={"train": 4, "val": 2, "test": 1},
        task="regression",
        modalities=("image",),
    )
    config = tiny_config("epochs=2", "optim.lr=1e30", "optim.grad_clip=0")
    with pytest.raises(TrainingDiverged, match=r"val mae was not a finite number after any"):
        train(data, tmp_path / "run", config, progress=False)
    assert not (tmp_path / "run" / "best.safetensors").exists()
    rows = read_log(tmp_path / "run")
    assert len(rows) == 2 and all(r["val_mae"] in ("nan", "inf") for r in rows), rows
