"""A model file that checks itself: spec against graph, digest, golden cases.

One tiny model is trained and exported (single file and split parts) once, with an int8
copy made from it; each test edits a copy of a real exported file with `onnx`, the way a
user or a tool might, and opens it through the real runtime, `model_info` and the real
`fusionedge` console script.

An edit of the spec alone is caught by the digest; to show that the spec-vs-graph check
also speaks for itself (a file written by a broken exporter carries a consistent digest),
those edits are re-stamped with export's own stamp_digest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from support import tiny_spec, train_and_export, write_dataset

from fusionedge.contract import DIGEST_KEY, GOLDEN_KEY, PRECISION_KEY, SPEC_KEY
from fusionedge.export.integrity import stamp_digest
from fusionedge.integrity import (
    GoldenCases,
    IntegrityError,
    example_inputs,
    file_digest,
    golden_present,
    metadata_entry,
)
from fusionedge.runtime import ModelFileError, Predictor
from fusionedge.runtime.info import model_info

Edit = Callable[[onnx.ModelProto], None]
CHANGED = "the file was changed after export"


# ---------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def integrity_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("integrity_data"))


@pytest.fixture(scope="session")
def exported(integrity_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained model exported as model.onnx and model.split/."""
    return train_and_export(integrity_data, tmp_path_factory.mktemp("integrity"), split=True)


@pytest.fixture(scope="session")
def int8_copy(exported: Path, integrity_data: Path) -> Path:
    """model.int8.onnx, made from model.onnx as `fusionedge export --int8` makes it."""
    from fusionedge.evaluation import split_arrays
    from fusionedge.export.quantize import quantize_int8

    spec = Predictor.from_path(exported, providers="cpu").spec
    _, samples = split_arrays(integrity_data, spec, ("train",), 32)
    out = exported.with_name("model.int8.onnx")
    quantize_int8(exported, out, samples)
    return out


# ---------------------------------------------------------------------- helpers


def metadata(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def edited(src: Path, dst: Path, edit: Edit, restamp: bool = False) -> Path:
    """A copy of src with edit applied through onnx (and, with restamp, a fresh digest)."""
    model = onnx.load(str(src))
    edit(model)
    onnx.save(model, str(dst))
    if restamp:
        stamp_digest(dst)
    return dst


def spec_edit(change: Callable[[dict], None]) -> Edit:
    def edit(model: onnx.ModelProto) -> None:
        (prop,) = [p for p in model.metadata_props if p.key == SPEC_KEY]
        spec = json.loads(prop.value)
        change(spec)
        prop.value = json.dumps(spec)

    return edit


def drop_metadata(*keys: str) -> Edit:
    def edit(model: onnx.ModelProto) -> None:
        kept = [(p.key, p.value) for p in model.metadata_props if p.key not in keys]
        del model.metadata_props[:]
        for key, value in kept:
            model.metadata_props.add(key=key, value=value)

    return edit


def set_metadata(model: onnx.ModelProto, key: str, value: str) -> None:
    next(p for p in model.metadata_props if p.key == key).value = value


def scale_weight(name_part: str, factor: float) -> Edit:
    """Multiplies the first float initializer whose name contains name_part."""

    def edit(model: onnx.ModelProto) -> None:
        init = next(
            i
            for i in model.graph.initializer
            if name_part in i.name and i.data_type == onnx.TensorProto.FLOAT
        )
        array = numpy_helper.to_array(init) * np.float32(factor)
        init.CopyFrom(numpy_helper.from_array(array.astype(np.float32), init.name))

    return edit


def fusionedge(*args: str) -> subprocess.CompletedProcess:
    """The installed console script, as a user runs it."""
    script = Path(sys.executable).with_name("fusionedge")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "fusionedge.cli"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120)


def load_error(path: Path) -> str:
    """The ModelFileError the Predictor raises on path (a file, or a split folder)."""
    with pytest.raises(ModelFileError) as error:
        Predictor.from_path(path, providers="cpu")
    assert str(error.value).startswith(f"{path}")
    return str(error.value)


# ---------------------------------------------------------------------- what export stores


