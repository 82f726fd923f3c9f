"""`fusionedge record` with real capture stacks, then `fusionedge train` on what it wrote.

Two runs append to the same folder: "red" from the MJPEG camera, "blue" from the clip's
video file, both with the virtual microphone (a 440 Hz tone). Between the runs the
manifest's trailing newline is removed (an editor that saves without one), so the second
run must add a newline before its first line and leave the first run's bytes alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import pytest
import soundfile as sf
from live_helpers import Clip, MjpegServer, VirtualMic
from support import TINY_OVERRIDES

from fusionedge.manifest import read_manifest

COUNT = 4
INTERVAL_S = 0.3


def fusionedge(*args: str, env: dict[str, str] | None = None, timeout: float = 90):
    script = Path(sys.executable).with_name("fusionedge")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "fusionedge.cli"]
    return subprocess.run(
        [*cmd, *args], capture_output=True, text=True, timeout=timeout, env=env or None
    )


@dataclass(frozen=True)
class Recorded:
    root: Path
    first: bytes  # manifest after run 1, trailing newline removed
    after: bytes  # manifest after run 2
    runs: tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]


@pytest.fixture(scope="module")
def recorded(
    tmp_path_factory: pytest.TempPathFactory, virtual_mic: VirtualMic, live_clip: Clip
) -> Iterator[Recorded]:
    root = tmp_path_factory.mktemp("recorded") / "data"
    env = {**os.environ, "PULSE_SERVER": virtual_mic.env["PULSE_SERVER"]}
    common = ["--count", str(COUNT), "--mic", "pulse", "--interval", str(INTERVAL_S)]
    writer = virtual_mic.tone(440.0)
    server = MjpegServer().start()
    try:
        red = fusionedge(
            "record", str(root), "--label", "red", "--camera", server.url, *common, env=env
        )
        assert red.returncode == 0, red.stderr[-3000:]
        manifest = root / "manifest.jsonl"
        first = manifest.read_bytes()
        assert first.endswith(b"\n")
        first = first.rstrip(b"\n")
        manifest.write_bytes(first)
        blue = fusionedge(
            "record", str(root), "--label", "blue", "--camera", str(live_clip.avi), *common, env=env
        )
        assert blue.returncode == 0, blue.stderr[-3000:]
    finally:
        server.kill()
        writer.close()
    assert not writer.errors
    yield Recorded(root, first, manifest.read_bytes(), (red, blue))


def test_record_runs_are_clean(recorded: Recorded) -> None:
    for run, label in zip(recorded.runs, ("red", "blue"), strict=True):
        assert "Traceback" not in run.stderr, run.stderr[-3000:]
        assert "recorded without" not in run.stderr, run.stderr[-3000:]  # nothing dropped
        assert f"recorded {COUNT} samples of {label!r}" in run.stdout


def test_second_run_appends_after_a_missing_newline(recorded: Recorded) -> None:
    # The first run's bytes are untouched; a newline ends its last line; then new lines.
    assert recorded.after.startswith(recorded.first + b"\n")
    assert b"\n\n" not in recorded.after
    assert recorded.after.endswith(b"\n")
    assert recorded.after.count(b"\n") == 2 * COUNT


def test_manifest_validates_and_files_are_good(recorded: Recorded) -> None:
    manifest = read_manifest(recorded.root)
    records = manifest.records
    assert [r.label for r in records] == ["red"] * COUNT + ["blue"] * COUNT
    assert len({r.id for r in records}) == 2 * COUNT
    assert manifest.classes == ("blue", "red")
    for r in records:
        assert r.image is not None and r.audio is not None, r
        image = cv2.imread(str(r.image))
        assert image is not None and image.size > 0, r.image
        info = sf.info(str(r.audio))
        assert info.samplerate == 16000
        assert info.channels == 1
        assert info.duration == pytest.approx(1.0, abs=0.02), (r.audio, info.duration)
        pcm, _ = sf.read(str(r.audio), dtype="float32")
        assert abs(pcm).max() > 0.2  # the tone, not silence
    # Run 1 saw the MJPEG server's 48x64 frames, run 2 the clip's 240x320 ones.
    assert {cv2.imread(str(r.image)).shape[:2] for r in records[:COUNT]} == {(48, 64)}
    assert {cv2.imread(str(r.image)).shape[:2] for r in records[COUNT:]} == {(240, 320)}


def test_train_on_the_recording(recorded: Recorded, tmp_path: Path) -> None:
    sets = [x for o in (*TINY_OVERRIDES, "epochs=2") for x in ("--set", o)]
    run = tmp_path / "run"
    done = fusionedge(
        "train",
        "--data",
        str(recorded.root),
        "--out",
        str(run),
        "--no-progress",
        *sets,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert (run / "best.safetensors").is_file()
