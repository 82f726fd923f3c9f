"""Hostile media: bounded decoding, refused special files, and inputs that would give
wrong answers silently (issue 12).

Every hostile file here is real and is written in a few milliseconds: a 30000x30000 PNG
is built from one compressed block of zero rows repeated (it would take 2.7 GB to
encode the usual way), a 10-hour FLAC of silence block by block. Peak memory is measured
in a child process (its high-water mark after the work minus after a warm-up), so this
process's own history does not count.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile as sf
import soxr
from PIL import Image

from fusionedge import image_prep, preprocess
from fusionedge.arrays import load_arrays
from fusionedge.manifest import ManifestError, read_manifest
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
    resampled_length,
    resize_image,
    to_mono_float32,
    to_rgb_uint8,
)
from fusionedge.spec import AudioSpec, ComponentSpec, ImageSpec, ModelSpec

IMAGE = ImageSpec(height=16, width=24)
AUDIO = AudioSpec(sample_rate=16000, num_samples=16000)
# The audit's bound for decoding any one hostile file, in MB.
PEAK_LIMIT_MB = 500
NEEDS_FIFO = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
LINUX_ONLY = pytest.mark.skipif(
    sys.platform != "linux", reason="reads the peak from /proc/self/status"
)


# ------------------------------------------------------------------------- hostile files


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _zero_rows(row_bytes: int, height: int, rows_per_piece: int = 64) -> Iterator[bytes]:
    """A valid zlib stream of `height` all-zero rows, without compressing them all.

    After a full flush the compressor's output for the same input repeats exactly, so one
    compressed piece is emitted many times; the Adler-32 of zero bytes is computed here.
    """
    compressor = zlib.compressobj(9)
    rows_per_piece = min(rows_per_piece, height)
    block = bytes(row_bytes * rows_per_piece)
    full, rest = divmod(height, rows_per_piece)
    yield compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)  # zlib header
    if full > 1:
        piece = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
        yield from [piece] * (full - 1)
    if rest:
        yield compressor.compress(bytes(row_bytes * rest)) + compressor.flush(zlib.Z_FULL_FLUSH)
    # Zero bytes leave Adler-32's A at 1, so B is the byte count (mod 65521).
    yield b"\x03\x00" + struct.pack(">I", (row_bytes * height % 65521) << 16 | 1)


def write_zero_png(path: Path, width: int, height: int, depth: int = 8, colour: int = 2) -> Path:
    """A valid all-black PNG of any size (colour type 0 grey, 2 RGB, 6 RGBA)."""
    channels = {0: 1, 2: 3, 6: 4}[colour]
    row_bytes = 1 + (width * channels * depth + 7) // 8  # a filter byte, then the pixels
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header))
        f.write(_chunk(b"IDAT", b"".join(_zero_rows(row_bytes, height))))
        f.write(_chunk(b"IEND", b""))
    return path


def write_silence(path: Path, seconds: float, rate: int = 8000) -> Path:
    """A FLAC of silence, written in 10-minute blocks (10 hours at 8 kHz is ~1 MB)."""
    block = np.zeros(rate * 600, np.int16)
    with sf.SoundFile(str(path), "w", rate, 1, "PCM_16", format="FLAC") as f:
        for start in range(0, round(seconds * rate), len(block)):
            f.write(block[: round(seconds * rate) - start])
    return path


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hostile")
    return {
        # The audit's file: 1-bit grey, ~120 KB, 900 megapixels (3.4 GB peak before).
        "png": write_zero_png(root / "huge.png", 30000, 30000, depth=1, colour=0),
        # Past OpenCV's own limit (2**30 pixels), where it raises cv2.error.
        "png40k": write_zero_png(root / "huge40k.png", 40000, 40000, depth=1, colour=0),
        # Just over our limit and under Pillow's bomb bound: Pillow reports the size.
        "over": write_zero_png(root / "over.png", 8000, 6251),
        "flac": write_silence(root / "silence_10h.flac", 10 * 3600),
    }


def finishes(call: Callable[[], object], seconds: float = 10.0) -> BaseException | None:
    """Runs call in a thread and returns what it raised; fails the test if it blocks."""
    outcome: dict[str, BaseException | None] = {}

    def run() -> None:
        try:
            call()
            outcome["raised"] = None
        except BaseException as e:
            outcome["raised"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert "raised" in outcome, f"still blocked after {seconds} s"
    return outcome["raised"]


# ------------------------------------------------------------------------------- images


def test_audit_png_is_refused_from_its_header(hostile):
    for call in (read_image, lambda p: load_image(p, IMAGE)):
        with pytest.raises(MediaError) as err:
            call(hostile["png"])
        message = str(err.value)
        assert str(hostile["png"]) in message and "refused before decoding" in message
        assert "900000000 pixels" in message and "50,000,000 pixels" in message


def test_image_just_over_the_limit_names_its_size(hostile):
    with pytest.raises(MediaError) as err:
        load_image(hostile["over"], IMAGE)
    assert str(err.value) == (
        f"{hostile['over']}: image of 8000x6251 = 50,008,000 pixels is over the limit of "
        "50,000,000 pixels; refused before decoding"
    )


def test_image_at_the_limit_is_decoded(tmp_path):
    path = write_zero_png(tmp_path / "limit.png", 7071, 7071, depth=1, colour=0)
    assert preprocess.MAX_IMAGE_PIXELS >= 7071 * 7071
    out = load_image(path, IMAGE)
    assert out.shape == (16, 24, 3) and out.dtype == np.uint8 and not out.any()


def test_a_16_bit_image_under_the_pixel_limit_is_bounded_by_its_decoded_bytes(tmp_path):
    """6000x6000 is 36 MP, under the pixel limit, but 16-bit RGB decodes to 216 MB and
    OpenCV's PNG decoder holds two copies: refused from the header. 8-bit passes."""
    deep = write_zero_png(tmp_path / "deep.png", 6000, 6000, depth=16, colour=2)
    with pytest.raises(MediaError) as err:
        load_image(deep, IMAGE)
    assert str(err.value) == (
        f"{deep}: image of 6000x6000 decodes to 216,000,000 bytes, over the limit of "
        "200,000,000 (a high bit depth or many channels); refused before decoding: save "
        "it as 8-bit or smaller"
    )
    grey = write_zero_png(tmp_path / "grey16.png", 4000, 4000, depth=16, colour=0)
    assert load_image(grey, IMAGE).shape == (16, 24, 3)  # 32 MB decoded: fine


