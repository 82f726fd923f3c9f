"""One error vocabulary: whatever a user (or a hostile file) puts in a spec, a manifest, a
checkpoint or a pretrained model folder ends as the project's own error, a ValueError
subclass that names the file, line or key, never a RecursionError, OverflowError,
TypeError or KeyError traceback. The CLI turns those into exit 2 and one line.

The cases pin each guard (deep nesting, huge and non-finite numbers, size bounds); the
hypothesis tests at the end fuzz the two parsers. FUSIONEDGE_FUZZ_EXAMPLES raises their
budget for a long hunt (the default keeps the file under 30 s on 2 cores).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import TINY_AUDIO, TINY_IMAGE, TINY_TEXT

from fusionedge.contract import SPEC_KEY
from fusionedge.manifest import ManifestError, read_manifest
from fusionedge.spec import (
    MAX_DEPTH,
    AudioSpec,
    ComponentSpec,
    ModelSpec,
    SpecError,
    TokenizerSpec,
)

DEEP = 100_000  # brackets: far past CPython's recursion limit inside json.loads
HUGE_INT = "1" + "0" * 400  # 10**400: parses, but overflows float()
TOO_LONG_INT = "9" * 5000  # past CPython's 4300-digit int conversion limit
FUZZ_EXAMPLES = int(os.environ.get("FUSIONEDGE_FUZZ_EXAMPLES", "120"))


def spec() -> ModelSpec:
    return ModelSpec(
        modalities=("image", "audio", "text"),
        labels=("blue", "green", "red"),
        task="multiclass",
        encoders={m: ComponentSpec(f"{m}_net", {"width": 8}) for m in ("image", "audio", "text")},
        fusion=ComponentSpec("concat"),
        head=ComponentSpec("multiclass"),
        image=TINY_IMAGE,
        audio=TINY_AUDIO,
        text=TINY_TEXT,
        metrics={"val": {"accuracy": 0.9, "confusion_matrix": [[1, 0], [0, 1]]}},
    )


def spec_dict() -> dict[str, Any]:
    return json.loads(spec().to_json())


def with_value(dotted: str, value: Any) -> dict[str, Any]:
    data = spec_dict()
    *parents, last = dotted.split(".")
    node = data
    for key in parents:
        node = node[key]
    node[last] = value
    return data


def spec_error(text: str) -> str:
    with pytest.raises(SpecError) as info:
        ModelSpec.from_json(text)
    return str(info.value)


def fusionedge(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fusionedge.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_one_error_line(done: subprocess.CompletedProcess, command: str, *words: str) -> None:
    """Exit 2, stderr one `fusionedge <command>: error: ...` line naming words."""
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fusionedge {command}: error: "), lines
    for word in words:
        assert word in lines[0], (word, lines[0])


# ------------------------------------------------------------------ spec: nesting, numbers


def test_a_spec_nested_100000_deep_is_a_spec_error() -> None:
    assert spec_error("[" * DEEP + "]" * DEEP) == "a model spec: JSON nested too deeply to read"
    assert "nested too deeply" in spec_error('{"a": ' * DEEP + "1" + "}" * DEEP)


def test_nesting_that_json_reads_but_no_spec_has_is_refused_naming_the_key() -> None:
    deep: Any = 1
    for _ in range(MAX_DEPTH + 5):
        deep = [deep]
    data = with_value("metrics.val.notes", deep)
    message = spec_error(json.dumps(data))
    assert message.startswith("metrics.val.notes")
    assert f"nested more than {MAX_DEPTH} levels deep" in message
    ok = with_value("metrics.val.notes", [[["shallow"]]])
    assert ModelSpec.from_json(json.dumps(ok)).metrics["val"]["notes"] == [[["shallow"]]]


def test_an_integer_past_cpythons_digit_limit_is_a_spec_error() -> None:
    text = json.dumps(spec_dict()).replace('"embed_dim": 64', f'"embed_dim": {TOO_LONG_INT}')
    assert TOO_LONG_INT in text
    assert spec_error(text).startswith("a model spec must be JSON: ")


@pytest.mark.parametrize(
    ("dotted", "literal"),
    [
        ("audio.log_floor", "-Infinity"),
        ("audio.log_floor", "NaN"),
        ("audio.f_min", "1e400"),  # parses as inf
        ("audio.f_max", HUGE_INT),  # an int too large for float()
        ("image.std", f"[0.2, {HUGE_INT}, 0.2]"),
        ("metrics.val.accuracy", "NaN"),  # free-form values are checked too
        ("encoders.image.params.width", "Infinity"),
    ],
)
def test_non_finite_numbers_are_refused_naming_the_key(dotted: str, literal: str) -> None:
    marker = "__MARK__"
    text = json.dumps(with_value(dotted, marker)).replace(f'"{marker}"', literal)
    message = spec_error(text)
    key = dotted if dotted != "image.std" else "image.std[1]"
    assert message.startswith(f"{key}: expected a finite number"), message
    assert len(message) < 200  # the 400-digit integer is summarised, not printed


def test_a_spec_that_could_not_be_read_back_is_not_written() -> None:
    bad = spec().replace(metrics={"val": {"mae": float("nan")}})
    with pytest.raises(SpecError, match=r"^metrics\.val\.mae: expected a finite number"):
        bad.to_json()


# ------------------------------------------------------------------ spec: size bounds


def audio_with(**changes: Any) -> dict[str, Any]:
    data = spec_dict()
    data["audio"].update(changes)
    return data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (with_value("image.height", 4097), r"^image\.height/width: .* at most 4096 pixels"),
        (with_value("image.width", 10**12), r"^image\.height/width: .* at most 4096"),
        (audio_with(sample_rate=10**6), r"^audio\.sample_rate: .* at most 384000 Hz"),
        # 10 minutes at 8 kHz is 4,800,000 samples
        (audio_with(num_samples=4_800_001), r"^audio\.num_samples: .* = 4800000$"),
        # at 48 kHz 10 minutes would be 28.8 M samples; 2**24 (64 MiB of float32) binds
        (
            audio_with(sample_rate=48000, num_samples=(1 << 24) + 1),
            r"^audio\.num_samples: .* = 16777216$",
        ),
        (audio_with(n_fft=16384, num_samples=32000), r"^audio\.n_fft: expected at most 8192"),
        (audio_with(n_mels=5000), r"^audio\.n_mels: expected 1 to 1024"),
        (audio_with(log_floor=0.0), r"^audio\.log_floor: expected a positive finite number"),
        (with_value("text.max_length", 4097), r"^text\.max_length: .* at most 4096"),
        (with_value("embed_dim", 1 << 20), r"^embed_dim: .* at most 16384"),
        (with_value("labels", [f"c{i}" for i in range(100_001)]), r"^labels: .* at most 100000"),
    ],
)
def test_sizes_a_hostile_spec_could_make_the_runtime_allocate_are_bounded(
    data: dict[str, Any], message: str
) -> None:
    with pytest.raises(SpecError, match=message):
        ModelSpec.from_json(json.dumps(data))


def test_a_vocabulary_of_more_than_a_million_tokens_is_refused() -> None:
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", *(f"t{i}" for i in range(1_000_000))]
    with pytest.raises(SpecError, match=r"^text\.tokenizer\.vocab: expected at most 1000000"):
        TokenizerSpec(kind="wordpiece", vocab=tuple(vocab))
    assert TokenizerSpec(kind="wordpiece", vocab=tuple(vocab[:1000])).vocab_size == 1000


def test_the_largest_accepted_sizes_still_parse() -> None:
    """The bounds are inclusive: a model at every limit is a valid spec."""
    audio = AudioSpec(sample_rate=384_000, num_samples=1 << 24, n_fft=8192, hop_length=8192)
    data = spec_dict()
    data["audio"] = json.loads(json.dumps(audio.__dict__))
    data["image"].update(height=4096, width=4096)
    data["text"]["max_length"] = 4096
    parsed = ModelSpec.from_json(json.dumps(data))
    assert (parsed.image.height, parsed.audio.num_samples) == (4096, 1 << 24)


# ------------------------------------------------------------------ through the CLI


def onnx_with_spec(path: Path, spec_json: str) -> Path:
    """A valid one-node ONNX file whose fusionedge metadata is spec_json."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    # IR version 9: what opset 18 needs, and old enough for any ONNX Runtime >= 1.17.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    model.metadata_props.add(key=SPEC_KEY, value=spec_json)
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(
    ("spec_json", "words"),
    [
        ("[" * DEEP + "]" * DEEP, ("nested too deeply",)),
        (
            json.dumps(audio_with(log_floor="X")).replace('"X"', "-Infinity"),
            ("audio.log_floor", "finite"),
        ),
    ],
    ids=["deep", "log-floor-minus-infinity"],
)
def test_info_on_a_model_with_a_hostile_spec_exits_2_with_one_line(
    tmp_path: Path, spec_json: str, words: tuple[str, ...]
) -> None:
    model = onnx_with_spec(tmp_path / "hostile.onnx", spec_json)
    done = fusionedge("info", str(model), "--json")
    assert_one_error_line(done, "info", str(model), *words)
    assert "Infinity" not in done.stdout


