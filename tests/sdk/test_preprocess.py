"""Host-side preprocessing: real image and audio files of every kind users have -> the spec."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from fusionedge.preprocess import (
    MediaError,
    fit_window,
    load_audio,
    load_image,
    prepare_audio,
    prepare_image,
    read_audio,
    read_image,
    resample,
    to_mono_float32,
    to_rgb_uint8,
)
from fusionedge.spec import AudioSpec, ImageSpec

SPEC = ImageSpec(height=16, width=24)
RED_BGR = (0, 0, 255)
RED_RGB = np.array([255, 0, 0], np.uint8)
AUDIO_SPEC = AudioSpec(sample_rate=16000, num_samples=16000)


def solid(h: int, w: int, colour: tuple[int, ...], dtype=np.uint8) -> np.ndarray:
    return np.broadcast_to(np.array(colour, dtype), (h, w, len(colour))).copy()


def peak_hz(audio: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1 / rate)[spectrum.argmax()])


# ---------------------------------------------------------------------------- image files


def test_grayscale_png_becomes_three_equal_channels(tmp_path, media):
    gray = np.arange(12 * 20, dtype=np.uint8).reshape(12, 20)
    rgb = read_image(media.png(tmp_path / "g.png", gray))
    assert rgb.shape == (12, 20, 3) and rgb.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(rgb[:, :, c], gray)


@pytest.mark.parametrize("channels", [1, 3])
def test_16_bit_png_keeps_the_high_byte(tmp_path, media, channels):
    values = np.array([[0, 255, 256, 100 * 256 + 255, 65535]], np.uint16)
    image = np.repeat(values[:, :, None], channels, axis=2) if channels == 3 else values
    path = media.png(tmp_path / "deep.png", image)
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).dtype == np.uint16  # really 16-bit
    rgb = read_image(path)
    assert rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[0, :, 0], [0, 0, 1, 100, 255])


def test_rgba_png_drops_alpha_and_keeps_colour(tmp_path, media):
    bgra = solid(5, 7, (*RED_BGR, 255))
    bgra[:, :3, 3] = 0  # a transparent part: colour channels are kept, not composited
    rgb = read_image(media.png(tmp_path / "rgba.png", bgra))
    assert rgb.shape == (5, 7, 3)
    assert (rgb == RED_RGB).all()


def test_red_png_reads_as_red_in_rgb(tmp_path, media):
    rgb = read_image(media.png(tmp_path / "red.png", solid(6, 9, RED_BGR)))
    assert (rgb == RED_RGB).all()


def test_jpeg_colour_survives_lossy_coding(tmp_path, media):
    path = media.png(tmp_path / "red.jpg", solid(32, 32, RED_BGR))
    rgb = load_image(path, SPEC)
    assert rgb.shape == (16, 24, 3)
    assert rgb[..., 0].min() > 230 and rgb[..., 1:].max() < 25


@pytest.mark.parametrize("size", [(1, 1), (3, 1000), (1000, 3), (17, 23), (16, 24)])
@pytest.mark.parametrize("mode", ["stretch", "letterbox"])
def test_odd_sizes_come_out_at_the_spec_size(tmp_path, media, size, mode):
    path = media.png(tmp_path / "odd.png", solid(*size, RED_BGR))
    out = load_image(path, ImageSpec(height=16, width=24, resize=mode))
    assert out.shape == (16, 24, 3) and out.dtype == np.uint8
    lit = out.any(axis=2)
    assert lit.any()
    assert (out[lit] == RED_RGB).all()  # no colour bleeding from resizing a solid colour
    if mode == "stretch":
        assert lit.all()


@pytest.mark.parametrize(
    ("size", "rows", "cols"),
    [
        ((20, 40), slice(4, 12), slice(0, 16)),  # wide: 16x8 content, 4 black rows each side
        ((40, 20), slice(0, 16), slice(4, 12)),  # tall: 8x16 content, 4 black columns each side
        ((10, 10), slice(0, 16), slice(0, 16)),  # same aspect: enlarged, no padding
    ],
)
def test_letterbox_keeps_aspect_and_pads_black(size, rows, cols):
    white = np.full((*size, 3), 255, np.uint8)
    out = prepare_image(white, ImageSpec(height=16, width=16, resize="letterbox"))
    assert out.shape == (16, 16, 3)
    inside = np.zeros((16, 16), bool)
    inside[rows, cols] = True
    assert (out[inside] == 255).all()
    assert (out[~inside] == 0).all()


def test_stretch_fills_the_frame():
    out = prepare_image(np.full((20, 40, 3), 255, np.uint8), ImageSpec(height=16, width=16))
    assert (out == 255).all()


def test_image_at_spec_size_is_not_resampled():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
    np.testing.assert_array_equal(prepare_image(image, SPEC), image)


def _truncated(ext: str):
    def write(path: Path) -> None:
        noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), np.uint8)
        ok, buf = cv2.imencode(ext, noise)
        assert ok
        path.write_bytes(buf.tobytes()[: len(buf) // 2])

    return write


CORRUPT_IMAGES = [
    ("random.png", lambda p: p.write_bytes(np.random.default_rng(1).bytes(500)), "decodable"),
    ("empty.png", lambda p: p.write_bytes(b""), "decodable image (0 bytes)"),
    ("truncated.png", _truncated(".png"), "decodable"),
    ("truncated.jpg", _truncated(".jpg"), "decodable"),
    ("text.jpg", lambda p: p.write_text("not an image"), "decodable"),
    ("missing.png", lambda p: None, "cannot read image file"),
    ("folder.png", lambda p: p.mkdir(), "cannot read image file"),
]


@pytest.mark.parametrize(
    ("name", "write", "fragment"), CORRUPT_IMAGES, ids=[c[0] for c in CORRUPT_IMAGES]
)
def test_corrupt_image_file_raises_media_error_naming_the_path(tmp_path, name, write, fragment):
    path = tmp_path / name
    write(path)
    for call in (lambda: read_image(path), lambda: load_image(str(path), SPEC)):
        with pytest.raises(MediaError) as err:
            call()
        assert str(path) in str(err.value) and fragment in str(err.value)


def test_jpeg_exif_orientation_is_applied(tmp_path, media):
    path = media.png(tmp_path / "plain.jpg", solid(20, 40, RED_BGR))
    data = path.read_bytes()
    # A minimal big-endian EXIF block with one tag: Orientation (0x0112) = 6 (rotate 90° CW).
    tiff = b"MM\x00\x2a\x00\x00\x00\x08" + struct.pack(">HHHIHHI", 1, 0x0112, 3, 1, 6, 0, 0)
    app1 = b"Exif\x00\x00" + tiff
    rotated = tmp_path / "rotated.jpg"
    rotated.write_bytes(data[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + data[2:])
    assert cv2.imread(str(rotated)).shape == (40, 20, 3)  # what viewers show
    assert read_image(rotated).shape == (40, 20, 3)


# --------------------------------------------------------------------------- image arrays


def test_rgb_and_bgr_arrays():
    red_rgb = solid(4, 4, (255, 0, 0))
    assert (prepare_image(red_rgb, SPEC, color_order="rgb") == RED_RGB).all()
    assert (prepare_image(solid(4, 4, RED_BGR), SPEC, color_order="bgr") == RED_RGB).all()
    # The same array read with the other order is blue: the argument is honoured.
    assert (prepare_image(red_rgb, SPEC, color_order="bgr") == [0, 0, 255]).all()
    rgba = solid(4, 4, (255, 0, 0, 10))
    assert (to_rgb_uint8(rgba, "rgb") == RED_RGB).all()
    with pytest.raises(ValueError, match="'RGB'"):
        to_rgb_uint8(red_rgb, "RGB")  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_float_images_in_0_1(dtype):
    image = np.array([[0.0, 0.5, 1.0], [0.25, 0.75, 0.2]], dtype)
    out = to_rgb_uint8(image, "rgb")
    expected = np.array([[0, 128, 255], [64, 191, 51]], np.uint8)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], expected)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("bad", [-0.25, 1.5, 255.0])
def test_float_image_outside_0_1_is_refused_not_clipped(dtype, bad):
    # Clipping a 0-255 float image made it all white: a wrong answer, not an error.
    image = np.array([[0.0, 0.5, bad]], dtype)
    with pytest.raises(MediaError, match=r"frame: float image values must lie in \[0, 1\]"):
        to_rgb_uint8(image, "rgb", name="frame")


def test_float_image_with_nan_raises():
    image = np.zeros((4, 4, 3), np.float32)
    image[1, 2, 0] = np.nan
    with pytest.raises(MediaError, match="frame: float image contains NaN"):
        to_rgb_uint8(image, "rgb", name="frame")


@pytest.mark.parametrize("shape", [(4, 4, 2), (4, 4, 5), (4,), (2, 4, 4, 3), ()])
def test_wrong_image_shape_lists_accepted_shapes(shape):
    with pytest.raises(MediaError, match=r"accepted: \[H, W\], \[H, W, 1\], \[H, W, 3\]"):
        prepare_image(np.zeros(shape, np.uint8), SPEC)


@pytest.mark.parametrize("shape", [(0, 4, 3), (4, 0)])
def test_empty_image_array_raises(shape):
    with pytest.raises(MediaError, match="empty image"):
        prepare_image(np.zeros(shape, np.uint8), SPEC)


@pytest.mark.parametrize("dtype", [np.int32, np.int8, bool])
def test_unsupported_image_dtype(dtype):
    with pytest.raises(MediaError, match="accepted: uint8, uint16"):
        to_rgb_uint8(np.zeros((4, 4, 3), dtype), "rgb")


def test_image_must_be_an_array():
    with pytest.raises(TypeError, match="got list"):
        prepare_image([[0, 0], [0, 0]], SPEC)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- audio files


def test_wav_pcm16_stereo_8khz(tmp_path, media):
    left, right = media.sine(440, 8000, 0.5, 0.6), media.sine(440, 8000, 0.5, 0.2)
    path = media.audio(tmp_path / "s.wav", np.stack([left, right], axis=1), 8000, "PCM_16")
    data, rate = read_audio(path)
    assert rate == 8000 and data.shape == (4000, 2) and data.dtype == np.float32
    np.testing.assert_allclose(data[:, 0], left, atol=1 / 32768 + 1e-7)
    out = load_audio(path, AUDIO_SPEC)
    assert out.shape == (16000,) and out.dtype == np.float32
    # 0.5 s at 16 kHz = 8000 samples, centred in a 16000-sample window: 4000 zeros each side.
    assert not out[:3990].any() and not out[-3990:].any()
    middle = out[4100:11900]
    assert abs(np.abs(middle).max() - 0.4) < 0.01  # the mean of the two channels
    assert abs(peak_hz(middle, 16000) - 440) < 4


def test_float_wav_44k(tmp_path, media):
    tone = media.sine(440, 44100, 1.0, 0.9)
    path = media.audio(tmp_path / "f.wav", tone, 44100, "FLOAT")
    data, rate = read_audio(path)
    assert rate == 44100
    np.testing.assert_array_equal(data[:, 0], tone)  # float32 WAV is lossless
    out = load_audio(path, AUDIO_SPEC)
    assert out.shape == (16000,)
    assert abs(peak_hz(out, 16000) - 440) <= 1


def test_flac_24_bit(tmp_path, media):
    tone = media.sine(1000, 16000, 0.25, 0.7)
    path = media.audio(tmp_path / "deep.flac", np.stack([tone, -tone], axis=1), 16000, "PCM_24")
    data, rate = read_audio(path)
    assert rate == 16000 and data.shape == (4000, 2)
    np.testing.assert_allclose(data[:, 0], tone, atol=2**-22)
    np.testing.assert_allclose(data[:, 1], -tone, atol=2**-22)
    spec = AudioSpec(sample_rate=16000, num_samples=2000)
    out = load_audio(path, spec)
    # Opposite channels cancel in the mean; the centre crop is 2000 samples long.
    assert out.shape == (2000,) and np.abs(out).max() < 1e-6


# --------------------------------------------------------------------------- audio arrays


def test_mono_int16_array_is_scaled_to_unit_range():
    pcm = np.array([0, 16384, -16384, 32767, -32768], np.int16)
    out = to_mono_float32(pcm)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0, 0.5, -0.5, 32767 / 32768, -1.0])
    np.testing.assert_allclose(to_mono_float32(pcm[:, None]), out)
    window = prepare_audio(pcm, 16000, AudioSpec(sample_rate=16000, num_samples=1000))
    assert window.shape == (1000,) and window.dtype == np.float32 and np.abs(window).max() == 1.0


def test_mono_int32_array_is_scaled_to_unit_range():
    pcm = np.array([2**30, -(2**31)], np.int32)
    np.testing.assert_allclose(to_mono_float32(pcm), [0.5, -1.0])


@pytest.mark.parametrize("dtype", [np.int16, np.int32])
def test_stereo_integer_array_is_scaled_to_unit_range(dtype):
    full = np.iinfo(dtype).max + 1
    pcm = np.array([[full // 2, full // 2], [0, -full // 2]], dtype)
    np.testing.assert_allclose(to_mono_float32(pcm), [0.5, -0.25])


def test_stereo_float_array_is_channel_mean():
    stereo = np.array([[1.0, 0.0], [0.5, -0.5], [-1.0, -0.5]], np.float64)
    out = to_mono_float32(stereo)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0.5, 0.0, -0.75])


@pytest.mark.parametrize("rate_in", [8000, 22050, 44100, 48000])
def test_resampling_preserves_a_440_hz_tone(rate_in):
    tone = np.sin(2 * np.pi * 440 * np.arange(rate_in) / rate_in).astype(np.float32) * 0.5
    out = prepare_audio(tone, rate_in, AUDIO_SPEC)
    assert out.shape == (16000,) and out.dtype == np.float32
    assert abs(peak_hz(out, 16000) - 440) <= 1
    rms = np.sqrt(np.mean(out[1000:-1000] ** 2))
    assert abs(rms - 0.5 / np.sqrt(2)) < 0.01  # no gain change


def test_resample_changes_length_by_the_rate_ratio():
    audio = np.zeros(4410, np.float32)
    assert len(resample(audio, 44100, 16000)) == 1600
    assert resample(audio, 16000, 16000) is audio


def test_fit_window_crops_centred():
    audio = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(fit_window(audio, 4), [3, 4, 5, 6])
    np.testing.assert_array_equal(fit_window(np.arange(11, dtype=np.float32), 4), [3, 4, 5, 6])
    assert fit_window(audio, 10) is audio


def test_fit_window_pads_symmetrically():
    audio = np.array([1, 2, 3], np.float32)
    out = fit_window(audio, 8)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [0, 0, 1, 2, 3, 0, 0, 0])
    np.testing.assert_array_equal(fit_window(audio, 7), [0, 0, 1, 2, 3, 0, 0])
    np.testing.assert_array_equal(fit_window(np.zeros(0, np.float32), 3), [0, 0, 0])


def _truncated_wav(path: Path) -> None:
    import soundfile as sf

    sf.write(str(path), np.zeros(1000, np.float32), 16000, subtype="PCM_16")
    path.write_bytes(path.read_bytes()[:30])  # inside the header: no data chunk


def _silent_wav(path: Path) -> None:
    import soundfile as sf

    sf.write(str(path), np.zeros((0, 1), np.float32), 16000)


CORRUPT_AUDIO = [
    ("random.wav", lambda p: p.write_bytes(np.random.default_rng(2).bytes(800)), "decodable"),
    ("empty.wav", lambda p: p.write_bytes(b""), "decodable"),
    ("header.wav", _truncated_wav, "decodable"),
    ("text.flac", lambda p: p.write_text("not audio"), "decodable"),
    ("zero.wav", _silent_wav, "has no samples"),
    ("missing.wav", lambda p: None, ""),
    ("folder.wav", lambda p: p.mkdir(), ""),
]


@pytest.mark.parametrize(
    ("name", "write", "fragment"), CORRUPT_AUDIO, ids=[c[0] for c in CORRUPT_AUDIO]
)
def test_corrupt_audio_file_raises_media_error_naming_the_path(tmp_path, name, write, fragment):
    path = tmp_path / name
    write(path)
    for call in (lambda: read_audio(path), lambda: load_audio(str(path), AUDIO_SPEC)):
        with pytest.raises(MediaError) as err:
            call()
        assert str(path) in str(err.value) and fragment in str(err.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("shape", [(100,), (100, 2)])
def test_non_finite_audio_raises(bad, shape):
    audio = np.zeros(shape, np.float32)
    audio[50] = bad
    with pytest.raises(MediaError, match="mic: audio contains NaN or infinity"):
        prepare_audio(audio, 16000, AUDIO_SPEC, name="mic")


@pytest.mark.parametrize("shape", [(), (2, 3, 4), (1, 1, 1)])
def test_wrong_audio_shape_lists_accepted_shapes(shape):
    with pytest.raises(MediaError, match=r"accepted: \[samples\] or \[samples, channels\]"):
        prepare_audio(np.zeros(shape, np.float32), 16000, AUDIO_SPEC)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.complex64])
def test_unsupported_audio_dtype(dtype):
    with pytest.raises(MediaError, match="accepted: float in"):
        to_mono_float32(np.zeros(8, dtype))


@pytest.mark.parametrize("rate", [16000.0, "16000", True, None])
def test_sample_rate_of_wrong_type_is_a_type_error(rate):
    with pytest.raises(TypeError, match="sample_rate must be an int"):
        prepare_audio(np.zeros(100, np.float32), rate, AUDIO_SPEC)  # type: ignore[arg-type]


def test_numpy_integer_sample_rate_is_accepted():
    assert prepare_audio(np.zeros(800, np.float32), np.int64(8000), AUDIO_SPEC).shape == (16000,)


@pytest.mark.parametrize("rate", [0, -8000])
def test_non_positive_sample_rate_raises(rate):
    with pytest.raises(MediaError, match=f"sample rate {rate} Hz is not accepted"):
        prepare_audio(np.zeros(100, np.float32), rate, AUDIO_SPEC)


def test_audio_must_be_an_array():
    with pytest.raises(TypeError, match="got list"):
        prepare_audio([0.0, 0.1], 16000, AUDIO_SPEC)  # type: ignore[arg-type]
