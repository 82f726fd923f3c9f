"""`fusionedge record` with real capture stacks, then `fusionedge train` on what it wrote.

Two runs append to the same folder: "red" from the MJPEG camera, "blue" from the clip's
video file, both with the virtual microphone (a 440 Hz tone). Between the runs the
manifest's trailing newline is removed (an editor that saves without one), so the second
run must add a newline before its first line and leave the first run's bytes alone.

Each run is one group: "red" gets a fresh session name, "blue" --group BLUE_GROUP. The
tests at the end need no PulseAudio: record() with a stand-in camera, and the CLI with an
audio file as the microphone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import soundfile as sf
from live_helpers import Clip, MjpegServer, VirtualMic
from support import TINY_OVERRIDES

from fusionedge.manifest import read_manifest, split_for_id
from fusionedge.runtime.record import RecordConfig, record

COUNT = 4
INTERVAL_S = 0.3
# A group whose hash is the train split, so that training below always has samples
# whichever split red's fresh session name hashes to.
BLUE_GROUP = next(f"blue-{i}" for i in range(100) if split_for_id(f"blue-{i}") == "train")


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
            "record",
            str(root),
            "--label",
            "blue",
            "--camera",
            str(live_clip.avi),
            "--group",
            BLUE_GROUP,
            *common,
            env=env,
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
    assert f"(group {BLUE_GROUP!r}, train split)" in recorded.runs[1].stdout


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
    # One group per run, so the hash split keeps each run's samples in one split.
    red_groups = {r.group for r in records[:COUNT]}
    assert len(red_groups) == 1 and red_groups.pop().startswith("session-")
    assert {r.group for r in records[COUNT:]} == {BLUE_GROUP}
    assert len({r.split for r in records[:COUNT]}) == 1
    assert {r.split for r in records[COUNT:]} == {"train"}


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


# ------------------------------------------------------------ without capture devices


def still_camera() -> SimpleNamespace:
    """Stands in for a started CameraSource: latest() is always a fresh grey frame."""
    image = np.full((12, 16, 3), 128, np.uint8)
    return SimpleNamespace(latest=lambda: SimpleNamespace(image=image, t_ns=time.monotonic_ns()))


def test_each_recording_session_is_one_group(tmp_path: Path) -> None:
    config = RecordConfig(out=tmp_path / "data", label="red", count=3, interval_s=0.0)
    first = record(config, still_camera(), None)
    second = record(config, still_camera(), None)
    named = record(
        RecordConfig(out=config.out, label="blue", count=2, interval_s=0.0, group="alice"),
        still_camera(),
        None,
    )
    groups = [{line["group"] for line in lines} for lines in (first, second, named)]
    assert all(len(g) == 1 for g in groups), groups
    assert groups[0] != groups[1]  # a fresh name per session, even in the same second
    assert groups[2] == {"alice"}
    records = read_manifest(config.out).records
    assert [r.group for r in records] == [line["group"] for line in first + second + named]
    for lines in (first, second, named):
        (group,) = {line["group"] for line in lines}
        assert {r.split for r in records if r.group == group} == {split_for_id(group)}


def test_a_blank_group_is_refused(tmp_path: Path) -> None:
    config = RecordConfig(out=tmp_path, label="red", count=1, interval_s=0.0, group=" ")
    with pytest.raises(ValueError, match="--group must be a non-empty name"):
        record(config, still_camera(), None)


def test_record_cli_group_flag_with_an_audio_file_as_microphone(tmp_path: Path) -> None:
    wav = tmp_path / "tone.wav"
    rate = 16000
    t = np.arange(3 * rate) / rate
    sf.write(str(wav), (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate)
    root = tmp_path / "data"
    args = ["--mic", str(wav), "--count", "2", "--interval", "0.1", "--window", "0.2"]
    done = fusionedge(
        "record", str(root), "--label", "hum", *args, "--warmup", "0.3", "--group", "kiosk-2"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"(group 'kiosk-2', {split_for_id('kiosk-2')} split)" in done.stdout
    lines = [json.loads(x) for x in (root / "manifest.jsonl").read_text().splitlines()]
    assert [(x["group"], "audio" in x) for x in lines] == [("kiosk-2", True)] * 2
