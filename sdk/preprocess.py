"""Host-side preprocessing shared by training and the runtime (numpy + cv2 + soundfile + soxr).

Everything here turns what users have (files or arrays of any size, channel count, dtype
and sample rate) into exactly what the model contract takes: uint8 RGB images of the
spec's size, float32 mono PCM windows at the spec's rate, int64 token rows. The graph
does the rest (normalisation, log-mel), so training and deployment cannot drift apart.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from fusionedge.spec import AudioSpec, ImageSpec

log = logging.getLogger(__name__)

ColorOrder = Literal["rgb", "bgr"]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif")
# More channels than this means the caller almost surely passed [channels, samples].
MAX_CHANNELS = 64


class MediaError(ValueError):
    """A file could not be decoded, or an array cannot be converted to the spec."""


# ---------------------------------------------------------------------------------- image


def read_image(path: str | Path) -> np.ndarray:
    """Decodes an image file to RGB uint8 [H, W, 3], whatever its channels and bit depth.

    Raises:
        MediaError: the file is missing, empty or not an image OpenCV can decode.
    """
    path = Path(path)
    try:
        # np.fromfile + imdecode instead of imread: imread cannot open non-ASCII paths on
        # Windows and returns None without saying why.
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise MediaError(f"{path}: cannot read image file ({e.strerror})") from e
    # ANYCOLOR | ANYDEPTH keeps grey and 16-bit images as they are and, unlike
    # IMREAD_UNCHANGED, applies the EXIF orientation: portrait phone photos stay upright.
    flags = cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH
    decoded = cv2.imdecode(data, flags) if data.size else None
    if decoded is None:
        raise MediaError(
            f"{path}: not a decodable image ({data.size} bytes); accepted: "
            f"{', '.join(IMAGE_SUFFIXES)} as OpenCV reads them"
        )
    return to_rgb_uint8(decoded, color_order="bgr", name=str(path))


def to_rgb_uint8(image: np.ndarray, color_order: ColorOrder, name: str = "image") -> np.ndarray:
    """Converts an image array of any channel count and dtype to RGB uint8 [H, W, 3].

    Args:
        image: [H, W], [H, W, 1], [H, W, 3] or [H, W, 4]; uint8, uint16, or float in [0, 1].
        color_order: Channel order of 3/4-channel input: "rgb" or "bgr" (OpenCV's).
        name: How error messages refer to the input.
    """
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
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise MediaError(f"{name}: empty image of shape {image.shape}")
    image = _to_uint8(image, name)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        # Alpha is dropped rather than composited: the colour channels of a camera frame
        # or a saved screenshot already hold what a camera would see.
        code = cv2.COLOR_BGRA2RGB if color_order == "bgr" else cv2.COLOR_RGBA2RGB
        return cv2.cvtColor(image, code)
    if color_order == "bgr":
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(image)


def _to_uint8(image: np.ndarray, name: str) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return (image >> 8).astype(np.uint8)
    if image.dtype in (np.float16, np.float32, np.float64):
        if not np.isfinite(image).all():
            raise MediaError(f"{name}: float image contains NaN or infinity")
        return np.clip(np.rint(image.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    raise MediaError(
        f"{name}: dtype {image.dtype} is not supported; accepted: uint8, uint16, "
        "float16/32/64 in [0, 1]"
    )


def resize_image(rgb: np.ndarray, spec: ImageSpec) -> np.ndarray:
    """Resizes RGB uint8 [H, W, 3] to the spec's size and resize mode."""
    h, w = rgb.shape[:2]
    if (h, w) == (spec.height, spec.width):
        return rgb
    if spec.resize == "stretch":
        return _resize(rgb, spec.width, spec.height)
    scale = min(spec.width / w, spec.height / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    out = np.zeros((spec.height, spec.width, 3), dtype=np.uint8)
    top, left = (spec.height - nh) // 2, (spec.width - nw) // 2
    out[top : top + nh, left : left + nw] = _resize(rgb, nw, nh)
    return out


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    # INTER_AREA averages when shrinking (no aliasing from camera-sized frames);
    # INTER_LINEAR is the better choice for enlarging.
    shrinking = width * height < image.shape[0] * image.shape[1]
    return cv2.resize(
        image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    )


def prepare_image(
    image: np.ndarray, spec: ImageSpec, color_order: ColorOrder = "rgb", name: str = "image"
) -> np.ndarray:
    """Any image array -> the model's uint8 RGB [height, width, 3]."""
    return resize_image(to_rgb_uint8(image, color_order, name), spec)


# ---------------------------------------------------------------------------------- audio


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Decodes an audio file to float32 [samples, channels] in [-1, 1] and its sample rate.

    Raises:
        MediaError: the file is missing or not audio libsndfile can decode.
    """
    import soundfile

    path = Path(path)
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as e:
        raise MediaError(
            f"{path}: not decodable audio ({e}); accepted: WAV (PCM 8-32 bit or float), "
            "FLAC, OGG, AIFF"
        ) from e
    except OSError as e:
        raise MediaError(f"{path}: cannot read audio file ({e})") from e
    if data.shape[0] == 0:
        raise MediaError(f"{path}: audio file has no samples")
    return data, int(rate)


def to_mono_float32(audio: np.ndarray, name: str = "audio") -> np.ndarray:
    """[S] or [S, C] of float in [-1, 1] or int16/int32 PCM -> float32 [S] (channel mean)."""
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
    # Scale integer PCM before mixing down: the mean of int16 columns is float64 in
    # integer units, which would slip past the scaling.
    if audio.dtype == np.int16:
        audio = audio.astype(np.float32) / 32768.0
    elif audio.dtype == np.int32:
        audio = (audio.astype(np.float64) / 2147483648.0).astype(np.float32)
    elif audio.dtype not in (np.float32, np.float64, np.float16):
        raise MediaError(
            f"{name}: dtype {audio.dtype} is not supported; accepted: float "
            "in [-1, 1], int16 or int32 PCM"
        )
    if audio.ndim == 2:
        audio = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    audio = audio.astype(np.float32, copy=False)
    if not np.isfinite(audio).all():
        raise MediaError(f"{name}: audio contains NaN or infinity")
    return audio


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limited resampling of float32 mono audio (soxr, high quality)."""
    if rate_in == rate_out:
        return audio
    if rate_in <= 0:
        raise MediaError(f"sample rate must be positive, got {rate_in}")
    import soxr

    return soxr.resample(audio, rate_in, rate_out, quality="HQ").astype(np.float32, copy=False)


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


def prepare_audio(
    audio: np.ndarray, sample_rate: int, spec: AudioSpec, name: str = "audio"
) -> np.ndarray:
    """Any audio array at any rate -> the model's float32 [num_samples] at spec.sample_rate."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer):
        raise TypeError(f"{name}: sample_rate must be an int (Hz), got {sample_rate!r}")
    mono = to_mono_float32(audio, name)
    return fit_window(resample(mono, int(sample_rate), spec.sample_rate), spec.num_samples)


def load_image(path: str | Path, spec: ImageSpec) -> np.ndarray:
    """Image file -> the model's uint8 RGB [height, width, 3]."""
    return resize_image(read_image(path), spec)


def load_audio(path: str | Path, spec: AudioSpec) -> np.ndarray:
    """Audio file -> the model's float32 [num_samples]."""
    data, rate = read_audio(path)
    return prepare_audio(data, rate, spec, name=str(path))