def test_export_stores_a_digest_of_the_file_and_golden_cases(exported: Path) -> None:
    meta = metadata(exported)
    computed, stored = file_digest(exported.read_bytes())
    assert stored == [meta[DIGEST_KEY]] == [computed]
    assert computed.startswith("sha256:") and len(computed) == len("sha256:") + 64
    golden = GoldenCases.from_json(meta[GOLDEN_KEY])
    assert golden.scores.shape == (4, 3) and golden.seed == 0
    np.testing.assert_array_equal(golden.present, golden_present(3))
    np.testing.assert_allclose(golden.scores.sum(axis=1), 1.0, atol=1e-5)  # softmax rows
    assert "CPUExecutionProvider" in golden.computed_on


def test_golden_inputs_are_pinned_across_machines_and_numpy_versions() -> None:
    """The runtime rebuilds export's golden inputs from the seed: a change to the
    generator would make every stored golden case fail, so its output is pinned."""
    inputs = example_inputs(tiny_spec(), 4, 0, golden_present(3))
    digest = hashlib.sha256()
    for name in sorted(inputs):
        digest.update(name.encode() + np.ascontiguousarray(inputs[name]).tobytes())
    assert digest.hexdigest() == "4cb27cc3244f86636a8ce6e1ea87dc20e48d487d0ce9ef2518b7135bc904e72c"
    assert inputs["tokens"][0].tolist() == [23, 21, 2, 7, 5, 28, 0, 0, 0, 0]


def test_the_digest_survives_an_onnx_round_trip_without_edits(
    exported: Path, tmp_path: Path
) -> None:
    """Export appends its entries where protobuf puts metadata last, so onnx writes the
    same bytes back and the file still loads."""
    path = edited(exported, tmp_path / "resaved.onnx", lambda model: None)
    assert path.read_bytes() == exported.read_bytes()
    with Predictor.from_path(path, providers="cpu") as predictor:
        assert predictor.spec.labels == ("blue", "green", "red")


def test_the_digest_reader_refuses_bytes_that_are_not_protobuf() -> None:
    with pytest.raises(IntegrityError, match="not a protobuf message"):
        file_digest(b"\xff\xff\xff")


# ---------------------------------------------------------------------- spec vs graph

MISMATCHES: dict[str, tuple[Edit, str]] = {
    "image size": (
        spec_edit(lambda s: s["image"].update(height=24)),
        "input 'image': spec uint8 [N, 24, 16, 3], graph uint8 [N, 16, 16, 3]",
    ),
    "audio window": (
        spec_edit(lambda s: s["audio"].update(num_samples=4096)),
        "input 'audio': spec float32 [N, 4096], graph float32 [N, 4000]",
    ),
    "text length": (
        spec_edit(lambda s: s["text"].update(max_length=20)),
        "input 'tokens': spec int64 [N, 20], graph int64 [N, 12]",
    ),
    "one label more": (
        spec_edit(lambda s: s.update(labels=[*s["labels"], "purple"])),
        "output 'scores': spec float32 [N, 4], graph float32 [N, 3]",
    ),
    "one label fewer": (
        spec_edit(lambda s: s.update(labels=s["labels"][:2])),
        "output 'scores': spec float32 [N, 2], graph float32 [N, 3]",
    ),
    "embed_dim": (
        spec_edit(lambda s: s.update(embed_dim=32)),
        "output 'embedding': spec float32 [N, 32], graph float32 [N, 16]",
    ),
    "batch axis fixed": (
        lambda m: (
            m.graph.input[0]
            .type.tensor_type.shape.dim[0]
            .CopyFrom(onnx.TensorShapeProto.Dimension(dim_value=1))
        ),
        "input 'image': spec uint8 [N, 16, 16, 3], graph uint8 [1, 16, 16, 3]",
    ),
}


