"""`fusionedge eval --robustness` and `fusionedge compare` on a tiny data set, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from support import one_torch_thread, tiny_config, train_and_export, write_dataset  # noqa: F401

from fusionedge import corrupt
from fusionedge.arrays import SampleArrays
from fusionedge.cli import main
from fusionedge.robustness import (
    NOISE_LEVELS,
    evaluate_robustness,
    load_samples,
    score_metric,
    subset_name,
)
from fusionedge.spec import ModelSpec

SUBSETS = {"audio+image+text", "audio+image", "image+text", "audio+text", "image", "audio", "text"}


# Every test on one torch thread (the fixture is imported from support).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny data set (with the demo's `_corrupted` marker) and a model trained on it."""
    root = tmp_path_factory.mktemp("rob")
    data = write_dataset(root / "data")
    manifest = data / "manifest.jsonl"
    lines = [json.loads(x) for x in manifest.read_text().splitlines()]
    for i, line in enumerate(lines):
        line["_corrupted"] = "audio" if i % 3 == 0 else "none"
    manifest.write_text("".join(json.dumps(x) + "\n" for x in lines))
    train_and_export(data, root)
    return data, root


def test_subset_names_are_sorted_and_joined() -> None:
    assert subset_name(("image", "audio")) == "audio+image"
    assert subset_name(["text"]) == "text"


def test_eval_robustness_run_folder_json_png_and_onnx_agree(
    trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data, root = trained
    assert main(["eval", str(root / "run"), "--data", str(data), "--robustness", "--json"]) == 0
    rob = json.loads(capsys.readouterr().out)["robustness"]
    assert set(rob["subsets"]) == SUBSETS and set(rob["subsets_clean"]) == SUBSETS
    assert rob["n"] == 12 and rob["n_clean"] == 8
    assert set(rob["missing_one"]) == {"image", "audio", "text"}
    assert rob["full"] == rob["subsets"]["audio+image+text"]
    assert set(rob["noise"]) == {"image", "audio", "text"}
    for m, kinds in NOISE_LEVELS.items():
        for kind, levels in kinds.items():
            assert list(rob["noise"][m][kind]) == [f"{lv:g}" for lv in levels]
    png = cv2.imread(rob["png"])
    assert Path(rob["png"]) == root / "run" / "robustness.png"
    assert png is not None and png.shape[0] > 300 and png.shape[1] > 1000

    # The exported file, in the runtime: the same subsets (the graph is the same model).
    assert main(["eval", str(root / "model.onnx"), "--data", str(data), "--robustness"]) == 0
    text = capsys.readouterr().out
    assert "audio+image" in text and "worst loss with one modality missing" in text
    assert (root / "model.robustness.png").is_file()
    from fusionedge.runtime.onnx_eval import robustness_model_file

    onnx_rob = robustness_model_file(root / "model.onnx", data, noise=False)
    assert onnx_rob["subsets"] == pytest.approx(rob["subsets"], abs=1e-9)
    assert "noise" not in onnx_rob


def test_huge_audio_noise_leaves_an_audio_only_model_near_chance(
    trained: tuple[Path, Path],
) -> None:
    """Scored on audio alone, the model cannot beat chance by much once noise drowns it."""
    data, root = trained
    from fusionedge.runtime.onnx_eval import score_arrays
    from fusionedge.runtime.predictor import Predictor

    with Predictor.from_path(root / "model.onnx", providers="cpu", threads=1) as predictor:
        spec: ModelSpec = predictor.spec
        samples = load_samples(data, "all", spec)
        audio_only = spec.modalities.index("audio")

        def score(arrays: SampleArrays) -> np.ndarray:
            mask = np.zeros_like(arrays.present)
            mask[:, audio_only] = arrays.present[:, audio_only]
            arrays.present = mask
            return score_arrays(predictor, arrays)

        rob = evaluate_robustness(spec, samples, score, noise=False)
        drowned = samples.arrays
        drowned.audio = corrupt.audio_noise(drowned.audio, -40, 0)
        drowned_accuracy = score_metric(spec, drowned.targets, score(drowned))
    assert rob["full"] > 0.9  # a pure tone per class: audio alone is enough
    assert drowned_accuracy < 0.6  # 3 classes: chance is 1/3


def test_compare_two_fusions_prints_table_and_json(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, _ = trained
    args = ["compare", "--data", str(data), "--fusions", "concat,gated", "--epochs", "2"]
    args += ["--out", str(tmp_path / "cmp"), "--repeats", "5"]
    args += [x for o in tiny_config_overrides() for x in ("--set", o)]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "| concat |" in table and "| gated |" in table
    report = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert list(report["fusions"]) == ["concat", "gated"]
    for row in report["fusions"].values():
        assert {"accuracy", "macro_f1", "missing_one_mean", "missing_one_worst"} <= set(row)
        assert 0 <= row["missing_one_worst_clean"] <= 1
        assert row["parameters"] > 0 and row["latency_ms"]["p50_ms"] > 0
        assert set(row["accuracy_without"]) == {"image", "audio", "text"}
    assert main([*args, "--json"]) == 0  # reuses the trained runs
    assert json.loads(capsys.readouterr().out)["fusions"]["gated"]["parameters"] > 0


def test_compare_refuses_an_unknown_fusion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_dataset(tmp_path / "d", per_split={"train": 2, "val": 1, "test": 1})
    assert main(["compare", "--data", str(data), "--fusions", "concat,mean"]) == 2
    err = capsys.readouterr().err
    assert "'concat,mean'" in err and "gated" in err


def tiny_config_overrides() -> list[str]:
    from support import TINY_OVERRIDES

    tiny_config()  # the overrides must form a valid config on their own
    return list(TINY_OVERRIDES)