# ------------------------------------------------------------------ checkpoints


def checkpoint_with(path: Path, **metadata: str) -> Path:
    from safetensors.numpy import save_file

    meta = {"format": "fusionedge.checkpoint/1", SPEC_KEY: spec().to_json(indent=None)}
    save_file({"model.w": np.zeros(2, np.float32)}, str(path), metadata=meta | metadata)
    return path


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({SPEC_KEY: "[" * DEEP}, r"its spec \('fusionedge\.spec'\) cannot be read: .*too deeply"),
        ({SPEC_KEY: '{"labels": ' + TOO_LONG_INT + "}"}, r"its spec .* must be JSON"),
        ({"state": "[" * DEEP}, r"metadata 'state': JSON nested too deeply"),
        ({"state": "[1, 2]"}, r"metadata 'state' is not a JSON object"),
        ({"optimizer": '{"scalars": 5}'}, r"the optimiser state is damaged"),
        ({"optimizer": '{"scalars": {"x": {}}, "param_groups": []}'}, r"optimiser state"),
    ],
)
def test_a_damaged_checkpoint_is_a_checkpoint_error_naming_the_file(
    tmp_path: Path, metadata: dict[str, str], message: str
) -> None:
    from fusionedge.training.checkpoint import CheckpointError, load_checkpoint

    path = checkpoint_with(tmp_path / "damaged.safetensors", **metadata)
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path)
    assert str(info.value).startswith(f"{path}: ")


