"""Groups across splits: train warns when val shares groups with train, and records the
overlap in metrics.json; eval reports how many test groups training saw."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from support import tiny_config, write_dataset

from fusionedge.cli.commands import format_eval
from fusionedge.evaluation import split_groups
from fusionedge.manifest import read_manifest
from fusionedge.training.torch_eval import evaluate_run
from fusionedge.training.trainer import train

# The split warnings come from training.run_data; the parent logger sees every module.
TRAINER_LOG = "fusionedge.training"


def set_groups(root: Path, group_of: dict[str, str | None]) -> Path:
    """Gives the manifest's lines the groups group_of names by id (None: no group)."""
    path = root / "manifest.jsonl"
    lines: list[dict[str, Any]] = [json.loads(x) for x in path.read_text().splitlines()]
    for line in lines:
        group = group_of.get(line["id"])
        if group is not None:
            line["group"] = group
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return root


def small_dataset(root: Path) -> Path:
    """18 train, 6 val and 6 test image-only samples (val000-val005 and so on)."""
    return write_dataset(root, per_split={"train": 6, "val": 2, "test": 2}, modalities=("image",))


@pytest.fixture(scope="module")
def leaky(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train speakers spk0-spk2; val has spk0 (seen) and one new group, test has spk1
    (seen) and three new groups; val005 has no group."""
    root = small_dataset(tmp_path_factory.mktemp("leaky"))
    groups: dict[str, str | None] = {f"train{k:03d}": f"spk{k % 3}" for k in range(18)}
    groups |= {f"val{k:03d}": "spk0" if k < 2 else "new-val" for k in range(5)}
    groups |= {f"test{k:03d}": "spk1" if k < 3 else f"new-test-{k}" for k in range(6)}
    return set_groups(root, groups)


@pytest.fixture(scope="module")
def leaky_run(
    leaky: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[logging.LogRecord]]:
    """A 2-epoch run on the leaky data set, and the warnings it logged."""
    out = tmp_path_factory.mktemp("runs") / "leaky"
    handler = logging.Handler(logging.WARNING)
    records: list[logging.LogRecord] = []
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger(TRAINER_LOG)
    logger.addHandler(handler)
    try:
        train(leaky, out, tiny_config("epochs=2"), progress=False)
    finally:
        logger.removeHandler(handler)
    return out, records


def test_train_warns_when_val_shares_groups_with_train(leaky_run) -> None:
    _, records = leaky_run
    warnings = [r.getMessage() for r in records if "val groups" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in records]
    assert (
        "1 of 2 val groups (2 of 5 val samples with a group) also occur in the train"
        in (warnings[0])
    )
    assert "`group`" in warnings[0] and "split" in warnings[0]


def test_metrics_json_records_the_val_group_overlap(leaky_run) -> None:
    out, _ = leaky_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["val_groups"] == {
        "n_groups": 2,
        "n_samples": 5,
        "seen_in_train": 1,
        "samples_in_seen_groups": 2,
    }


def test_eval_reports_the_test_groups_seen_in_training(leaky_run, leaky: Path) -> None:
    out, _ = leaky_run
    result = evaluate_run(out, leaky, "test", device="cpu")
    assert result["groups"] == {
        "n_groups": 4,
        "n_samples": 6,
        "seen_in_train": 1,
        "samples_in_seen_groups": 3,
    }
    assert "groups: 4, of which 1 also in the train split (3 of 6 grouped samples)" in (
        format_eval(result)
    )


def test_eval_of_the_exported_model_reports_the_same_groups(
    leaky_run, leaky: Path, tmp_path: Path
) -> None:
    from fusionedge.cli.commands import evaluate
    from fusionedge.export.run import export_run

    out, _ = leaky_run
    onnx = tmp_path / "model.onnx"
    export_run(out, onnx, leaky)
    from_file = evaluate(str(onnx), str(leaky), "test")
    from_run = evaluate(str(out), str(leaky), "test")
    assert from_file["groups"] == from_run["groups"]
    assert from_file["groups"]["seen_in_train"] == 1


def test_no_warning_when_each_group_keeps_to_one_split(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = small_dataset(tmp_path / "data")
    manifest = read_manifest(root)
    set_groups(root, {r.id: f"{r.split}-spk{i % 2}" for i, r in enumerate(manifest.records)})
    with caplog.at_level(logging.WARNING, logger=TRAINER_LOG):
        train(root, tmp_path / "run", tiny_config("epochs=1"), progress=False)
    assert "val groups" not in caplog.text
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["val_groups"]["n_groups"] == 2
    assert metrics["val_groups"]["seen_in_train"] == 0


def test_a_data_set_without_groups_has_no_groups_key(tmp_path: Path) -> None:
    manifest = read_manifest(small_dataset(tmp_path))
    assert split_groups(manifest, "test") is None
    plain = {"split": "test", "n": 1, "task": "multiclass", "metrics": {"accuracy": 1.0}}
    assert "groups" not in format_eval(plain)
