"""`fusionedge record DIR --label L`: collect new samples with the live capture stack.

Each sample is one moment: the camera frame captured then, and the audio window centred
on it, saved as img/<id>.png and wav/<id>.wav and appended to DIR/manifest.jsonl. The
files are written before the manifest line, and the line is appended, flushed and synced
in one write, so an interrupted recording never leaves a line that points at nothing and
never damages the lines already there. Nothing is orphaned the other way either: the
manifest is opened for appending before anything is saved, and a sample whose line
cannot be written after all (or that Ctrl-C cuts short) has its files removed.

Every line of one recording session carries the same group (a fresh name per call, or
--group NAME), so the hash split keeps a session's samples in one split: near-identical
moments of one sitting never end up on both sides of train and validation.
"""

from __future__ import annotations

import contextlib
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
    broken one; an empty one has none)."""
    manifest = out / MANIFEST_NAME
    if not manifest.exists() or manifest.stat().st_size == 0:
        return set()
    return {r.id for r in read_manifest(out, require_labels=False).records}


def record(
    config: RecordConfig, camera: CameraSource | None, audio: AudioSource | None
) -> list[dict]:
    """Records config.count samples from started sources; returns the manifest lines.

    Raises:
        OSError: the manifest cannot be appended to (checked before anything is saved),
            or a file or a line could not be written (that sample's files are removed).
        ManifestError: the manifest is broken (nothing is appended to a broken one).
    """
    if camera is None and audio is None:
        raise ValueError("record needs a camera, a microphone, or both")
    if not config.label.strip():
        raise ValueError("--label must be a non-empty class name")
    if config.group is not None and not config.group.strip():
        raise ValueError("--group must be a non-empty name (a speaker, a session)")
    group = config.group if config.group is not None else session_group()
    manifest = config.out / MANIFEST_NAME
    created = check_appendable(manifest)
    try:
        return record_samples(config, camera, audio, group)
    finally:
        if created:
            _remove_if_empty(manifest)


def record_samples(
    config: RecordConfig, camera: CameraSource | None, audio: AudioSource | None, group: str
) -> list[dict]:
    """The recording loop: a fresh id per moment, each sample saved and appended."""
    out = config.out
    taken = existing_ids(out)
    (out / "img").mkdir(exist_ok=True)
    (out / "wav").mkdir(exist_ok=True)
    stem = "".join(c if c.isalnum() else "_" for c in config.label.strip())[:24]
    lines = []
    for i in range(config.count):
        time.sleep(config.interval_s if i else 0.0)
        sample_id = f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}-{i:03d}"
        while sample_id in taken:
            sample_id += "x"
        line = record_one(config, camera, audio, sample_id, group)
        if line is not None:
            taken.add(sample_id)
            lines.append(line)
            log.info("recorded %s (%d/%d)", sample_id, i + 1, config.count)
    return lines


def check_appendable(manifest: Path) -> bool:
    """Opens the manifest for appending and closes it, writing nothing; True when that
    created it (empty). Run before any capture is saved: a data set whose manifest cannot
    take a line must not get image and WAV files that no line will ever name. Opening is
    the test, not os.access, which says yes to root whatever the file.

    Raises:
        OSError: naming the manifest and why it cannot be appended to.
    """
    try:
        manifest.parent.mkdir(parents=True, exist_ok=True)
        existed = manifest.exists()
        with manifest.open("ab"):
            pass
    except OSError as e:
        raise OSError(e.errno, f"cannot append a line to {manifest}: {e.strerror}") from e
    return not existed


def _remove_if_empty(manifest: Path) -> None:
    """Removes a manifest this session created and wrote nothing to: an empty manifest
    is not a readable data set."""
    with contextlib.suppress(OSError):
        if manifest.stat().st_size == 0:
            manifest.unlink()


def record_one(
    config: RecordConfig,
    camera: CameraSource | None,
    audio: AudioSource | None,
    sample_id: str,
    group: str,
) -> dict | None:
    """Saves one moment's files and appends its line; returns the line, or None when
    nothing was captured. Any failure (or Ctrl-C) before the line is in removes the
    sample's files, so no file is left that no line names."""
    written: list[Path] = []
    try:
        line = capture(config, camera, audio, sample_id, written)
        if line is None:
            return None
        line["label"] = config.label
        if config.split:
            line["split"] = config.split
        line["group"] = group
        append_line(config.out / MANIFEST_NAME, line)
        return line
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise


def capture(
    config: RecordConfig,
    camera: CameraSource | None,
    audio: AudioSource | None,
    sample_id: str,
    written: list[Path],
) -> dict | None:
    """Writes the sample's image and WAV (each path added to written before it is
    created) and returns its line so far; None when nothing was captured."""
    import cv2
    import soundfile

    out = config.out
    moment = time.monotonic_ns()
    line: dict = {"id": sample_id}
    if camera is not None:
        frame = camera.latest()
        if frame is None or abs(frame.t_ns - moment) > 0.5e9:
            log.warning("sample %s: no fresh camera frame; recorded without an image", sample_id)
        else:
            moment = frame.t_ns
            path = out / "img" / f"{sample_id}.png"
            written.append(path)
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
            path = out / "wav" / f"{sample_id}.wav"
            written.append(path)
            try:
                soundfile.write(str(path), window.samples, audio.device_rate, subtype="PCM_16")
            except RuntimeError as e:  # libsndfile's errors (disk full, say) are RuntimeErrors
                raise OSError(f"cannot write {path}: {e}") from e
            line["audio"] = f"wav/{sample_id}.wav"
    if config.text:
        line["text"] = config.text
    if len(line) == 1:
        log.warning("sample %s: nothing captured; skipped", sample_id)
        return None
    return line


def append_line(manifest: Path, line: dict) -> None:
    """Appends one JSON line in a single synced write, after a newline if the file's last
    line lacks one. A write that fails part-way (disk full, file size limit) is cut off
    again, so the manifest keeps only whole lines.

    Unbuffered (os.write): a buffered file would retry its buffer when closed after a
    failure and could append the rest of the line after the cut.

    Raises:
        OSError: naming the manifest; it is as it was before the call.
    """
    data = (json.dumps(line, allow_nan=False) + "\n").encode("utf-8")
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0)
    fd = os.open(manifest, flags, 0o666)
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        if size > 0:
            os.lseek(fd, size - 1, os.SEEK_SET)  # reads only: O_APPEND writes at the end
            if os.read(fd, 1) != b"\n":
                data = b"\n" + data
        try:
            _write_all(fd, data)
            os.fsync(fd)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise OSError(e.errno, f"cannot append to {manifest}: {e.strerror}") from e
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    """os.write until all of data is written; a short write (the file size limit reached
    part-way) is followed by one that raises."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
