"""What makes a model hold up beyond its training files: camera and microphone
augmentation, the per-window audio normalisation in the graph, and decision-level fusion."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from support import tiny_spec

from fusionedge.spec import AudioSpec, ModelSpec, SpecError
from fusionedge.training.augment import (
    AudioAugment,
    ImageAugment,
    augment_images,
    change_speed,
    framing,
    gaussian_blur,
)
from fusionedge.training.config import load_config
from fusionedge.training.encoders import normalize_window
from fusionedge.training.frontend import LogMel
from fusionedge.training.fusion import LateFusion
from fusionedge.training.registry import FUSIONS


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- image: the object in a camera's view -----------------------------------------------


def object_boxes(inner: torch.Tensor) -> torch.Tensor:
    """[N, 4] (x0, y0, x1, y1) in output coordinates of the object's [-1, 1] square."""
    scale = 1 / torch.stack([inner[:, 0, 0], inner[:, 1, 1]], dim=1)
    centre = -inner[:, :2, 2] * scale
    return torch.cat([centre - scale, centre + scale], dim=1)


def test_framing_keeps_the_whole_object_in_view_at_the_drawn_size() -> None:
    config = ImageAugment(rotate_deg=0, scale=0, translate=0, zoom_out=0.6, aspect=0.35)
    boxes = object_boxes(framing(4000, config, gen()))
    assert (boxes[:, :2] >= -1 - 1e-6).all() and (boxes[:, 2:] <= 1 + 1e-6).all()
    sides = (boxes[:, 2:] - boxes[:, :2]) / 2  # fractions of the view
    assert sides.max() <= 1 + 1e-6 and sides.max(dim=1).values.min() >= 0.4 * 0.85
    ratio = sides[:, 0] / sides[:, 1]
    assert ratio.min() >= 1 / 1.35 - 1e-4 and ratio.max() <= 1.35 + 1e-4
    # Drawn, not fixed: small and large objects, both aspects, all over the view.
    assert sides.min() < 0.5 and ratio.min() < 0.85 and ratio.max() > 1.15
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    assert centres.min() < -0.4 and centres.max() > 0.4


def test_zoomed_out_image_sits_on_a_background() -> None:
    card = torch.full((64, 32, 32, 3), 200, dtype=torch.uint8)
    config = ImageAugment(rotate_deg=0, scale=0, translate=0, zoom_out=0.6)
    out = augment_images(card, config, gen())
    assert out.shape == (64, 32, 32, 3) and out.min() >= 0 and out.max() <= 255
    is_card = (out - 200).abs().amax(dim=3) < 0.5
    covered = is_card.float().mean(dim=(1, 2))
    # The card covers its drawn share (0.16-1 of the area), the rest is something else.
    assert covered.min() > 0.1 and covered.max() < 1.0
    assert (covered < 0.6).sum() > 10
    # Same generator seed, same scenes.
    assert torch.equal(out, augment_images(card, config, gen()))


def test_blur_keeps_the_mean_and_softens_edges() -> None:
    x = torch.zeros(16, 3, 24, 24)
    x[:, :, :, 12:] = 255.0
    out = gaussian_blur(x, 2.0, gen())
    assert torch.allclose(out.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=1e-2)
    edge = out[:, 0, 12, 11]  # the pixel just left of the step
    assert edge.max() > 20 and edge.min() >= 0  # blurred by some, barely by sigma ~ 0
    assert len(set(edge.round().tolist())) > 8  # a sigma per image


def test_new_image_keys_validate() -> None:
    with pytest.raises(SpecError, match=r"augment\.image\.zoom_out: expected a fraction"):
        load_config(None, ["augment.image.zoom_out=1"])
    with pytest.raises(SpecError, match=r"augment\.image\.blur: expected 0"):
        load_config(None, ["augment.image.blur=-1"])


# --- audio: speed, and the per-window normalisation --------------------------------------


def zero_crossings(x: torch.Tensor) -> torch.Tensor:
    return ((x[:, 1:] > 0) != (x[:, :-1] > 0)).sum(dim=1)


