"""ModelSpec: JSON round trip, strict parsing that names the dotted key, and invariants."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from fusionedge.spec import (
    SCHEMA_VERSION,
    TASKS,
    AudioSpec,
    ComponentSpec,
    ImageSpec,
    ModelSpec,
    SpecError,
    TextSpec,
    TokenizerSpec,
)

# Non-default values everywhere, so a field that is dropped and defaulted on the way back
# shows up as a difference.
IMAGE = ImageSpec(
    height=32, width=48, resize="letterbox", mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.25)
)
AUDIO = AudioSpec(
    sample_rate=8000,
    num_samples=4000,
    n_fft=256,
    hop_length=128,
    n_mels=20,
    f_min=30.0,
    f_max=3500.0,
    log_floor=1e-5,
)
TEXT = TextSpec(max_length=12, tokenizer=TokenizerSpec(vocab=tuple("abc é"), lowercase=False))

SECTIONS = {"image": IMAGE, "audio": AUDIO, "text": TEXT}
MODALITY_SETS = [("image", "audio", "text"), ("image", "audio"), ("text",)]


def full_dict(make_spec: Callable[..., ModelSpec]) -> dict[str, Any]:
    """A valid all-modality spec as the JSON object a file would hold."""
    return json.loads(make_spec().to_json())


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("modalities", MODALITY_SETS, ids="+".join)
def test_json_round_trip(make_spec, modalities, task):
    spec = make_spec(
        modalities,
        task,
        **{m: section for m, section in SECTIONS.items() if m in modalities},
        embed_dim=48,
        encoders={
            m: ComponentSpec(f"{m}_cnn", {"width": 16, "layers": [8, 16]}) for m in modalities
        },
        fusion=ComponentSpec("attention", {"heads": 2, "dropout": 0.1, "opts": {"gate": True}}),
        metrics={"accuracy": 0.75, "confusion_matrix": [[1, 0], [2, 3]], "note": "x"},
    )
    text = spec.to_json()
    back = ModelSpec.from_json(text)
    assert back == spec
    assert back.to_json() == text
    assert ModelSpec.from_json(spec.to_json(indent=None)) == spec
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    # Lists in JSON come back as the tuples the dataclasses declare.
    assert isinstance(back.modalities, tuple) and isinstance(back.labels, tuple)
    for m in ("image", "audio", "text"):
        assert (getattr(back, m) is None) == (m not in modalities)
    if back.image is not None:
        assert isinstance(back.image.mean, tuple) and back.image.resize == "letterbox"
    if back.text is not None:
        assert back.text.tokenizer.vocab == tuple("abc é")
        assert back.text.tokenizer.lowercase is False
    assert back.num_outputs == len(spec.labels)


def test_from_dict_fills_defaults_for_omitted_optional_keys(make_spec):
    data = full_dict(make_spec)
    for key in ("embed_dim", "metrics", "fusionedge_version", "schema_version"):
        del data[key]
    del data["image"]["resize"], data["audio"]["f_max"], data["text"]["tokenizer"]["lowercase"]
    spec = ModelSpec.from_dict(data)
    assert spec.embed_dim == 64 and spec.metrics == {} and spec.schema_version == SCHEMA_VERSION
    assert spec.image.resize == "stretch" and spec.audio.f_max is None
    assert spec.text.tokenizer.lowercase is True


def test_ints_are_accepted_for_float_fields_and_come_back_as_float(make_spec):
    data = full_dict(make_spec)
    data["image"]["mean"] = [0, 1, 0]
    data["audio"]["f_min"] = 50
    spec = ModelSpec.from_dict(data)
    assert spec.image.mean == (0.0, 1.0, 0.0) and all(type(v) is float for v in spec.image.mean)
    assert type(spec.audio.f_min) is float


def test_audio_derived_sizes():
    spec = AudioSpec()
    assert spec.num_frames == 1 + (16000 - 400) // 160 == 98
    assert spec.window_seconds == 1.0
    assert TokenizerSpec(vocab=("a", "b")).vocab_size == 4


# ------------------------------------------------------------------------- strict parsing


@pytest.mark.parametrize(
    ("where", "key"),
    [
        ((), "labelz"),
        (("image",), "heigth"),
        (("audio",), "sample_rte"),
        (("text",), "max_len"),
        (("text", "tokenizer"), "vocabulary"),
        (("encoders", "audio"), "parms"),
        (("fusion",), "kind"),
    ],
)
def test_unknown_key_names_the_dotted_key(make_spec, where, key):
    data = full_dict(make_spec)
    node = data
    for part in where:
        node = node[part]
    node[key] = 1
    dotted = ".".join((*where, key))
    with pytest.raises(SpecError, match=rf"^{re.escape(dotted)}: unknown key; accepted keys"):
        ModelSpec.from_dict(data)


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        data = data[part]
    data[last] = value


@pytest.mark.parametrize(
    ("dotted", "value", "message"),
    [
        ("image.height", "64", "image.height: expected an integer, got '64'"),
        ("image.height", 64.0, "image.height: expected an integer, got 64.0"),
        ("image.width", True, "image.width: expected an integer, got True"),
        ("embed_dim", False, "embed_dim: expected an integer, got False"),
        ("audio.f_min", True, "audio.f_min: expected a number, got True"),
        ("audio.f_min", "20", "audio.f_min: expected a number, got '20'"),
        ("audio.f_max", "4000", "audio.f_max: expected a number, got '4000'"),
        ("image.mean", [0.5, True, 0.5], "image.mean[1]: expected a number, got True"),
        ("image.mean", [0.5, 0.5], "image.mean: expected a list of 3 values"),
        ("image.std", 0.25, "image.std: expected a list, got 0.25"),
        ("image.resize", "crop", "image.resize: expected one of ['stretch', 'letterbox']"),
        ("task", "multi", "task: expected one of ['multiclass', 'binary'"),
        ("labels", "bird", "labels: expected a list, got 'bird'"),
        ("labels", ["bird", 2], "labels[1]: expected a str, got 2"),
        ("modalities", ["image", None, "text"], "modalities[1]: expected a str, got None"),
        ("text.tokenizer.lowercase", "yes", "text.tokenizer.lowercase: expected a bool"),
        ("text.tokenizer.lowercase", 1, "text.tokenizer.lowercase: expected a bool"),
        (
            "text.tokenizer.kind",
            "bpe",
            "text.tokenizer.kind: expected one of ['char', 'wordpiece']",
        ),
        ("image", "big", "image: expected an object, got 'big'"),
        ("encoders", ["image"], "encoders: expected an object"),
        ("encoders.text.name", 3, "encoders.text.name: expected a str, got 3"),
        ("encoders.text.params", [], "encoders.text.params: expected an object"),
        ("metrics", 0.9, "metrics: expected an object"),
        ("fusionedge_version", 1, "fusionedge_version: expected a str"),
    ],
)
def test_wrong_type_names_the_key(make_spec, dotted, value, message):
    data = full_dict(make_spec)
    _set(data, dotted, value)
    with pytest.raises(SpecError) as err:
        ModelSpec.from_dict(data)
    assert str(err.value).startswith(message)


@pytest.mark.parametrize("key", ["task", "labels", "modalities", "encoders", "fusion", "head"])
def test_missing_required_key_is_named(make_spec, key):
    data = full_dict(make_spec)
    del data[key]
    with pytest.raises(SpecError, match=f"'{key}'"):
        ModelSpec.from_dict(data)


def test_missing_nested_required_key_names_the_section(make_spec):
    data = full_dict(make_spec)
    del data["encoders"]["image"]["name"]
    with pytest.raises(SpecError, match=r"^encoders\.image: .*'name'"):
        ModelSpec.from_dict(data)


@pytest.mark.parametrize("text", ["", "{", "[1, 2]", '"spec"', "null"])
def test_not_a_json_object_is_a_spec_error(text):
    with pytest.raises(SpecError):
        ModelSpec.from_json(text)


@pytest.mark.parametrize("version", [SCHEMA_VERSION + 1, 99])
def test_newer_schema_version_asks_for_upgrade(make_spec, version):
    data = full_dict(make_spec)
    data["schema_version"] = version
    with pytest.raises(SpecError, match=rf"schema_version {version} .*upgrade fusionedge"):
        ModelSpec.from_json(json.dumps(data))


def test_newer_schema_version_is_reported_before_unknown_keys(make_spec):
    # A newer writer may add keys; the useful message is "upgrade", not "unknown key".
    data = full_dict(make_spec)
    data["schema_version"] = SCHEMA_VERSION + 1
    data["image"]["new_field"] = 1
    data["future"] = {}
    with pytest.raises(SpecError, match="upgrade"):
        ModelSpec.from_dict(data)


def test_bool_schema_version_is_rejected(make_spec):
    data = full_dict(make_spec)
    data["schema_version"] = True
    with pytest.raises(SpecError, match="schema_version"):
        ModelSpec.from_dict(data)


@pytest.mark.parametrize("version", ["1", 1.0, None])
def test_non_int_schema_version_is_a_type_error_not_upgrade(make_spec, version):
    data = full_dict(make_spec)
    data["schema_version"] = version
    with pytest.raises(SpecError) as err:
        ModelSpec.from_dict(data)
    assert "schema_version" in str(err.value)
    assert "upgrade" not in str(err.value)


# ----------------------------------------------------------------------------- invariants


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"modalities": ("audio", "text"), "image": IMAGE}, r"^image: expected a section exactly"),
        ({"image": None}, r"^image: expected a section exactly"),
        ({"modalities": ("image", "text"), "audio": AUDIO}, r"^audio: expected a section exactly"),
        ({"text": None}, r"^text: expected a section exactly"),
        ({"task": "binary", "labels": ("a", "b", "c")}, r"^labels: .*exactly two labels"),
        ({"task": "binary", "labels": ("a",)}, r"^labels: .*exactly two labels"),
        ({"labels": ("cat", "dog", "cat")}, r"^labels: expected unique names"),
        ({"labels": ()}, r"^labels: expected at least one label"),
        ({"task": "regression", "labels": ("x", "y")}, r"^labels: .*one target name"),
        ({"modalities": ()}, r"^modalities: expected a non-empty subset"),
        ({"embed_dim": 0}, r"^embed_dim: expected at least 1"),
        ({"task": "ranking", "labels": ("a",)}, r"^task: expected one of"),
        ({"encoders": {"image": ComponentSpec("x")}}, r"^encoders: expected one encoder"),
    ],
)
def test_model_invariants(make_spec, overrides, message):
    with pytest.raises(SpecError, match=message):
        make_spec(**overrides)


@pytest.mark.parametrize(
    "modalities",
    [["text", "image", "audio"], ["audio", "image", "text"], ["image", "image", "audio", "text"]],
)
def test_modalities_out_of_order_or_repeated(make_spec, modalities):
    data = full_dict(make_spec)
    data["modalities"] = modalities
    with pytest.raises(SpecError, match=r"^modalities: expected distinct names .* in that order"):
        ModelSpec.from_dict(data)


def test_unknown_modality_is_rejected(make_spec):
    data = full_dict(make_spec)
    data["modalities"] = ["image", "audio", "text", "video"]
    data["encoders"]["video"] = {"name": "x", "params": {}}
    with pytest.raises(SpecError, match=r"^modalities:"):
        ModelSpec.from_dict(data)


@pytest.mark.parametrize(
    ("dotted", "value", "message"),
    [
        ("image.height", 4, r"^image\.height/width: expected at least 8"),
        ("image.std", [0.2, 0.0, 0.2], r"^image\.std: expected positive"),
        ("audio.sample_rate", 500, r"^audio\.sample_rate: expected at least 1000"),
        ("audio.num_samples", 100, r"^audio\.num_samples: expected at least n_fft"),
        ("audio.hop_length", 0, r"^audio\.hop_length:"),
        ("audio.hop_length", 300, r"^audio\.hop_length:"),
        ("audio.n_mels", 0, r"^audio\.n_mels:"),
        ("audio.f_max", 5000.0, r"^audio\.f_min/f_max:"),
        ("audio.f_min", 4000.0, r"^audio\.f_min/f_max:"),
        ("text.max_length", 0, r"^text\.max_length: expected at least 1"),
        ("text.tokenizer.vocab", ["a", "bc"], r"^text\.tokenizer\.vocab: expected single"),
        ("text.tokenizer.vocab", ["a", "a"], r"^text\.tokenizer\.vocab: expected unique"),
    ],
)
def test_section_invariants_through_json(make_spec, dotted, value, message):
    data = full_dict(make_spec)
    _set(data, dotted, value)
    with pytest.raises(SpecError, match=message):
        ModelSpec.from_dict(data)


def test_spec_is_frozen_and_replace_revalidates(make_spec):
    spec = make_spec()
    with pytest.raises(AttributeError):
        spec.task = "binary"  # type: ignore[misc]
    assert spec.replace(embed_dim=32).embed_dim == 32
    with pytest.raises(SpecError, match="labels"):
        spec.replace(task="binary")


def test_from_dict_does_not_mutate_its_input(make_spec):
    data = full_dict(make_spec)
    before = copy.deepcopy(data)
    ModelSpec.from_dict(data)
    assert data == before