# ------------------------------------------------------------------ pretrained folders


def test_a_truncated_pretrained_safetensors_is_a_checkpoint_error(tmp_path: Path) -> None:
    from support import write_bert_folder

    from fusionedge.training.checkpoint import CheckpointError
    from fusionedge.training.pretrained import read_weights

    folder = write_bert_folder(tmp_path / "bert")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="not a readable safetensors file") as info:
        read_weights(folder)
    assert str(info.value).startswith(f"{weights}: ")


def test_train_with_a_truncated_pretrained_model_exits_2_with_one_line(tmp_path: Path) -> None:
    from support import TINY_OVERRIDES, write_bert_folder, write_dataset

    folder = write_bert_folder(tmp_path / "bert")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    data = write_dataset(tmp_path / "data", {"train": 2, "val": 1}, modalities=["image", "text"])
    # hf_bert takes its shape from the folder, not the tiny text encoder's width.
    sets = [s for s in TINY_OVERRIDES if not s.startswith("model.encoder_params.text.")]
    sets += ["epochs=1", "model.text_encoder=hf_bert", f"model.encoder_params.text.path={folder}"]
    args = [x for s in sets for x in ("--set", s)]
    done = fusionedge("-q", "train", "--data", str(data), "--out", str(tmp_path / "run"), *args)
    assert_one_error_line(done, "train", str(weights), "not a readable safetensors file")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("modules.json", b"[1]", "expected a JSON list of module objects"),
        ("modules.json", b'{"type": "x"}', "expected a JSON list of module objects"),
        ("modules.json", b"[" * DEEP, "too deeply"),
        ("config.json", b"\xff\xfe not utf-8", "not readable JSON"),
        ("tokenizer_config.json", ("[" * DEEP).encode(), "too deeply"),
    ],
)
def test_a_damaged_pretrained_json_is_a_spec_error_naming_the_file(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    from support import write_bert_folder

    from fusionedge.training.pretrained import prepare_params

    folder = write_bert_folder(tmp_path / "bert")
    (folder / name).write_bytes(content)
    with pytest.raises(SpecError, match=message) as info:
        prepare_params({"path": str(folder)})
    assert str(folder / name) in str(info.value)


# ------------------------------------------------------------------ manifests


def manifest_error(root: Path, *lines: str | bytes, check_files: bool = True) -> str:
    root.mkdir(parents=True, exist_ok=True)
    raw = [x if isinstance(x, bytes) else x.encode() for x in lines]
    (root / "manifest.jsonl").write_bytes(b"".join(x + b"\n" for x in raw))
    with pytest.raises(ManifestError) as info:
        read_manifest(root, check_files=check_files)
    return str(info.value)


def test_a_manifest_line_nested_100000_deep_names_its_line(tmp_path: Path) -> None:
    message = manifest_error(
        tmp_path, '{"id": "a", "text": "x", "label": "y"}', "[" * DEEP + "]" * DEEP
    )
    assert f"{tmp_path / 'manifest.jsonl'}:2: not valid JSON (nested too deeply to read)" in message
    assert message.startswith("1 problem(s)")


def test_a_label_of_10_to_the_400_names_line_and_field(tmp_path: Path) -> None:
    message = manifest_error(tmp_path, '{"id": "a", "text": "x", "label": ' + HUGE_INT + "}")
    assert ":1: label: a numeric label must be finite, got an integer of 1329 bits" in message


def test_a_label_past_the_digit_limit_is_invalid_json_on_its_line(tmp_path: Path) -> None:
    message = manifest_error(tmp_path, '{"id": "a", "text": "x", "label": ' + TOO_LONG_INT + "}")
    assert ":1: not valid JSON (Exceeds the limit (4300 digits)" in message


def test_values_too_big_to_print_are_summarised(tmp_path: Path) -> None:
    message = manifest_error(tmp_path, json.dumps({"id": ["x" * 100_000], "text": "t"}))
    assert ":1: id: required, a non-empty string; got ['xxx" in message
    assert len(message) < 600


def test_train_on_a_manifest_nested_100000_deep_exits_2_naming_the_line(tmp_path: Path) -> None:
    (tmp_path / "manifest.jsonl").write_text("[" * DEEP + "\n")
    done = fusionedge("train", "--data", str(tmp_path), "--out", str(tmp_path / "run"))
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("fusionedge train: error: 1 problem(s) in the data set:")
    assert f"{tmp_path / 'manifest.jsonl'}:1: not valid JSON (nested too deeply" in done.stderr


# ------------------------------------------------------------------ fuzz: manifests

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**300, max_value=10**1000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["img/a.png", "wav/a.wav", "../x.png", "/etc/passwd", "img", "a\x00b"]),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
manifest_keys = st.sampled_from(
    [
        *("id", "image", "audio", "text", "label", "split", "group", "_note"),
        *("fusionedge_manifest", "allow_outside_paths", "other"),
    ]
)
line_objects = st.dictionaries(manifest_keys, json_value, max_size=7)


