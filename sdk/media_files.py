"""Bounded access to users' media files, and their decoders' failures as MediaError.

Manifests and `--image`/`--audio` paths come from users, so only regular files are
opened: a FIFO without a writer would block forever and a device such as /dev/zero never
ends. What OpenCV or libsndfile refuse (an allocation, a size, a malformed file) reaches
the caller as a MediaError that names the input, never as the decoder's own exception.

The size limits of each kind of file live with its decoder (fusionedge.image_prep,
fusionedge.audio_prep); this module imports neither cv2 nor soundfile until a decoder's
errors are wrapped.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fusionedge.errors import MediaError

NOT_REGULAR = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def regular_file_size(path: Path, kind: str) -> int:
    """The size of a regular file; anything else is refused without being opened.

    Opening a FIFO that has no writer blocks forever and a device such as /dev/zero never
    ends, so they are told apart by os.stat (which follows links), before any open.
    """
    try:
        info = os.stat(path)
    except OSError as e:
        raise MediaError(f"{path}: cannot read {kind} file ({e.strerror})") from e
    if not stat.S_ISREG(info.st_mode):
        what = next((name for test, name in NOT_REGULAR if test(info.st_mode)), "special")
        raise MediaError(f"{path}: cannot read {kind} file: it is {what}, not a regular file")
    return info.st_size


@contextmanager
def opencv_errors(name: str, action: str) -> Iterator[None]:
    """Turns cv2.error (OpenCV's answer to an allocation or size it refuses) into a MediaError."""
    import cv2  # already loaded by the image code that calls this

    try:
        yield
    except cv2.error as e:
        raise MediaError(f"{name}: OpenCV could not {action} ({e.err or e})") from e


@contextmanager
def sound_errors(path: Path) -> Iterator[None]:
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
