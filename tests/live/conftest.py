"""Fixtures for the live-capture tests: real capture stacks with no camera or microphone.

- a tiny image + audio + text model, trained a few epochs and exported once per session
  (the approach of tests/runtime/conftest.py);
- a clip (clip.avi + clip.wav + clip.json) made by examples/make_clip.py from that data;
- an MJPEG-over-HTTP server on 127.0.0.1 that a test can kill, freeze and bring back on
  the same port (cv2.VideoCapture reads it through its FFmpeg backend);
- a private PulseAudio daemon with a module-pipe-source virtual microphone: bytes written
  to its FIFO reach sounddevice as a real capture device (PortAudio -> ALSA "pulse" ->
  PulseAudio). Skipped only when `pulseaudio` or `pactl` is not on PATH.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from live_helpers import (
    Clip,
    MjpegServer,
    VirtualMic,
    missing_pulse_tools,
    pulse_virtual_mic,
)
from support import train_and_export, write_dataset

REPO = Path(__file__).resolve().parents[2]
CLIP_SAMPLES = 6
CLIP_SECONDS = 1.0
CLIP_FPS = 30.0


# ---------------------------------------------------------------------- model and clip


@pytest.fixture(scope="session")
def live_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 3-class image + audio + text data set of tests/support.py (16 kHz WAVs)."""
    return write_dataset(tmp_path_factory.mktemp("live_data"))


@pytest.fixture(scope="session")
def live_model(live_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny image + audio + text model (8 kHz audio, 16x16 images), trained and exported."""
    return train_and_export(live_data, tmp_path_factory.mktemp("live_model"))


@pytest.fixture(scope="session")
def live_split_model(live_model: Path) -> Path:
    """The same trained weights as live_model, exported as split parts (model.split/)."""
    from fusionedge.contract import split_folder
    from fusionedge.export.split import export_split
    from fusionedge.training.checkpoint import load_model

    folder = split_folder(live_model)
    export_split(load_model(live_model.parent / "run" / "best.safetensors"), folder)
    return folder


@pytest.fixture(scope="session")
def live_clip(live_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Clip:
    """6 test samples, 1 s each, 30 fps MJPG video and 16 kHz audio (the model takes 8 kHz)."""
    out = tmp_path_factory.mktemp("live_clip") / "clip"
    cmd = [
        sys.executable,
        str(REPO / "examples" / "make_clip.py"),
        str(live_data),
        str(out),
        "--n",
        str(CLIP_SAMPLES),
        "--seconds",
        str(CLIP_SECONDS),
        "--fps",
        str(CLIP_FPS),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    timeline = json.loads(out.with_suffix(".json").read_text())
    assert len(timeline) == CLIP_SAMPLES
    return Clip(out.with_suffix(".avi"), out.with_suffix(".wav"), timeline, CLIP_FPS, CLIP_SECONDS)


@pytest.fixture
def mjpeg_server() -> Iterator[MjpegServer]:
    server = MjpegServer().start()
    yield server
    server.kill()


@pytest.fixture(scope="session")
def virtual_mic() -> Iterator[VirtualMic]:
    """A private PulseAudio daemon with a 16 kHz mono module-pipe-source as default source
    (live_helpers.pulse_virtual_mic, shared with benchmarks/soak.py).

    This process gets PULSE_SERVER for the duration, and PortAudio is re-initialised so
    that it lists the ALSA "pulse" device even if sounddevice was imported before the
    server existed.
    """
    missing = missing_pulse_tools()
    if missing:
        pytest.skip(
            f"{' and '.join(missing)} not on PATH: the microphone tests need a PulseAudio "
            "server (Debian: apt-get install pulseaudio libportaudio2)"
        )
    saved = {k: os.environ.get(k) for k in ("PULSE_SERVER", "PULSE_COOKIE")}
    with pulse_virtual_mic(16000) as mic:
        try:
            for key in saved:
                os.environ[key] = mic.env[key]
            import sounddevice as sd

            # PortAudio lists devices once, at initialisation: refresh it (private API,
            # test only) so that the ALSA "pulse" device sees this server.
            sd._terminate()
            sd._initialize()
            names = [d["name"] for d in sd.query_devices()]
            assert "pulse" in names, (
                f"PortAudio has no ALSA 'pulse' device (devices: {names}); "
                "install libasound2-plugins"
            )
            yield mic
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
