"""Fuzzing what a user hands the runtime and the command line: Predictor inputs (arrays of
any dtype, shape and values, files of any bytes, any text and sample rate) and `fusionedge`
argument lists. The property: a call either answers (finite scores, a valid result) or
raises a ValueError subclass (MediaError, NonFiniteError, ModelFileError, ...) whose
message names what was wrong; the CLI returns 0 or 2 and never a traceback. Anything
else escaping (TypeError, IndexError, cv2.error, MemoryError, OverflowError) is a bug.

FUSIONEDGE_FUZZ_EXAMPLES raises the budget for a long hunt; the default keeps the file
at about half a minute on 2 cores.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fusionedge.runtime import Predictor

FUZZ_EXAMPLES = int(os.environ.get("FUSIONEDGE_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def predictor(tiny_model_file: Path):
    with Predictor.from_path(tiny_model_file, providers="cpu", threads=1) as p:
        yield p


DTYPES = st.sampled_from(
    ["uint8", "uint16", "int8", "int16", "int32", "int64", "float16", "float32", "float64",
     "bool", "complex64"]
)  # fmt: skip
VALUES = st.floats(allow_nan=True, allow_infinity=True, width=64) | st.integers(-(2**40), 2**40)


@st.composite
def arrays(draw: st.DrawFn, max_dims: int = 4) -> np.ndarray:
    """Arrays of any listed dtype and a small shape (0-sized axes included), filled with
    one drawn value and a few others: extremes, NaN and inf among them."""
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=max_dims, min_side=0, max_side=40))
    dtype = np.dtype(draw(DTYPES))
    with np.errstate(all="ignore"), contextlib.suppress(OverflowError, ValueError):
        fill = np.array(draw(VALUES)).astype(dtype)
        a = np.full(shape, fill, dtype)
        if a.size:
            a.flat[draw(st.integers(0, a.size - 1))] = np.array(draw(VALUES)).astype(dtype)
        return a
    return np.zeros(shape, dtype)


def answers_or_refuses(call) -> None:
    """The property: a valid result with finite scores, or a ValueError with a message."""
    try:
        result = call()
    except ValueError as e:
        assert str(e).strip(), f"{type(e).__name__} without a message"
        return
    assert all(math.isfinite(v) for v in result.scores.values()), result.scores
    assert result.label in result.scores


@FUZZ
@given(image=arrays(), order=st.sampled_from(["rgb", "bgr", "yuv"]))
def test_any_image_array_is_answered_or_refused(predictor: Predictor, image, order) -> None:
    answers_or_refuses(lambda: predictor.predict(image=image, color_order=order))


@FUZZ
@given(
    audio=arrays(max_dims=3),
    rate=st.none() | st.integers(-10, 2_000_000),
)
def test_any_audio_array_and_rate_are_answered_or_refused(
    predictor: Predictor, audio, rate
) -> None:
    answers_or_refuses(lambda: predictor.predict(audio=audio, sample_rate=rate))


@pytest.mark.parametrize("rate", [16000.0, "16000", math.nan])
def test_a_sample_rate_that_is_not_an_int_is_a_type_error_naming_it(
    predictor: Predictor, rate: object
) -> None:
    with pytest.raises(TypeError, match=r"sample_rate must be an int \(Hz\)"):
        predictor.predict(audio=np.zeros(800, np.float32), sample_rate=rate)  # type: ignore[arg-type]


@FUZZ
@given(text=st.text(max_size=300) | st.text(alphabet="\x00\t\n \u200b\ud7ff", max_size=50))
def test_any_text_is_answered(predictor: Predictor, text: str) -> None:
    result = predictor.predict(text=text)  # text has no invalid form: never refused
    assert all(math.isfinite(v) for v in result.scores.values())
    assert result.present["text"] == bool(text.strip())


@FUZZ
@given(data=st.binary(max_size=2000), suffix=st.sampled_from([".png", ".jpg", ".wav", ".flac", ""]))
def test_any_file_bytes_are_answered_or_refused(
    predictor: Predictor, tmp_path: Path, data: bytes, suffix: str
) -> None:
    path = tmp_path / f"input{suffix}"
    path.write_bytes(data)
    modality = "audio" if suffix in (".wav", ".flac") else "image"
    answers_or_refuses(lambda: predictor.predict(**{modality: str(path)}))


def cli(args: list[str]) -> int:
    """`fusionedge ARGS` in this process: its exit code (argparse exits 2 on bad flags)."""
    from fusionedge.cli import main

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            return main(args)
        except SystemExit as e:
            return int(e.code or 0)


WORDS = st.sampled_from(
    ["--image", "--audio", "--text", "--json", "--providers", "--verify", "--tolerance",
     "--data", "--split", "--out", "cpu", "cuda", "auto", "nan", "-1", "1e400", "", " ",
     "test", "all", "--", "-", "\x00"]
)  # fmt: skip


@FUZZ
@given(
    command=st.sampled_from(["predict", "info", "eval"]),
    words=st.lists(WORDS | st.text(max_size=12), max_size=6),
    with_model=st.booleans(),
)
def test_cli_arguments_end_in_a_result_or_one_error_line(
    tiny_model_file: Path, tmp_path: Path, command: str, words: list[str], with_model: bool
) -> None:
    """Commands that read files (no training, no devices): exit 0 or 2, nothing else."""
    args = [command, *([str(tiny_model_file)] if with_model else []), *words]
    with contextlib.chdir(tmp_path):  # relative paths in the words land in a scratch folder
        code = cli(args)
    assert code in (0, 2), args
