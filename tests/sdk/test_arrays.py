"""load_arrays / encode_targets on a small real data set of mixed images, audio and text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fusionedge.arrays import encode_targets, load_arrays
from fusionedge.manifest import ManifestError, read_manifest
from fusionedge.spec import AudioSpec, ImageSpec, TextSpec
from fusionedge.tokenizer import PAD_ID, Tokenizer, learn_tokenizer

IMAGE = ImageSpec(height=16, width=24)
AUDIO = AudioSpec(sample_rate=8000, num_samples=4000, n_fft=256, hop_length=128, n_mels=16)
TEXTS = ["a cat", "dog dog"]
TEXT = TextSpec(max_length=8, tokenizer=learn_tokenizer(TEXTS))


@pytest.fixture
def dataset(tmp_path: Path, media) -> Path:
    """Four samples: PNGs of mixed size and channels, WAVs at mixed rates, text or not."""
    media.png(tmp_path / "img" / "gray.png", np.full((10, 20), 128, np.uint8))
    media.png(tmp_path / "img" / "blue.png", np.full((40, 30, 3), (255, 0, 0), np.uint8))
    rgba16 = np.zeros((12, 12, 4), np.uint16)
    rgba16[..., 1], rgba16[..., 3] = 65535, 65535  # pure green, opaque, 16-bit
    media.png(tmp_path / "img" / "green16.png", rgba16)
    stereo = np.stack([media.sine(440, 16000, 0.1, 0.6), media.sine(440, 16000, 0.1, 0.2)], 1)
    media.audio(tmp_path / "wav" / "stereo16k.wav", stereo, 16000, "PCM_16")
    media.audio(tmp_path / "wav" / "mono44k.wav", media.sine(440, 44100, 1.0, 0.3), 44100, "FLOAT")
    media.manifest(
        tmp_path,
        [
            {
                "id": "s0",
                "image": "img/gray.png",
                "audio": "wav/stereo16k.wav",
                "text": "A Cat",
                "label": "cat",
            },
            {"id": "s1", "image": "img/blue.png", "audio": "wav/mono44k.wav", "label": "dog"},
            {"id": "s2", "image": "img/green16.png", "text": "", "label": "bird"},
            {"id": "s3", "audio": "wav/mono44k.wav", "text": "dog dog dog", "label": "dog"},
        ],
    )
    return tmp_path


def test_shapes_dtypes_and_contents(dataset, make_spec):
    manifest = read_manifest(dataset)
    spec = make_spec(image=IMAGE, audio=AUDIO, text=TEXT)
    arrays = load_arrays(list(manifest.records), spec, manifest.path)

    assert arrays.ids == ["s0", "s1", "s2", "s3"] and len(arrays) == 4
    assert arrays.present.dtype == bool
    np.testing.assert_array_equal(
        arrays.present,
        [[1, 1, 1], [1, 1, 0], [1, 0, 0], [0, 1, 1]],  # columns: image, audio, text
    )

    assert arrays.image.shape == (4, 16, 24, 3) and arrays.image.dtype == np.uint8
    assert (arrays.image[0] == 128).all()  # grayscale -> three equal channels
    assert (arrays.image[1] == [0, 0, 255]).all()  # BGR blue on disk -> RGB blue
    assert (arrays.image[2] == [0, 255, 0]).all()  # 16-bit RGBA green -> 8-bit RGB green
    assert not arrays.image[3].any()  # absent: zeros

    assert arrays.audio.shape == (4, 4000) and arrays.audio.dtype == np.float32
    # s0: 0.1 s at 16 kHz -> 800 samples at 8 kHz, centred; the channel mean has peak 0.4.
    assert not arrays.audio[0, :1590].any() and not arrays.audio[0, 2410:].any()
    assert abs(np.abs(arrays.audio[0]).max() - 0.4) < 0.02
    assert abs(np.abs(arrays.audio[1]).max() - 0.3) < 0.02  # 1 s at 44.1 kHz, centre crop
    assert not arrays.audio[2].any()
    np.testing.assert_array_equal(arrays.audio[1], arrays.audio[3])  # same file, same window

    tokens = Tokenizer(TEXT)
    assert arrays.tokens.shape == (4, 8) and arrays.tokens.dtype == np.int64
    np.testing.assert_array_equal(arrays.tokens[0], tokens.encode("a cat"))
    np.testing.assert_array_equal(arrays.tokens[3], tokens.encode("dog dog dog"))
    assert (arrays.tokens[1:3] == PAD_ID).all()  # no text, and empty text

    assert arrays.targets.dtype == np.int64
    np.testing.assert_array_equal(arrays.targets, [1, 2, 0, 2])  # bird, cat, dog

    inputs = arrays.inputs()
    assert set(inputs) == {"image", "audio", "tokens", "present"}
    part = arrays.subset(np.array([3, 1]))
    assert part.ids == ["s3", "s1"]
    np.testing.assert_array_equal(part.targets, [2, 2])
    np.testing.assert_array_equal(part.present, arrays.present[[3, 1]])


def test_subset_of_modalities_ignores_the_others(dataset, make_spec):
    manifest = read_manifest(dataset)
    spec = make_spec(("image",), image=IMAGE)
    arrays = load_arrays(list(manifest.records), spec, manifest.path, with_targets=False, workers=1)
    assert arrays.audio is None and arrays.tokens is None and arrays.targets is None
    assert arrays.present.shape == (4, 1)
    np.testing.assert_array_equal(arrays.present[:, 0], [True, True, True, False])
    assert set(arrays.inputs()) == {"image", "present"}


def test_workers_do_not_change_the_result(dataset, make_spec):
    manifest = read_manifest(dataset)
    spec = make_spec(image=IMAGE, audio=AUDIO, text=TEXT)
    one = load_arrays(list(manifest.records), spec, manifest.path, workers=1)
    many = load_arrays(list(manifest.records), spec, manifest.path, workers=4)
    for name in ("present", "image", "audio", "tokens", "targets"):
        np.testing.assert_array_equal(getattr(one, name), getattr(many, name))


def test_corrupt_files_raise_manifest_error_with_line_and_field(dataset, make_spec):
    (dataset / "img" / "blue.png").write_bytes(np.random.default_rng(0).bytes(300))
    (dataset / "wav" / "stereo16k.wav").write_bytes(b"RIFF")
    manifest = read_manifest(dataset)  # the files exist, so reading the manifest passes
    spec = make_spec(image=IMAGE, audio=AUDIO, text=TEXT)
    with pytest.raises(ManifestError) as err:
        load_arrays(list(manifest.records), spec, manifest.path)
    found = [(p.line, p.field) for p in err.value.problems]
    assert found == [(1, "audio"), (2, "image")]  # every failure, sorted by line
    message = str(err.value)
    assert f"{manifest.path}:2: image: {dataset / 'img' / 'blue.png'}" in message
    assert f"{manifest.path}:1: audio: {dataset / 'wav' / 'stereo16k.wav'}" in message


def test_unknown_label_names_the_label_and_line(dataset, make_spec):
    manifest = read_manifest(dataset)
    spec = make_spec(labels=("cat", "dog"), image=IMAGE, audio=AUDIO, text=TEXT)
    with pytest.raises(ManifestError) as err:
        load_arrays(list(manifest.records), spec, manifest.path)
    (problem,) = err.value.problems
    assert (problem.line, problem.field) == (3, "label")
    assert "'bird' is not one of the model's labels ['cat', 'dog']" in str(err.value)
    assert f"{manifest.path}:3: label: " in str(err.value)
    # Without targets, the same records load.
    arrays = load_arrays(list(manifest.records), spec, manifest.path, with_targets=False)
    assert arrays.targets is None


def _records(root: Path, media, labels: list) -> tuple:
    media.manifest(
        root, [{"id": f"s{i}", "text": "x", "label": lab} for i, lab in enumerate(labels)]
    )
    manifest = read_manifest(root)
    return list(manifest.records), manifest.path


def test_encode_targets_binary(tmp_path, media, make_spec):
    records, path = _records(tmp_path, media, ["yes", "no", "yes"])
    targets = encode_targets(records, make_spec(("text",), "binary"), path)
    assert targets.dtype == np.int64
    np.testing.assert_array_equal(targets, [1, 0, 1])


def test_encode_targets_multilabel(tmp_path, media, make_spec):
    records, path = _records(tmp_path, media, [["c", "a"], [], ["b"]])
    targets = encode_targets(records, make_spec(("text",), "multilabel"), path)
    assert targets.dtype == np.float32 and targets.shape == (3, 3)
    np.testing.assert_array_equal(targets, [[1, 0, 1], [0, 0, 0], [0, 1, 0]])
    records, path = _records(tmp_path, media, [["a", "zebra"]])
    with pytest.raises(ManifestError, match=r":1: label: \('a', 'zebra'\) is not one of"):
        encode_targets(records, make_spec(("text",), "multilabel"), path)


def test_encode_targets_regression(tmp_path, media, make_spec):
    records, path = _records(tmp_path, media, [1.5, -2, 1e6])
    targets = encode_targets(records, make_spec(("text",), "regression"), path)
    assert targets.dtype == np.float32 and targets.shape == (3, 1)
    np.testing.assert_array_equal(targets[:, 0], [1.5, -2.0, 1e6])


def test_encode_targets_rejects_a_label_of_the_wrong_kind(tmp_path, media, make_spec):
    records, path = _records(tmp_path, media, ["cat", "dog"])
    with pytest.raises(ManifestError) as err:
        encode_targets(records, make_spec(("text",), "regression"), path)
    assert [(p.line, p.field) for p in err.value.problems] == [(1, "label"), (2, "label")]
    assert "regression needs a number, got 'cat'" in str(err.value)
    records, path = _records(tmp_path, media, [["cat"]])
    with pytest.raises(ManifestError, match=r"\('cat',\) is not one of the model's labels"):
        encode_targets(records, make_spec(("text",)), path)
