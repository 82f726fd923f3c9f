"""TrainConfig: JSON round trip, YAML files, --set overrides and their errors."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from fusionedge.spec import ImageSpec, SpecError
from fusionedge.training.augment import AugmentConfig
from fusionedge.training.config import (
    ModelConfig,
    OptimConfig,
    TrainConfig,
    config_from_json,
    load_config,
    parse_override,
)


def write_yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def accepted_keys(cls) -> list[str]:
    return sorted(f.name for f in dataclasses.fields(cls))


def test_defaults_round_trip_through_json() -> None:
    config = TrainConfig()
    text = config.to_json()
    assert json.loads(text) == json.loads(json.dumps(config.to_dict()))
    again = config_from_json(text)
    assert again == config
    assert again.to_json() == text
    assert isinstance(again.image.mean, tuple)


def test_a_changed_config_round_trips_through_json() -> None:
    config = load_config(
        None,
        [
            "model.fusion=gated",
            "model.encoder_params.image.width=8",
            "model.head_params.hidden=32",
            "image.mean=[0.1, 0.2, 0.3]",
            "audio.f_max=3000",
            "modality_dropout.text=0.5",
        ],
    )
    assert config_from_json(config.to_json()) == config


def test_load_config_without_a_file_or_overrides_is_the_default() -> None:
    assert load_config() == TrainConfig()


def test_yaml_then_overrides_in_order(tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path,
        """
epochs: 5
batch_size: 8
optim:
  lr: 0.02
  name: sgd
image:
  height: 32
model:
  fusion: attention
  fusion_params: {heads: 2}
