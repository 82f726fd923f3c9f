"""The runtime in a fresh interpreter: open a model, predict from files, never import torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

SCRIPT = """
import json, sys
from fusionedge.runtime import Predictor

model, image, audio = sys.argv[1:4]
with Predictor.from_path(model, providers="cpu") as predictor:
    result = predictor.predict(image=image, audio=audio, text="red")
    providers = predictor.providers
print("CHECK " + json.dumps({
    "torch_loaded": "torch" in sys.modules,
    "torch_modules": sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")),
    "label": result.label,
    "labels": list(predictor.spec.labels),
    "present": result.present,
    "score_sum": sum(result.scores.values()),
    "providers": providers,
}))
"""


def test_runtime_predicts_from_files_without_torch(model_path: Path, tmp_path: Path) -> None:
    import cv2

    image, audio = tmp_path / "frame.jpg", tmp_path / "clip.flac"
    bgr = np.zeros((30, 40, 3), np.uint8)
    bgr[:] = (40, 40, 220)  # red, as OpenCV writes it
    assert cv2.imwrite(str(image), bgr)
    t = np.arange(22050) / 44100
    sf.write(str(audio), (0.4 * np.sin(2 * np.pi * 400 * t)).astype(np.float32), 44100)

    result = subprocess.run(
        [sys.executable, "-I", "-c", SCRIPT, str(model_path), str(image), str(audio)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,  # not the repository: the installed package must be what is found
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [x for x in result.stdout.splitlines() if x.startswith("CHECK ")]
    assert len(lines) == 1, result.stdout
    check = json.loads(lines[0].removeprefix("CHECK "))
    assert check["torch_loaded"] is False, check["torch_modules"]
    assert check["torch_modules"] == []
    assert check["label"] in check["labels"] == ["blue", "green", "red"]
    assert check["present"] == {"image": True, "audio": True, "text": True}
    assert abs(check["score_sum"] - 1.0) < 1e-5
    assert check["providers"] == ["CPUExecutionProvider"]
