"""Predictor: arrays and files in, Results out, and clear errors for every bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile as sf

from fusionedge.runtime import Predictor, PredictorOptions, Result

LABELS = ("blue", "green", "red")
RGB = {"red": (220, 40, 40), "green": (40, 200, 40), "blue": (40, 60, 220)}
LATENCY_KEYS = {"preprocess", "inference", "postprocess", "total"}


def picture(name: str, size: tuple[int, int] = (30, 40), seed: int = 0) -> np.ndarray:
    """An RGB uint8 picture of one class colour with a little noise."""
    noise = np.random.default_rng(seed).normal(0, 10, (*size, 3))
    return np.clip(np.array(RGB[name])[None, None, :] + noise, 0, 255).astype(np.uint8)


def tone(freq: float, rate: int, seconds: float = 0.5, channels: int = 1) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    pcm = (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return pcm if channels == 1 else np.repeat(pcm[:, None], channels, axis=1)


def assert_same(a: Result, b: Result, atol: float = 1e-6) -> None:
    assert a.present == b.present
    assert list(a.scores) == list(b.scores)
    np.testing.assert_allclose(list(a.scores.values()), list(b.scores.values()), atol=atol)
    np.testing.assert_allclose(a.embedding, b.embedding, atol=atol)


def max_score_diff(a: Result, b: Result) -> float:
    return max(abs(a.scores[k] - b.scores[k]) for k in a.scores)


@pytest.fixture(scope="module")
def image_text(image_text_model_path: Path) -> Iterator[Predictor]:
    with Predictor.from_path(image_text_model_path, providers="cpu", threads=1) as p:
        yield p


# ------------------------------------------------------------------ images


def test_bgr_array_with_bgr_color_order_equals_rgb(predictor: Predictor) -> None:
    rgb = picture("red")
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    a = predictor.predict(image=rgb)
    b = predictor.predict(image=bgr, color_order="bgr")
    np.testing.assert_array_equal(
        predictor.prepare(image=rgb)["image"],
        predictor.prepare(image=bgr, color_order="bgr")["image"],
    )
    assert_same(a, b)
    # A BGRA frame (alpha dropped) and a float picture in [0, 1] give the same too.
    bgra = np.dstack([bgr, np.full(rgb.shape[:2], 255, np.uint8)])
    assert_same(a, predictor.predict(image=bgra, color_order="bgr"))
    assert_same(a, predictor.predict(image=rgb.astype(np.float32) / 255.0), atol=1e-5)


def test_bgr_array_passed_as_rgb_differs_for_a_coloured_image(predictor: Predictor) -> None:
    rgb = picture("red")
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    right = predictor.prepare(image=rgb)["image"]
    wrong = predictor.prepare(image=bgr)["image"]  # the caller forgot color_order="bgr"
    np.testing.assert_array_equal(wrong, right[..., ::-1])
    assert max_score_diff(predictor.predict(image=rgb), predictor.predict(image=bgr)) > 1e-3

    grey = np.repeat(picture("red")[..., :1], 3, axis=2)  # no colour: the order cannot matter
    assert_same(predictor.predict(image=grey), predictor.predict(image=grey, color_order="bgr"))


def test_image_shapes_and_sizes_are_converted(predictor: Predictor) -> None:
    spec = predictor.spec.image
    for image in (
        np.zeros((100, 37), np.uint8),
        np.zeros((5, 9, 1), np.uint8),
        np.zeros((300, 200, 3), np.uint16),
        np.zeros((16, 16, 4), np.uint8),
    ):
        out = predictor.prepare(image=image)["image"]
        assert out.shape == (spec.height, spec.width, 3) and out.dtype == np.uint8


# ------------------------------------------------------------------ files and audio


def test_file_paths_give_the_same_result_as_arrays(predictor: Predictor, tmp_path: Path) -> None:
    bgr = np.ascontiguousarray(picture("green", (24, 32))[..., ::-1])
    pcm = tone(1000.0, 16000, 0.6)
    assert cv2.imwrite(str(tmp_path / "frame.png"), bgr)
    sf.write(str(tmp_path / "clip.wav"), pcm, 16000, subtype="FLOAT")
    from_files = predictor.predict(
        image=str(tmp_path / "frame.png"), audio=tmp_path / "clip.wav", text="green"
    )
    from_arrays = predictor.predict(
        image=bgr, color_order="bgr", audio=pcm, sample_rate=16000, text="green"
    )
    assert from_files.present == {"image": True, "audio": True, "text": True}
    assert_same(from_files, from_arrays)


def test_audio_arrays_at_any_rate_and_channel_count(predictor: Predictor) -> None:
    spec = predictor.spec.audio
    assert (spec.sample_rate, spec.num_samples) == (8000, 4000)
    mono8 = tone(1000.0, 8000)
    stereo44 = tone(1000.0, 44100, channels=2)
    x8 = predictor.prepare(audio=mono8, sample_rate=8000)["audio"]
    x44 = predictor.prepare(audio=stereo44, sample_rate=44100)["audio"]
    np.testing.assert_array_equal(x8, mono8)  # already the model's rate and length
    assert x44.shape == (4000,) and x44.dtype == np.float32
    # Resampling edges aside, the 44.1 kHz stereo tone is the 8 kHz mono one.
    assert np.abs(x44 - x8)[200:-200].max() < 1e-3

    r8 = predictor.predict(audio=mono8, sample_rate=8000)
    r44 = predictor.predict(audio=stereo44, sample_rate=44100)
    assert r8.present == r44.present == {"image": False, "audio": True, "text": False}
    assert max_score_diff(r8, r44) < 1e-3
    int16 = (stereo44 * 32767).astype(np.int16)
    assert max_score_diff(r44, predictor.predict(audio=int16, sample_rate=44100)) < 1e-3
    # Stereo is mixed to mono: one silent channel halves the amplitude.
    half = np.stack([stereo44[:, 0], np.zeros_like(stereo44[:, 0])], axis=1)
    x_half = predictor.prepare(audio=half, sample_rate=44100)["audio"]
    np.testing.assert_allclose(x_half, x44 / 2, atol=1e-5)
    # A long clip is centre-cropped, a short one centre-padded with zeros.
    short = predictor.prepare(audio=tone(1000.0, 8000, 0.25), sample_rate=8000)["audio"]
    assert short.shape == (4000,) and not short[:900].any() and not short[-900:].any()


# ------------------------------------------------------------------ results


def test_any_subset_of_modalities_including_nothing(predictor: Predictor) -> None:
    given = {
        "image": picture("blue"),
        "audio": tone(2200.0, 8000),
        "text": "blue",
    }
    results = {}
    for mask in range(8):
        subset = [m for i, m in enumerate(("image", "audio", "text")) if mask >> i & 1]
        kwargs = {m: given[m] for m in subset}
        if "audio" in subset:
            kwargs["sample_rate"] = 8000
        r = predictor.predict(**kwargs)
        assert r.present == {m: m in subset for m in ("image", "audio", "text")}
        assert r.label in LABELS
        assert abs(sum(r.scores.values()) - 1.0) < 1e-5
        results[tuple(subset)] = r
    embeddings = [r.embedding for r in results.values()]
    for i, a in enumerate(embeddings):
        for b in embeddings[i + 1 :]:
            assert np.abs(a - b).max() > 1e-4  # every subset is a different question


def test_nothing_given_is_the_model_with_every_input_missing(predictor: Predictor) -> None:
    r = predictor.predict()
    assert r.present == {"image": False, "audio": False, "text": False}
    batch = predictor.stack([predictor.prepare()])
    assert not batch["present"].any() and not batch["image"].any()
    scores, embedding = predictor.run(batch)
    np.testing.assert_allclose(list(r.scores.values()), scores[0], atol=1e-6)
    np.testing.assert_allclose(r.embedding, embedding[0], atol=1e-6)


def test_result_fields(predictor: Predictor) -> None:
    r = predictor.predict(
        image=picture("red"), audio=tone(400.0, 8000), sample_rate=8000, text="red"
    )
    spec = predictor.spec
    assert r.label in LABELS and list(r.scores) == list(spec.labels) == list(LABELS)
    assert all(0.0 <= v <= 1.0 for v in r.scores.values())
    assert abs(sum(r.scores.values()) - 1.0) < 1e-5
    assert len(r.top_k) == min(predictor.options.top_k, len(LABELS)) == 3
    assert [s for _, s in r.top_k] == sorted((s for _, s in r.top_k), reverse=True)
    assert r.top_k[0] == (r.label, r.scores[r.label])
    assert r.label == max(r.scores, key=r.scores.get)
    assert {k for k, _ in r.top_k} == set(LABELS)
    assert r.embedding.shape == (spec.embed_dim,) and r.embedding.dtype == np.float32
    assert r.present == {"image": True, "audio": True, "text": True}
    assert set(r.latency_ms) == LATENCY_KEYS
    assert all(v >= 0 for v in r.latency_ms.values())
    parts = r.latency_ms["preprocess"] + r.latency_ms["inference"] + r.latency_ms["postprocess"]
    assert r.latency_ms["total"] == pytest.approx(parts, rel=1e-6, abs=1e-6)
    assert r.value is None and r.active is None  # multiclass
    out = json.loads(json.dumps(r.to_dict()))
    assert out["label"] == r.label and len(out["embedding"]) == spec.embed_dim
    assert "value" not in out and "active" not in out
    # The trained tiny model knows this clear sample.
    assert r.label == "red"


def test_options_are_applied(model_path: Path) -> None:
    options = PredictorOptions(providers="cpu", threads=1, spinning=False, top_k=2)
    with Predictor(model_path, options) as p:
        r = p.predict(text="green")
        assert len(r.top_k) == 2 and p.options is options
        assert p.providers == ["CPUExecutionProvider"]
    with pytest.raises(AttributeError):  # frozen
        options.top_k = 3  # type: ignore[misc]


def test_predict_batch_equals_predict_row_by_row(predictor: Predictor) -> None:
    images = [picture("red"), None, picture("blue", seed=1), picture("green", seed=2), None]
    audios = [tone(400.0, 8000), tone(1000.0, 8000), None, tone(2200.0, 8000), None]
    texts = ["red", None, "blue", None, None]
    batch = predictor.predict_batch(images, audios, texts, sample_rate=8000)
    assert len(batch) == 5
    for i, got in enumerate(batch):
        one = predictor.predict(
            images[i], audios[i], texts[i], sample_rate=8000 if audios[i] is not None else None
        )
        assert got.label == one.label
        assert_same(got, one, atol=1e-5)
        assert got.present == {
            "image": images[i] is not None,
            "audio": audios[i] is not None,
            "text": texts[i] is not None,
        }
        assert set(got.latency_ms) == LATENCY_KEYS
    assert batch[0].latency_ms == batch[-1].latency_ms  # a batch shares its times

    only_text = predictor.predict_batch(texts=["red", "blue"])
    assert [r.present["text"] for r in only_text] == [True, True]
    assert_same(only_text[1], predictor.predict(text="blue"), atol=1e-5)


# ------------------------------------------------------------------ input errors


def test_a_modality_the_model_lacks_is_refused(image_text: Predictor) -> None:
    assert image_text.spec.modalities == ("image", "text")
    with pytest.raises(ValueError, match=r"takes \['image', 'text'\].*\['audio'\]"):
        image_text.predict(audio=tone(400.0, 8000), sample_rate=8000)
    with pytest.raises(ValueError, match=r"\['audio'\]"):
        image_text.predict_batch(images=[picture("red")], audios=[tone(400.0, 8000)])
    r = image_text.predict(image=picture("red"), text="red")
    assert r.present == {"image": True, "text": True}


def test_sample_rate_without_audio_is_refused_by_a_model_without_audio(
    image_text: Predictor,
) -> None:
    with pytest.raises(ValueError, match="sample_rate"):
        image_text.predict(image=picture("red"), sample_rate=8000)


def test_predict_batch_refuses_sample_rate_without_audios(predictor: Predictor) -> None:
    with pytest.raises(ValueError, match="sample_rate"):
        predictor.predict_batch(texts=["red"], sample_rate=8000)


BAD_INPUTS = {
    "image list": (dict(image=[[1, 2], [3, 4]]), TypeError, r"image: .*numpy array or a file path"),
    "image 2 channels": (
        dict(image=np.zeros((16, 16, 2), np.uint8)),
        ValueError,
        r"image: shape \(16, 16, 2\).*accepted: \[H, W\]",
    ),
    "image batch": (
        dict(image=np.zeros((2, 16, 16, 3), np.uint8)),
        ValueError,
        r"image: shape \(2, 16, 16, 3\).*accepted",
    ),
    "image int64": (
        dict(image=np.zeros((16, 16, 3), np.int64)),
        ValueError,
        r"image: dtype int64 .*accepted: uint8",
    ),
    "color order": (
        dict(image=np.zeros((16, 16, 3), np.uint8), color_order="hsv"),
        ValueError,
        r"color_order must be 'rgb' or 'bgr', got 'hsv'",
    ),
    "audio without sample_rate": (
        dict(audio=np.zeros(4000, np.float32)),
        ValueError,
        r"audio: .*sample_rate.*8000 Hz",
    ),
    "sample_rate without audio": (
        dict(text="red", sample_rate=16000),
        ValueError,
        r"sample_rate was given without audio",
    ),
    "sample_rate float": (
        dict(audio=np.zeros(4000, np.float32), sample_rate=8000.0),
        TypeError,
        r"audio: sample_rate must be an int",
    ),
    "audio list": (dict(audio=[0.0, 0.1], sample_rate=8000), TypeError, r"audio: .*numpy array"),
    "audio channels first": (
        dict(audio=np.zeros((2, 8000), np.float32), sample_rate=8000),
        ValueError,
        r"audio: shape \(2, 8000\).*\[samples, channels\]",
    ),
    "audio 3d": (
        dict(audio=np.zeros((2, 2, 2), np.float32), sample_rate=8000),
        ValueError,
        r"audio: shape \(2, 2, 2\).*accepted",
    ),
    "text int": (dict(text=5), TypeError, r"text: expected a str, got int"),
    "text bytes": (dict(text=b"red"), TypeError, r"text: expected a str, got bytes"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_refused_naming_it(predictor: Predictor, case: str) -> None:
    kwargs, error, message = BAD_INPUTS[case]
    with pytest.raises(error, match=message):
        predictor.predict(**kwargs)


def test_sample_rate_with_an_audio_file_is_refused(predictor: Predictor, tmp_path: Path) -> None:
    path = tmp_path / "clip.wav"
    sf.write(str(path), tone(400.0, 16000), 16000)
    with pytest.raises(ValueError, match=r"sample_rate is for audio arrays"):
        predictor.predict(audio=path, sample_rate=16000)
    assert predictor.predict(audio=path).present["audio"]


def test_corrupt_or_missing_media_files_are_refused(predictor: Predictor, tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(np.random.default_rng(0).bytes(500))
    with pytest.raises(ValueError, match=r"broken\.png: not a decodable image.*accepted: .png"):
        predictor.predict(image=broken)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.jpg: not a decodable image \(0 bytes\)"):
        predictor.predict(image=empty)
    with pytest.raises(ValueError, match=r"missing\.png: cannot read image file"):
        predictor.predict(image=tmp_path / "missing.png")
    noise = tmp_path / "noise.wav"
    noise.write_bytes(np.random.default_rng(1).bytes(500))
    with pytest.raises(ValueError, match=r"noise\.wav: not decodable audio.*accepted: WAV"):
        predictor.predict(audio=noise)


def test_predict_batch_lists_of_unequal_length_are_refused(predictor: Predictor) -> None:
    with pytest.raises(ValueError, match=r"same length.*'images': 2.*'texts': 1"):
        predictor.predict_batch(images=[picture("red"), picture("blue")], texts=["red"])
    with pytest.raises(ValueError, match=r"at least one of images, audios, texts"):
        predictor.predict_batch()


def run_in_subprocess(code: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-I", "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize("call", ["predict_batch", "run"])
def test_an_empty_batch_is_refused(model_path: Path, call: str) -> None:
    """An empty batch is refused (ValueError) or answered with nothing; in a subprocess,
    because today it kills the interpreter."""
    code = f"""