def test_opencv_refusal_becomes_a_media_error_naming_the_file(hostile, monkeypatch):
    # With every header limit lifted, OpenCV itself refuses (cv2.error, over 2**30
    # pixels): that must reach users as a MediaError, not a traceback.
    monkeypatch.setattr(image_prep, "MAX_IMAGE_PIXELS", 2**40)
    monkeypatch.setattr(image_prep, "MAX_DECODED_BYTES", 2**44)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with pytest.raises(MediaError, match="OpenCV could not decode the image") as err:
        load_image(hostile["png40k"], IMAGE)
    assert str(err.value).startswith(f"{hostile['png40k']}: ")
    assert isinstance(err.value.__cause__, cv2.error)


def test_oversized_image_file_is_refused_unread(tmp_path):
    path = tmp_path / "big.png"
    with open(path, "wb") as f:  # sparse: no disk or memory used
        f.truncate(preprocess.MAX_IMAGE_FILE_BYTES + 1)
    with pytest.raises(MediaError, match=r"image file of 400,000,001 bytes is over the limit"):
        read_image(path)


def test_image_array_over_the_limit_is_refused():
    # A zero-stride view: 900 megapixels that take no memory, refused from the shape.
    huge = np.broadcast_to(np.zeros(3, np.uint8), (30000, 30000, 3))
    with pytest.raises(MediaError) as err:
        prepare_image(huge, IMAGE, "bgr", name="frame")
    assert str(err.value) == (
        "frame: image of 30000x30000 = 900,000,000 pixels is over the limit of "
        "50,000,000 pixels; downscale it first"
    )


