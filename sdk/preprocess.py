"""Host-side preprocessing shared by training and the runtime (numpy + cv2 + soundfile + soxr).

Everything here turns what users have (files or arrays of any size, channel count, dtype
and sample rate) into exactly what the model contract takes: uint8 RGB images of the
spec's size, float32 mono PCM windows at the spec's rate, int64 token rows. The graph
does the rest (normalisation, log-mel), so training and deployment cannot drift apart.

Decoding is bounded, because manifests and `--image`/`--audio` paths come from users:
only regular files are opened (a FIFO would block, a device never ends); an image's size
is read from its header and refused over MAX_IMAGE_PIXELS before any pixel is decoded;
an audio file is read only around the window the model takes; sample rates outside
MIN_SAMPLE_RATE..MAX_SAMPLE_RATE are refused. Values that would silently give wrong
answers are refused too: float images outside [0, 1], float audio outside [-1, 1].
"""

from __future__ import annotations

import io
import math
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np
from PIL import Image

from fusionedge.errors import MediaError
from fusionedge.spec import AudioSpec, ImageSpec

if TYPE_CHECKING:
    from soundfile import SoundFile

ColorOrder = Literal["rgb", "bgr"]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif")
# More channels than this means the caller almost surely passed [channels, samples].
MAX_CHANNELS = 64
# Images (files and arrays) with more pixels are refused. 50 megapixels is above any
# phone or camera photo (48 MP sensors) and decodes to 150 MB of 8-bit RGB, while a
# 30000x30000 PNG of zeros is about 100 KB on disk and 2.7 GB decoded.
MAX_IMAGE_PIXELS = 50_000_000
# And at most this many bytes decoded (8-bit RGBA at the pixel limit): a 16-bit image holds
# two bytes a sample, and OpenCV's PNG decoder keeps two copies while it works, so a
# 16-bit RGB image just under the pixel limit would peak near 600 MB.
MAX_DECODED_BYTES = 4 * MAX_IMAGE_PIXELS
# An image file larger than this is refused unread: it is the raw size of the largest
# image allowed (16-bit RGBA, 8 bytes a pixel, stored uncompressed).
MAX_IMAGE_FILE_BYTES = 8 * MAX_IMAGE_PIXELS
# Sample rates accepted for files and arrays, in Hz: from telephone-band recordings to
# the fastest studio converters. A wrong rate (1 Hz for a 16 kHz array) would otherwise
# make the resampler ask for gigabytes.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1_000, 768_000
# Samples, at the lower of the two rates, read beyond the window on each side before
# resampling: soxr's HQ filter reaches about 106 of them (measured from 1 kHz to
# 768 kHz), so what lies farther out cannot change the window.
RESAMPLE_MARGIN = 256
# libsndfile reports this many frames when a file does not say its length (a FLAC
# written to a pipe): the centre of such a file cannot be found without decoding it all.
_UNKNOWN_FRAMES = 2**63 - 1
# Elements converted at a time from float to uint8, so that a large float image needs no
# full-size float temporaries.
_CONVERT_CHUNK = 1 << 20
_NOT_REGULAR = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _regular_file_size(path: Path, kind: str) -> int:
    """The size of a regular file; anything else is refused without being opened.

    Opening a FIFO that has no writer blocks forever and a device such as /dev/zero never
    ends, so they are told apart by os.stat (which follows links), before any open.
    """
    try:
        info = os.stat(path)
    except OSError as e:
        raise MediaError(f"{path}: cannot read {kind} file ({e.strerror})") from e
    if not stat.S_ISREG(info.st_mode):
        what = next((name for test, name in _NOT_REGULAR if test(info.st_mode)), "special")
        raise MediaError(f"{path}: cannot read {kind} file: it is {what}, not a regular file")
    return info.st_size


@contextmanager
def _opencv_errors(name: str, action: str) -> Iterator[None]:
    """Turns cv2.error (OpenCV's answer to an allocation or size it refuses) into a MediaError."""
    try:
        yield
    except cv2.error as e:
        raise MediaError(f"{name}: OpenCV could not {action} ({e.err or e})") from e


# ---------------------------------------------------------------------------------- image


def read_image(path: str | Path) -> np.ndarray:
    """Decodes an image file to RGB uint8 [H, W, 3], whatever its channels and bit depth.

    Raises:
        MediaError: the file is missing, not a regular file, empty, over MAX_IMAGE_PIXELS
            or MAX_IMAGE_FILE_BYTES, or not an image OpenCV can decode.
    """
    path = Path(path)
    return to_rgb_uint8(_decode_image(path), color_order="bgr", name=str(path))


