"""`fusionedge record DIR --label L`: collect new samples with the live capture stack.

Each sample is one moment: the camera frame captured then, and the audio window centred
on it, saved as img/<id>.png and wav/<id>.wav and appended to DIR/manifest.jsonl. The
files are written before the manifest line, and the line is appended, flushed and synced
in one write, so an interrupted recording never leaves a line that points at nothing and
never damages the lines already there.

Every line of one recording session carries the same group (a fresh name per call, or
--group NAME), so the hash split keeps a session's samples in one split: near-identical
moments of one sitting never end up on both sides of train and validation.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from fusionedge.manifest import MANIFEST_NAME, read_manifest
from fusionedge.runtime.audio_sources import AudioSource
from fusionedge.runtime.camera import CameraSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecordConfig:
    """What `fusionedge record` was asked for.

    Attributes:
        out: Data set folder (created, or appended to).
        label: The label of every sample recorded now.
        count: Samples to record.
        interval_s: Seconds between samples (time to show the next card, say).
        window_s: Seconds of audio per sample, centred on the frame's capture time.
        text: A fixed text hint stored with each sample, or None.
        split: A split for the new lines, or None (then it comes from the group's hash).
        group: The group of the new lines (a speaker, a session), or None for a fresh
            name for this session.
    """

    out: Path
    label: str
    count: int = 10
    interval_s: float = 1.5
    window_s: float = 1.0
    text: str | None = None
    split: str | None = None
    group: str | None = None


def session_group() -> str:
    """A new group name for one recording session: its start time, plus random hex so that
    two sessions started in the same second (on two machines, say) stay apart."""
    return f"session-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def existing_ids(out: Path) -> set[str]:
    """Ids already in the data set (its manifest is validated first: never append to a
    broken one)."""
    if not (out / MANIFEST_NAME).exists():
        return set()
    return {r.id for r in read_manifest(out, require_labels=False).records}


def record(
    config: RecordConfig, camera: CameraSource | None, audio: AudioSource | None
) -> list[dict]:
    """Records config.count samples from started sources; returns the manifest lines."""
    import cv2
    import soundfile

    if camera is None and audio is None:
        raise ValueError("record needs a camera, a microphone, or both")
    if not config.label.strip():
        raise ValueError("--label must be a non-empty class name")
    if config.group is not None and not config.group.strip():
        raise ValueError("--group must be a non-empty name (a speaker, a session)")
    group = config.group if config.group is not None else session_group()
    out = config.out
    (out / "img").mkdir(parents=True, exist_ok=True)
    (out / "wav").mkdir(parents=True, exist_ok=True)
    taken = existing_ids(out)
    stem = "".join(c if c.isalnum() else "_" for c in config.label.strip())[:24]
    lines = []
    for i in range(config.count):
        time.sleep(config.interval_s if i else 0.0)
        moment = time.monotonic_ns()
        sample_id = f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}-{i:03d}"
        while sample_id in taken:
            sample_id += "x"
        line: dict = {"id": sample_id}
        if camera is not None:
            frame = camera.latest()
            if frame is None or abs(frame.t_ns - moment) > 0.5e9:
                log.warning(
                    "sample %s: no fresh camera frame; recorded without an image", sample_id
                )
            else:
                moment = frame.t_ns
                path = out / "img" / f"{sample_id}.png"
                if not cv2.imwrite(str(path), frame.image):
                    raise OSError(f"cannot write {path}")
                line["image"] = f"img/{sample_id}.png"
        if audio is not None:
            # Wait until the audio after the moment has arrived, then cut the window
            # centred on it, at the device's own rate (the data set takes any rate).
            end = moment + int(config.window_s / 2 * 1e9)
            time.sleep(max(0.0, (end - time.monotonic_ns()) / 1e9 + 0.05))
            window = audio.ring.window(int(config.window_s * audio.device_rate), end)
            if window is None:
                log.warning("sample %s: no audio captured; recorded without audio", sample_id)
            else:
                soundfile.write(
                    str(out / "wav" / f"{sample_id}.wav"),
                    window.samples,
                    audio.device_rate,
                    subtype="PCM_16",
                )
                line["audio"] = f"wav/{sample_id}.wav"
        if config.text:
            line["text"] = config.text
        line["label"] = config.label
        if config.split:
            line["split"] = config.split
        line["group"] = group
        if "image" not in line and "audio" not in line and "text" not in line:
            log.warning("sample %s: nothing captured; skipped", sample_id)
            continue
        append_line(out / MANIFEST_NAME, line)
        taken.add(sample_id)
        lines.append(line)
        log.info("recorded %s (%d/%d)", sample_id, i + 1, config.count)
    return lines


def append_line(manifest: Path, line: dict) -> None:
    """Appends one JSON line in a single synced write, after a newline if the file's last
    line lacks one."""
    data = json.dumps(line) + "\n"
    with manifest.open("ab+") as f:
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                data = "\n" + data
        f.write(data.encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())