@pytest.mark.parametrize("bad", [255.0, 1.0001, -0.01])
def test_float_image_outside_0_1_is_refused_with_the_fix(bad):
    image = np.full((8, 8, 3), 0.5, np.float32)
    image[3, 4, 1] = bad
    with pytest.raises(MediaError) as err:
        prepare_image(image, IMAGE, name="photo")
    assert "photo: float image values must lie in [0, 1]" in str(err.value)
    assert "divide 0-255 values by 255" in str(err.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_float_image_with_nan_or_inf_is_refused(bad):
    image = np.full((8, 8), 0.5, np.float64)
    image[7, 7] = bad
    with pytest.raises(MediaError, match="photo: float image contains NaN or infinity"):
        prepare_image(image, IMAGE, name="photo")


def _old_prepare_image(image: np.ndarray, spec: ImageSpec, order: str) -> np.ndarray:
    """The order before: convert to RGB uint8 at full size, then resize."""
    return resize_image(to_rgb_uint8(image, order), spec)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["gray", "bgr", "bgra", "rgb16", "float"])
@pytest.mark.parametrize("size", [(7, 5), (300, 200), (16, 24)])
@pytest.mark.parametrize("mode", ["stretch", "letterbox"])
def test_resizing_before_colour_conversion_gives_the_same_pixels(kind, size, mode):
    rng = np.random.default_rng(sum(size))
    arrays = {
        "gray": lambda: rng.integers(0, 256, size, np.uint8),
        "bgr": lambda: rng.integers(0, 256, (*size, 3), np.uint8),
        "bgra": lambda: rng.integers(0, 256, (*size, 4), np.uint8),
        "rgb16": lambda: rng.integers(0, 65536, (*size, 3), np.uint16),
        "float": lambda: rng.random((*size, 3), np.float32),
    }
    image, spec = arrays[kind](), ImageSpec(height=16, width=24, resize=mode)
    for order in ("rgb", "bgr"):
        new = prepare_image(image, spec, order)  # type: ignore[arg-type]
        np.testing.assert_array_equal(new, _old_prepare_image(image, spec, order))


def test_large_float_image_converts_in_blocks_to_the_same_pixels():
    # 3 million values: more than one conversion block.
    image = np.random.default_rng(0).random((1000, 1000, 3), np.float32)
    old = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(to_rgb_uint8(image, "rgb"), old)


@pytest.mark.parametrize("kind", ["gray.png", "bgr.png", "bgra16.png", "bgr.jpg"])
def test_load_image_equals_resize_of_read_image(tmp_path, kind):
    rng = np.random.default_rng(1)
    shapes = {"gray.png": (45, 61), "bgra16.png": (45, 61, 4)}
    image = rng.integers(0, 256, shapes.get(kind, (45, 61, 3)), np.uint8)
    if kind == "bgra16.png":
        image = image.astype(np.uint16) * 257
    assert cv2.imwrite(str(tmp_path / kind), image)
    for mode in ("stretch", "letterbox"):
        spec = ImageSpec(height=16, width=24, resize=mode)
        expected = resize_image(read_image(tmp_path / kind), spec)
        np.testing.assert_array_equal(load_image(tmp_path / kind, spec), expected)


# ------------------------------------------------------------------------ special files


def _fifo(root: Path, name: str) -> Path:
    os.mkfifo(root / name)
    return root / name


@pytest.fixture
def specials(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """A FIFO with no writer, a folder, /dev/zero and a listening Unix socket."""
    if not hasattr(os, "mkfifo") or not Path("/dev/zero").exists():
        pytest.skip("needs FIFOs and /dev/zero")
    short = Path(tempfile.mkdtemp(prefix="fe"))  # Unix socket paths are short
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(short / "s"))
    server.listen()
    (tmp_path / "folder.png").mkdir()
    yield {
        "a FIFO (named pipe)": _fifo(tmp_path, "pipe"),
        "a directory": tmp_path / "folder.png",
        "a character device": Path("/dev/zero"),
        "a socket": short / "s",
    }
    server.close()
    # A reader that did block in open() is let go by a writer opening the FIFO.
    with contextlib.suppress(OSError):  # ENXIO: nobody is reading, as it should be
        os.close(os.open(tmp_path / "pipe", os.O_WRONLY | os.O_NONBLOCK))
    (short / "s").unlink()
    short.rmdir()


