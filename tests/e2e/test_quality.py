"""The default pipeline's quality bar: `pytest -m slow tests/e2e/test_quality.py` (~4 min).

demo-data and train with every default, then eval: the fused model must be right almost
always, and clearly better than any single modality (the demo data set is built so that
each modality alone fails on part of the samples while the pair nearly never does).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

TIME_LIMIT_S = 300.0


def fusionedge(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("fusionedge")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "fusionedge.cli"]
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_default_pipeline_fuses_well_and_in_time(tmp_path: Path) -> None:
    data, run = tmp_path / "data", tmp_path / "run"
    start = time.perf_counter()
    generated = fusionedge("demo-data", str(data))
    assert generated.returncode == 0, generated.stderr
    trained = fusionedge("train", "--data", str(data), "--out", str(run), "--no-progress")
    assert trained.returncode == 0, trained.stderr
    seconds = time.perf_counter() - start

    evaluated = fusionedge("eval", str(run), "--data", str(data), "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout)
    fused = result["metrics"]["accuracy"]
    singles = {m: v["accuracy"] for m, v in result["by_modality"].items()}
    report = f"fused {fused:.4f}, alone {singles}, demo-data + train {seconds:.0f} s"

    assert set(singles) == {"image", "audio", "text"}, report
    assert fused >= 0.95, report
    for modality, accuracy in singles.items():
        assert accuracy <= fused - 0.10, f"{modality} alone is too close to fused: {report}"
    assert seconds < TIME_LIMIT_S, report
