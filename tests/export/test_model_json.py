"""model.json (export/model_json.py): derived from the spec, tied to the file by its sha256,
written atomically, written last by export_run and absent after a failed export; and the
host preprocessing facts it states, held to what fusionedge.preprocess does."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile as sf
from support import tiny_config, write_dataset

from fusionedge.contract import input_layout
from fusionedge.export import model_json as mj
from fusionedge.export import run as export_module
from fusionedge.export.precision import PrecisionRefused
from fusionedge.preprocess import load_audio, resample, resize_image
from fusionedge.spec import AudioSpec, ImageSpec, ModelSpec


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("modalities", [("image", "audio", "text"), ("audio",)])
def test_content_is_derived_from_the_spec(export_tiny, modalities, tmp_path: Path) -> None:
    exported = export_tiny(modalities=modalities)
    model = tmp_path / "tiny.onnx"
    model.write_bytes(exported.path.read_bytes())
    path = mj.write_model_json(model, exported.spec)
    assert path == tmp_path / "tiny.json" == mj.model_json_path(model)
    data = json.loads(path.read_text())
    spec = exported.spec
    assert data["format"] == mj.FORMAT and data["format_version"] == mj.FORMAT_VERSION
    assert ModelSpec.from_dict(data["spec"]) == spec
    assert data["files"] == [
        {"path": "tiny.onnx", "precision": "fp32", "bytes": model.stat().st_size,
         "sha256": sha256(model)}
    ]  # fmt: skip
    assert data["labels"] == list(spec.labels) and data["task"] == spec.task
    assert data["modalities"] == list(spec.modalities)
    layout = input_layout(spec)
    assert [(i["name"], i["dtype"], tuple(i["shape"][1:])) for i in data["inputs"]] == [
        (name, dtype, shape) for name, (dtype, shape) in layout.items()
    ]
    assert {i["shape"][0] for i in data["inputs"]} == {"N"}
    assert data["outputs"][0]["shape"] == ["N", len(spec.labels)]
    assert data["outputs"][1]["shape"] == ["N", spec.embed_dim]
    pre = data["preprocessing"]
    assert sorted(pre) == sorted(spec.modalities)
    if spec.image is not None:
        assert pre["image"]["shape"] == [spec.image.height, spec.image.width, 3]
        assert pre["image"]["resize"]["mode"] == spec.image.resize
        assert pre["image"]["in_graph"]["mean"] == list(spec.image.mean)
    if spec.audio is not None:
        assert pre["audio"]["sample_rate"] == spec.audio.sample_rate
        assert pre["audio"]["num_samples"] == spec.audio.num_samples
        assert pre["audio"]["in_graph"]["frames"] == spec.audio.num_frames
    if spec.text is not None:
        assert pre["text"]["max_length"] == spec.text.max_length
        assert pre["text"]["vocab_size"] == spec.text.tokenizer.vocab_size
        # The vocabulary is written once, in the spec.
        assert data["spec"]["text"]["tokenizer"]["vocab"] == list(spec.text.tokenizer.vocab)


def test_write_for_file_reads_the_spec_from_the_file(export_tiny, tmp_path: Path) -> None:
    exported = export_tiny()
    model = tmp_path / "model.onnx"
    model.write_bytes(exported.path.read_bytes())
    assert mj.main([str(model)]) == 0
    data = json.loads((tmp_path / "model.json").read_text())
    assert ModelSpec.from_dict(data["spec"]) == exported.spec
    assert data["files"][0]["sha256"] == sha256(model)


def test_an_interrupted_write_keeps_the_old_file_and_leaves_no_temporary(
    export_tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exported = export_tiny()
    model = tmp_path / "model.onnx"
    model.write_bytes(exported.path.read_bytes())
    (tmp_path / "model.json").write_text("old")

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        mj.write_model_json(model, exported.spec)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.onnx"]
    assert (tmp_path / "model.json").read_text() == "old"


# ------------------------------------------------------------ the facts it states


def test_resize_interpolation_is_what_preprocess_uses() -> None:
    rng = np.random.default_rng(0)
    spec = ImageSpec(height=16, width=16)
    flags = {"INTER_AREA": cv2.INTER_AREA, "INTER_LINEAR": cv2.INTER_LINEAR}
    for (h, w), name in (((29, 37), mj.SHRINK_INTERPOLATION), ((12, 10), mj.ENLARGE_INTERPOLATION)):
        image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        expected = cv2.resize(image, (16, 16), interpolation=flags[name])
        np.testing.assert_array_equal(resize_image(image, spec), expected)


def test_soxr_quality_and_window_placement_are_what_preprocess_uses(tmp_path: Path) -> None:
    import soxr

    rng = np.random.default_rng(1)
    audio = rng.uniform(-0.5, 0.5, 7000).astype(np.float32)
    np.testing.assert_array_equal(
        resample(audio, 11025, 8000), soxr.resample(audio, 11025, 8000, quality=mj.SOXR_QUALITY)
    )
    # int16 PCM is x / 32768 and the window is the centre crop (start = (n - S) // 2).
    pcm = rng.integers(-32768, 32767, size=5001, dtype=np.int16)
    sf.write(str(tmp_path / "a.wav"), pcm, 8000, subtype="PCM_16")
    spec = AudioSpec(sample_rate=8000, num_samples=4000, n_fft=256, hop_length=128)
    start = (5001 - 4000) // 2
    np.testing.assert_array_equal(
        load_audio(tmp_path / "a.wav", spec), pcm[start : start + 4000].astype(np.float32) / 32768
    )
    assert mj.PCM_SCALE["int16"] == "x / 32768"


# ------------------------------------------------------------ export_run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fusionedge.training.trainer import train

    root = tmp_path_factory.mktemp("model_json_run")
    data = write_dataset(root / "data", {"train": 8, "val": 3})
    train(data, root / "run", tiny_config("epochs=1"), progress=False)
    return root / "run"


def test_export_run_writes_model_json_for_the_file_it_placed(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.onnx"
    export_module.export_run(run, out)
    data = json.loads((tmp_path / "model.json").read_text())
    assert [f["path"] for f in data["files"]] == ["model.onnx"]
    assert data["files"][0]["sha256"] == sha256(out)
    assert "split" not in data
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "model.card",
        "model.card.md",
        "model.json",
        "model.onnx",
        "model.report.json",
    ]  # fmt: skip (the model card and its plots come with every export)


def test_a_failed_export_leaves_no_model_json(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model.json of an earlier export goes once the file it described is replaced, and
    the export that fails after that writes none."""
    out = tmp_path / "model.onnx"
    (tmp_path / "model.json").write_text('{"format": "fusionedge.model_json", "stale": true}')

    def fails(*args, **kwargs):
        raise RuntimeError("copy failed")

    monkeypatch.setattr(export_module, "add_copies", fails)
    with pytest.raises(RuntimeError, match="copy failed"):
        export_module.export_run(run, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.report.json"]


def test_a_refused_copy_still_describes_the_fp32_file(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "model.onnx"

    def refused(report, *args, **kwargs):
        report["int8"] = {"path": None, "problems": ["lost 3 points"]}
        raise PrecisionRefused("int8: lost 3 points", report)

    monkeypatch.setattr(export_module, "add_copies", refused)
    with pytest.raises(PrecisionRefused):
        export_module.export_run(run, out)
    data = json.loads((tmp_path / "model.json").read_text())
    assert [(f["path"], f["sha256"]) for f in data["files"]] == [("model.onnx", sha256(out))]


@pytest.mark.parametrize("name", ["config", "metrics"])
def test_an_out_whose_model_json_would_replace_another_file_is_refused(
    run: Path, name: str
) -> None:
    """`--out run/config.onnx` would write run/config.json: refused before any work, and
    the run's own file is untouched."""
    companion = run / f"{name}.json"
    before = companion.read_bytes()
    with pytest.raises(ValueError, match=f"{name}.json exists and is not one"):
        export_module.export_run(run, run / f"{name}.onnx")
    assert companion.read_bytes() == before
    assert not (run / f"{name}.onnx").exists()
