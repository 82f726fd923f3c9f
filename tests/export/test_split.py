"""Split export: per-modality encoder files and a fusion file that compose to the single file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import build_model

from fusionedge.contract import PART_KEY, SPEC_KEY, embedding_input
from fusionedge.export.onnx_export import example_inputs, export_onnx
from fusionedge.export.parity import check_parity
from fusionedge.export.split import export_split
from fusionedge.runtime import ModelFileError, Predictor


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):
    """A tiny attention-fusion model as one file and as split parts."""
    root = tmp_path_factory.mktemp("split")
    model = build_model(fusion="attention")
    export_onnx(model, root / "model.onnx")
    facts = export_split(model, root / "model.split")
    return model, root, facts


def test_the_folder_holds_one_encoder_per_modality_and_the_fusion(exported) -> None:
    model, root, facts = exported
    folder = root / "model.split"
    assert sorted(p.name for p in folder.iterdir()) == [
        "audio.onnx",
        "audio_frontend.onnx",
        "fusion.onnx",
        "image.onnx",
        "text.onnx",
    ]
    assert set(facts) == {"image", "audio_frontend", "audio", "text", "fusion"}
    for part in facts:
        proto = onnx.load(str(folder / f"{part}.onnx"))
        meta = {p.key: p.value for p in proto.metadata_props}
        assert meta[PART_KEY] == part
        assert json.loads(meta[SPEC_KEY]) == json.loads(model.spec.to_json())
    encoder = onnx.load(str(folder / "image.onnx"))
    assert [i.name for i in encoder.graph.input] == ["image"]
    assert [o.name for o in encoder.graph.output] == ["embedding"]
    # The log-mel audio encoder comes in two: a front end with a dynamic sample axis, and
    # the rest from log-mel frames on.
    frontend = onnx.load(str(folder / "audio_frontend.onnx"))
    assert [i.name for i in frontend.graph.input] == ["audio"]
    assert frontend.graph.input[0].type.tensor_type.shape.dim[1].dim_param  # dynamic
    body = onnx.load(str(folder / "audio.onnx"))
    assert [i.name for i in body.graph.input] == ["logmel"]
    fusion = onnx.load(str(folder / "fusion.onnx"))
    assert [i.name for i in fusion.graph.input] == [
        *(embedding_input(m) for m in model.spec.modalities),
        "present",
    ]
    assert [o.name for o in fusion.graph.output] == ["scores", "embedding"]


def test_split_parts_match_pytorch_on_every_subset(exported) -> None:
    model, root, _ = exported
    report = check_parity(model, root / "model.split", None)
    assert report["cases"] == 24 and report["failed"] == 0
    assert report["max_abs_diff_scores"] <= 1e-4


def test_split_and_single_file_give_the_same_scores(exported) -> None:
    _, root, _ = exported
    single = Predictor.from_path(root / "model.onnx", providers="cpu")
    split = Predictor.from_path(root / "model.split", providers="cpu")
    assert split.split is not None and single.split is None
    assert split.spec == single.spec
    for present in ([True, True, True], [True, False, True], [False, False, False]):
        inputs = example_inputs(single.spec, 5, seed=3)
        inputs["present"][:] = present
        a, ea = single.run(inputs)
        b, eb = split.run(inputs)
        assert np.abs(a - b).max() <= 1e-5
        assert np.abs(ea - eb).max() <= 1e-5
    # The high-level API works on the folder too.
    frame = np.full((30, 40, 3), (40, 40, 220), np.uint8)
    r1 = single.predict(image=frame, text="red")
    r2 = split.predict(image=frame, text="red")
    assert r1.label == r2.label
    assert r1.scores == pytest.approx(r2.scores, abs=1e-5)


def test_encode_and_fuse_compose_to_run(exported) -> None:
    _, root, _ = exported
    split = Predictor.from_path(root / "model.split", providers="cpu")
    inputs = example_inputs(split.spec, 2, seed=1)
    embeddings = {
        "image": split.encode("image", inputs["image"]),
        "audio": split.encode("audio", inputs["audio"]),
        "text": split.encode("text", inputs["tokens"]),
    }
    assert embeddings["image"].shape == (2, split.spec.embed_dim)
    scores, _ = split.fuse(embeddings, inputs["present"])
    assert np.abs(scores - split.run(inputs)[0]).max() == 0
    # An absent modality's embedding does not matter: the placeholder replaces it.
    mask = inputs["present"].copy()
    mask[:, 1] = False
    with_audio, _ = split.fuse(embeddings, mask)
    without_audio, _ = split.fuse({**embeddings, "audio": None}, mask)
    assert np.array_equal(with_audio, without_audio)


def test_a_single_file_has_no_encode_or_fuse(exported) -> None:
    _, root, _ = exported
    single = Predictor.from_path(root / "model.onnx", providers="cpu")
    with pytest.raises(ValueError, match=r"single-file model.*--split"):
        single.encode("image", np.zeros((1, 16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="single-file model"):
        single.fuse({}, np.ones((1, 3), bool))


def test_a_part_file_alone_is_refused_with_the_folder_named(exported) -> None:
    _, root, _ = exported
    with pytest.raises(ModelFileError, match="'image' part of a split model; open its folder"):
        Predictor.from_path(root / "model.split" / "image.onnx")


def test_parts_from_different_exports_are_refused(exported, tmp_path: Path) -> None:
    _, root, _ = exported
    other = build_model(seed=1, fusion="attention", embed_dim=8)
    export_split(other, tmp_path / "other.split")
    mixed = tmp_path / "mixed.split"
    shutil.copytree(root / "model.split", mixed)
    shutil.copy(tmp_path / "other.split" / "audio.onnx", mixed / "audio.onnx")
    with pytest.raises(ModelFileError, match=r"audio\.onnx: its spec differs"):
        Predictor.from_path(mixed)


def test_a_folder_missing_a_part_is_refused(exported, tmp_path: Path) -> None:
    _, root, _ = exported
    broken = tmp_path / "broken.split"
    shutil.copytree(root / "model.split", broken)
    (broken / "text.onnx").unlink()
    with pytest.raises(FileNotFoundError, match=r"text\.onnx"):
        Predictor.from_path(broken)
    (broken / "fusion.onnx").unlink()
    with pytest.raises(ModelFileError, match="not a split fusionedge model"):
        Predictor.from_path(broken)


def test_info_describes_a_split_folder(exported, capsys) -> None:
    from fusionedge.cli import main

    _, root, _ = exported
    assert main(["info", str(root / "model.split"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert set(info["split_parts"]) == {"image", "audio_frontend", "audio", "text", "fusion"}
    assert info["bytes"] == sum(info["split_parts"].values())
    assert "image_embedding" in info["inputs"] and "scores" in info["outputs"]


def test_the_front_end_gives_the_frames_of_any_stretch_of_audio(exported) -> None:
    """A window moved by k DFT hops has k new frames at its end and the rest shifted: the
    front end on just the new stretch gives those k frames (what streaming relies on)."""
    _, root, _ = exported
    split = Predictor.from_path(root / "model.split", providers="cpu").split
    spec = split.spec.audio
    rng = np.random.default_rng(0)
    track = (0.1 * rng.standard_normal(spec.num_samples * 2)).astype(np.float32)
    frames, hop, k = spec.num_frames, spec.hop_length, 3
    old = split.logmel(track[None, : spec.num_samples])
    new_window = track[k * hop : k * hop + spec.num_samples]
    full = split.logmel(new_window[None])
    chunk = new_window[(frames - k) * hop : (frames - 1) * hop + spec.n_fft]
    tail = split.logmel(chunk[None])
    assert full.shape == old.shape and tail.shape[-1] == k
    assert np.abs(full[..., : frames - k] - old[..., k:]).max() <= 1e-5
    assert np.abs(full[..., frames - k :] - tail).max() <= 1e-5