@pytest.mark.parametrize("case", list(MISMATCHES))
def test_a_spec_that_disagrees_with_the_graph_is_refused_naming_both(
    exported: Path, tmp_path: Path, case: str
) -> None:
    edit, expected = MISMATCHES[case]
    path = edited(exported, tmp_path / "mismatch.onnx", edit, restamp=True)
    message = load_error(path)
    assert "disagrees with the graph" in message and expected in message
    assert CHANGED not in message  # re-stamped: the graph check alone found it
    problems = model_info(path)["problems"]
    assert len(problems) == 1 and expected in problems[0] and problems[0].startswith(str(path))


def test_a_dropped_modality_names_the_inputs_and_the_mask(exported: Path, tmp_path: Path) -> None:
    def drop_audio(spec: dict) -> None:
        spec.update(modalities=["image", "text"], audio=None)
        del spec["encoders"]["audio"]

    path = edited(exported, tmp_path / "no_audio.onnx", spec_edit(drop_audio), restamp=True)
    message = load_error(path)
    names = "inputs: spec ['image', 'tokens', 'present'], graph ['image', 'audio', 'tokens', "
    assert names + "'present']" in message
    assert "input 'present': spec bool [N, 2], graph bool [N, 3]" in message


def test_info_exits_2_on_a_mismatch_and_says_so(exported: Path, tmp_path: Path) -> None:
    edit, expected = MISMATCHES["one label more"]
    path = edited(exported, tmp_path / "labels.onnx", edit, restamp=True)
    done = fusionedge("info", str(path))
    assert done.returncode == 2
    assert f"  PROBLEM: {path}: the spec (4 labels, embed_dim 16)" in done.stdout
    assert "spec and graph agree" not in done.stdout
    (line,) = done.stderr.strip().splitlines()[-1:]
    assert line.startswith("fusionedge info: error: ") and expected in line
    done = fusionedge("info", str(path), "--json")
    assert done.returncode == 2 and expected in json.loads(done.stdout)["problems"][0]


def test_an_unstamped_spec_edit_reports_the_mismatch_and_the_digest(
    exported: Path, tmp_path: Path
) -> None:
    edit, expected = MISMATCHES["image size"]
    message = load_error(edited(exported, tmp_path / "both.onnx", edit))
    assert expected in message and CHANGED in message
    assert message.index(expected) < message.index(CHANGED)


def test_a_larger_vocabulary_than_the_token_table_is_reported(
    exported: Path, tmp_path: Path
) -> None:
    """ONNX Runtime does not show a graph's weights: the Predictor relies on the digest for
    the vocabulary, and `info` reads the token table where the onnx package is installed."""

    def grow(spec: dict) -> None:
        spec["text"]["tokenizer"]["vocab"] += ["q", "z"]

    edit = spec_edit(grow)
    assert CHANGED in load_error(edited(exported, tmp_path / "vocab.onnx", edit))
    path = edited(exported, tmp_path / "vocab_stamped.onnx", edit, restamp=True)
    (problem,) = model_info(path)["problems"]
    assert problem == (
        f"{path}: the spec's vocabulary has 12 token ids but the graph's token embedding "
        "table has 10 rows: ids 10 to 11 fall outside it"
    )


# ---------------------------------------------------------------------- digest


EDITS_AFTER_EXPORT: dict[str, Edit] = {
    "labels reordered": spec_edit(lambda s: s.update(labels=s["labels"][::-1])),
    "a weight scaled": scale_weight("head", 1.001),
    "golden scores edited": lambda m: set_metadata(m, GOLDEN_KEY, '{"version": 1}'),
    "a metadata entry added": lambda m: m.metadata_props.add(key="author", value="me"),
    "doc string edited": lambda m: setattr(m, "doc_string", "mine now"),
}


@pytest.mark.parametrize("case", list(EDITS_AFTER_EXPORT))
def test_any_edit_after_export_is_caught_by_the_digest(
    exported: Path, tmp_path: Path, case: str
) -> None:
    path = edited(exported, tmp_path / "changed.onnx", EDITS_AFTER_EXPORT[case])
    message = load_error(path)
    assert CHANGED in message and f"export stored {metadata(exported)[DIGEST_KEY]}" in message
    assert any(CHANGED in p for p in model_info(path)["problems"])


