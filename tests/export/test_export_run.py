"""`fusionedge export` of a trained run, and the .onnx file through eval, info and predict."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from support import tiny_config, write_dataset

from fusionedge.arrays import load_arrays
from fusionedge.cli import main
from fusionedge.export.run import export_run, report_path
from fusionedge.manifest import read_manifest
from fusionedge.runtime.model_file import spec_from_metadata
from fusionedge.training.trainer import train


def fusionedge(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Runs the installed console script (or `python -m fusionedge.cli` without one)."""
    script = Path(sys.executable).with_name("fusionedge")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "fusionedge.cli"]
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("export_data"))


@pytest.fixture(scope="module")
def run(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export_runs") / "run"
    train(data, out, tiny_config("epochs=6"), progress=False)
    return out


@pytest.fixture(scope="module")
def exported(run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """export_run without --data: real samples come from the data set the run names."""
    out = tmp_path_factory.mktemp("export_api") / "model.onnx"
    return out, export_run(run, out)


@pytest.fixture(scope="module")
def cli_export(run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export_cli") / "tiny.onnx"
    result = fusionedge("export", str(run), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stdout and "parity" in result.stdout
    assert f"report: {report_path(out)}" in result.stdout
    return out


def test_export_run_writes_model_and_report(exported, run: Path) -> None:
    out, report = exported
    assert out.is_file()
    assert report_path(out) == out.with_name("model.report.json")
    on_disk = json.loads(report_path(out).read_text())
    assert on_disk == json.loads(json.dumps(report))
    assert not [p.name for p in out.parent.iterdir() if p.name.endswith(".tmp")]

    assert on_disk["opset"] >= 18
    assert isinstance(on_disk["ops"], list) and "Conv" in on_disk["ops"]
    assert on_disk["ops"] == sorted(set(on_disk["ops"]))
    assert on_disk["bytes"] == out.stat().st_size > 0
    assert on_disk["checkpoint"] == str(run / "best.safetensors")
    assert on_disk["labels"] == ["blue", "green", "red"]
    assert on_disk["modalities"] == ["image", "audio", "text"]
    parity = on_disk["parity"]
    assert parity["max_abs_diff_scores"] <= 1e-4
    assert parity["failed"] == 0
    assert "validation" in parity["sources"] and "random" in parity["sources"]
    assert parity["cases"] == 2 * 3 * 2**3  # 2 sources x 3 batch sizes x 8 subsets


def test_out_without_onnx_suffix_is_refused(run: Path, tmp_path: Path, capsys) -> None:
    for name in ("model", "model.bin", "model.onnx.json"):
        with pytest.raises(ValueError, match=r"\.onnx"):
            export_run(run, tmp_path / name)
    assert main(["export", str(run), "--out", str(tmp_path / "model.pt")]) == 2
    err = capsys.readouterr().err
    assert "fusionedge export: error:" in err and ".onnx" in err and "model.pt" in err
    assert list(tmp_path.iterdir()) == []


def test_cli_export_matches_api_export(cli_export: Path, exported, data: Path) -> None:
    assert report_path(cli_export).is_file()
    report = json.loads(report_path(cli_export).read_text())
    assert report["parity"]["max_abs_diff_scores"] <= 1e-4
    assert "validation" in report["parity"]["sources"]
    manifest = read_manifest(data)
    api_path, _ = exported
    sessions = [
        ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        for p in (cli_export, api_path)
    ]
    spec = spec_from_metadata(sessions[0].get_modelmeta().custom_metadata_map, cli_export)
    arrays = load_arrays(manifest.split("test"), spec, manifest.path)
    a, b = (s.run(["scores"], arrays.inputs())[0] for s in sessions)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_eval_of_onnx_file_matches_run_folder(cli_export: Path, run: Path, data: Path, capsys):
    result = fusionedge("eval", str(cli_export), "--data", str(data), "--json")
    assert result.returncode == 0, result.stderr
    onnx_eval = json.loads(result.stdout)
    assert main(["eval", str(run), "--data", str(data), "--json"]) == 0
    run_eval = json.loads(capsys.readouterr().out)

    # The ONNX result also says which execution providers really ran it.
    assert set(onnx_eval) - {"providers"} == set(run_eval)
    assert onnx_eval["providers"] == ["CPUExecutionProvider"]
    assert set(onnx_eval["metrics"]) == set(run_eval["metrics"])
    assert (
        set(onnx_eval["by_modality"])
        == set(run_eval["by_modality"])
        == {
            "image",
            "audio",
            "text",
        }
    )
    for m, entry in run_eval["by_modality"].items():
        assert set(onnx_eval["by_modality"][m]) == set(entry), m
        assert abs(onnx_eval["by_modality"][m]["accuracy"] - entry["accuracy"]) <= 0.005, m
    assert abs(onnx_eval["metrics"]["accuracy"] - run_eval["metrics"]["accuracy"]) <= 0.005
    assert onnx_eval["metrics"]["confusion_matrix"] == run_eval["metrics"]["confusion_matrix"]
    for key in ("n", "split", "labels", "modalities", "task", "data"):
        assert onnx_eval[key] == run_eval[key], key
    assert onnx_eval["n"] == 12 and onnx_eval["split"] == "test"


def test_info_lists_inputs_outputs_and_labels(cli_export: Path) -> None:
    result = fusionedge("info", str(cli_export), "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert list(info["inputs"]) == ["image", "audio", "tokens", "present"]
    assert list(info["outputs"]) == ["scores", "embedding"]
    assert "uint8" in info["inputs"]["image"] and "bool" in info["inputs"]["present"]
    assert info["labels"] == ["blue", "green", "red"]
    assert info["opset"] >= 18
    assert info["bytes"] == cli_export.stat().st_size
    assert info["spec"]["labels"] == info["labels"]
    assert set(info["preprocessing"]) == {"image", "audio", "text"}
    assert info["preprocessing"]["audio"]["sample_rate"] == 8000
    assert "CPUExecutionProvider" in info["providers_available"]

    human = fusionedge("info", str(cli_export))
    assert human.returncode == 0, human.stderr
    assert "blue, green, red" in human.stdout and "input  image" in human.stdout


def test_predict_gives_one_of_the_labels(cli_export: Path, data: Path) -> None:
    manifest = read_manifest(data)
    record = next(r for r in manifest.split("test") if r.text is not None)
    result = fusionedge(
        "predict",
        str(cli_export),
        "--image",
        str(record.image),
        "--audio",
        str(record.audio),
        "--json",
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["label"] in ("blue", "green", "red")
    assert out["present"] == {"image": True, "audio": True, "text": False}
    assert abs(sum(out["scores"].values()) - 1.0) < 1e-5
    assert out["top_k"][0][0] == out["label"]
    assert out["providers"][-1] == "CPUExecutionProvider"
    assert "embedding" not in out
    # The tiny model learned the classes: a clear sample gets its own label.
    assert out["label"] == record.label

    with_text = fusionedge("predict", str(cli_export), "--text", record.text, "--json")
    assert with_text.returncode == 0, with_text.stderr
    assert json.loads(with_text.stdout)["present"] == {"image": False, "audio": False, "text": True}
