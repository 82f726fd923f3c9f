"""MJPEG from FFmpeg, decoded one JPEG at a time (CameraSource's URLs and video files).

OpenCV's FFmpeg capture decodes MJPEG with FFmpeg's own decoder and scales every frame to
the size the stream had when it was opened. Three things follow, each measured:
- its pixels are not those of the same JPEG decoded by libjpeg (cv2.imread, cv2.imdecode,
  which made the training images): 0.7 levels apart on average, up to 13, on colour
  640x480 frames at quality 85 (benchmarks/mjpeg_decoders.py);
- a camera that changes resolution hands over stretched pictures (benchmarks/soak.py's
  1280x720 frames arrived as 640x480);
- a truncated or garbage JPEG decodes into a partly grey picture that looks valid.
Read undecoded (CAP_PROP_FORMAT -1) and decoded here with libjpeg, each frame keeps its
own size and pixels; one that is not a whole JPEG (no end marker, or libjpeg cannot decode
it) is counted as corrupt and not published, so the loop keeps the last good frame until
it goes stale. A bit error inside the data still decodes: JPEG has no checksum.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import cv2

GIVE_UP_AFTER = 10  # frames in a row, none decoded since the open: not for libjpeg
# A size drop from frames this large is worth a trim (see FrameMemory); a 640x480 frame is
# 0.9 MB, 1280x720 2.8 MB, 4K 24.9 MB.
LARGE_FRAME_BYTES = 2 << 20
TRIM_AFTER_SMALL = 30  # frames, 1 s at 30 fps: the large ones are no longer referenced


def hands_over_jpegs(cap: cv2.VideoCapture) -> bool:
    """Switches an FFmpeg capture of MJPEG to handing over each frame's JPEG undecoded;
    False (nothing changed) for another codec or where the backend cannot."""
    import cv2

    fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little")
    return fourcc == b"MJPG" and bool(cap.set(cv2.CAP_PROP_FORMAT, -1))


class JpegFrames:
    """Decodes one opened capture's JPEGs; counts the ones that fail in stats.corrupt
    and reports them through note (CaptureSource._note)."""

    def __init__(self, source: Any, stats: Any, note: Callable[[str], None]) -> None:
        self.source, self.stats, self.note = source, stats, note
        self.decoded = 0
        self.failed = 0
        self.memory = FrameMemory()

    @property
    def undecodable(self) -> bool:
        """Whether no frame has decoded since the open, GIVE_UP_AFTER tries running: the
        stream's JPEGs need FFmpeg (some cameras leave out tables FFmpeg supplies)."""
        return self.decoded == 0 and self.failed >= GIVE_UP_AFTER

    def decode(self, packet: np.ndarray) -> np.ndarray | None:
        """The frame's BGR picture, or None for a frame that is not a whole JPEG."""
        import cv2

        data = packet.reshape(-1)
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if whole_jpeg(data) else None
        if image is not None:
            self.decoded += 1
            self.memory.saw(image.nbytes)
            return image
        self.failed += 1
        self.stats.corrupt += 1
        if self.undecodable:
            self.note(
                f"{self.source!r}: its JPEGs do not decode alone; FFmpeg decodes them from "
                "the next open on (frame sizes then stay those of the open)"
            )
        else:
            self.note(f"{self.source!r}: a frame that is not a whole JPEG, skipped")
        return None


def whole_jpeg(data: np.ndarray) -> bool:
    """Starts with the JPEG start marker and ends with the end marker (some cameras pad
    a frame with a few bytes after it). The marker cannot occur inside the entropy-coded
    data, where every 0xFF byte is followed by 0x00 or a restart marker."""
    if len(data) < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return False
    return b"\xff\xd9" in data[-16:].tobytes()


class FrameMemory:
    """Hands memory back once large frames stop coming.

    glibc serves a freed block's size from its heap from then on (its mmap threshold
    follows the largest block freed, up to 32 MB) and keeps what is freed there. After a
    burst of 4K frames that held ~50 MB in the capture thread's heap for as long as the
    process ran (benchmarks/soak.py). Once TRIM_AFTER_SMALL frames of at most half the
    largest since the last trim have followed it (the large ones are no longer held),
    malloc_trim hands the free pages back; a no-op without glibc. A stream of one size
    never trims."""

    def __init__(self) -> None:
        self.largest = 0  # bytes, since the last trim
        self.smaller = 0  # frames in a row of at most half that

    def saw(self, nbytes: int) -> None:
        if nbytes > self.largest // 2:
            self.largest = max(self.largest, nbytes)
            self.smaller = 0
            return
        self.smaller += 1
        if self.smaller >= TRIM_AFTER_SMALL and self.largest >= LARGE_FRAME_BYTES:
            self.largest, self.smaller = nbytes, 0
            trim = _malloc_trim()
            if trim is not None:
                trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None