READERS = {
    "read_image": read_image,
    "load_image": lambda p: load_image(p, IMAGE),
    "read_audio": read_audio,
    "load_audio": lambda p: load_audio(p, AUDIO),
}


@pytest.mark.parametrize("reader", list(READERS))
def test_special_files_are_refused_without_blocking(specials, reader):
    kind = "image" if "image" in reader else "audio"
    for what, path in specials.items():
        raised = finishes(lambda p=path: READERS[reader](p))
        assert isinstance(raised, MediaError), f"{what}: {raised!r}"
        assert str(raised) == (f"{path}: cannot read {kind} file: it is {what}, not a regular file")


@NEEDS_FIFO
def test_link_to_a_fifo_is_refused(tmp_path):
    fifo = _fifo(tmp_path, "pipe")
    (tmp_path / "clip.wav").symlink_to(fifo)
    raised = finishes(lambda: load_audio(tmp_path / "clip.wav", AUDIO))
    assert isinstance(raised, MediaError) and "it is a FIFO (named pipe)" in str(raised)


def _spec() -> ModelSpec:
    return ModelSpec(
        modalities=("image", "audio"),
        labels=("no", "yes"),
        task="binary",
        encoders={m: ComponentSpec(f"{m}_enc") for m in ("image", "audio")},
        fusion=ComponentSpec("concat"),
        head=ComponentSpec("binary"),
        image=IMAGE,
        audio=AudioSpec(sample_rate=8000, num_samples=4000),
    )


def _manifest(root: Path, lines: list[dict[str, str]]) -> Path:
    text = "".join(json.dumps({"label": "no", **line}) + "\n" for line in lines)
    (root / "manifest.jsonl").write_text(text, encoding="utf-8")
    return root / "manifest.jsonl"


@NEEDS_FIFO
def test_manifest_paths_to_a_fifo_are_problems_not_a_hang(tmp_path):
    _fifo(tmp_path, "pipe.png")
    _fifo(tmp_path, "pipe.wav")
    cv2.imwrite(str(tmp_path / "ok.png"), np.zeros((4, 4, 3), np.uint8))
    lines = [{"id": "a", "image": "pipe.png", "audio": "pipe.wav"}, {"id": "b", "image": "ok.png"}]
    # check_files=False: the manifest reader's own is_file() check does not run, so the
    # decoders' guard is what stands between a FIFO and a hang.
    manifest = read_manifest(_manifest(tmp_path, lines), check_files=False)
    raised = finishes(lambda: load_arrays(list(manifest.records), _spec(), manifest.path))
    assert isinstance(raised, ManifestError)
    assert [(p.line, p.field) for p in raised.problems] == [(1, "image"), (1, "audio")]
    assert all("it is a FIFO (named pipe)" in p.message for p in raised.problems)


# -------------------------------------------------------------------------------- audio


def _old_load_audio(path: Path, spec: AudioSpec) -> np.ndarray:
    """The path before: decode all, mix down, resample all, then take the centre."""
    data, rate = read_audio(path)
    return fit_window(resample(to_mono_float32(data), rate, spec.sample_rate), spec.num_samples)


def _noise(rate: int, seconds: float, channels: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.uniform(-0.9, 0.9, (round(rate * seconds), channels))).astype(np.float32)


# (file rate, seconds, channels): longer than the 1 s window, shorter, just longer, at the
# model's rate, below it, and at odd rates whose grids meet rarely.
WINDOW_CASES = [
    (44100, 3.0, 2),
    (44100, 0.4, 1),
    (48000, 1.01, 1),
    (16000, 2.5, 1),
    (8000, 2.5, 2),
    (11025, 7.3, 1),
    (44099, 2.0, 1),
    (96000, 0.99, 1),
]


