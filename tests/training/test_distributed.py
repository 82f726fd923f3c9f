"""Training on 2 processes (torchrun, gloo on CPU) reaches the quality of 1 process.

The 2-process run is SIGKILLed mid-run and resumed, so the default test run also covers
resuming; the slow test checks that the resumed run is bit-for-bit the uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from support import TINY_OVERRIDES, read_log, read_weights, tiny_config

from fusionedge.training import distributed
from fusionedge.training.checkpoint import load_checkpoint
from fusionedge.training.distributed import DistContext
from fusionedge.training.torch_eval import evaluate_run
from fusionedge.training.trainer import train

EPOCHS = 10  # ~0.2 s each on 2 processes: time to catch the run between epochs
# The data set fixture has 48 training samples: 24 per rank, 2 batches of 16 + 8.
OVERRIDES = (*TINY_OVERRIDES, f"epochs={EPOCHS}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_command(data: Path, out: Path, nproc: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        "-m",
        "fusionedge.cli",
        "train",
        "--data",
        str(data),
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
SETS = [a for o in OVERRIDES for a in ("--set", o)]


def torchrun(data: Path, out: Path, nproc: int, *extra: str) -> subprocess.CompletedProcess:
    command = torchrun_command(data, out, nproc, *extra)
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=240, env=ENV)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"torchrun did not finish in {e.timeout} s: {str(e.stderr)[-2000:]}")


def epochs_logged(out: Path) -> int:
    try:
        return len(read_log(out))
    except (FileNotFoundError, ValueError):
        return 0


def children(pid: int) -> list[int]:
    """Child process ids, from /proc (torchrun starts each worker in its own session, so
    killing torchrun's process group would leave the workers running)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (name) state ppid ...": the name may hold spaces, so split after ")".
            ppid = int(stat.read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            found.append(int(stat.parent.name))
    return found


def kill_job(proc: subprocess.Popen) -> None:
    """SIGKILLs the workers, then torchrun: as when the machine loses power."""
    for pid in children(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGKILL)


def start_and_kill(data: Path, out: Path, after: int = 2) -> int:
    """Starts a 2-process run and SIGKILLs its workers and torchrun once `after` epochs
    are logged; returns the epochs logged at that moment."""
    proc = subprocess.Popen(
        torchrun_command(data, out, 2, *SETS),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
    )
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if epochs_logged(out) >= after:
                kill_job(proc)
                break
            time.sleep(0.005)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            kill_job(proc)
            proc.wait()
    time.sleep(0.5)  # the workers' last writes (if any) land before the epochs are counted
    if proc.returncode != -signal.SIGKILL:
        pytest.fail(
            f"the run was not killed mid-training (exit {proc.returncode}): "
            f"{stderr.decode(errors='replace')[-2000:]}"
        )
    return epochs_logged(out)


@pytest.fixture(scope="module")
def runs(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same tiny run on 2 processes (torchrun; killed and resumed) and on 1 (here)."""
    root = tmp_path_factory.mktemp("dist")
    two = root / "two"
    logged = start_and_kill(dataset, two)
    assert 2 <= logged < EPOCHS, logged
    proc = torchrun(dataset, two, 2, "--resume")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.count("run folder:") == 1, proc.stdout  # rank 0 reports, alone
    one = root / "one"
    train(dataset, one, tiny_config(*OVERRIDES[len(TINY_OVERRIDES) :]), progress=False)
    return one, two


def test_two_processes_reach_the_quality_of_one(runs, dataset: Path) -> None:
    one, two = runs
    for run in (one, two):
        acc = [float(r["val_accuracy"]) for r in read_log(run)]
        assert acc[-1] >= 0.9, (run.name, acc)  # chance is 1/3
        loss = [float(r["train_loss"]) for r in read_log(run)]
        assert loss[-1] < 0.6 * loss[0], (run.name, loss)
    test_one = evaluate_run(one, dataset, "test")["metrics"]["accuracy"]
    test_two = evaluate_run(two, dataset, "test")["metrics"]["accuracy"]
    assert test_two >= 0.9 and abs(test_two - test_one) <= 0.1, (test_one, test_two)
    # Not the same weights (another batch composition and half the steps), but trained.
    w1, w2 = read_weights(one / "last.safetensors"), read_weights(two / "last.safetensors")
    assert set(w1) == set(w2)
    assert any(not np.array_equal(w1[k].numpy(), w2[k].numpy()) for k in w1)


def test_two_process_run_folder_is_complete_and_shards_are_disjoint(runs) -> None:
    _, two = runs
    names = {p.name for p in two.iterdir()}
    assert {"config.json", "spec.json", "best.safetensors", "last.safetensors"} <= names
    assert {"log.csv", "metrics.json"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    rows = read_log(two)
    assert [int(r["epoch"]) for r in rows] == list(range(1, EPOCHS + 1))  # one writer
    # Batch size is per process: 24 samples per rank -> 2 steps per epoch.
    assert [int(r["step"]) for r in rows] == [2 * e for e in range(1, EPOCHS + 1)]
    last = load_checkpoint(two / "last.safetensors")
    assert last.state["epoch"] == EPOCHS and last.ema is not None
    load_checkpoint(two / "best.safetensors")
    info = json.loads((two / "metrics.json").read_text())["distributed"]
    assert info["world_size"] == 2 and info["backend"] == "gloo"
    assert info["global_batch_size"] == 32
    # This invocation (the resume) trained the epochs after the kill's last checkpoint.
    saved = EPOCHS - info["train_samples_per_rank"][0] // 24  # epochs before the kill
    assert 1 <= saved < EPOCHS, info
    assert info["train_samples_per_rank"] == [24 * (EPOCHS - saved)] * 2
    assert info["last_epoch_samples_per_rank"] == [24, 24]
    assert info["last_epoch_shared_samples"] == 0


def test_shards_are_disjoint_equal_and_cover_the_order() -> None:
    order = np.random.default_rng(0).permutation(11)
    shards = [order[distributed.shard(order, DistContext(r, 3))] for r in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3]  # trimmed: every rank the same batches
    assert len(set(np.concatenate(shards).tolist())) == 9
    assert distributed.shard(order, DistContext()).tolist() == list(range(11))


def test_more_processes_than_samples_is_refused() -> None:
    with pytest.raises(ValueError, match="4 processes but only 3 training samples"):
        distributed.check_size(3, DistContext(0, 4))
    distributed.check_size(4, DistContext(0, 4))


def test_torchrun_environment_and_devices(monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not distributed.env_context().enabled
    for key, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    ctx = distributed.env_context()
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.is_main) == (1, 2, 1, False)
    assert distributed.device_for("cuda", ctx) == "cuda:1"
    assert distributed.device_for("cpu", ctx) == "cpu"
    with pytest.raises(ValueError, match="names one GPU"):
        distributed.device_for("cuda:0", ctx)
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="RANK=2"):
        distributed.env_context()


@pytest.mark.slow
def test_resumed_two_process_run_is_the_uninterrupted_one(runs, dataset: Path, tmp_path) -> None:
    _, two = runs
    proc = torchrun(dataset, tmp_path / "ref", 2, *SETS)
    assert proc.returncode == 0, proc.stderr[-4000:]
    for name in ("last.safetensors", "best.safetensors"):
        got, want = read_weights(two / name), read_weights(tmp_path / "ref" / name)
        assert all(np.array_equal(got[k].numpy(), want[k].numpy()) for k in want), name

    def drop_time(rows: list[dict[str, str]]) -> list[dict[str, str]]:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    assert drop_time(read_log(two)) == drop_time(read_log(tmp_path / "ref"))
