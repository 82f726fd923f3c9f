"""Results that cannot lie: no NaN scores, strict JSON, blank text is no text, and a
command line without inputs is refused.

The model is a tiny untrained one, exported once (its answers do not matter here, only
whether they are honest); a copy whose image (or text) encoder weights are NaN stands for
a model that gives non-finite scores. Command lines run through the installed console
script, as a user runs them.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from support import tiny_spec

from fusionedge.cli.commands import dumps
from fusionedge.export.integrity import stamp_digest
from fusionedge.manifest import read_manifest
from fusionedge.runtime import Predictor
from fusionedge.runtime.result import NonFiniteError

LABELS = ("blue", "green", "red")
NON_FINITE = "the model gave non-finite scores (NaN or infinity)"
# Blank by str.strip(), the rule of sdk/manifest.py: empty, spaces, tabs and newlines,
# and Unicode spaces (an ideographic space).
BLANK = ["", " ", "\t\n ", "\u3000"]


# ---------------------------------------------------------------------- fixtures


def nan_weights(src: Path, prefix: str) -> Path:
    """A copy whose first float weight under prefix is all NaN, its digest stamped again
    (a model that computes NaN, as export would have sealed it)."""
    model = onnx.load(str(src))
    init = next(
        i
        for i in model.graph.initializer
        if i.name.startswith(prefix) and i.data_type == onnx.TensorProto.FLOAT
    )
    weight = np.full(numpy_helper.to_array(init).shape, np.nan, np.float32)
    init.CopyFrom(numpy_helper.from_array(weight, init.name))
    dst = src.with_name(f"nan_{prefix.replace('.', '_')}.onnx")
    onnx.save(model, str(dst))
    stamp_digest(dst)
    return dst


@pytest.fixture(scope="session")
def nan_image_model(tiny_model_file: Path) -> Path:
    return nan_weights(tiny_model_file, "encoders.image")


@pytest.fixture(scope="session")
def nan_text_model(tiny_model_file: Path) -> Path:
    # The projection: NaN in the token table itself does not reach the scores here.
    return nan_weights(tiny_model_file, "encoders.text.proj")


@pytest.fixture(scope="module")
def predictor(tiny_model_file: Path):
    with Predictor.from_path(tiny_model_file, providers="cpu", threads=1) as p:
        yield p


@pytest.fixture(scope="session")
def image_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("honest_media") / "red.png"
    assert cv2.imwrite(str(path), np.full((20, 24, 3), (40, 40, 220), np.uint8))
    return path


def picture() -> np.ndarray:
    return np.full((16, 16, 3), 100, np.uint8)


def fusionedge(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """The installed console script, as a user runs it."""
    script = Path(sys.executable).with_name("fusionedge")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "fusionedge.cli"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout)


def strict_loads(text: str) -> object:
    """json.loads that refuses NaN and Infinity, which Python's accepts by default."""

    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def last_error(done: subprocess.CompletedProcess) -> str:
    return done.stderr.strip().splitlines()[-1]


# ---------------------------------------------------------------------- non-finite scores


def test_raw_audio_of_1e30_is_refused_naming_the_audio(predictor: Predictor) -> None:
    """The raw contract takes arrays as they are (the PCM range check is preprocessing's):
    audio of 1e30 overflows the log-mel, and the error names it instead of NaN scores."""
    batch = predictor.stack([predictor.prepare(text="red")])
    batch["audio"][:] = 1e30
    batch["present"][:, 1] = True
    with pytest.raises(NonFiniteError) as error:
        predictor.run(batch)
    assert isinstance(error.value, ValueError)
    assert str(error.value) == (
        f"{NON_FINITE} for sample 0 of the batch, from its audio input (audio: largest "
        "|value| 1e+30, outside PCM's [-1, 1]); no result is returned rather than a "
        "meaningless one"
    )