""",
    )
    config = load_config(path, ["epochs=7", "optim.lr=0.001", "epochs=9"])
    assert config.epochs == 9  # the last --set wins
    assert config.optim.lr == pytest.approx(0.001)  # --set beats the file
    assert config.optim.name == "sgd"  # the file's sibling keys survive a nested --set
    assert config.batch_size == 8
    assert config.image == ImageSpec(height=32)  # the rest of the section keeps defaults
    assert config.model.fusion == "attention"
    assert config.model.fusion_params == {"heads": 2}
    assert config.model.image_encoder == ModelConfig().image_encoder
    assert config.audio == TrainConfig().audio


def test_json_config_file_is_read_too(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"epochs": 3, "optim": {"lr": 0.5}}))
    config = load_config(path)
    assert (config.epochs, config.optim.lr) == (3, 0.5)


def test_nested_keys_inside_free_form_dicts() -> None:
    config = load_config(
        None,
        [
            "model.encoder_params.image.width=8",
            "model.encoder_params.image.depth=2",
            "model.encoder_params.audio.width=4",
            "model.head_params.dropout=0.25",
        ],
    )
    assert config.model.encoder_params == {"image": {"width": 8, "depth": 2}, "audio": {"width": 4}}
    assert config.model.head_params == {"dropout": 0.25}


def test_values_are_parsed_as_yaml_scalars_and_lists() -> None:
    config = load_config(
        None,
        [
            "amp=false",
            "tensorboard=no",
            "optim.lr=0.001",
            "optim.weight_decay=0",
            "image.std=[0.2, 0.2, 0.2]",
            "audio.f_max=null",
            "device=cuda:1",
        ],
    )
    assert config.amp is False and config.tensorboard is False
    assert config.optim.lr == pytest.approx(1e-3) and isinstance(config.optim.lr, float)
    assert config.optim.weight_decay == 0.0 and isinstance(config.optim.weight_decay, float)
    assert config.image.std == (0.2, 0.2, 0.2)
    assert config.audio.f_max is None
    assert config.device == "cuda:1"


@pytest.mark.parametrize("text", ["1e-3", "5E-4", "1e+2"])
def test_exponent_floats_without_a_dot_are_numbers(text: str) -> None:
    _, value = parse_override(f"optim.lr={text}")
    assert value == pytest.approx(float(text))
    assert load_config(None, [f"optim.lr={text}"]).optim.lr == pytest.approx(float(text))


def test_exponent_floats_with_a_dot_are_numbers() -> None:
    assert load_config(None, ["optim.lr=1.0e-3"]).optim.lr == pytest.approx(1e-3)


def test_parse_override_keeps_equals_signs_in_the_value() -> None:
    assert parse_override(" model.fusion = gated") == ("model.fusion", "gated")
    assert parse_override("device=a=b") == ("device", "a=b")
    assert parse_override("device=") == ("device", "")


@pytest.mark.parametrize(
    ("override", "key", "cls"),
    [
        ("foo=1", "foo", TrainConfig),
        ("optim.lrr=0.1", "optim.lrr", OptimConfig),
        ("image.hieght=32", "image.hieght", ImageSpec),
        ("model.fusoin=gated", "model.fusoin", ModelConfig),
        ("augment.rotate=3", "augment.rotate", AugmentConfig),
    ],
)
def test_unknown_keys_name_the_dotted_key_and_list_accepted_ones(
    override: str, key: str, cls
) -> None:
    with pytest.raises(SpecError) as info:
        load_config(None, [override])
    message = str(info.value)
    assert message.startswith(f"{key}: unknown key")
    assert str(accepted_keys(cls)) in message


def test_unknown_keys_in_the_yaml_file_too(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "optim:\n  learning_rate: 0.1\n")
    with pytest.raises(SpecError, match=r"^optim\.learning_rate: unknown key") as info:
        load_config(path)
    assert "'lr'" in str(info.value)
    with pytest.raises(SpecError, match=r"^epoch: unknown key"):
        load_config(write_yaml(tmp_path, "epoch: 3\n"))


def test_encoder_params_for_an_unknown_modality_are_refused() -> None:
    with pytest.raises(SpecError, match="imgae"):
        load_config(None, ["model.encoder_params.imgae.width=8"])


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("epochs=abc", r"^epochs: expected an integer, got 'abc'"),
        ("epochs=2.5", r"^epochs: expected an integer"),
        ("epochs=true", r"^epochs: expected an integer"),
        ("optim.lr=fast", r"^optim\.lr: expected a number, got 'fast'"),
        ("amp=maybe", r"^amp: expected a bool"),
        ("device=1", r"^device: expected a str"),
        ("image.mean=[0.5, 0.5]", r"^image\.mean: expected a list of 3 values"),
        ("image.resize=crop", r"^image\.resize: expected one of \['stretch', 'letterbox'\]"),
        ("optim.name=adam", r"^optim\.name: expected one of"),
        ("model.task=ranking", r"^model\.task: expected one of"),
        ("image=5", r"^image: expected an object"),
        ("model.encoder_params.image=3", r"^model\.encoder_params\.image: expected an object"),
        ("epochs.value=3", r"epochs is not a section"),
    ],
)
def test_wrong_value_types_name_the_key(override: str, pattern: str) -> None:
    with pytest.raises(SpecError, match=pattern):
        load_config(None, [override])


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("epochs=0", r"^epochs: expected at least 1"),
        ("batch_size=0", r"^batch_size: expected at least 1"),
        ("optim.lr=-1", r"^optim\.lr: expected a positive number"),
        ("patience=-1", r"^patience"),
        ("modality_dropout.image=1.0", r"^modality_dropout\.image"),
        ("modality_dropout.smell=0.1", r"^modality_dropout\.smell"),
        ("image.height=4", r"^image\.height/width: expected at least 8"),
        ("audio.n_fft=20000", r"^audio\.num_samples: expected at least n_fft"),
    ],
)
def test_out_of_range_values_name_the_key(override: str, pattern: str) -> None:
    with pytest.raises(SpecError, match=pattern):
        load_config(None, [override])


@pytest.mark.parametrize("item", ["foo", "", "=3", "  =x"])
def test_malformed_set_is_refused(item: str) -> None:
    with pytest.raises(SpecError, match=r"--set expects key=value") as info:
        load_config(None, [item])
    assert repr(item) in str(info.value)


def test_set_value_that_is_not_yaml_is_refused() -> None:
    with pytest.raises(SpecError, match=re.escape("--set 'image.mean=[0.5, 0.5'")):
        load_config(None, ["image.mean=[0.5, 0.5"])


def test_bad_config_files(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="not valid YAML"):
        load_config(write_yaml(tmp_path, "epochs: [1, 2\n"))
    with pytest.raises(SpecError, match="mapping"):
        load_config(write_yaml(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.yaml")
    assert load_config(write_yaml(tmp_path, "# nothing yet\n")) == TrainConfig()


def test_config_is_frozen() -> None:
    config = TrainConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 3  # type: ignore[misc]
