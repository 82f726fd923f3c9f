"""The `fusionedge` command end to end, in subprocesses, on a small demo data set."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support import TINY_OVERRIDES

from fusionedge.manifest import read_manifest

TINY = (*TINY_OVERRIDES, "epochs=3")


def fusionedge(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Runs the installed console script (or `python -m fusionedge.cli` without one)."""
    script = Path(sys.executable).with_name("fusionedge")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "fusionedge.cli"]
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def files_of(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "data"
    result = fusionedge("demo-data", str(out), "--n", "60", "--seed", "1", "--workers", "1")
    assert result.returncode == 0, result.stderr
    assert "wrote 60 samples" in result.stdout
    return out


def test_demo_data_is_byte_identical_for_a_seed(demo: Path, tmp_path: Path) -> None:
    # Another worker count too: the output must not depend on how the work was split.
    again = tmp_path / "again"
    result = fusionedge("demo-data", str(again), "--n", "60", "--seed", "1", "--workers", "2")
    assert result.returncode == 0, result.stderr
    first, second = files_of(demo), files_of(again)
    assert "manifest.jsonl" in first
    assert sum(k.startswith("img/") for k in first) == 60
    assert sum(k.startswith("wav/") for k in first) == 60
    assert first.keys() == second.keys()
    for name in first:
        assert first[name] == second[name], name


def test_demo_data_differs_between_seeds(demo: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    result = fusionedge("demo-data", str(other), "--n", "60", "--seed", "2", "--workers", "1")
    assert result.returncode == 0, result.stderr
    assert (other / "manifest.jsonl").read_bytes() != (demo / "manifest.jsonl").read_bytes()
    first, second = files_of(demo), files_of(other)
    media = [k for k in first if k.startswith(("img/", "wav/"))]
    assert sum(first[k] != second[k] for k in media) > len(media) // 2


def test_demo_data_manifest_validates(demo: Path) -> None:
    manifest = read_manifest(demo)
    assert len(manifest.records) == 60
    assert manifest.modalities == ("image", "audio", "text")
    assert manifest.label_kind == "class"
    assert set(manifest.classes) <= {
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
    }
    assert len(manifest.classes) >= 8
    assert all(r.image.is_file() and r.audio.is_file() for r in manifest.records)
    assert {r.split for r in manifest.records} == {"train", "val", "test"}
    assert 0 < sum(r.text is not None for r in manifest.records) < 60  # text is optional


def test_demo_data_refuses_to_overwrite(demo: Path) -> None:
    before = (demo / "manifest.jsonl").read_bytes()
    result = fusionedge("demo-data", str(demo), "--n", "5")
    assert result.returncode == 2
    assert "exists" in result.stderr and "Traceback" not in result.stderr
    assert (demo / "manifest.jsonl").read_bytes() == before


def test_train_then_eval_json(demo: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    sets = [a for s in TINY for a in ("--set", s)]
    trained = fusionedge("train", "--data", str(demo), "--out", str(run), "--no-progress", *sets)
    assert trained.returncode == 0, trained.stderr
    assert "best epoch" in trained.stdout and "of 3" in trained.stdout
    assert f"run folder: {run}" in trained.stdout
    assert (run / "best.safetensors").is_file() and (run / "log.csv").is_file()

    evaluated = fusionedge("eval", str(run), "--data", str(demo), "--split", "test", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    lines = evaluated.stdout.strip().splitlines()
    assert len(lines) == 1, evaluated.stdout
    result = json.loads(lines[0])
    test_ids = [r.id for r in read_manifest(demo).split("test")]
    assert result["n"] == len(test_ids) > 0
    assert result["split"] == "test"
    for key in ("accuracy", "macro_f1"):
        assert 0.0 <= result["metrics"][key] <= 1.0
    assert set(result["by_modality"]) == {"image", "audio", "text"}
    for modality in ("image", "audio", "text"):
        assert 0.0 <= result["by_modality"][modality]["accuracy"] <= 1.0
    assert result["by_modality"]["image"]["n_present"] == len(test_ids)


def test_broken_manifest_exits_2_naming_file_and_line(tmp_path: Path) -> None:
    data = tmp_path / "broken"
    data.mkdir()
    manifest = data / "manifest.jsonl"
    manifest.write_text(
        '{"id": "a", "text": "hello", "label": "x"}\n'
        '{"id": "b", "text": "hi", "label": "y"\n'  # line 2: not valid JSON
        '{"id": "c", "image": "missing.png", "label": "x"}\n',  # line 3: no such file
        encoding="utf-8",
    )
    result = fusionedge("train", "--data", str(data), "--out", str(tmp_path / "run"))
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert f"{manifest}:2:" in result.stderr
    assert "not valid JSON" in result.stderr
    assert f"{manifest}:3: image:" in result.stderr and "missing.png" in result.stderr
    assert result.stderr.startswith("fusionedge train: error:")
    assert not (tmp_path / "run").exists()


def test_bad_set_exits_2_naming_the_key(demo: Path, tmp_path: Path) -> None:
    result = fusionedge(
        "train", "--data", str(demo), "--out", str(tmp_path / "run"), "--set", "optim.lrr=1"
    )
    assert result.returncode == 2
    assert "optim.lrr: unknown key" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()