def test_the_rows_that_went_non_finite_are_named(predictor: Predictor) -> None:
    batch = predictor.stack([predictor.prepare(text="red") for _ in range(3)])
    batch["audio"][1:] = np.inf
    batch["present"][:, 1] = True
    with pytest.raises(NonFiniteError, match=r"for samples \[1, 2\] \(first: 1\) of the batch"):
        predictor.run(batch)
    batch["audio"][1:] = 0.0
    scores, _ = predictor.run(batch)  # the same rows with sane audio answer
    assert np.isfinite(scores).all()


def test_a_model_that_computes_nan_raises_naming_the_modality(nan_image_model: Path) -> None:
    with Predictor.from_path(nan_image_model, providers="cpu") as p:
        with pytest.raises(NonFiniteError) as error:
            p.predict(image=picture(), text="red")
        assert str(error.value).startswith(f"{NON_FINITE} for sample 0 of the batch, from its ")
        assert "image input (image: uint8 values from 100 to 100, in range: the model's graph" in (
            str(error.value)
        )
        # Without the image the placeholder stands in, and the answer is a real one.
        assert p.predict(text="red").label in LABELS


def test_predict_batch_names_the_bad_row(nan_image_model: Path) -> None:
    with (
        Predictor.from_path(nan_image_model, providers="cpu") as p,
        pytest.raises(NonFiniteError, match=r"for sample 1 of the batch, from its image"),
    ):
        p.predict_batch(images=[None, picture()], texts=["red", "red"])


def test_predict_on_the_command_line_fails_without_writing_nan(
    nan_image_model: Path, image_file: Path
) -> None:
    done = fusionedge("predict", str(nan_image_model), "--image", str(image_file), "--json")
    assert done.returncode == 2 and done.stdout == ""
    assert last_error(done).startswith(f"fusionedge predict: error: {NON_FINITE}")


def test_the_live_loop_stops_on_nan_instead_of_printing_it(nan_text_model: Path) -> None:
    done = fusionedge(
        "run", str(nan_text_model), "--text", "red", "--headless", "--rate", "5",
        "--duration", "2", "--providers", "cpu",
    )  # fmt: skip
    assert done.returncode == 2 and "NaN" not in done.stdout and done.stdout == ""
    assert last_error(done).startswith(f"fusionedge run: error: {NON_FINITE}")
    assert "from its text input" in last_error(done)


# ---------------------------------------------------------------------- strict JSON


def test_predict_json_is_strict_json(tiny_model_file: Path, image_file: Path) -> None:
    done = fusionedge("predict", str(tiny_model_file), "--image", str(image_file), "--json")
    assert done.returncode == 0, done.stderr
    out = strict_loads(done.stdout)
    assert out["label"] in LABELS and list(out["scores"]) == list(LABELS)
    assert out["present"] == {"image": True, "audio": False, "text": False}
    assert "embedding" not in out and out["providers"] == ["CPUExecutionProvider"]


def test_info_json_is_strict_json(tiny_model_file: Path) -> None:
    done = fusionedge("info", str(tiny_model_file), "--json")
    assert done.returncode == 0, done.stderr
    info = strict_loads(done.stdout)
    assert info["problems"] == [] and info["digest_verified"] is True