def _decode_image(path: Path) -> np.ndarray:
    """The file as OpenCV decodes it (BGR order, any depth), once its header passed."""
    raw = _image_bytes(path)
    _check_image_header(path, raw)
    # ANYCOLOR | ANYDEPTH keeps grey and 16-bit images as they are and, unlike
    # IMREAD_UNCHANGED, applies the EXIF orientation: portrait phone photos stay upright.
    flags = cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH
    with _opencv_errors(str(path), "decode the image"):
        decoded = cv2.imdecode(np.frombuffer(raw, np.uint8), flags)
    if decoded is None:
        raise _undecodable(path, len(raw))
    return decoded


def _image_bytes(path: Path) -> bytes:
    """The bytes of a regular image file of at most MAX_IMAGE_FILE_BYTES.

    They are read once, and both Pillow (the header) and OpenCV (the pixels) read them, so
    the header checked is the one decoded even if the file changes meanwhile.
    """
    size = _regular_file_size(path, "image")
    if size > MAX_IMAGE_FILE_BYTES:
        raise MediaError(
            f"{path}: image file of {size:,} bytes is over the limit of "
            f"{MAX_IMAGE_FILE_BYTES:,} bytes (the raw size of {MAX_IMAGE_PIXELS:,} pixels)"
        )
    try:
        # read_bytes + imdecode instead of imread: imread cannot open non-ASCII paths on
        # Windows and returns None without saying why.
        return path.read_bytes()
    except OSError as e:
        raise MediaError(f"{path}: cannot read image file ({e.strerror})") from e


def _undecodable(path: Path, size: int) -> MediaError:
    return MediaError(
        f"{path}: not a decodable image ({size} bytes); accepted: "
        f"{', '.join(IMAGE_SUFFIXES)} as OpenCV reads them, with a header Pillow reads"
    )


def _check_image_header(path: Path, raw: bytes) -> None:
    """Refuses an image whose header gives more than MAX_IMAGE_PIXELS, decoding no pixel.

    Pillow's open reads only the header; its own bomb check raises for more than twice
    its Image.MAX_IMAGE_PIXELS (179 megapixels by default), which is over ours as well.
    """
    try:
        with Image.open(io.BytesIO(raw)) as header:
            width, height = header.size
            decoded = width * height * len(header.getbands()) * _sample_bytes(header)
    except Image.DecompressionBombError as e:
        raise MediaError(
            f"{path}: image over the limit of {MAX_IMAGE_PIXELS:,} pixels, refused "
            f"before decoding ({e})"
        ) from e
    except Exception as e:
        # Pillow's plugins fail in many ways on a malformed header (UnidentifiedImageError,
        # ValueError, EOFError, KeyError...): each means there is no size to trust.
        raise _undecodable(path, len(raw)) from e
    if width * height > MAX_IMAGE_PIXELS:
        raise MediaError(
            f"{path}: image of {width}x{height} = {width * height:,} pixels is over the "
            f"limit of {MAX_IMAGE_PIXELS:,} pixels; refused before decoding"
        )
    if decoded > MAX_DECODED_BYTES:
        raise MediaError(
            f"{path}: image of {width}x{height} decodes to {decoded:,} bytes, over the "
            f"limit of {MAX_DECODED_BYTES:,} (a high bit depth or many channels); refused "
            "before decoding: save it as 8-bit or smaller"
        )


def _sample_bytes(header: Image.Image) -> int:
    """Bytes per sample as decoded: 2 for 16-bit data (Pillow's raw mode says "16"; its
    own mode is "RGB" for 48-bit PNGs), 4 for 32-bit, else 1."""
    raw_modes = " ".join(str(tile.args) for tile in header.tile) + " " + header.mode
    return 4 if "32" in raw_modes else 2 if "16" in raw_modes else 1


def to_rgb_uint8(image: np.ndarray, color_order: ColorOrder, name: str = "image") -> np.ndarray:
    """Converts an image array of any channel count and dtype to RGB uint8 [H, W, 3].

    Args:
        image: [H, W], [H, W, 1], [H, W, 3] or [H, W, 4]; uint8, uint16, or float in
            [0, 1]; at most MAX_IMAGE_PIXELS pixels.
        color_order: Channel order of 3/4-channel input: "rgb" or "bgr" (OpenCV's).
        name: How error messages refer to the input.
    """
    return _to_rgb(_checked_uint8(image, color_order, name), color_order, name)


