"""`fusionedge eval --live` on a tiny trained model: run folder, .onnx file, split folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support import one_torch_thread, train_and_export, write_dataset  # noqa: F401 (fixture)

from fusionedge.cli import main

FRACTIONS = ("accuracy", "event_accuracy", "offline_accuracy")


# Every test on one torch thread (the fixture is imported from support).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny data set, a model trained on it, its .onnx file and its split folder."""
    root = tmp_path_factory.mktemp("live")
    data = write_dataset(root / "data")
    train_and_export(data, root, split=True)
    return data, root


def eval_live(model: Path, data: Path, *extra: str) -> dict:
    """The JSON of `fusionedge eval MODEL --data D --live --json`, run in this process."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["eval", str(model), "--data", str(data), "--live", "--json", *extra]) == 0
    return json.loads(out.getvalue())


def test_cli_live_json_for_a_run_folder_and_its_onnx_file(trained: tuple[Path, Path]) -> None:
    data, root = trained
    run = eval_live(root / "run", data)
    live = run["live"]
    assert live["n_samples"] == run["n"] == 12 and live["seed"] == 0
    assert all(0 <= live[k] <= 1 for k in FRACTIONS)
    assert live["gap"] == pytest.approx(live["offline_accuracy"] - live["event_accuracy"])
    assert 12 <= live["n_event_windows"] < live["n_windows"]
    assert live["settings"]["fps"] == 30 and live["settings"]["audio_hop_ms"] is None
    assert live["settings"]["scale_range"] == [0.4, 1.0]
    # Offline, the samples are decoded and scored as the plain evaluation does.
    assert live["offline_accuracy"] == pytest.approx(run["metrics"]["accuracy"])

    onnx = eval_live(root / "model.onnx", data)["live"]
    assert onnx["n_windows"] == live["n_windows"]
    assert onnx["offline_accuracy"] == pytest.approx(live["offline_accuracy"])
    # The same model in another backend: a window whose top two scores are a hair apart
    # may flip, nothing more.
    for key in ("accuracy", "event_accuracy"):
        assert onnx[key] == pytest.approx(live[key], abs=0.02)


def test_same_seed_same_figures_other_seed_other_windows(trained: tuple[Path, Path]) -> None:
    from fusionedge.runtime.onnx_eval import live_model_file

    data, root = trained
    first = live_model_file(root / "model.onnx", data, seed=7, providers="cpu")
    assert live_model_file(root / "model.onnx", data, seed=7, providers="cpu") == first
    other = live_model_file(root / "model.onnx", data, seed=8, providers="cpu")
    assert other["seed"] == 8 and other["n_windows"] != first["n_windows"]


def test_split_folder_reuses_audio_between_hops(trained: tuple[Path, Path]) -> None:
    from fusionedge.runtime.onnx_eval import live_model_file

    data, root = trained
    single = live_model_file(root / "model.onnx", data, providers="cpu")
    split = live_model_file(root / "model.split", data, providers="cpu")
    assert split["settings"]["audio_hop_ms"] == 100.0
    # The same turns and the same offline figure; only when audio is re-cut differs.
    assert split["n_windows"] == single["n_windows"]
    assert split["offline_accuracy"] == pytest.approx(single["offline_accuracy"])
    assert all(0 <= split[k] <= 1 for k in FRACTIONS)


def test_cli_live_table_and_no_torch_for_onnx(trained: tuple[Path, Path]) -> None:
    data, root = trained
    code = (
        "import sys; from fusionedge.cli import main; "
        f"rc = main(['eval', {str(root / 'model.onnx')!r}, '--data', {str(data)!r}, "
        "'--live', '--seed', '3']); "
        "print('torch loaded' if 'torch' in sys.modules else 'no torch'); sys.exit(rc)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "live accuracy, per event" in out.stdout and "gap (offline - per event)" in out.stdout
    assert "seed 3" in out.stdout and out.stdout.strip().endswith("no torch")