import numpy as np
from fusionedge.runtime import Predictor
p = Predictor.from_path({str(model_path)!r}, providers="cpu")
try:
    if {call!r} == "predict_batch":
        empty = p.predict_batch(images=[]) == []
    else:
        layout = p.input_layout().items()
        scores, embedding = p.run({{k: np.zeros((0, *s), d) for k, (d, s) in layout}})
        empty = scores.shape[0] == embedding.shape[0] == 0
    print("RESULT empty" if empty else "RESULT wrong")
except ValueError as e:
    print("RESULT ValueError", e)
"""
    result = run_in_subprocess(code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "RESULT ValueError" in result.stdout or "RESULT empty" in result.stdout


# ------------------------------------------------------------------ run()


def valid_batch(predictor: Predictor, n: int = 2) -> dict[str, np.ndarray]:
    samples = [
        predictor.prepare(image=picture("red"), audio=tone(400.0, 8000), sample_rate=8000),
        predictor.prepare(text="blue"),
    ]
    return predictor.stack(samples[:n])


def test_run_takes_the_raw_model_contract(predictor: Predictor) -> None:
    scores, embedding = predictor.run(valid_batch(predictor))
    assert scores.shape == (2, 3) and embedding.shape == (2, predictor.spec.embed_dim)
    layout = predictor.input_layout()
    assert list(layout) == ["image", "audio", "tokens", "present"]
    assert layout["image"] == (np.uint8, (16, 16, 3))
    assert layout["present"] == (np.bool_, (3,))


def test_contract_layout_is_the_exported_graphs_inputs(model_path: Path) -> None:
    """contract.input_layout is what export wrote: names in order, dtypes, fixed dims."""
    import onnxruntime as ort

    from fusionedge.contract import input_layout
    from fusionedge.runtime.model_file import spec_from_metadata

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    graph = [(i.name, i.type, tuple(i.shape[1:])) for i in session.get_inputs()]
    metadata = session.get_modelmeta().custom_metadata_map
    layout = input_layout(spec_from_metadata(metadata, model_path))
    onnx_names = {"float32": "float"}  # ONNX's name for the one dtype numpy names otherwise
    expected = [(n, f"tensor({onnx_names.get(d, d)})", s) for n, (d, s) in layout.items()]
    assert graph == expected


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: b.pop("present"), r"missing \['present'\], unexpected \[\]"),
        (lambda b: b.pop("tokens"), r"missing \['tokens'\]"),
        (lambda b: b.update(extra=np.zeros((2, 1))), r"unexpected \['extra'\]"),
        (
            lambda b: b.update(image=b["image"].astype(np.float32)),
            r"input 'image': expected uint8 \[N, 16, 16, 3\], got float32",
        ),
        (
            lambda b: b.update(audio=b["audio"][:, :100]),
            r"input 'audio': expected float32 \[N, 4000\], got float32 \[2, 100\]",
        ),
        (
            lambda b: b.update(tokens=b["tokens"].astype(np.int32)),
            r"input 'tokens': expected int64 \[N, 12\], got int32",
        ),
        (
            lambda b: b.update(present=b["present"].astype(np.int64)),
            r"input 'present': expected bool \[N, 3\], got int64",
        ),
        (lambda b: b.update(present=b["present"][:1]), r"same batch size"),
    ],
    ids=[
        "no present",
        "no tokens",
        "extra",
        "image dtype",
        "audio shape",
        "tokens dtype",
        "present dtype",
        "batch sizes",
    ],
)
def test_run_refuses_bad_arrays(predictor: Predictor, change, message: str) -> None:
    batch = valid_batch(predictor)
    change(batch)
    with pytest.raises(ValueError, match=message):
        predictor.run(batch)


def test_run_refuses_a_list_input_naming_it(predictor: Predictor) -> None:
    batch = valid_batch(predictor)
    batch["image"] = batch["image"].tolist()
    with pytest.raises((TypeError, ValueError), match="image"):
        predictor.run(batch)


# ------------------------------------------------------------------ lifetime


def test_predictor_is_a_context_manager(model_path: Path) -> None:
    with Predictor.from_path(model_path, providers="cpu") as p:
        assert p.session is not None
        assert p.predict(text="red").label in LABELS
    assert p.session is None  # released on exit

    with (
        pytest.raises(RuntimeError, match="inside"),
        Predictor.from_path(model_path, providers="cpu") as q,
    ):
        raise RuntimeError("inside")  # errors pass through, the session is still released
    assert q.session is None


def test_threads_sharing_one_predictor_get_the_single_thread_answers(predictor: Predictor) -> None:
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(5)
    samples = [
        {
            "image": rng.integers(0, 256, (30 + k, 40, 3), dtype=np.uint8),
            "audio": (0.2 * rng.standard_normal(4000 + 37 * k)).astype(np.float32),
            "sample_rate": 8000,
            "text": ["red", "blue", "", "green light"][k % 4],
        }
        for k in range(24)
    ]
    alone = [predictor.predict(**x).scores for x in samples]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(5):
            shared = list(pool.map(lambda x: predictor.predict(**x).scores, samples))
            assert shared == alone
