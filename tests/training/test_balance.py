"""Class imbalance: class weights and the balanced sampler, their config and their effect."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from support import read_log, read_weights, tiny_config, tiny_spec

from fusionedge.spec import SpecError
from fusionedge.training import trainer
from fusionedge.training.balance import class_weights, epoch_order
from fusionedge.training.config import config_from_json, load_config
from fusionedge.training.torch_eval import evaluate_run
from fusionedge.training.trainer import train

# 40:40:4 in train, balanced val and test: "red" is the minority class.
IMBALANCED = {
    "per_split": {"train": 40, "val": 6, "test": 10},
    "per_class": {"train": {"red": 4}},
    "modalities": ("image",),
}


def test_keys_parse_and_round_trip() -> None:
    assert load_config().class_weights == "none" and load_config().sampler == "shuffle"
    config = load_config(None, ["class_weights=balanced", "sampler=balanced"])
    assert config.class_weights == "balanced" and config.sampler == "balanced"
    mapping = load_config(None, ["class_weights={red: 5, blue: 0.5}"])
    assert mapping.class_weights == {"red": 5.0, "blue": 0.5}
    assert config_from_json(mapping.to_json()) == mapping


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("class_weights=inverse", r"^class_weights: expected 'none', 'balanced' or a mapping"),
        ("class_weights={red: heavy}", r"class_weights"),
        ("sampler=weighted", r"^sampler: expected one of \['shuffle', 'balanced'\]"),
        ("class_weight=balanced", r"^class_weight: unknown key"),
    ],
)
def test_bad_values_name_the_key(override: str, pattern: str) -> None:
    with pytest.raises(SpecError, match=pattern):
        load_config(None, [override])


def test_balanced_weights_are_inverse_class_frequency() -> None:
    spec = tiny_spec(("image",))  # labels blue, green, red
    targets = np.array([0] * 40 + [1] * 40 + [2] * 4)
    w = class_weights(load_config(None, ["class_weights=balanced"]), spec, targets)
    assert w.dtype == np.float32
    np.testing.assert_allclose(w, [84 / 120, 84 / 120, 84 / 12], rtol=1e-6)
    assert class_weights(load_config(), spec, targets) is None
    given = class_weights(load_config(None, ["class_weights={red: 3}"]), spec, targets)
    np.testing.assert_allclose(given, [1, 1, 3])


def test_multilabel_weights_are_positive_term_weights() -> None:
    spec = tiny_spec(("image",), task="multilabel")
    targets = np.array([[1, 1, 0]] * 8 + [[1, 0, 1]] * 2, dtype=np.float32)
    w = class_weights(load_config(None, ["class_weights=balanced"]), spec, targets)
    # a: 10 positives, 0 negatives (floored); b: 8 vs 2; c: 2 vs 8.
    np.testing.assert_allclose(w, [1e-3, 0.25, 4.0], rtol=1e-6)


@pytest.mark.parametrize(
    ("task", "overrides", "pattern"),
    [
        ("regression", ["class_weights=balanced"], r"^class_weights: a regression task"),
        ("regression", ["sampler=balanced"], r"^sampler: 'balanced' needs one class"),
        ("multilabel", ["sampler=balanced"], r"use 'shuffle' with class_weights=balanced"),
        ("multiclass", ["class_weights={purple: 2}"], r"^class_weights\.purple: not one of"),
        ("multiclass", ["class_weights={red: 0}"], r"^class_weights\.red: expected a positive"),
    ],
)
def test_options_that_do_not_fit_the_task_are_refused(task, overrides, pattern) -> None:
    spec = tiny_spec(("image",), task=task)
    targets = np.zeros((4, 3) if task == "multilabel" else 4, dtype=np.int64)
    with pytest.raises(SpecError, match=pattern):
        class_weights(load_config(None, overrides), spec, targets)


def test_balanced_order_draws_classes_equally_and_repeats_given_the_seed() -> None:
    spec = tiny_spec(("image",))
    targets = np.array([0] * 40 + [1] * 40 + [2] * 4)
    config = load_config(None, ["sampler=balanced"])
    order = epoch_order(config, spec, targets, np.random.default_rng([0, 1]))
    assert len(order) == 84 and order.min() >= 0 and order.max() < 84
    np.testing.assert_array_equal(
        order, epoch_order(config, spec, targets, np.random.default_rng([0, 1]))
    )
    drawn = np.bincount(targets[order], minlength=3)
    assert drawn.min() >= 15  # 28 expected per class; 4 of 84 without the sampler
    shuffled = epoch_order(load_config(), spec, targets, np.random.default_rng([0, 1]))
    assert sorted(shuffled) == list(range(84))


@pytest.fixture(scope="module")
def imbalanced(make_dataset: Callable[..., Path]) -> Path:
    return make_dataset(**IMBALANCED)


def minority_recall(run: Path, data: Path) -> float:
    metrics = evaluate_run(run / "last.safetensors", data, "test", device="cpu")["metrics"]
    return metrics["recall_per_class"][2]  # labels are sorted: blue, green, red


@pytest.fixture(scope="module")
def recalls(imbalanced: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, float]:
    """Minority recall on the balanced test split after 4 epochs with each option.

    Measured with data and training seeds 0..4 at this learning rate: without either
    option the tiny image model never predicts "red" (recall 0.0 for every seed); with
    either it finds every red sample (1.0 for every seed). At the tiny config's lr 0.01
    the weighted loss was less steady (one seed of five ended at 0.0).
    """
    out = tmp_path_factory.mktemp("balance")
    options = {
        "none": (),
        "class_weights": ("class_weights=balanced",),
        "sampler": ("sampler=balanced",),
    }
    result = {}
    for name, extra in options.items():
        train(
            imbalanced,
            out / name,
            tiny_config("epochs=4", "optim.lr=0.003", *extra),
            progress=False,
        )
        result[name] = minority_recall(out / name, imbalanced)
        result[f"{name}_run"] = out / name  # type: ignore[assignment]
    return result


def test_minority_recall_rises_with_class_weights_and_with_the_sampler(recalls) -> None:
    assert recalls["none"] <= 0.3, recalls
    assert recalls["class_weights"] >= 0.8, recalls
    assert recalls["sampler"] >= 0.8, recalls


def test_metrics_json_records_what_was_used(recalls) -> None:
    weighted = json.loads((recalls["class_weights_run"] / "metrics.json").read_text())
    assert weighted["balance"]["sampler"] == "shuffle"
    assert weighted["balance"]["train_counts"] == {"blue": 40, "green": 40, "red": 4}
    assert weighted["balance"]["class_weights"]["red"] == pytest.approx(84 / 12)
    sampled = json.loads((recalls["sampler_run"] / "metrics.json").read_text())
    assert sampled["balance"] == {
        "sampler": "balanced",
        "class_weights": None,
        "train_counts": {"blue": 40, "green": 40, "red": 4},
    }
    config = json.loads((recalls["sampler_run"] / "config.json").read_text())
    assert config["sampler"] == "balanced" and config["class_weights"] == "none"
    # The epoch keeps its length: 84 draws in batches of 16.
    assert [int(r["step"]) for r in read_log(recalls["sampler_run"])][:2] == [6, 12]


def test_refused_before_the_run_folder_is_made(tmp_path: Path, make_dataset) -> None:
    data = make_dataset(modalities=("image",), task="regression", per_split={"train": 2})
    with pytest.raises(SpecError, match="class_weights"):
        train(data, tmp_path / "run", tiny_config("class_weights=balanced"), progress=False)
    assert not (tmp_path / "run").exists()


class Crash(BaseException):
    """Stands in for SIGKILL inside the process."""


def test_balanced_sampler_resumes_exactly(
    imbalanced: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tiny_config(
        "epochs=3", "sampler=balanced", "class_weights=balanced", "augment.image.noise=0.05"
    )
    train(imbalanced, tmp_path / "full", config, progress=False)
    run_epoch = trainer.Trainer.run_epoch

    def crash_at_epoch_3(self: trainer.Trainer, epoch: int, *args, **kwargs) -> list[float]:
        if epoch == 3:
            raise Crash
        return run_epoch(self, epoch, *args, **kwargs)

    monkeypatch.setattr(trainer.Trainer, "run_epoch", crash_at_epoch_3)
    with pytest.raises(Crash):
        train(imbalanced, tmp_path / "killed", config, progress=False)
    monkeypatch.undo()
    train(imbalanced, tmp_path / "killed", None, resume=True, progress=False)
    a = read_weights(tmp_path / "full" / "last.safetensors")
    b = read_weights(tmp_path / "killed" / "last.safetensors")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