@pytest.mark.parametrize(("rate", "seconds", "channels"), WINDOW_CASES)
def test_windowed_file_decoding_equals_the_old_whole_file_path(tmp_path, rate, seconds, channels):
    path = tmp_path / "clip.flac"
    sf.write(str(path), _noise(rate, seconds, channels), rate, subtype="PCM_24")
    new, old = load_audio(path, AUDIO), _old_load_audio(path, AUDIO)
    assert new.shape == old.shape == (16000,) and new.dtype == np.float32
    np.testing.assert_allclose(new, old, rtol=0, atol=1e-5)
    if rate == AUDIO.sample_rate:
        np.testing.assert_array_equal(new, old)  # no resampler: exactly the same frames


@pytest.mark.parametrize(("rate", "seconds", "channels"), WINDOW_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.int16])
def test_cropping_arrays_before_resampling_equals_the_old_path(rate, seconds, channels, dtype):
    audio = _noise(rate, seconds, channels, seed=rate)
    if dtype == np.int16:
        audio = np.round(audio * 32767).astype(np.int16)
    old = fit_window(resample(to_mono_float32(audio), rate, 16000), 16000)
    np.testing.assert_allclose(prepare_audio(audio, rate, AUDIO), old, rtol=0, atol=1e-5)


def test_resampled_length_is_what_soxr_returns():
    rates = [(44100, 16000), (8000, 16000), (768000, 8000), (44099, 16000), (1000, 48000)]
    for rate_in, rate_out in rates:
        for frames in [1, 2, 3, 47, 48, 441, 4410, 99_999, 123_457]:
            got = len(soxr.resample(np.zeros(frames, np.float32), rate_in, rate_out, "HQ"))
            assert resampled_length(frames, rate_in, rate_out) == got, (rate_in, rate_out)


def test_ten_hour_flac_gives_its_centre_window(hostile):
    out = load_audio(hostile["flac"], AUDIO)
    assert out.shape == (16000,) and out.dtype == np.float32 and not out.any()


