"""`fusionedge devices`: the cameras that open and the audio inputs, with their rates."""

from __future__ import annotations

import logging
from typing import Any

from fusionedge.runtime.audio_sources import import_sounddevice

log = logging.getLogger(__name__)
COMMON_RATES = (8000, 16000, 22050, 44100, 48000)


def list_cameras(max_index: int = 8) -> list[dict[str, Any]]:
    """Camera indices 0..max_index-1 that open and deliver a frame, with the frame size."""
    import cv2

    found = []
    # Each index that is not there makes some backends log an error; for a probe that
    # is the expected answer, not news.
    previous = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        for index in range(max_index):
            camera = _probe(cv2, index)
            if camera is not None:
                found.append(camera)
    finally:
        cv2.utils.logging.setLogLevel(previous)
    return found


def _probe(cv2, index: int) -> dict[str, Any] | None:
    """The camera at index if it opens and delivers a frame."""
    cap = cv2.VideoCapture(index)
    try:
        ok, frame = cap.read() if cap.isOpened() else (False, None)
        if not ok:
            return None
        return {
            "index": index,
            "width": frame.shape[1],
            "height": frame.shape[0],
            "fps": cap.get(cv2.CAP_PROP_FPS) or None,
            "backend": cap.getBackendName(),
        }
    finally:
        cap.release()


def list_audio_inputs() -> list[dict[str, Any]]:
    """Input devices as PortAudio sees them, with the common rates each one accepts."""
    sd = import_sounddevice()
    default_input = sd.default.device[0]
    out = []
    for index, info in enumerate(sd.query_devices()):
        if info["max_input_channels"] < 1:
            continue
        rates = []
        for rate in COMMON_RATES:
            try:
                sd.check_input_settings(device=index, samplerate=rate, channels=1)
                rates.append(rate)
            except (sd.PortAudioError, ValueError):  # this rate or device refused
                continue
        out.append(
            {
                "index": index,
                "name": info["name"],
                "channels": info["max_input_channels"],
                "default_samplerate": info["default_samplerate"],
                "rates": rates,
                "hostapi": sd.query_hostapis(info["hostapi"])["name"],
                "default": index == default_input,
            }
        )
    return out