def _checked_uint8(image: np.ndarray, color_order: str, name: str) -> np.ndarray:
    """Checks an image array and converts it to uint8 [H, W] or [H, W, 3|4]."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, got {type(image).__name__}")
    if color_order not in ("rgb", "bgr"):
        raise ValueError(f"color_order must be 'rgb' or 'bgr', got {color_order!r}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise MediaError(
            f"{name}: shape {image.shape} is not an image; accepted: [H, W], [H, W, 1], "
            "[H, W, 3] or [H, W, 4]"
        )
    h, w = image.shape[:2]
    if h < 1 or w < 1:
        raise MediaError(f"{name}: empty image of shape {image.shape}")
    if h * w > MAX_IMAGE_PIXELS:
        raise MediaError(
            f"{name}: image of {w}x{h} = {h * w:,} pixels is over the limit of "
            f"{MAX_IMAGE_PIXELS:,} pixels; downscale it first"
        )
    return _to_uint8(image, name)


def _to_uint8(image: np.ndarray, name: str) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        # The high byte, shifted straight into a uint8 array: no uint16 temporary.
        out = np.empty(image.shape, np.uint8)
        np.right_shift(image, 8, out=out, casting="unsafe")
        return out
    if image.dtype in (np.float16, np.float32, np.float64):
        return _float_to_uint8(image, name)
    raise MediaError(
        f"{name}: dtype {image.dtype} is not supported; accepted: uint8, uint16, "
        "float16/32/64 in [0, 1]"
    )


def _float_to_uint8(image: np.ndarray, name: str) -> np.ndarray:
    """Float in [0, 1] -> uint8, refusing other values: 0-255 floats would clip to white."""
    # min and max allocate nothing and propagate NaN, unlike np.isfinite(image).all().
    low, high = float(image.min()), float(image.max())
    if not (math.isfinite(low) and math.isfinite(high)):
        raise MediaError(f"{name}: float image contains NaN or infinity")
    if low < 0.0 or high > 1.0:
        raise MediaError(
            f"{name}: float image values must lie in [0, 1], got {low:g} to {high:g}; "
            "divide 0-255 values by 255, or pass them as uint8"
        )
    out = np.empty(image.shape, np.uint8)
    rows = max(1, _CONVERT_CHUNK // (image[0].size or 1))
    for top in range(0, image.shape[0], rows):
        # The same float32 arithmetic as for a whole image, a block of rows at a time.
        out[top : top + rows] = np.rint(image[top : top + rows].astype(np.float32) * 255.0)
    return out


def _to_rgb(image: np.ndarray, color_order: str, name: str) -> np.ndarray:
    """uint8 [H, W] or [H, W, 3|4] in color_order -> RGB uint8 [H, W, 3]."""
    with _opencv_errors(name, "convert the image's colours"):
        if image.ndim == 2:
            return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        if image.shape[2] == 4:
            # Alpha is dropped rather than composited: the colour channels of a camera
            # frame or a saved screenshot already hold what a camera would see.
            code = cv2.COLOR_BGRA2RGB if color_order == "bgr" else cv2.COLOR_RGBA2RGB
            return cv2.cvtColor(image, code)
        if color_order == "bgr":
            return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(image)


def resize_image(rgb: np.ndarray, spec: ImageSpec, name: str = "image") -> np.ndarray:
    """Resizes uint8 [H, W] or [H, W, C] (RGB in practice) to the spec's size and mode."""
    h, w = rgb.shape[:2]
    if (h, w) == (spec.height, spec.width):
        return rgb
    if spec.resize == "stretch":
        return _resize(rgb, spec.width, spec.height, name)
    scale = min(spec.width / w, spec.height / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    out = np.zeros((spec.height, spec.width, *rgb.shape[2:]), dtype=np.uint8)
    top, left = (spec.height - nh) // 2, (spec.width - nw) // 2
    out[top : top + nh, left : left + nw] = _resize(rgb, nw, nh, name)
    return out


def _resize(image: np.ndarray, width: int, height: int, name: str) -> np.ndarray:
    # INTER_AREA averages when shrinking (no aliasing from camera-sized frames);
    # INTER_LINEAR is the better choice for enlarging.
    shrinking = width * height < image.shape[0] * image.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    with _opencv_errors(name, "resize the image"):
        return cv2.resize(image, (width, height), interpolation=interpolation)


def prepare_image(
    image: np.ndarray, spec: ImageSpec, color_order: ColorOrder = "rgb", name: str = "image"
) -> np.ndarray:
    """Any image array -> the model's uint8 RGB [height, width, 3].

    Resizing comes before the colour conversion: both act per channel, so the pixels are
    the same either way, and only the small result is converted; a full-size RGB copy of
    a 50-megapixel frame would take 150 MB.
    """
    small = resize_image(_checked_uint8(image, color_order, name), spec, name)
    return _to_rgb(small, color_order, name)


# ---------------------------------------------------------------------------------- audio


@contextmanager
def _sound_errors(path: Path) -> Iterator[None]:
    """Turns libsndfile's failures while opening or reading path into a MediaError."""
    import soundfile

    try:
        yield
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as e:
        raise MediaError(
            f"{path}: not decodable audio ({e}); accepted: WAV (PCM 8-32 bit or float), "
            "FLAC, OGG, AIFF"
        ) from e
    except OSError as e:
        raise MediaError(f"{path}: cannot read audio file ({e})") from e


def _frame_count(sound: SoundFile, path: Path) -> int:
    """The file's frame count from its header; a file without one is refused."""
    frames = int(sound.frames)
    if frames == 0:
        raise MediaError(f"{path}: audio file has no samples")
    if frames >= _UNKNOWN_FRAMES:
        raise MediaError(
            f"{path}: the audio file does not say how long it is (written to a pipe?); "
            "re-encode it to a file, e.g. ffmpeg -i in.flac out.flac"
        )
    return frames


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Decodes a whole audio file to float32 [samples, channels] in [-1, 1] and its rate.

    Raises:
        MediaError: the file is missing, not a regular file, not audio libsndfile can
            decode, or has a sample rate outside MIN_SAMPLE_RATE..MAX_SAMPLE_RATE.
    """
    import soundfile

    path = Path(path)
    _regular_file_size(path, "audio")
    with _sound_errors(path), soundfile.SoundFile(str(path)) as sound:
        rate = _checked_rate(sound.samplerate, str(path))
        frames = _frame_count(sound, path)
        data = sound.read(frames, dtype="float32", always_2d=True)
    return data, rate


def _checked_rate(sample_rate: int, name: str) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer):
        raise TypeError(f"{name}: sample_rate must be an int (Hz), got {sample_rate!r}")
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise MediaError(
            f"{name}: sample rate {sample_rate} Hz is not accepted; accepted: "
            f"{MIN_SAMPLE_RATE:,} to {MAX_SAMPLE_RATE:,} Hz"
        )
    return int(sample_rate)


def _check_audio(audio: np.ndarray, name: str) -> None:
    """Checks type, shape, dtype and (for float) the value range, allocating nothing."""
    if not isinstance(audio, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, got {type(audio).__name__}")
    if audio.ndim not in (1, 2) or (audio.ndim == 2 and audio.shape[1] == 0) or not len(audio):
        raise MediaError(
            f"{name}: shape {audio.shape} is not audio; accepted: [samples] or [samples, channels]"
        )
    if audio.ndim == 2 and audio.shape[1] > MAX_CHANNELS:
        raise MediaError(
            f"{name}: shape {audio.shape} has {audio.shape[1]} channels; "
            "accepted: [samples, channels] (transpose a [channels, samples] array)"
        )
    if audio.dtype in (np.int16, np.int32):
        return
    if audio.dtype not in (np.float32, np.float64, np.float16):
        raise MediaError(
            f"{name}: dtype {audio.dtype} is not supported; accepted: float "
            "in [-1, 1], int16 or int32 PCM"
        )
    low, high = float(audio.min()), float(audio.max())  # NaN propagates through both
    if not (math.isfinite(low) and math.isfinite(high)):
        raise MediaError(f"{name}: audio contains NaN or infinity")
    if low < -1.0 or high > 1.0:
        # Float audio in int16 units would pass as a deafening square wave.
        raise MediaError(
            f"{name}: float audio must lie in [-1, 1], got {low:g} to {high:g}; divide "
            "int16 values by 32768 (int32 by 2147483648), or pass the integer array as is"
        )


def to_mono_float32(audio: np.ndarray, name: str = "audio") -> np.ndarray:
    """[S] or [S, C] of float in [-1, 1] or int16/int32 PCM -> float32 [S] (channel mean)."""
    _check_audio(audio, name)
    # Scale integer PCM before mixing down: the mean of int16 columns is float64 in
    # integer units, which would slip past the scaling.
    if audio.dtype == np.int16:
        audio = audio.astype(np.float32) / 32768.0
    elif audio.dtype == np.int32:
        audio = (audio.astype(np.float64) / 2147483648.0).astype(np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    return audio.astype(np.float32, copy=False)


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limited resampling of float32 mono audio (soxr, high quality)."""
    if rate_in == rate_out:
        return audio
    if rate_in <= 0:
        raise MediaError(f"sample rate must be positive, got {rate_in}")
    import soxr

    return soxr.resample(audio, rate_in, rate_out, quality="HQ").astype(np.float32, copy=False)


def resampled_length(frames: int, rate_in: int, rate_out: int) -> int:
    """The number of samples `resample` returns for `frames` input samples.

    soxr gives frames * rate_out / rate_in rounded half up (checked against soxr in
    tests/reliability/test_hostile_media.py).
    """
    if rate_in == rate_out:
        return frames
    return (frames * rate_out + rate_in // 2) // rate_in


def fit_window(audio: np.ndarray, num_samples: int) -> np.ndarray:
    """Centre-crops or symmetrically zero-pads mono audio to exactly num_samples.

    Centring keeps an utterance that was recorded with some lead-in and tail inside the
    window, which is what users' short clips look like.
    """
    n = audio.shape[0]
    if n == num_samples:
        return audio
    if n > num_samples:
        start = (n - num_samples) // 2
        return audio[start : start + num_samples]
    out = np.zeros(num_samples, dtype=np.float32)
    start = (num_samples - n) // 2
    out[start : start + n] = audio
    return out


@dataclass(frozen=True)
class _Span:
    """The input frames [start, stop) that decide the model's window.

    skip: resampled samples before the window; None when the whole input is read and
    fit_window pads it (it is no longer than the window).
    """

    start: int
    stop: int
    skip: int | None


def _window_span(frames: int, rate_in: int, spec: AudioSpec) -> _Span:
    """Where fit_window(resample(all frames)) takes its window from, in input frames.

    The start is moved back to a multiple of rate_in / gcd(rate_in, rate_out) input
    frames, where input and output samples fall at the same instant, so the part's
    resampled samples lie on the whole input's output grid.
    """
    rate_out, n = spec.sample_rate, spec.num_samples
    total = resampled_length(frames, rate_in, rate_out)
    if total <= n:
        return _Span(0, frames, None)
    first = (total - n) // 2  # fit_window's centre crop, in output samples
    if rate_in == rate_out:
        return _Span(first, first + n, 0)
    step = rate_in // math.gcd(rate_in, rate_out)
    margin = -(-RESAMPLE_MARGIN * rate_in // min(rate_in, rate_out))
    start = max(0, (first * rate_in // rate_out - margin) // step * step)
    stop = min(frames, -(-(first + n) * rate_in // rate_out) + margin)
    return _Span(start, stop, first - start * rate_out // rate_in)


def _window(mono: np.ndarray, rate_in: int, spec: AudioSpec, span: _Span) -> np.ndarray:
    """The model's window from the mono frames of span, resampled to the spec's rate."""
    out = resample(mono, rate_in, spec.sample_rate)
    if span.skip is None:
        return fit_window(out, spec.num_samples)
    return out[span.skip : span.skip + spec.num_samples]


def prepare_audio(
    audio: np.ndarray, sample_rate: int, spec: AudioSpec, name: str = "audio"
) -> np.ndarray:
    """Any audio array at any rate -> the model's float32 [num_samples] at spec.sample_rate.

    The window is cut at the input rate (with the resampler's margin) before anything is
    converted or resampled, so a long array costs no more than a window's worth.
    """
    rate = _checked_rate(sample_rate, name)
    _check_audio(audio, name)
    span = _window_span(len(audio), rate, spec)
    return _window(to_mono_float32(audio[span.start : span.stop], name), rate, spec, span)


def load_image(path: str | Path, spec: ImageSpec) -> np.ndarray:
    """Image file -> the model's uint8 RGB [height, width, 3] (the pixels of read_image)."""
    path = Path(path)
    return prepare_image(_decode_image(path), spec, "bgr", name=str(path))


def load_audio(path: str | Path, spec: AudioSpec) -> np.ndarray:
    """Audio file -> the model's float32 [num_samples]: prepare_audio of read_audio.

    Only the frames that decide the window are decoded: the header gives the length and
    rate, libsndfile seeks to the window, so a 10-hour file costs what a clip does.
    """
    import soundfile

    path = Path(path)
    _regular_file_size(path, "audio")
    with _sound_errors(path), soundfile.SoundFile(str(path)) as sound:
        rate = _checked_rate(sound.samplerate, str(path))
        frames = _frame_count(sound, path)
        span = _window_span(frames, rate, spec)
        if span.start:
            sound.seek(span.start)
        data = sound.read(span.stop - span.start, dtype="float32", always_2d=True)
    if len(data) != span.stop - span.start:
        # A window taken from where the header says the file is would not be its centre.
        raise MediaError(
            f"{path}: the audio file ends early: {span.start + len(data)} frames where its "
            f"header says {frames}"
        )
    return _window(to_mono_float32(data, str(path)), rate, spec, span)