def test_centre_of_a_long_file_is_where_the_old_path_takes_it(tmp_path):
    # A click at the exact centre of 10 minutes: the window must hold it at its centre.
    rate, samples = 8000, 8000 * 600
    pcm = np.zeros(samples, np.int16)
    pcm[samples // 2] = 16384
    path = tmp_path / "click.flac"
    sf.write(str(path), pcm, rate)
    out = load_audio(path, AudioSpec(sample_rate=8000, num_samples=4000))
    assert np.flatnonzero(out).tolist() == [2000] and out[2000] == 0.5


@pytest.mark.parametrize("rate", [1, 999, 768_001, 0, -16000])
def test_sample_rates_outside_the_accepted_range_are_refused(rate):
    # The audit's case: 160,000 samples at 1 Hz asked the resampler for about 10 GB.
    with pytest.raises(MediaError) as err:
        prepare_audio(np.zeros(160_000, np.float32), rate, AUDIO, name="mic")
    assert str(err.value) == (
        f"mic: sample rate {rate} Hz is not accepted; accepted: 1,000 to 768,000 Hz"
    )


@pytest.mark.parametrize("rate", [1000, 768_000])
def test_sample_rates_at_the_bounds_are_accepted(rate):
    tone = np.sin(np.arange(rate // 2) * 0.05).astype(np.float32) * 0.5
    out = prepare_audio(tone, rate, AUDIO)
    assert out.shape == (16000,) and np.abs(out).max() > 0.4


def test_audio_file_at_a_rate_outside_the_range_is_refused(tmp_path):
    path = tmp_path / "slow.wav"
    sf.write(str(path), np.zeros(500, np.int16), 500)
    for call in (read_audio, lambda p: load_audio(p, AUDIO)):
        with pytest.raises(MediaError, match="sample rate 500 Hz is not accepted"):
            call(path)


def test_float_audio_in_int16_units_is_refused_with_the_fix():
    pcm = (np.sin(np.arange(16000) * 0.05) * 20000).astype(np.float32)
    with pytest.raises(MediaError) as err:
        prepare_audio(pcm, 16000, AUDIO, name="mic")
    message = str(err.value)
    assert message.startswith("mic: float audio must lie in [-1, 1], got -20000 to 20000")
    assert "divide int16 values by 32768" in message


def test_float_wav_in_int16_units_is_refused(tmp_path):
    path = tmp_path / "loud.wav"
    pcm = (np.sin(np.arange(16000) * 0.05) * 20000).astype(np.float32)
    sf.write(str(path), pcm, 16000, subtype="FLOAT")  # a float WAV keeps values as written
    with pytest.raises(MediaError, match=r"float audio must lie in \[-1, 1\]") as err:
        load_audio(path, AUDIO)
    assert str(err.value).startswith(f"{path}: ")


def test_nan_outside_the_window_is_still_refused():
    # Cropping first must not hide a bad value from the check.
    audio = np.zeros(16000 * 20, np.float32)
    audio[3] = np.nan
    with pytest.raises(MediaError, match="mic: audio contains NaN or infinity"):
        prepare_audio(audio, 16000, AUDIO, name="mic")


def test_int16_audio_keeps_its_scaling():
    pcm = np.round(np.sin(np.arange(24000) * 0.05) * 16384).astype(np.int16)
    out = prepare_audio(pcm, 16000, AUDIO)
    np.testing.assert_array_equal(out, prepare_audio(pcm / np.float32(32768), 16000, AUDIO))
    assert np.abs(out).max() == 0.5


def _streamed_flac(path: Path) -> Path:
    """A FLAC whose header gives no length, as encoders writing to a pipe leave it."""
    sf.write(str(path), np.zeros(8000, np.int16), 8000)
    data = bytearray(path.read_bytes())
    # STREAMINFO's 36-bit total-samples field ends at byte 26 of the file.
    (field,) = struct.unpack(">Q", data[18:26])
    data[18:26] = struct.pack(">Q", field & ~((1 << 36) - 1))
    path.write_bytes(bytes(data))
    return path


def test_audio_file_without_a_length_is_refused(tmp_path):
    path = _streamed_flac(tmp_path / "piped.flac")
    for call in (read_audio, lambda p: load_audio(p, AUDIO)):
        with pytest.raises(MediaError, match="does not say how long it is") as err:
            call(path)
        assert str(err.value).startswith(f"{path}: ")


def test_truncated_long_flac_is_a_media_error(tmp_path):
    path = tmp_path / "cut.flac"
    sf.write(str(path), _noise(8000, 60, 1), 8000)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])  # the header says 60 s
    with pytest.raises(MediaError) as err:
        load_audio(path, AUDIO)
    assert str(err.value).startswith(f"{path}: ")


# ---------------------------------------------------------------------------- peak memory


# The child's peak is VmHWM, its own address space's high-water mark. Not ru_maxrss:
# Linux carries into it the peak of the address space that exec replaced, which for a
# vforked child is pytest's own (seen here: a parent that had decoded 3 GB made every
# child report 3 GB and hid the child's own allocations).
CHILD = """
import json
def peak_mb():
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024
{setup}
warm()  # imports and first-use allocations belong to the baseline
base = peak_mb()
try:
    act()
    outcome = "ok"
except Exception as e:
    outcome = f"{{type(e).__name__}}: {{e}}"
print(json.dumps({{"base": base, "extra": peak_mb() - base, "outcome": outcome}}))
"""


def peak_in_child(setup: str) -> dict:
    """Runs setup's warm() then act() in a fresh interpreter; the MB act() added."""
    code = CHILD.format(setup=textwrap.dedent(setup))
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained image + audio model: predict's decode path is what is measured."""
    torch = pytest.importorskip("torch")
    from support import tiny_spec

    from fusionedge.export.onnx_export import export_onnx
    from fusionedge.training.model import FusedModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("hostile_model") / "model.onnx"
    export_onnx(FusedModel(tiny_spec(("image", "audio"))).eval(), path)
    return path


@pytest.fixture(scope="module")
def small_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("small")
    cv2.imwrite(str(root / "small.png"), np.full((20, 30, 3), 90, np.uint8))
    sf.write(str(root / "small.wav"), _noise(16000, 0.5, 1)[:, 0], 16000)
    return {"png": root / "small.png", "wav": root / "small.wav"}


@LINUX_ONLY
@pytest.mark.parametrize("field", ["png", "flac"])
def test_predict_on_a_hostile_file_stays_under_the_bound(hostile, model_path, small_files, field):
    modality = "image" if field == "png" else "audio"
    got = peak_in_child(
        f"""
        from fusionedge.runtime import Predictor
        p = Predictor.from_path({str(model_path)!r}, providers="cpu", threads=1)
        def warm():
            p.predict(image={str(small_files["png"])!r}, audio={str(small_files["wav"])!r})
        def act():
            p.predict({modality}={str(hostile[field])!r})
        """
    )
    assert got["extra"] < PEAK_LIMIT_MB, got
    if field == "png":  # was 3436 MB: decoded whole, then converted
        assert got["outcome"].startswith(f"MediaError: {hostile['png']}: image over the limit")
    else:  # was 3301 MB: 10 hours decoded and resampled
        assert got["outcome"] == "ok"


@LINUX_ONLY
def test_data_set_with_four_hostile_images_stays_under_the_bound(hostile, small_files, tmp_path):
    for k in range(4):
        os.link(hostile["png"], tmp_path / f"huge{k}.png")
    os.link(hostile["flac"], tmp_path / "long.flac")
    os.link(small_files["png"], tmp_path / "small.png")
    lines = [{"id": f"h{k}", "image": f"huge{k}.png", "audio": "long.flac"} for k in range(4)]
    manifest = _manifest(tmp_path, [{"id": "ok", "image": "small.png"}, *lines])
    got = peak_in_child(
        f"""
        from fusionedge.arrays import load_arrays
        from fusionedge.manifest import read_manifest
        from fusionedge.spec import AudioSpec, ComponentSpec, ImageSpec, ModelSpec
        spec = ModelSpec(
            modalities=("image", "audio"), labels=("no", "yes"), task="binary",
            encoders={{m: ComponentSpec("x") for m in ("image", "audio")}},
            fusion=ComponentSpec("concat"), head=ComponentSpec("binary"),
            image=ImageSpec(height=16, width=24),
            audio=AudioSpec(sample_rate=8000, num_samples=4000),
        )
        m = read_manifest({str(manifest)!r})
        def warm():
            load_arrays(list(m.records)[:1], spec, m.path)
        def act():
            load_arrays(list(m.records), spec, m.path, workers=4)
        """
    )
    assert got["extra"] < PEAK_LIMIT_MB, got
    # Every huge image is a problem on its own line; the 10-hour audio decoded fine.
    outcome = got["outcome"]
    assert outcome.startswith("ManifestError: 4 problem(s)"), outcome
    assert [f"huge{k}.png: image over the limit" in outcome for k in range(4)] == [True] * 4
    assert "long.flac" not in outcome


@LINUX_ONLY
@pytest.mark.parametrize(
    ("dtype", "extra_mb"),
    # 7000x7000x3 arrays: 147 MB as uint8, 294 as uint16, 588 as float32. Before, the
    # conversions made 1-5 full-size copies; now uint8 needs none, the others one uint8.
    [("uint8", 10), ("uint16", 160), ("float32", 170)],
)
def test_large_array_is_prepared_without_full_size_copies(dtype, extra_mb):
    got = peak_in_child(
        f"""
        import numpy as np
        from fusionedge.preprocess import prepare_image
        from fusionedge.spec import ImageSpec
        spec = ImageSpec(height=16, width=24)
        frame = np.full((7000, 7000, 3), 1 if {dtype!r} != "float32" else 0.5, {dtype!r})
        def warm():
            prepare_image(frame[:8, :8], spec, "bgr")
        def act():
            prepare_image(frame, spec, "bgr")
        """
    )
    assert got["outcome"] == "ok" and got["extra"] < extra_mb, got