def nested(depth: int, bracket: str = "[") -> str:
    close = {"[": "]", "{": "}"}[bracket]
    opener = '{"a": ' if bracket == "{" else "["
    return opener * depth + "0" + close * depth


def long_number_line(digits: int) -> bytes:
    """json.dumps cannot write an int past CPython's 4300-digit limit; text can."""
    return ('{"id": "a", "text": "t", "label": ' + "9" * digits + "}").encode()


raw_lines = st.one_of(
    line_objects.map(lambda obj: json.dumps(obj).encode()),
    st.integers(4000, 6000).map(long_number_line),
    json_value.map(lambda v: json.dumps(v).encode()),
    st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=60).map(str.encode),
    st.binary(max_size=60),
    st.builds(nested, st.integers(1, 200_000), st.sampled_from(["[", "{"])).map(str.encode),
)


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data set folder with real files the fuzzed lines may name."""
    root = tmp_path_factory.mktemp("fuzz")
    (root / "img").mkdir()
    (root / "wav").mkdir()
    import cv2

    cv2.imwrite(str(root / "img" / "a.png"), np.zeros((4, 4, 3), np.uint8))
    sf.write(str(root / "wav" / "a.wav"), np.zeros(800, np.float32), 8000)
    return root


@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(lines=st.lists(raw_lines, min_size=1, max_size=5), check_files=st.booleans())
def test_fuzz_manifest_lines_raise_only_manifest_error(
    fuzz_root: Path, lines: list[bytes], check_files: bool
) -> None:
    # A newline inside a fuzzed "line" just makes more lines, which is fine.
    (fuzz_root / "manifest.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    try:
        manifest = read_manifest(fuzz_root, require_labels=False, check_files=check_files)
    except ManifestError as e:
        assert e.problems and all(p.path == fuzz_root / "manifest.jsonl" for p in e.problems)
        return
    files = [f for r in manifest.records for f in (r.image, r.audio) if f is not None]
    outside = [f for f in files if not f.is_relative_to(fuzz_root.resolve())]
    assert not outside or opted_in(fuzz_root / "manifest.jsonl"), outside


def opted_in(manifest: Path) -> bool:
    """Whether the first non-blank line is a header with allow_outside_paths true."""
    for number, raw in enumerate(manifest.read_bytes().split(b"\n"), start=1):
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError:
            return False
        if text.strip():
            try:
                first = json.loads(text)
            except (ValueError, RecursionError):
                return False
            return isinstance(first, dict) and first.get("allow_outside_paths") is True
    return False


# ------------------------------------------------------------------ fuzz: specs


def paths_of(data: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys and indices) into data, data itself excluded."""
    out = []
    items = data.items() if isinstance(data, dict) else enumerate(data)
    for key, value in items:
        out.append((*prefix, key))
        if isinstance(value, dict | list) and len(out) < 400:
            out.extend(paths_of(value, (*prefix, key)))
    return out


