"""Augmentation per modality: config keys, each function on its own, SpecAugment's place."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from support import read_weights, tiny_config, tiny_spec

from fusionedge.spec import AudioSpec, SpecError
from fusionedge.tokenizer import PAD_ID, UNK_ID
from fusionedge.training.augment import (
    AudioAugment,
    AugmentConfig,
    ImageAugment,
    SpecAugmentConfig,
    TextAugment,
    augment_audio,
    augment_batch,
    augment_images,
    augment_tokens,
    default_augment,
)
from fusionedge.training.config import TrainConfig, config_from_json, load_config
from fusionedge.training.model import FusedModel
from fusionedge.training.specaugment import SpecAugment, attach_spec_augment
from fusionedge.training.trainer import train


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(n: int = 8, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, (n, 16, 20, 3), dtype=np.uint8))


def tones(n: int = 6, s: int = 4000, rate: int = 8000) -> torch.Tensor:
    t = torch.arange(s) / rate
    amplitude = torch.linspace(0.1, 0.5, n).unsqueeze(1)
    return amplitude * torch.sin(2 * torch.pi * 440 * t).unsqueeze(0)


# --- config ---------------------------------------------------------------------------


def test_defaults_frame_images_as_a_camera_and_move_audio_as_a_live_window() -> None:
    config = load_config().augment
    assert config == default_augment()
    assert config.image.geometry and 0 < config.image.framed < 1 and config.image.zoom_out
    assert config.image.flip == 0  # digits and words do not survive a mirror
    # Blur, noise and colour jitter on top of the framing cost the image encoder its
    # digits on real handwriting (benchmarks/RESULTS.md).
    assert (config.image.blur, config.image.noise, config.image.color_jitter) == (0, 0, 0)
    assert config.audio.enabled and config.audio.spec_augment.enabled
    assert config.audio.shift_s > 0 and config.audio.noise_snr_db is not None
    assert not config.text.enabled


def test_a_run_config_written_before_the_new_defaults_reads_back_unchanged() -> None:
    trained = TrainConfig(audio=AudioSpec(), augment=AugmentConfig())  # the old defaults
    written = trained.to_dict()
    for key in ("zoom_out", "framed", "aspect", "blur"):  # keys that did not exist yet
        del written["augment"]["image"][key]
    del written["augment"]["audio"]["speed"]
    del written["audio"]["normalize"]
    assert config_from_json(json.dumps(written)) == trained


def test_per_modality_keys_parse_and_round_trip() -> None:
    config = load_config(
        None,
        [
            "augment.image.crop=0.2",
            "augment.image.flip=0.5",
            "augment.image.color_jitter=0.3",
            "augment.image.noise=0.05",
            "augment.audio.gain_db=6",
            "augment.audio.shift_s=0.1",
            "augment.audio.noise_snr_db=10",
            "augment.audio.spec_augment.time_masks=2",
            "augment.audio.spec_augment.time_width=5",
            "augment.text.token_dropout=0.1",
            "augment.text.typo_rate=0.05",
        ],
    )
    a = config.augment
    assert a.image.crop == 0.2 and a.image.flip == 0.5 and a.image.noise == 0.05
    assert a.audio.noise_snr_db == 10.0 and a.audio.spec_augment.time_width == 5
    assert a.audio.spec_augment.enabled and a.text.enabled
    assert config_from_json(config.to_json()) == config


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("augment.image.flop=1", r"^augment\.image\.flop: unknown key"),
        ("augment.audio.spec_augment.masks=1", r"^augment\.audio\.spec_augment\.masks: unknown"),
        ("augment.text.typos=1", r"^augment\.text\.typos: unknown key"),
        ("augment.image_rotate_deg=3", r"^augment\.image_rotate_deg: unknown key"),
        ("augment.image.flip=2", r"^augment\.image\.flip: expected a probability"),
        ("augment.image.crop=1", r"^augment\.image\.crop: expected a fraction"),
        ("augment.audio.gain_db=-1", r"^augment\.audio\.gain_db: expected 0"),
        ("augment.audio.noise_snr_db=loud", r"^augment\.audio\.noise_snr_db: expected a number"),
        ("augment.audio.spec_augment.time_width=-2", r"spec_augment\.time_width: expected"),
        ("augment.text.token_dropout=1", r"^augment\.text\.token_dropout: expected"),
    ],
)
def test_bad_augment_keys_name_the_key(override: str, pattern: str) -> None:
    with pytest.raises(SpecError, match=pattern):
        load_config(None, [override])


def test_run_folders_with_the_old_flat_keys_still_load() -> None:
    tree = json.loads(load_config().to_json())
    tree["augment"] = {"image_rotate_deg": 5.0, "image_scale": 0.0, "image_translate": 0.2}
    config = config_from_json(json.dumps(tree))
    assert config.augment.image == ImageAugment(rotate_deg=5.0, scale=0.0, translate=0.2)


# --- images ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        ImageAugment(),
        ImageAugment(crop=0.3, flip=0.5),
        ImageAugment(0, 0, 0, color_jitter=0.4, noise=0.1),
        ImageAugment(crop=0.3, flip=0.5, color_jitter=0.4, noise=0.1),
    ],
)
def test_images_keep_shape_and_range_and_repeat_given_the_generator(config) -> None:
    x = images()
    out = augment_images(x, config, gen(1))
    assert out.shape == x.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 255
    assert torch.equal(out, augment_images(x, config, gen(1)))
    assert not torch.equal(out, augment_images(x, config, gen(2)))


def test_image_flip_alone_mirrors_some_images_exactly() -> None:
    x = images(16)
    out = augment_images(x, ImageAugment(0, 0, 0, flip=0.5), gen(0))
    mirrored = [torch.allclose(out[i], x[i].flip(1).float(), atol=1e-3) for i in range(16)]
    unchanged = [torch.allclose(out[i], x[i].float(), atol=1e-3) for i in range(16)]
    assert all(m != u for m, u in zip(mirrored, unchanged, strict=True))
    assert 0 < sum(mirrored) < 16


def test_image_crop_zooms_in() -> None:
    # A 2x2 checkerboard of solid squares: a crop keeps a part, so per image fewer than
    # the four colours fill equal areas.
    x = torch.zeros(4, 16, 16, 3, dtype=torch.uint8)
    x[:, :8, 8:] = x[:, 8:, :8] = 255
    out = augment_images(x, ImageAugment(0, 0, 0, crop=0.5), gen(0))
    bright = (out > 127).float().mean(dim=(1, 2, 3))
    assert not torch.allclose(bright, torch.full_like(bright, 0.5), atol=0.02)


def test_image_noise_and_jitter_do_what_they_say() -> None:
    flat = torch.full((64, 16, 16, 3), 128, dtype=torch.uint8)
    noisy = augment_images(flat, ImageAugment(0, 0, 0, noise=0.1), gen(0))
    std = noisy.std(dim=(1, 2, 3))
    assert std.max() <= 0.1 * 255 * 1.1 and std.max() > 0.05 * 255  # sigma from [0, 25.5]
    bright = augment_images(flat, ImageAugment(0, 0, 0, color_jitter=0.3), gen(0))
    level = bright.mean(dim=(1, 2, 3))
    assert level.min() >= 128 * 0.7 - 1 and level.max() <= 128 * 1.3 + 1
    assert level.max() - level.min() > 20


# --- audio ----------------------------------------------------------------------------


def test_audio_keeps_shape_dtype_and_repeats_given_the_generator() -> None:
    x = tones()
    config = AudioAugment(gain_db=6, shift_s=0.05, noise_snr_db=10)
    out = augment_audio(x, config, 8000, gen(3))
    assert out.shape == x.shape and out.dtype == torch.float32
    assert torch.equal(out, augment_audio(x, config, 8000, gen(3)))
    assert not torch.equal(out, augment_audio(x, config, 8000, gen(4)))


def test_audio_gain_stays_in_range_and_clips() -> None:
    x = tones()
    out = augment_audio(x, AudioAugment(gain_db=6), 8000, gen(0))
    ratio_db = 20 * torch.log10(out.abs().amax(1) / x.abs().amax(1))
    assert ratio_db.abs().max() <= 6 + 1e-4
    loud = augment_audio(x * 2.5, AudioAugment(gain_db=12), 8000, gen(0))
    assert loud.abs().max() <= 1.0


def test_audio_shift_moves_the_signal_and_fills_with_silence() -> None:
    x = torch.zeros(8, 800)
    x[:, 400] = 1.0  # a click in the middle
    out = augment_audio(x, AudioAugment(shift_s=0.02), 8000, gen(0))  # up to 160 samples
    where = out.argmax(dim=1) - 400
    assert where.abs().max() <= 160 and len(set(where.tolist())) > 1
    assert torch.equal(out.sum(dim=1), torch.ones(8))  # moved, not lost or smeared


def test_audio_noise_reaches_the_asked_snr() -> None:
    x = tones(64, s=8000)
    out = augment_audio(x, AudioAugment(noise_snr_db=10), 8000, gen(0))
    snr = 10 * torch.log10(x.pow(2).mean(1) / (out - x).pow(2).mean(1))
    assert snr.min() >= 10 - 0.3 and snr.max() <= 30 + 0.3  # drawn from [10, 30] dB
    assert snr.max() - snr.min() > 5
    silent = augment_audio(torch.zeros(2, 100), AudioAugment(noise_snr_db=0), 8000, gen(0))
    assert torch.equal(silent, torch.zeros(2, 100))  # absent audio stays absent


# --- text -----------------------------------------------------------------------------


def test_tokens_change_only_real_tokens_and_repeat_given_the_generator() -> None:
    tokens = torch.tensor([[5, 6, 7, 8, 9, 0, 0, 0]] * 200)
    config = TextAugment(token_dropout=0.2, typo_rate=0.2)
    out = augment_tokens(tokens, config, vocab_size=20, generator=gen(0))
    assert out.shape == tokens.shape and out.dtype == torch.int64
    assert torch.equal(out[:, 5:], tokens[:, 5:])  # padding stays padding
    assert (out[:, :5] != PAD_ID).all()  # a real token never becomes padding
    assert out.min() >= 0 and out.max() < 20
    changed = (out[:, :5] != tokens[:, :5]).float().mean()
    assert 0.25 < changed < 0.45  # 1 - 0.8 * (0.8 + 0.2 * 1/18) ~ 0.35
    assert torch.equal(out, augment_tokens(tokens, config, 20, gen(0)))
    assert not torch.equal(out, augment_tokens(tokens, config, 20, gen(1)))


def test_token_dropout_gives_unk_and_typos_give_vocabulary_characters() -> None:
    tokens = torch.tensor([[5, 6, 7, 8, 0, 0]] * 100)
    dropped = augment_tokens(tokens, TextAugment(token_dropout=0.5), 20, gen(0))
    assert set(dropped[:, :4].unique().tolist()) == {UNK_ID, 5, 6, 7, 8}
    typos = augment_tokens(tokens, TextAugment(typo_rate=0.5), 20, gen(0))
    new = typos[:, :4][typos[:, :4] != tokens[:, :4]]
    assert new.numel() > 0 and new.min() >= 2 and new.max() < 20  # never PAD or UNK


def test_augment_batch_touches_only_configured_modalities() -> None:
    spec = tiny_spec()
    inputs = {
        "image": images(4, seed=1)[:, :16, :16],
        "audio": tones(4),
        "text": torch.tensor([[3, 4, 5, 0]] * 4),
    }
    config = AugmentConfig(image=ImageAugment(0, 0, 0), text=TextAugment(typo_rate=0.5))
    out = augment_batch(inputs, config, spec, gen(0))
    assert out["image"] is inputs["image"] and out["audio"] is inputs["audio"]
    assert not torch.equal(out["text"], inputs["text"])


# --- SpecAugment ----------------------------------------------------------------------


def test_spec_augment_masks_bands_in_train_mode_only() -> None:
    torch.manual_seed(0)
    module = SpecAugment(SpecAugmentConfig(time_masks=2, time_width=4, freq_masks=1, freq_width=3))
    logmel = torch.randn(16, 1, 16, 30)
    module.train()
    out = module(logmel)
    assert out.shape == logmel.shape and out.dtype == logmel.dtype
    changed = out != logmel
    assert changed.any()
    # Each changed entry is the sample's mean; masks are whole rows or columns.
    fill = logmel.mean(dim=(1, 2, 3), keepdim=True).expand_as(logmel)
    assert torch.equal(out[changed], fill[changed])
    per_sample_frames = changed.all(dim=2).squeeze(1).sum(dim=1)  # masked whole frames
    assert per_sample_frames.max() <= 2 * 4
    module.eval()
    assert module(logmel) is logmel


def test_spec_augment_runs_inside_the_audio_encoder_only_while_training() -> None:
    spec = tiny_spec(("audio",))
    model = FusedModel(spec)
    assert attach_spec_augment(model, SpecAugmentConfig(time_masks=2, time_width=6)) == 1
    assert attach_spec_augment(model, SpecAugmentConfig()) == 0  # nothing asked for
    audio = tones(4)
    present = torch.ones(4, 1, dtype=torch.bool)
    encoder = model.encoders["audio"]
    model.eval()
    with torch.no_grad():
        a = encoder(audio)
        assert torch.equal(a, encoder(audio))
    model.train()
    with torch.no_grad():
        torch.manual_seed(0)
        b = encoder(audio)
    assert not torch.allclose(a, b)
    assert "spec_augment" not in "".join(model.state_dict())  # checkpoints do not change
    model.eval()
    with torch.no_grad():
        model(audio=audio, present=present)


def op_types(path: Path) -> collections.Counter[str]:
    return collections.Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def test_export_with_spec_augment_is_the_same_graph_and_keeps_parity(tmp_path: Path) -> None:
    from fusionedge.export.onnx_export import export_onnx
    from fusionedge.export.parity import check_parity

    spec = tiny_spec(("image", "audio"))
    torch.manual_seed(0)
    plain = FusedModel(spec).eval()
    augmented = FusedModel(spec)
    augmented.load_state_dict(plain.state_dict())
    masks = SpecAugmentConfig(time_masks=2, time_width=6, freq_masks=2, freq_width=3)
    assert attach_spec_augment(augmented, masks) == 1
    augmented.eval()
    export_onnx(plain, tmp_path / "plain.onnx")
    export_onnx(augmented, tmp_path / "augmented.onnx")
    assert op_types(tmp_path / "augmented.onnx") == op_types(tmp_path / "plain.onnx")
    report = check_parity(augmented, tmp_path / "augmented.onnx", batch_sizes=(1, 3))
    assert report["failed"] == 0


# --- in training ----------------------------------------------------------------------


def test_training_with_every_augmentation_repeats_and_learns(dataset: Path, tmp_path: Path) -> None:
    every = (
        "epochs=6",
        "augment.image.crop=0.2",
        "augment.image.color_jitter=0.2",
        "augment.image.noise=0.03",
        "augment.audio.gain_db=6",
        "augment.audio.shift_s=0.05",
        "augment.audio.noise_snr_db=10",
        "augment.audio.spec_augment.time_masks=2",
        "augment.audio.spec_augment.time_width=4",
        "augment.audio.spec_augment.freq_masks=1",
        "augment.audio.spec_augment.freq_width=3",
        "augment.text.token_dropout=0.1",
        "augment.text.typo_rate=0.1",
    )
    a = train(dataset, tmp_path / "a", tiny_config(*every), progress=False)
    b = train(dataset, tmp_path / "b", tiny_config(*every), progress=False)
    wa, wb = (
        read_weights(a.run_dir / "last.safetensors"),
        read_weights(b.run_dir / "last.safetensors"),
    )
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a.best_metrics["accuracy"] >= 0.9
    plain = train(dataset, tmp_path / "plain", tiny_config("epochs=6"), progress=False)
    wp = read_weights(plain.run_dir / "last.safetensors")
    assert not torch.equal(wa["model.placeholders"], wp["model.placeholders"])
    assert set(wa) == set(wp)  # SpecAugment adds nothing to the checkpoint
