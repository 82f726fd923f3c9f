"""A user's own data set: image + audio only, grayscale PNGs, 8 kHz mono WAVs, default CLI.

Slow (a full default training run): `python -m pytest -m slow tests/e2e/test_user_data.py`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile
import soxr

pytestmark = pytest.mark.slow


def fusionedge(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fusionedge.cli", *args], capture_output=True, text=True, check=False
    )


def to_user_format(demo: Path, out: Path) -> None:
    """Rewrites the demo data the way a user's recordings might look."""
    (out / "img").mkdir(parents=True)
    (out / "wav").mkdir()
    lines = []
    for raw in (demo / "manifest.jsonl").read_text().splitlines():
        sample = json.loads(raw)
        grey = cv2.cvtColor(cv2.imread(str(demo / sample["image"])), cv2.COLOR_BGR2GRAY)
        cv2.imwrite(str(out / "img" / f"{sample['id']}.png"), grey)
        audio, rate = soundfile.read(str(demo / sample["audio"]), dtype="float32")
        soundfile.write(
            str(out / "wav" / f"{sample['id']}.wav"),
            soxr.resample(audio, rate, 8000),
            8000,
            subtype="PCM_16",
        )
        # No text, no split: the split then comes from the hash of the id.
        lines.append(
            {
                "id": sample["id"],
                "image": f"img/{sample['id']}.png",
                "audio": f"wav/{sample['id']}.wav",
                "label": sample["label"],
            }
        )
    (out / "manifest.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_grayscale_8khz_image_audio_data_set_trains_with_defaults(tmp_path):
    demo, data, run = tmp_path / "demo", tmp_path / "data", tmp_path / "run"
    assert fusionedge("demo-data", str(demo)).returncode == 0
    to_user_format(demo, data)
    first = json.loads((data / "manifest.jsonl").read_text().splitlines()[0])
    grey = cv2.imread(str(data / first["image"]), cv2.IMREAD_UNCHANGED)
    assert grey.ndim == 2
    assert soundfile.info(str(data / first["audio"])).samplerate == 8000

    trained = fusionedge("train", "--data", str(data), "--out", str(run), "--no-progress")
    assert trained.returncode == 0, trained.stderr
    spec = json.loads((run / "spec.json").read_text())
    assert spec["modalities"] == ["image", "audio"]
    assert spec["audio"]["sample_rate"] == 16000  # resampled up from 8 kHz, as specified

    evaluated = fusionedge("eval", str(run), "--data", str(data), "--split", "test", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout)
    assert set(result["by_modality"]) == {"image", "audio"}
    fused = result["metrics"]["accuracy"]
    print("fused", fused, {m: v["accuracy"] for m, v in result["by_modality"].items()})
    # 8 kHz speech and grey cards lose a little; fusion must still beat both inputs alone.
    assert fused >= 0.9
    for modality, alone in result["by_modality"].items():
        assert alone["accuracy"] <= fused - 0.1, modality
    assert np.isfinite(result["metrics"]["macro_f1"])
