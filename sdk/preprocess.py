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

This module is the public face; the code lives in one module per concept:
- fusionedge.media_files (sdk/media_files.py): regular-file checks, and OpenCV's and
  libsndfile's failures turned into MediaError;
- fusionedge.image_prep (sdk/image_prep.py): the image limits, header check, decoding,
  RGB uint8 conversion, resize/letterbox, prepare_image, load_image;
- fusionedge.audio_prep (sdk/audio_prep.py): the rate limits, reading and decoding
  windows, mono float32, resampling, fit_window, prepare_audio, load_audio.
Importing this module loads cv2, as the image code does. The limits are read where they
are used: patch them on fusionedge.image_prep or fusionedge.audio_prep, not here.
"""

from __future__ import annotations

from fusionedge.audio_prep import (
    AUDIO_SUFFIXES,
    MAX_CHANNELS,
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    RESAMPLE_MARGIN,
    fit_window,
    load_audio,
    prepare_audio,
    read_audio,
    resample,
    resampled_length,
    to_mono_float32,
)
from fusionedge.errors import MediaError
from fusionedge.image_prep import (
    IMAGE_SUFFIXES,
    MAX_DECODED_BYTES,
    MAX_IMAGE_FILE_BYTES,
    MAX_IMAGE_PIXELS,
    ColorOrder,
    decode_image,
    load_image,
    prepare_image,
    read_image,
    resize_image,
    to_rgb_uint8,
)

# The former private name, which benchmarks/live_turn.py still uses.
_decode_image = decode_image

__all__ = [
    "AUDIO_SUFFIXES",
    "IMAGE_SUFFIXES",
    "MAX_CHANNELS",
    "MAX_DECODED_BYTES",
    "MAX_IMAGE_FILE_BYTES",
    "MAX_IMAGE_PIXELS",
    "MAX_SAMPLE_RATE",
    "MIN_SAMPLE_RATE",
    "RESAMPLE_MARGIN",
    "ColorOrder",
    "MediaError",
    "decode_image",
    "fit_window",
    "load_audio",
    "load_image",
    "prepare_audio",
    "prepare_image",
    "read_audio",
    "read_image",
    "resample",
    "resampled_length",
    "resize_image",
    "to_mono_float32",
    "to_rgb_uint8",
]
