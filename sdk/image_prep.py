"""Images from users' files and arrays -> the model's uint8 RGB [height, width, 3] (numpy + cv2).

Any channel count (grey, RGB, RGBA; BGR as OpenCV gives it) and dtype (uint8, uint16, float
in [0, 1]) becomes RGB uint8, resized to the spec (`stretch` or `letterbox`); the graph
normalises. Float images outside [0, 1] are refused rather than clipped to white.

Decoding is bounded, because manifests and `--image` paths come from users: only regular
files are opened (fusionedge.media_files); an image's size is read from its header and
refused over MAX_IMAGE_PIXELS (or MAX_DECODED_BYTES) before any pixel is decoded; arrays
over MAX_IMAGE_PIXELS are refused too.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from PIL import Image

from fusionedge.errors import MediaError
from fusionedge.media_files import opencv_errors, regular_file_size
from fusionedge.spec import ImageSpec

ColorOrder = Literal["rgb", "bgr"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm")
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
# Elements converted at a time from float to uint8, so that a large float image needs no
# full-size float temporaries.
_CONVERT_CHUNK = 1 << 20


def read_image(path: str | Path) -> np.ndarray:
    """Decodes an image file to RGB uint8 [H, W, 3], whatever its channels and bit depth.

    Raises:
        MediaError: the file is missing, not a regular file, empty, over MAX_IMAGE_PIXELS
            or MAX_IMAGE_FILE_BYTES, or not an image OpenCV can decode.
    """
    path = Path(path)
    return to_rgb_uint8(decode_image(path), color_order="bgr", name=str(path))


def decode_image(path: Path) -> np.ndarray:
    """The file as OpenCV decodes it (BGR order, any depth), once its header passed."""
    raw = _image_bytes(path)
    _check_image_header(path, raw)
    # ANYCOLOR | ANYDEPTH keeps grey and 16-bit images as they are and, unlike
    # IMREAD_UNCHANGED, applies the EXIF orientation: portrait phone photos stay upright.
    flags = cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH
    with opencv_errors(str(path), "decode the image"):
        decoded = cv2.imdecode(np.frombuffer(raw, np.uint8), flags)
    if decoded is None:
        raise _undecodable(path, len(raw))
    return decoded


def _image_bytes(path: Path) -> bytes:
    """The bytes of a regular image file of at most MAX_IMAGE_FILE_BYTES.

    They are read once, and both Pillow (the header) and OpenCV (the pixels) read them, so
    the header checked is the one decoded even if the file changes meanwhile.
    """
    size = regular_file_size(path, "image")
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
    with opencv_errors(name, "convert the image's colours"):
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
    with opencv_errors(name, "resize the image"):
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


def load_image(path: str | Path, spec: ImageSpec) -> np.ndarray:
    """Image file -> the model's uint8 RGB [height, width, 3] (the pixels of read_image)."""
    path = Path(path)
    return prepare_image(decode_image(path), spec, "bgr", name=str(path))
