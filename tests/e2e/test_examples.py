"""examples/*.py run as a user runs them (this Python, a subprocess each) on a tiny data
set, so that they cannot rot: each test checks what the example promises, not its text.

train_and_export.py trains the tiny model once (TINY_OVERRIDES through its --set) for the
module; embed_predictor.py and live_web_demo.py then use the model it exported.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile as sf
from support import CLASSES, TINY_OVERRIDES, write_dataset

from fusionedge.manifest import read_manifest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SPLITS = ("val", "test")


def run_example(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"{name} failed:\n{done.stdout}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """(data set, OUT folder, stdout) of train_and_export.py on the tiny data set."""
    root = tmp_path_factory.mktemp("examples")
    data = write_dataset(root / "data")
    settings = [arg for item in TINY_OVERRIDES for arg in ("--set", item)]
    done = run_example(
        "train_and_export.py", str(data), str(root / "out"), "--epochs", "6", *settings
    )
    return data, root / "out", done.stdout


def printed_table(stdout: str) -> dict[str, dict[str, float]]:
    """The example's accuracy table: {split: {"fused" or a modality: accuracy}}."""
    lines = stdout.splitlines()
    header = next(line.split() for line in lines if line.startswith("accuracy "))
    rows = {
        line.split()[0]: line.split()[1:]
        for line in lines
        if line.split()[:1] in (["val"], ["test"])
    }
    return {split: dict(zip(header[1:], map(float, rows[split]), strict=True)) for split in rows}


def test_train_and_export_prints_what_fusionedge_eval_measures(trained) -> None:
    data, out, stdout = trained
    model = out / "model.onnx"
    assert model.is_file() and (out / "run" / "best.safetensors").is_file()
    assert f"model: {model}" in stdout
    table = printed_table(stdout)
    assert set(table) == set(SPLITS)
    for split in SPLITS:
        args = ["eval", str(model), "--data", str(data), "--split", split, "--json"]
        cli = subprocess.run(
            [sys.executable, "-m", "fusionedge.cli", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        report = json.loads(cli.stdout)
        expected = {"fused": report["metrics"]["accuracy"]}
        expected |= {m: v["accuracy"] for m, v in report["by_modality"].items()}
        assert table[split] == pytest.approx(expected, abs=5e-5), split
    # The tiny data set tells its classes apart in every modality: a working pipeline
    # learns it (support.write_dataset).
    assert table["val"]["fused"] >= 0.8


def test_train_and_export_writes_a_manifest_from_label_folders(tmp_path: Path) -> None:
    """DATA/<label>/<name>.png + .wav (+ .txt) -> manifest.jsonl that read_manifest takes."""
    source = write_dataset(tmp_path / "source", per_split={"train": 2})
    records = read_manifest(source).records
    layout = tmp_path / "layout"
    for r in records:
        (layout / r.label).mkdir(parents=True, exist_ok=True)
        shutil.copy(r.image, layout / r.label / f"{r.id}.png")
        shutil.copy(r.audio, layout / r.label / f"{r.id}.wav")
        if r.text:
            (layout / r.label / f"{r.id}.txt").write_text(r.text + "\n")
    spec = importlib.util.spec_from_file_location(
        "train_and_export", EXAMPLES / "train_and_export.py"
    )
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    assert example.manifest_from_folders(layout) == len(records)
    written = {r.id: r for r in read_manifest(layout).records}
    assert written.keys() == {f"{r.label}/{r.id}" for r in records}
    for r in records:
        w = written[f"{r.label}/{r.id}"]
        assert (w.label, w.text, w.image.name, w.audio.name) == (
            r.label,
            r.text,
            f"{r.id}.png",
            f"{r.id}.wav",
        )


def test_embed_predictor_calls_back_once_per_input_with_predict_s_labels(
    trained, tmp_path: Path
) -> None:
    from fusionedge.runtime import Predictor

    data, out, _ = trained
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    expected: dict[str, dict] = {}
    for r in read_manifest(data).split("test"):
        given = {"image": inputs / f"{r.id}.png", "audio": inputs / f"{r.id}.wav"}
        shutil.copy(r.image, given["image"])
        shutil.copy(r.audio, given["audio"])
        if r.text:
            (inputs / f"{r.id}.txt").write_text(r.text)
            given["text"] = r.text
        expected[r.id] = given
    expected["only_text"] = {"text": "green"}
    (inputs / "only_text.txt").write_text("green")
    (inputs / "broken.png").write_bytes(b"not a picture")

    done = run_example("embed_predictor.py", str(out / "model.onnx"), str(inputs))
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(x["id"] for x in lines) == sorted([*expected, "broken"])  # one each
    results = {x["id"]: x for x in lines}
    error = results.pop("broken")["error"]
    assert error.startswith("MediaError: ") and "broken.png" in error
    with Predictor.from_path(out / "model.onnx", providers="cpu") as predictor:
        for sample_id, given in expected.items():
            direct = predictor.predict(**given)
            assert results[sample_id]["label"] == direct.label, sample_id
            assert results[sample_id]["score"] == pytest.approx(direct.top_k[0][1], abs=1e-4)
            assert results[sample_id]["present"] == [m for m, p in direct.present.items() if p]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_sigint() -> None:
    """SIGINT back to its default in the child: a test run started in the background by a
    non-interactive shell ignores it, and the child would inherit that (live_helpers.py)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def latest(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url + "api/latest", timeout=5) as response:
            return json.loads(response.read())
    except OSError:
        return None  # not listening yet, or 503 before the first result


def test_live_web_demo_serves_results_from_files_and_stops_on_ctrl_c(
    trained, tmp_path: Path
) -> None:
    _, out, _ = trained
    # 30 s of a red card on camera and red's tone on the microphone: far longer than the
    # test, so the demo is still running when it is interrupted.
    colour, tone, _ = CLASSES["red"]
    video = cv2.VideoWriter(
        str(tmp_path / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48)
    )
    assert video.isOpened()
    frame = np.full((48, 64, 3), colour, np.uint8)
    for _ in range(300):
        video.write(frame)
    video.release()
    t = np.arange(30 * 8000) / 8000
    sf.write(tmp_path / "clip.wav", 0.4 * np.sin(2 * np.pi * tone * t), 8000, subtype="PCM_16")

    port = free_port()
    cmd = [sys.executable, str(EXAMPLES / "live_web_demo.py"), str(out / "model.onnx")]
    cmd += ["--camera", str(tmp_path / "clip.avi"), "--mic", str(tmp_path / "clip.wav")]
    proc = subprocess.Popen(
        [*cmd, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        result, deadline = None, time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            result = latest(url)
            if result and result["present"]["image"] and result["present"]["audio"]:
                break
            time.sleep(0.2)
        assert result is not None, "no result on /api/latest"
        assert result["present"] == {"image": True, "audio": True, "text": False}
        assert result["label"] == "red"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert f"web view: {url}" in stdout
    stopped = re.search(r"stopped after (\d+) results", stdout)
    assert stopped and int(stopped[1]) > 0, stdout
    assert latest(url) is None  # the server went with it
