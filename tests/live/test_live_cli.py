"""`fusionedge run ... --headless` on a recorded clip (examples/make_clip.py), as a user runs it."""

from __future__ import annotations

import dataclasses
import itertools
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from live_helpers import Clip, write_avi

from fusionedge.manifest import read_manifest
from fusionedge.runtime import Predictor
from fusionedge.runtime import live_app as session_module
from fusionedge.runtime.live_app import LiveConfig, run_live

REQUIRED_KEYS = {
    "t",
    "label",
    "scores",
    "latency_ms",
    "input_age_ms",
    "present",
    "dropped_frames",
    "overflows",
}


def fusionedge(*args: str, timeout: float) -> tuple[subprocess.CompletedProcess, float]:
    script = Path(sys.executable).with_name("fusionedge")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "fusionedge.cli"]
    t = time.monotonic()
    done = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout)
    return done, time.monotonic() - t


@dataclass(frozen=True)
class Run:
    done: subprocess.CompletedProcess
    elapsed: float
    lines: list[dict]


@pytest.fixture(scope="module")
def clip_run(live_model: Path, live_clip: Clip) -> Run:
    done, elapsed = fusionedge(
        "run",
        str(live_model),
        "--camera",
        str(live_clip.avi),
        "--mic",
        str(live_clip.wav),
        "--headless",
        "--providers",
        "cpu",
        timeout=live_clip.duration + 60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return Run(done, elapsed, lines)


def test_run_ends_on_its_own_when_the_files_end(clip_run: Run, live_clip: Clip) -> None:
    assert clip_run.elapsed > live_clip.duration - 0.3
    assert clip_run.elapsed < live_clip.duration + 15  # start-up, not a hang
    assert f"{len(clip_run.lines)} results" in clip_run.done.stderr
    assert "Traceback" not in clip_run.done.stderr


def test_run_prints_one_json_object_per_line(clip_run: Run, live_clip: Clip) -> None:
    lines = clip_run.lines
    expected = live_clip.fps * live_clip.duration
    assert 0.75 * expected <= len(lines) <= 1.15 * expected  # about one per frame
    for line in lines:
        assert isinstance(line, dict)
        assert set(line) >= REQUIRED_KEYS, REQUIRED_KEYS - set(line)
        assert set(line["input_age_ms"]) == {"image", "audio"}
        assert set(line["present"]) == {"image", "audio", "text"}
        assert line["present"]["text"] is False  # no --text
        assert set(line["scores"]) == {"blue", "green", "red"}
        assert line["label"] == max(line["scores"], key=line["scores"].get)
        assert isinstance(line["latency_ms"], float) and line["latency_ms"] >= 0
        assert isinstance(line["dropped_frames"], int) and line["dropped_frames"] >= 0
        assert isinstance(line["overflows"], int) and line["overflows"] == 0
    both = [x for x in lines if x["present"]["image"] and x["present"]["audio"]]
    assert len(both) >= 0.9 * len(lines)
    for x in both:
        assert 0 <= x["input_age_ms"]["image"] <= 500
        assert -25 <= x["input_age_ms"]["audio"] <= 500
    ts = [x["t"] for x in lines]
    assert all(b >= a for a, b in itertools.pairwise(ts))
    assert ts[-1] - ts[0] == pytest.approx(live_clip.duration, abs=0.5)


def test_live_labels_agree_with_the_offline_predictor(
    clip_run: Run, live_clip: Clip, live_model: Path, live_data: Path
) -> None:
    """In the second half of each sample's span (its picture shown for a while, its sound
    in the window), the live label matches what predict() says about the sample's files."""
    records = {r.id: r for r in read_manifest(live_data).split("test")}
    with Predictor.from_path(live_model, providers="cpu", threads=1) as predictor:
        offline = {
            s["id"]: predictor.predict(image=records[s["id"]].image, audio=records[s["id"]].audio)
            for s in live_clip.timeline
        }
    with_image = [x for x in clip_run.lines if x["present"]["image"]]
    t0 = with_image[0]["t"]  # the first frame, shown at clip time 0
    agree = {}
    for sample in live_clip.timeline:
        lo = sample["start_s"] + 0.5 * (sample["end_s"] - sample["start_s"])
        hi = sample["end_s"] - 0.05
        labels = [x["label"] for x in with_image if lo <= x["t"] - t0 < hi]
        assert len(labels) >= 8, (sample, len(labels))
        agree[sample["id"]] = Counter(labels)[offline[sample["id"]].label] / len(labels)
    good = [sid for sid, fraction in agree.items() if fraction >= 0.6]
    assert len(good) >= len(live_clip.timeline) - 1, agree


def test_duration_rate_and_text_options(live_model: Path, live_clip: Clip) -> None:
    done, elapsed = fusionedge(
        "run",
        str(live_model),
        "--camera",
        str(live_clip.avi),
        "--mic",
        str(live_clip.wav),
        "--text",
        "red",
        "--headless",
        "--duration",
        "1.5",
        "--rate",
        "8",
        "--providers",
        "cpu",
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert elapsed < live_clip.duration  # stopped by --duration, not by the clip's end
    assert 9 <= len(lines) <= 14  # 8 per second for 1.5 s
    assert all(x["present"]["text"] for x in lines)
    assert all(x["present"]["image"] for x in lines[2:])


def test_missing_mic_file_is_one_clear_error(live_model: Path, tmp_path: Path) -> None:
    done, _ = fusionedge(
        "run", str(live_model), "--mic", str(tmp_path / "nope.wav"), "--headless", timeout=60
    )
    assert done.returncode == 2
    assert "nope.wav" in done.stderr and "no such audio file" in done.stderr
    assert "Traceback" not in done.stderr


def test_run_without_inputs_is_an_error(live_model: Path) -> None:
    done, _ = fusionedge("run", str(live_model), "--headless", timeout=60)
    assert done.returncode == 2
    assert "give at least one of --camera, --mic, --text" in done.stderr


@pytest.mark.parametrize("flag", [["--rate", "0"], ["--smoothing", "1"], ["--stale-ms", "-1"]])
def test_bad_live_options_are_one_clear_error(live_model: Path, flag: list[str]) -> None:
    done, _ = fusionedge("run", str(live_model), "--text", "red", "--headless", *flag, timeout=60)
    assert done.returncode == 2
    assert "error:" in done.stderr and "Traceback" not in done.stderr


# ---------------------------------------------------------------------- run_live in process


class _NoAudioPredictor:
    """Stands in for Predictor.from_path: the real model's spec without its audio."""

    def __init__(self, path: Path) -> None:
        with Predictor.from_path(path, providers="cpu") as real:
            spec = real.spec
        self.spec = spec.replace(
            modalities=("image", "text"),
            audio=None,
            encoders={m: e for m, e in spec.encoders.items() if m != "audio"},
        )
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_mic_for_a_model_without_audio_is_a_value_error(
    live_model: Path, live_clip: Clip, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub = _NoAudioPredictor(live_model)
    monkeypatch.setattr(
        session_module.Predictor, "from_path", classmethod(lambda cls, *a, **k: stub)
    )
    with pytest.raises(ValueError, match="audio"):
        run_live(LiveConfig(model=live_model, mic=str(live_clip.wav), headless=True))


def test_failed_start_releases_what_it_opened(
    live_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    avi = write_avi(tmp_path / "short.avi", 20, 20.0)  # plays 1 s
    opened: list[Predictor] = []
    original = Predictor.from_path.__func__  # type: ignore[attr-defined]

    def from_path(cls, *args, **kwargs):
        opened.append(original(cls, *args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(session_module.Predictor, "from_path", classmethod(from_path))
    config = LiveConfig(
        model=live_model, camera=str(avi), mic=str(tmp_path / "nope.wav"), headless=True
    )
    with pytest.raises(FileNotFoundError):
        run_live(config)
    time.sleep(0.2)
    cameras = [t for t in threading.enumerate() if t.name == f"camera:{avi}"]
    assert not cameras, f"camera threads still running: {cameras}"
    assert opened and opened[0].session is None, "the Predictor was left open"


def test_files_loop_and_each_result_reaches_the_callback(live_model: Path, tmp_path: Path) -> None:
    avi = write_avi(tmp_path / "one_second.avi", 20, 20.0)  # plays 1 s
    seen: list = []
    looped = LiveConfig(model=live_model, camera=str(avi), headless=True, duration_s=2.5, loop=True)
    with open(tmp_path / "lines.jsonl", "w") as out:
        count = run_live(looped, out=out, on_result=seen.append)
    assert count == len(seen) > 0
    # The 1 s file played on: results kept coming from fresh frames after its end.
    span = seen[-1].t - seen[0].t
    assert span >= 1.8, span
    assert all(r.present["image"] for r in seen[-10:])
    # Without loop the same run ends with the file.
    with open(tmp_path / "once.jsonl", "w") as out:
        once = run_live(dataclasses.replace(looped, loop=False), out=out)
    assert once < count


def test_run_loop_flag_plays_the_file_again(live_model: Path, tmp_path: Path) -> None:
    avi = write_avi(tmp_path / "one_second.avi", 20, 20.0)
    done, _ = fusionedge(
        "run", str(live_model), "--camera", str(avi), "--headless", "--loop",
        "--duration", "2.5", "--providers", "cpu", timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    ts = [json.loads(line)["t"] for line in done.stdout.splitlines() if line.strip()]
    assert ts[-1] - ts[0] >= 1.8