def test_speed_changes_tempo_and_pitch_about_the_centre() -> None:
    t = torch.arange(8000) / 8000
    tone = torch.sin(2 * math.pi * 200 * t).repeat(200, 1)
    out = change_speed(tone, 0.2, gen())
    factor = zero_crossings(out[:, 2000:6000]).float() / zero_crossings(tone[:, 2000:6000])
    assert factor.min() >= 0.79 and factor.max() <= 1.21
    assert factor.min() < 0.9 and factor.max() > 1.1
    # Faster playback leaves the window's edges silent; the centre sample stays in place.
    fast = factor > 1.05
    assert (out[fast, :50] == 0).all() and not (out[~fast, 4000:4050] == 0).all()
    with pytest.raises(SpecError, match=r"augment\.audio\.speed"):
        AudioAugment(speed=1.0)


def test_window_normalisation_cancels_gain_and_a_microphone_tilt() -> None:
    spec = AudioSpec(sample_rate=8000, num_samples=8000, n_fft=256, hop_length=80)
    rng = np.random.default_rng(0)
    speech = torch.from_numpy(rng.normal(0, 0.1, (1, 8000)).astype(np.float32))
    speech[:, 3000:5000] *= 5
    logmel = LogMel(spec)
    base = normalize_window(logmel(speech))
    # 10 dB quieter; much quieter bands sink towards the log floor, which no gain undoes.
    quiet = normalize_window(logmel(speech * 0.3))
    tilted = logmel(speech) + torch.linspace(-2, 2, spec.n_mels).view(1, 1, -1, 1)
    assert torch.allclose(base, quiet, atol=2e-2)
    assert not torch.allclose(logmel(speech), logmel(speech * 0.3), atol=1)
    assert abs(float(base.pow(2).mean()) - 1) < 1e-2
    # Per band, a microphone's tilt goes too; over the whole window it stays.
    bands = normalize_window(logmel(speech), per_band=True)
    assert torch.allclose(bands, normalize_window(tilted, per_band=True), atol=1e-4)
    assert not torch.allclose(base, normalize_window(tilted), atol=0.1)


def test_a_steady_tone_survives_window_normalisation_but_not_the_per_band_one() -> None:
    spec = AudioSpec(sample_rate=8000, num_samples=8000, n_fft=256, hop_length=80)
    t = torch.arange(8000) / 8000
    logmel = LogMel(spec)
    low, high = (logmel(torch.sin(2 * math.pi * f * t).unsqueeze(0)) for f in (300.0, 2000.0))

    def loudest_band(x: torch.Tensor) -> int:
        return int(x.mean(dim=3).flatten().argmax())

    # Over the whole window, which bands the tone fills stays visible...
    assert loudest_band(normalize_window(high)) > loudest_band(normalize_window(low)) + 5
    # ...per band, every band's level over the window is gone, whatever the tone.
    for tone in (low, high):
        assert normalize_window(tone, per_band=True).mean(dim=3).abs().max() < 1e-4


def test_normalize_is_part_of_the_spec_and_old_specs_read_as_none() -> None:
    spec = tiny_spec()
    data = spec.to_dict()
    del data["audio"]["normalize"]
    assert ModelSpec.from_dict(data).audio.normalize == "none"
    with pytest.raises(SpecError, match=r"audio\.normalize: expected none, window or bands"):
        AudioSpec(normalize="peak")  # type: ignore[arg-type]


# --- decision-level fusion ---------------------------------------------------------------


@pytest.mark.parametrize(("name", "combine"), [("late", "mean"), ("poe", "sum")])
def test_late_fusions_combine_the_present_experts_only(name: str, combine: str) -> None:
    fusion = FUSIONS.create(name, num_modalities=3, embed_dim=8).eval()
    assert isinstance(fusion, LateFusion) and fusion.combine == combine
    tokens = torch.randn(5, 3, 8)
    present = torch.tensor([[1, 1, 0]] * 5, dtype=torch.bool)
    with torch.no_grad():
        out = fusion(tokens, present)
        alone = [fusion(tokens, torch.eye(3, dtype=torch.bool)[j].expand(5, 3)) for j in (0, 1)]
        changed = tokens.clone()
        changed[:, 2] = 100.0  # whatever a missing modality's slot holds
        assert torch.allclose(fusion(changed, present), out)
    expected = alone[0] + alone[1]
    assert torch.allclose(out, expected / 2 if combine == "mean" else expected, atol=1e-6)
    with torch.no_grad():
        nothing = fusion(tokens, torch.zeros(5, 3, dtype=torch.bool))
    assert torch.equal(nothing, torch.zeros(5, 8))
