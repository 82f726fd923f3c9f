"""examples/node: the Node.js app gives the label and scores `fusionedge predict --json`
gives, on a tiny exported model with real PNG and WAV files.

The app's dependencies (onnxruntime-node, sharp) are installed with `npm ci` into a cache
folder keyed by the lock file (FUSIONEDGE_NODE_CACHE, else ~/.cache/fusionedge/
node-example), so only the first run downloads them: about 6 s, 124 MB, on a fast
link, a few seconds from a warm npm cache. Skipped, saying why, when node or npm is
missing or the npm registry cannot be reached.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile as sf
from support import train_and_export, write_dataset

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "node"
FILES = ("package.json", "package-lock.json", ".npmrc", "predict.js", "resize.js", "wav.js")
NETWORK_ERRORS = ("ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED", "ETIMEDOUT", "ECONNRESET", "network")
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def app() -> Path:
    """A folder with the example's files and its node_modules installed by npm ci."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed for examples/node (e.g. apt-get install nodejs npm)")
    lock = hashlib.sha256((EXAMPLE / "package-lock.json").read_bytes()).hexdigest()[:16]
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fusionedge"
    root = Path(os.environ.get("FUSIONEDGE_NODE_CACHE", default / "node-example")) / lock
    root.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copy2(EXAMPLE / name, root / name)
    if not (root / "node_modules" / ".package-lock.json").is_file():
        env = {**os.environ, "ONNXRUNTIME_NODE_INSTALL": "skip"}
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--prefer-offline"],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode != 0 and any(e in done.stderr for e in NETWORK_ERRORS):
            pytest.skip(f"the npm registry cannot be reached: {done.stderr.strip()[-300:]}")
        assert done.returncode == 0, done.stderr[-3000:]
    return root


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("node_model")
    return train_and_export(write_dataset(root / "data", {"train": 12, "val": 3}), root)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real files: PNGs that shrink by a fractional and an integer factor and one that
    grows (the model takes 16 x 16), a grey one, WAVs at the model's 8 kHz longer and
    shorter than its 4000-sample window, stereo int16 and mono float."""
    root = tmp_path_factory.mktemp("node_media")
    rng = np.random.default_rng(7)
    files: dict[str, Path] = {}
    for name, (h, w, c) in {
        "red_37x29": (29, 37, 3),
        "green_64x48": (48, 64, 3),
        "grey_23x41": (41, 23, 1),
        "blue_10x12": (12, 10, 3),
    }.items():
        base = np.array({"red": (40, 40, 220), "green": (40, 200, 40)}.get(name[:3], (220, 60, 40)))
        noise = rng.normal(0, 40, size=(h, w, 3))
        pixels = np.clip(base[None, None, :c] + noise[..., :c], 0, 255).astype(np.uint8)
        files[name] = root / f"{name}.png"
        assert cv2.imwrite(str(files[name]), pixels[..., 0] if c == 1 else pixels)
    for name, (seconds, channels, subtype, hz) in {
        "tone_long": (0.7, 2, "PCM_16", 400.0),
        "tone_short": (0.3, 1, "FLOAT", 2200.0),
    }.items():
        t = np.arange(int(seconds * 8000)) / 8000
        wave = 0.5 * np.sin(2 * np.pi * hz * t) + rng.normal(0, 0.05, size=t.shape)
        stereo = np.stack([wave, 0.8 * wave[::-1]], axis=1)[:, :channels]
        files[name] = root / f"{name}.wav"
        sf.write(str(files[name]), stereo.astype(np.float32), 8000, subtype=subtype)
    return files


CASES = {
    "fractional-shrink+long-stereo+text": ("red_37x29", "tone_long", "red"),
    "integer-shrink+short-float": ("green_64x48", "tone_short", None),
    "grey-image-alone": ("grey_23x41", None, None),
    "enlarge+text": ("blue_10x12", None, "blue sky"),
}


def python_predict(model: Path, args: list[str]) -> dict:
    command = [sys.executable, "-m", "fusionedge.cli", "predict", str(model), "--json", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def node_predict(app: Path, model: Path, args: list[str]) -> dict:
    command = [shutil.which("node") or "node", str(app / "predict.js"), str(model), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_node_example_matches_fusionedge_predict(
    app: Path, model: Path, media: dict[str, Path], case: str
) -> None:
    image, audio, text = CASES[case]
    args = ["--image", str(media[image])]
    args += ["--audio", str(media[audio])] if audio else []
    args += ["--text", text] if text else []
    expected = python_predict(model, args)
    got = node_predict(app, model, args)
    assert got["present"] == expected["present"]
    assert got["label"] == expected["label"]
    assert got["scores"].keys() == expected["scores"].keys()
    diff = max(abs(got["scores"][k] - v) for k, v in expected["scores"].items())
    print(f"{case}: max |node - python| = {diff:.3g}")
    assert diff <= TOLERANCE, (got["scores"], expected["scores"])


def test_node_example_refuses_a_model_file_that_model_json_does_not_describe(
    app: Path, model: Path, tmp_path: Path
) -> None:
    changed = tmp_path / "model.onnx"
    changed.write_bytes(model.read_bytes() + b"\0")
    shutil.copy(model.with_suffix(".json"), tmp_path / "model.json")
    done = subprocess.run(
        [shutil.which("node") or "node", str(app / "predict.js"), str(changed)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "belongs to a file with" in done.stderr