def test_headless_lines_and_jsonl_are_strict_json(tiny_model_file: Path, tmp_path: Path) -> None:
    jsonl = tmp_path / "live.jsonl"
    done = fusionedge(
        "run", str(tiny_model_file), "--text", "red", "--headless", "--rate", "5",
        "--duration", "1.5", "--jsonl", str(jsonl), "--providers", "cpu",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    printed = [strict_loads(line) for line in done.stdout.splitlines()]
    written = [strict_loads(line) for line in jsonl.read_text().splitlines()]
    assert len(printed) >= 3 and len(written) == len(printed)
    assert all(x["present"]["text"] and math.isfinite(sum(x["scores"].values())) for x in written)


def test_the_cli_writes_non_finite_numbers_as_null() -> None:
    """Every JSON the CLI prints goes through dumps: NaN or Infinity would be invalid JSON,
    so a non-finite figure (an undefined metric) is null, at any depth."""
    report = {"a": math.nan, "b": [math.inf, 1.5], "c": {"d": -math.inf, "e": "nan"}}
    assert dumps(report) == '{"a": null, "b": [null, 1.5], "c": {"d": null, "e": "nan"}}'
    assert strict_loads(dumps(report))["b"] == [None, 1.5]


# ---------------------------------------------------------------------- blank text


@pytest.mark.parametrize("text", BLANK, ids=["empty", "space", "whitespace", "ideographic"])
def test_blank_text_counts_as_absent(predictor: Predictor, text: str) -> None:
    blank, nothing = predictor.predict(text=text), predictor.predict()
    assert blank.present == {"image": False, "audio": False, "text": False}
    assert blank.scores == nothing.scores
    with_image = predictor.predict(image=picture(), text=text)
    assert with_image.present["text"] is False
    assert with_image.scores == predictor.predict(image=picture()).scores


def test_blank_text_is_absent_in_a_batch_too(predictor: Predictor) -> None:
    results = predictor.predict_batch(texts=["red", "  ", None, "\t"])
    assert [r.present["text"] for r in results] == [True, False, False, False]
    assert results[1].scores == results[2].scores


def test_the_runtime_and_the_manifest_agree_on_what_blank_is(
    predictor: Predictor, tmp_path: Path
) -> None:
    texts = [*BLANK, " red ", "."]
    lines = [
        json.dumps({"id": f"s{i}", "image": "x.png", "text": t, "label": "red", "split": "train"})
        for i, t in enumerate(texts)
    ]
    (tmp_path / "manifest.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    manifest = read_manifest(tmp_path / "manifest.jsonl", check_files=False)
    in_training = [r.text is not None for r in manifest.records]
    at_run_time = [r.present["text"] for r in predictor.predict_batch(texts=texts)]
    assert at_run_time == in_training == [False, False, False, False, True, True]


# ---------------------------------------------------------------------- no input


@pytest.mark.parametrize("split", [False, True], ids=["single-file", "split"])
def test_blank_live_text_is_absent_for_single_file_and_split_models(
    tiny_model_file: Path, tmp_path: Path, split: bool
) -> None:
    """`fusionedge run --text "   "`: every line says text absent; the split model's
    streaming encoder is never handed a blank text (it crashed on one)."""
    model = tiny_model_file
    if split:
        import torch

        from fusionedge.export.split import export_split
        from fusionedge.training.model import FusedModel

        torch.manual_seed(0)
        model = tmp_path / "model.split"
        export_split(FusedModel(tiny_spec()).eval(), model)
    done = fusionedge(
        "run", str(model), "--text", "   ", "--headless", "--rate", "5",
        "--duration", "1.5", "--providers", "cpu",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [strict_loads(line) for line in done.stdout.splitlines()]
    assert len(lines) >= 3 and not any(x["present"]["text"] for x in lines)


def test_predict_without_input_is_refused_on_the_command_line(tiny_model_file: Path) -> None:
    done = fusionedge("predict", str(tiny_model_file))
    assert done.returncode == 2 and done.stdout == ""
    assert last_error(done) == (
        "fusionedge predict: error: no input given; this model takes --image, --audio, "
        "--text: give at least one"
    )


def test_predict_with_only_blank_text_is_refused_and_says_why(tiny_model_file: Path) -> None:
    done = fusionedge("predict", str(tiny_model_file), "--text", "   ", "--json")
    assert done.returncode == 2 and done.stdout == ""
    assert "(the --text given is blank, which counts as no text)" in last_error(done)


def test_predict_with_an_input_answers(tiny_model_file: Path) -> None:
    done = fusionedge("predict", str(tiny_model_file), "--text", "red")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] in LABELS and "(from text;" in done.stdout


def test_the_api_still_answers_with_nothing_present(predictor: Predictor) -> None:
    """Kept on purpose: the live loop asks exactly this when every input is stale."""
    result = predictor.predict()
    assert result.present == {"image": False, "audio": False, "text": False}
    assert result.label in LABELS and math.isclose(sum(result.scores.values()), 1, abs_tol=1e-5)
