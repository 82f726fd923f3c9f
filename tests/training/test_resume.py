"""A training run killed with SIGKILL resumes where it stopped and ends as if never killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from support import TINY_OVERRIDES, read_log, read_weights, tiny_config

from fusionedge.training import trainer
from fusionedge.training.checkpoint import load_checkpoint
from fusionedge.training.trainer import train

EPOCHS = 40  # ~0.1 s each: long enough to be caught mid-run, short enough for a test
# With the default augmentation of every modality back on: its random draws, too, must
# continue where the killed run stopped.
DEFAULT_AUGMENT = tuple(
    f"augment.{key}={value}"
    for key, value in {
        "image.zoom_out": 0.6,
        "image.aspect": 0.35,
        "audio.gain_db": 12,
        "audio.shift_s": 0.3,
        "audio.noise_snr_db": 5,
        "audio.speed": 0.1,
        "audio.spec_augment.time_masks": 2,
        "audio.spec_augment.freq_masks": 2,
    }.items()
)
OVERRIDES = (*TINY_OVERRIDES, *DEFAULT_AUGMENT, f"epochs={EPOCHS}", "seed=3")


def fusionedge_command() -> list[str]:
    script = Path(sys.executable).with_name("fusionedge")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "fusionedge.cli"]


def train_command(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        *fusionedge_command(),
        "-q",
        "train",
        "--data",
        str(data),
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]


def epochs_logged(out: Path) -> int:
    try:
        return len(read_log(out))
    except (FileNotFoundError, ValueError):
        return 0


def start_and_kill(data: Path, out: Path) -> int:
    """Starts a CLI training run and SIGKILLs it once an epoch is saved and logged.

    Returns the epochs logged at the moment of the kill.
    """
    sets = [a for o in OVERRIDES for a in ("--set", o)]
    proc = subprocess.Popen(
        train_command(data, out, *sets), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "last.safetensors").is_file() and epochs_logged(out) >= 1:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.005)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != -signal.SIGKILL:
        pytest.fail(
            f"the run was not killed mid-training (exit {proc.returncode}): "
            f"{stderr.decode(errors='replace')[-2000:]}"
        )
    return epochs_logged(out)


def test_sigkilled_run_resumes_to_the_uninterrupted_result(dataset: Path, tmp_path: Path) -> None:
    killed = tmp_path / "killed"
    logged = start_and_kill(dataset, killed)
    assert 1 <= logged < EPOCHS, logged
    saved = load_checkpoint(killed / "last.safetensors").state["epoch"]
    assert saved >= logged  # the checkpoint is written before its log row

    resumed = subprocess.run(
        train_command(dataset, killed, "--resume"), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"of {EPOCHS}" in resumed.stdout

    rows = read_log(killed)
    epochs = [int(r["epoch"]) for r in rows]
    assert epochs == list(range(1, EPOCHS + 1)), epochs  # consecutive, never restarted
    assert load_checkpoint(killed / "last.safetensors").state["epoch"] == EPOCHS

    # The same run, never interrupted (in this process: same config, same thread count).
    reference = tmp_path / "reference"
    train(dataset, reference, tiny_config(*OVERRIDES[len(TINY_OVERRIDES) :]), progress=False)
    for name in ("last.safetensors", "best.safetensors"):
        got, want = read_weights(killed / name), read_weights(reference / name)
        assert set(got) == set(want)
        for key in want:
            assert torch.equal(got[key], want[key]), f"{name}: {key} differs"
    ref_rows = read_log(reference)

    def drop_time(r: dict[str, str]) -> dict[str, str]:
        return {k: v for k, v in r.items() if k != "seconds"}

    assert [drop_time(r) for r in rows] == [drop_time(r) for r in ref_rows]
    assert (killed / "spec.json").read_text() == (reference / "spec.json").read_text()
    assert (killed / "metrics.json").read_text() == (reference / "metrics.json").read_text()


class Crash(BaseException):
    """Stands in for SIGKILL inside the process."""


def test_kill_between_checkpoint_and_log_row_keeps_the_log_complete(
    dataset: Path, tmp_path: Path, monkeypatch
) -> None:
    out = tmp_path / "run"
    write = trainer.RunLog.write

    def crash_at_epoch_2(self, row):
        if row["epoch"] == 2:
            raise Crash
        write(self, row)

    monkeypatch.setattr(trainer.RunLog, "write", crash_at_epoch_2)
    with pytest.raises(Crash):
        train(dataset, out, tiny_config("epochs=3"), progress=False)
    monkeypatch.undo()
    train(dataset, out, None, resume=True, progress=False)
    assert [int(r["epoch"]) for r in read_log(out)] == [1, 2, 3]