def mutate(data: dict[str, Any], draw: Any) -> dict[str, Any]:
    """One random edit of a valid spec: drop a key, replace a value with any JSON value,
    a huge or non-finite number, or a deep nest."""
    data = copy.deepcopy(data)
    path = draw(st.sampled_from(paths_of(data)))
    *parents, last = path
    node = data
    for key in parents:
        node = node[key]
    action = draw(st.sampled_from(["drop", "replace", "huge", "deep"]))
    if action == "drop" and isinstance(node, dict):
        del node[last]
    elif action == "huge":
        node[last] = draw(st.sampled_from([10**400, -(10**400), float("inf"), float("nan")]))
    elif action == "deep":
        node[last] = json.loads(nested(draw(st.integers(MAX_DEPTH - 2, 400))))
    else:
        node[last] = draw(json_value)
    return data


@st.composite
def spec_texts(draw: Any) -> str:
    data = spec_dict()
    for _ in range(draw(st.integers(1, 3))):
        data = mutate(data, draw)
    return json.dumps(data)


@settings(max_examples=FUZZ_EXAMPLES * 2, deadline=None)
def long_number_spec(digits: int) -> str:
    return json.dumps(spec_dict()).replace('"embed_dim": 64', '"embed_dim": ' + "9" * digits)


@given(
    text=st.one_of(
        spec_texts(),
        json_value.map(json.dumps),
        st.text(max_size=80),
        st.integers(4000, 6000).map(long_number_spec),
    )
)
def test_fuzz_spec_json_raises_only_spec_error(text: str) -> None:
    try:
        parsed = ModelSpec.from_json(text)
    except SpecError:
        return
    # What parses must serialise, as strict JSON, and read back the same.
    assert ModelSpec.from_json(parsed.to_json()) == parsed
    json.dumps(parsed.to_dict(), allow_nan=False)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(depth=st.integers(1, 300_000), bracket=st.sampled_from(["[", "{"]))
def test_fuzz_deep_spec_nesting_is_a_spec_error(depth: int, bracket: str) -> None:
    with pytest.raises(SpecError):
        ModelSpec.from_json(nested(depth, bracket))