def test_reordered_labels_are_refused_by_predict_on_the_command_line(
    exported: Path, tmp_path: Path
) -> None:
    path = edited(exported, tmp_path / "reordered.onnx", EDITS_AFTER_EXPORT["labels reordered"])
    done = fusionedge("predict", str(path), "--text", "red", "--json")
    assert done.returncode == 2 and done.stdout == ""
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("fusionedge predict: error: ") and CHANGED in last


def test_two_digest_entries_are_refused(exported: Path, tmp_path: Path) -> None:
    path = tmp_path / "twice.onnx"
    path.write_bytes(exported.read_bytes() + metadata_entry(DIGEST_KEY, "sha256:" + "0" * 64))
    assert CHANGED in load_error(path)


def test_a_file_exported_before_digests_loads_with_an_info_log(
    exported: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = edited(exported, tmp_path / "old.onnx", drop_metadata(DIGEST_KEY, GOLDEN_KEY))
    with caplog.at_level(logging.INFO, logger="fusionedge.runtime.model_file"):
        old = Predictor.from_path(path, providers="cpu")
    notes = [r for r in caplog.records if DIGEST_KEY in r.getMessage()]
    assert [r.levelno for r in notes] == [logging.INFO]
    assert "exported before fusionedge stored one" in notes[0].getMessage()
    with Predictor.from_path(exported, providers="cpu") as sealed:
        a, b = sealed.predict(text="red"), old.predict(text="red")
    assert a.scores == b.scores
    info = model_info(path)
    assert info["problems"] == [] and info["digest"] is None and not info["digest_verified"]
    done = fusionedge("info", str(path))
    assert done.returncode == 0 and "digest: none (exported before" in done.stdout


# ---------------------------------------------------------------------- golden cases


def test_verify_passes_on_the_exported_file(exported: Path) -> None:
    verify = model_info(exported, verify=True, providers="cpu")["verify"]
    assert verify["passed"] and verify["cases"] == 4 and verify["precision"] == "fp32"
    assert verify["tolerance"] == 1e-4 and verify["max_abs_diff"] < 1e-6
    assert verify["providers"] == ["CPUExecutionProvider"] and verify["missing_providers"] == []


def test_verify_json_on_the_command_line_gives_the_figures(exported: Path) -> None:
    done = fusionedge("info", str(exported), "--verify", "--providers", "cpu", "--json")
    assert done.returncode == 0, done.stderr
    verify = json.loads(done.stdout)["verify"]
    assert set(verify) >= {"passed", "max_abs_diff", "tolerance", "cases", "providers"}
    assert verify["passed"] is True and 0 <= verify["max_abs_diff"] < 1e-6


def test_verify_fails_when_the_file_computes_other_scores(exported: Path, tmp_path: Path) -> None:
    """A weight changed and the digest stamped again: the file loads, but its scores are
    no longer those export stored, which only the golden cases can tell."""
    path = edited(exported, tmp_path / "drift.onnx", scale_weight("head", 1.5), restamp=True)
    Predictor.from_path(path, providers="cpu").close()  # passes the load checks
    verify = model_info(path, verify=True, providers="cpu")["verify"]
    assert not verify["passed"] and verify["max_abs_diff"] > 1e-4
    assert verify["reason"].startswith("max |score difference|")
    done = fusionedge("info", str(path), "--verify", "--providers", "cpu")
    assert done.returncode == 2 and ": FAIL: max |score difference|" in done.stdout
    assert "golden-case verification failed" in done.stderr.strip().splitlines()[-1]
    loose = fusionedge("info", str(path), "--verify", "--providers", "cpu", "--tolerance", "1")
    assert loose.returncode == 0 and ": pass" in loose.stdout


def test_verify_of_a_file_without_golden_cases_fails_and_says_why(
    exported: Path, tmp_path: Path
) -> None:
    path = edited(exported, tmp_path / "old.onnx", drop_metadata(DIGEST_KEY, GOLDEN_KEY))
    done = fusionedge("info", str(path), "--verify", "--providers", "cpu", "--json")
    assert done.returncode == 2
    verify = json.loads(done.stdout)["verify"]
    assert verify["passed"] is False and verify["max_abs_diff"] is None
    assert verify["reason"].startswith("the file stores no golden cases")


def test_an_unreadable_golden_record_fails_verify(exported: Path, tmp_path: Path) -> None:
    path = edited(
        exported,
        tmp_path / "golden.onnx",
        lambda m: set_metadata(m, GOLDEN_KEY, "{"),
        restamp=True,
    )
    verify = model_info(path, verify=True, providers="cpu")["verify"]
    assert not verify["passed"]
    assert verify["reason"].startswith("the golden cases did not run: the golden cases cannot")


def test_verify_on_cuda_that_is_not_active_says_so(exported: Path) -> None:
    with Predictor.from_path(exported, providers=["cuda"]) as predictor:
        if "CUDAExecutionProvider" in predictor.providers:
            pytest.skip("CUDA is active here: this test is for a machine without it")
    done = fusionedge("info", str(exported), "--verify", "--providers", "cuda", "--json")
    verify = json.loads(done.stdout)["verify"]
    assert done.returncode == 2 and verify["passed"] is False
    assert verify["missing_providers"] == ["CUDAExecutionProvider"]
    assert verify["reason"].startswith("CUDAExecutionProvider requested but not active here")
    assert verify["max_abs_diff"] < 1e-6  # the figures on the CPU are still reported


# ---------------------------------------------------------------------- copies and parts


def test_an_int8_copy_carries_its_own_digest_and_golden_cases(
    exported: Path, int8_copy: Path
) -> None:
    fp32, int8 = metadata(exported), metadata(int8_copy)
    assert int8[PRECISION_KEY] == "int8" and int8[SPEC_KEY] == fp32[SPEC_KEY]
    assert file_digest(int8_copy.read_bytes()) == (int8[DIGEST_KEY], [int8[DIGEST_KEY]])
    assert int8[DIGEST_KEY] != fp32[DIGEST_KEY]
    own = GoldenCases.from_json(int8[GOLDEN_KEY]).scores
    assert not np.array_equal(own, GoldenCases.from_json(fp32[GOLDEN_KEY]).scores)
    verify = model_info(int8_copy, verify=True, providers="cpu")["verify"]
    assert verify["passed"] and verify["precision"] == "int8" and verify["tolerance"] == 1e-2
    assert verify["max_abs_diff"] < 1e-6  # held to its own scores, not to fp32's


def test_split_parts_are_sealed_and_verified_as_one_model(exported: Path) -> None:
    folder = exported.with_name("model.split")
    for part in folder.glob("*.onnx"):
        meta = metadata(part)
        assert file_digest(part.read_bytes())[1] == [meta[DIGEST_KEY]]
        assert (GOLDEN_KEY in meta) == (part.stem == "fusion")
    verify = model_info(folder, verify=True, providers="cpu")["verify"]
    assert verify["passed"] and verify["max_abs_diff"] < 1e-6


def test_a_split_part_whose_spec_disagrees_with_its_graph_is_refused(
    exported: Path, tmp_path: Path
) -> None:
    """Every part carries the same spec; with n_mels changed in all of them (and their
    digests stamped again), the audio part's log-mel input disagrees."""
    folder = tmp_path / "model.split"
    shutil.copytree(exported.with_name("model.split"), folder)
    for part in folder.glob("*.onnx"):
        edited(part, part, spec_edit(lambda s: s["audio"].update(n_mels=20)), restamp=True)
    message = load_error(folder)
    assert message.startswith(f"{folder / 'audio.onnx'}: the spec (3 labels, embed_dim 16)")
    assert "input 'logmel': spec float32 [N, 1, 20, 30], graph float32 [N, 1, 16, 30]" in message


def test_an_edited_split_part_is_refused_naming_the_part(exported: Path, tmp_path: Path) -> None:
    folder = tmp_path / "model.split"
    shutil.copytree(exported.with_name("model.split"), folder)
    edited(folder / "image.onnx", folder / "image.onnx", scale_weight("", 1.001))
    message = load_error(folder)
    assert message.startswith(f"{folder / 'image.onnx'}: {CHANGED}")
    (problem,) = model_info(folder)["problems"]
    assert problem == message
