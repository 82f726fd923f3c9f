"""Several streams on one model: SharedModel's batching and `fusionedge run` with several
cameras (runtime/shared_model.py, runtime/multi_app.py)."""

from __future__ import annotations

import _thread
import io
import itertools
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile

from fusionedge.cli import main
from fusionedge.runtime import NonFiniteError, Predictor, batch_wait
from fusionedge.runtime.batch_wait import BatchWait
from fusionedge.runtime.live import LiveOptions
from fusionedge.runtime.multi_app import (
    MultiConfig,
    StreamInputs,
    pair_streams,
    read_streams_file,
    run_multi,
)
from fusionedge.runtime.shared_model import SharedModel

COLOURS = {"red": (40, 40, 220), "blue": (220, 60, 40)}  # BGR, as tests/support.py draws them
FPS, SECONDS = 30.0, 1.5


def solid_avi(path: Path, bgr: tuple[int, int, int]) -> Path:
    """SECONDS of one colour at FPS: a camera whose every frame says one class."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (64, 48))
    assert writer.isOpened()
    frame = np.zeros((48, 64, 3), np.uint8) + np.array(bgr, np.uint8)
    for _ in range(round(FPS * SECONDS)):
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="module")
def cameras(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("multi_cameras")
    return {name: solid_avi(folder / f"{name}.avi", bgr) for name, bgr in COLOURS.items()}


@pytest.fixture(scope="module")
def wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("multi_wav") / "quiet.wav"
    t = np.arange(round(SECONDS * 16000)) / 16000
    soundfile.write(str(path), (0.1 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), 16000)
    return path


@pytest.fixture
def predictor(live_model: Path):
    with Predictor.from_path(live_model, providers="cpu", threads=1) as p:
        yield p


def rows(predictor: Predictor, n: int) -> list[dict[str, np.ndarray]]:
    """n different one-row batches, each with every modality."""
    rng = np.random.default_rng(0)
    rate = predictor.spec.audio.sample_rate
    return [
        predictor.stack(
            [
                predictor.prepare(
                    image=rng.integers(0, 256, (20, 24, 3), dtype=np.uint8),
                    audio=rng.normal(0, 0.1, rate).astype(np.float32),
                    sample_rate=rate,
                    text=["red", "green", "blue"][i % 3],
                )
            ]
        )
        for i in range(n)
    ]


def run_batched(model: SharedModel, batches: list[dict[str, np.ndarray]]) -> list:
    """Runs batches[0] with the model held until every other call has queued behind it,
    so that those run as batches; returns each call's (scores, embedding) or error."""
    predictor, gate = model.predictor, threading.Event()
    original = predictor._run_checked

    def held(inputs: dict[str, np.ndarray]):
        gate.wait(10)
        return original(inputs)

    predictor._run_checked = held  # an instance attribute, so only this predictor
    out: list = [None] * len(batches)

    def call(i: int) -> None:
        try:
            out[i] = model.run(batches[i])
        except Exception as e:
            out[i] = e

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(batches))]
    threads[0].start()
    wait_until(lambda: model._running)
    for t in threads[1:]:
        t.start()
    # The first max_runs calls run (held), every other one queues behind them.
    wait_until(lambda: len(model._pending) == len(batches) - model.max_runs)
    gate.set()
    for t in threads:
        t.join(10)
    del predictor._run_checked
    return out


def wait_until(condition, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.001)


# ---------------------------------------------------------------------- SharedModel


@pytest.mark.parametrize(
    ("max_batch", "max_runs", "sizes"),
    [(8, 1, {1: 1, 4: 1}), (2, 1, {1: 1, 2: 2}), (8, 2, {1: 2, 3: 1})],
)
def test_batched_scores_equal_unbatched_runs(
    predictor: Predictor, max_batch: int, max_runs: int, sizes: dict[int, int]
) -> None:
    batches = rows(predictor, 5)
    expected = [predictor.run(b) for b in batches]
    model = SharedModel(predictor, max_batch=max_batch, max_runs=max_runs)
    got = run_batched(model, batches)
    assert model.stats.batch_sizes == sizes
    for (scores, embedding), (want_scores, want_embedding) in zip(got, expected, strict=True):
        assert scores.shape == want_scores.shape == (1, 3)
        np.testing.assert_allclose(scores, want_scores, atol=1e-6, rtol=0)
        np.testing.assert_allclose(embedding, want_embedding, atol=1e-5, rtol=0)


def test_a_failing_row_does_not_fail_the_others(predictor: Predictor) -> None:
    batches = rows(predictor, 4)
    expected = [predictor.run(b)[0] for b in batches]
    batches[2]["audio"][:] = np.nan  # log-mel of NaN: non-finite scores for that row
    with pytest.raises(NonFiniteError):
        predictor.run(batches[2])
    model = SharedModel(predictor)
    got = run_batched(model, batches)
    assert isinstance(got[2], NonFiniteError)
    for i in (0, 1, 3):
        np.testing.assert_allclose(got[i][0], expected[i], atol=1e-6, rtol=0)
    assert model.stats.reruns == 3  # the batch of three, each row again alone


def test_a_callers_mistake_is_its_own_error(predictor: Predictor) -> None:
    model = SharedModel(predictor)
    bad = rows(predictor, 1)[0]
    bad["image"] = bad["image"][:, :5]
    with pytest.raises(ValueError, match="image"):
        model.run(bad)
    assert model.spec is predictor.spec and model.stats.runs == 0


def call_in_thread(model: SharedModel, inputs: dict[str, np.ndarray]) -> tuple:
    """Starts model.run(inputs) on a thread; returns (thread, its result list)."""
    out: list = []
    # A daemon: a call that hangs (the bug a test looks for) must not hang the test run.
    thread = threading.Thread(target=lambda: out.append(model.run(inputs)), daemon=True)
    thread.start()
    return thread, out


class Streams:
    """n threads that each call the model once, so that it knows them as streams, then
    wait; go() has each call once more, after its own delay, and waits for them."""

    def __init__(self, model: SharedModel, batches: list, delays: list[float]) -> None:
        self.known = threading.Barrier(len(delays) + 1)
        self.started = threading.Barrier(len(delays) + 1)
        self.errors: list[BaseException] = []

        def stream(batch: dict[str, np.ndarray], delay: float) -> None:
            try:
                model.run(batch)
                self.known.wait(10)
                self.started.wait(10)
                time.sleep(delay)
                model.run(batch)
            except BaseException as e:
                self.errors.append(e)

        self.threads = [
            threading.Thread(target=stream, args=(b, d), daemon=True)
            for b, d in zip(batches, delays, strict=True)
        ]
        for thread in self.threads:
            thread.start()
        self.known.wait(10)

    def go(self, held: threading.Condition | None = None) -> float:
        """Seconds until every stream's second call returned. With `held` (the model's
        lock) held meanwhile, the calls start together once it is let go."""
        t0 = time.monotonic()
        if held is None:
            self.started.wait(10)
        else:
            with held:
                self.started.wait(10)
                time.sleep(0.2)  # every stream now waits for the lock, to queue its call
        for thread in self.threads:
            thread.join(15)
        assert not self.errors and not any(t.is_alive() for t in self.threads), self.errors
        return time.monotonic() - t0


def batches_since(model: SharedModel, before: dict[int, int]) -> dict[int, int]:
    now = model.stats.batch_sizes
    return {k: n - before.get(k, 0) for k, n in now.items() if n - before.get(k, 0)}


def test_a_run_waits_for_the_other_streams(predictor: Predictor) -> None:
    """Three known streams calling 50 ms apart run as one batch of three: the leader
    waits for the two not yet queued, woken by each arrival (not by the 10 s limit)."""
    model = SharedModel(predictor, max_wait_ms=0)
    streams = Streams(model, rows(predictor, 3), [0.0, 0.05, 0.1])
    before = dict(model.stats.batch_sizes)
    model.wait.max_wait_ms = 10_000
    assert streams.go() < 5
    assert batches_since(model, before) == {3: 1}


def test_the_wait_for_company_is_bounded(predictor: Predictor) -> None:
    model = SharedModel(predictor, max_wait_ms=0)
    Streams(model, rows(predictor, 3), [0.0, 0.0, 0.0])  # three streams, then silent
    model.wait.max_wait_ms = 100
    t0 = time.monotonic()
    model.run(rows(predictor, 1)[0])  # the others do not come: alone after 100 ms
    assert time.monotonic() - t0 >= 0.1
    alone = SharedModel(predictor, max_wait_ms=10_000)
    t0 = time.monotonic()
    alone.run(rows(predictor, 1)[0])  # no other stream: nobody to wait for
    assert time.monotonic() - t0 < 5


def test_a_stream_that_stopped_calling_is_not_waited_for(
    predictor: Predictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batch_wait, "ACTIVE_S", 0.2)
    model = SharedModel(predictor, max_wait_ms=0)
    Streams(model, rows(predictor, 2), [0.0, 0.0])
    model.wait.max_wait_ms = 10_000
    time.sleep(0.3)  # both fall silent: neither is a stream any more
    t0 = time.monotonic()
    model.run(rows(predictor, 1)[0])
    assert time.monotonic() - t0 < 5


def test_a_stream_in_a_run_is_not_waited_for(predictor: Predictor) -> None:
    """Two streams, two runs at once: while one stream's run is held, the other's call
    runs at once instead of waiting for a stream that cannot come."""
    first, second = rows(predictor, 2)
    model = SharedModel(predictor, max_runs=2, max_wait_ms=10_000)
    entered, gate, original = threading.Event(), threading.Event(), predictor._run_checked
    calls = itertools.count()

    def held_once(inputs: dict[str, np.ndarray]):
        if next(calls) == 0:
            entered.set()
            gate.wait(10)
        return original(inputs)

    predictor._run_checked = held_once
    held, _ = call_in_thread(model, first)
    assert entered.wait(5)
    thread, out = call_in_thread(model, second)
    thread.join(5)
    assert out and held.is_alive()
    gate.set()
    held.join(10)
    del predictor._run_checked
    assert model.stats.batch_sizes == {1: 2}


def test_two_runs_at_once_share_the_streams(predictor: Predictor) -> None:
    """Four streams, two runs at once: each run takes half of them, so both cores get
    a batch, instead of the first run taking all four."""
    model = SharedModel(predictor, max_runs=2, max_wait_ms=0)
    streams = Streams(model, rows(predictor, 4), [0.0, 0.0, 0.0, 0.0])
    before = dict(model.stats.batch_sizes)
    model.wait.max_wait_ms = 10_000
    assert streams.go(held=model._cond) < 5
    assert batches_since(model, before) == {2: 2}


def test_an_interrupted_wait_leaves_nothing_behind(predictor: Predictor) -> None:
    """Ctrl-C while the main thread leads and waits for company: the call ends with it,
    its rows are never run, and the next call finds the slot free."""
    model = SharedModel(predictor, max_wait_ms=0)
    Streams(model, rows(predictor, 1), [0.0])  # another stream, which will not call again
    model.wait.max_wait_ms = 10_000
    runs = model.stats.runs
    timer = threading.Timer(0.2, _thread.interrupt_main)
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        model.run(rows(predictor, 1)[0])
    timer.join()
    assert not model._pending and model._running == 0 and not model._gathering
    assert model.stats.runs == runs  # the interrupted call was not run for nobody
    model.wait.max_wait_ms = 0
    thread, out = call_in_thread(model, rows(predictor, 1)[0])
    thread.join(5)
    assert out and model.stats.runs == runs + 1


def test_the_automatic_wait_follows_the_models_load() -> None:
    wait = BatchWait(slots=1)
    assert wait.wait_s(time.monotonic()) == 0  # no run yet: nothing to go by
    start = time.monotonic()  # the runs below are made up, on the clock BatchWait reads
    for i in range(20):  # busy all the time for 1 s: 50 ms runs back to back
        wait.ran(start + i * 0.05, start + (i + 1) * 0.05)
    now = start + 1.0
    assert wait.load(now) == pytest.approx(1.0, abs=0.01)
    assert wait.wait_s(now) == pytest.approx(0.025)
    assert wait.wait_s(now + 0.6) == 0  # 0.6 s without a run: idle, so no wait
    for i in range(4):  # then one 50 ms run every 0.25 s: a fifth of the time
        wait.ran(now + 0.6 + i * 0.25, now + 0.65 + i * 0.25)
    assert wait.load(now + 1.6) < 0.5 and wait.wait_s(now + 1.6) == 0
    assert BatchWait(1, max_wait_ms=3).wait_s(now) == 0.003  # a fixed wait, at any load
    with pytest.raises(ValueError, match="max_wait_ms"):
        BatchWait(1, max_wait_ms=-1)


# ---------------------------------------------------------------------- several streams


def test_pairing_cameras_and_microphones(tmp_path: Path) -> None:
    assert pair_streams(["a", "b"], ["m"]) == (StreamInputs("a", "m"), StreamInputs("b", "m"))
    assert pair_streams(["a", "b"], ["m", "n"])[1] == StreamInputs("b", "n")
    assert pair_streams([], ["m", "n"]) == (StreamInputs(None, "m"), StreamInputs(None, "n"))
    with pytest.raises(ValueError, match="cannot be shared"):
        pair_streams(["a"], ["m", "n"])
    with pytest.raises(ValueError, match="one per camera"):
        pair_streams(["a", "b", "c"], ["m", "n"])
    path = tmp_path / "streams.json"
    path.write_text(json.dumps([{"camera": 0, "mic": "x.wav"}, {"mic": "default"}]))
    assert read_streams_file(path) == (StreamInputs("0", "x.wav"), StreamInputs(None, "default"))


def test_each_stream_reports_its_own_camera(
    live_model: Path, cameras: dict[str, Path], predictor: Predictor
) -> None:
    """A red and a blue camera: the lines of stream 0 say what the model says of the red
    picture, those of stream 1 of the blue one; the run ends when both files have."""
    offline = {
        name: predictor.predict(image=np.full((48, 64, 3), bgr, np.uint8), color_order="bgr").label
        for name, bgr in COLOURS.items()
    }
    assert offline["red"] != offline["blue"]
    before = set(threading.enumerate())
    out = io.StringIO()
    config = MultiConfig(
        live_model,
        (StreamInputs(str(cameras["red"])), StreamInputs(str(cameras["blue"]))),
        providers="cpu",
    )
    t0 = time.monotonic()
    count = run_multi(config, out=out)
    assert time.monotonic() - t0 < SECONDS + 10
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert count == len(lines)
    assert set(threading.enumerate()) <= before  # no capture or stream thread left
    for index, name in enumerate(COLOURS):
        mine = [x for x in lines if x["stream"] == index and x["present"]["image"]]
        assert len(mine) >= 0.6 * FPS * SECONDS, (name, len(mine))
        labels = Counter(x["label"] for x in mine)
        assert labels[offline[name]] >= 0.9 * len(mine), (name, labels)


def test_ctrl_c_and_a_failing_stream_stop_every_thread(
    live_model: Path, cameras: dict[str, Path], wav: Path
) -> None:
    before = set(threading.enumerate())
    streams = pair_streams([str(cameras["red"]), str(cameras["blue"])], [str(wav)])
    config = MultiConfig(live_model, streams, providers="cpu", loop=True)
    seen = Counter()

    def ctrl_c(index: int, result) -> None:
        # Ctrl-C once both streams run (the files loop, so nothing else ends the run).
        seen[index] += 1
        if min(seen[0], seen[1]) == 5 and not seen["interrupted"]:
            seen["interrupted"] = 1
            _thread.interrupt_main()

    count = run_multi(config, out=io.StringIO(), on_result=ctrl_c)
    assert seen["interrupted"] and count >= 10
    assert set(threading.enumerate()) <= before

    def fail(index: int, result) -> None:
        if index == 1:
            raise RuntimeError("a callback failed")

    with pytest.raises(RuntimeError, match="a callback failed"):
        run_multi(config, out=io.StringIO(), on_result=fail)
    assert set(threading.enumerate()) <= before


def test_cli_streams_with_a_shared_microphone(
    live_model: Path, cameras: dict[str, Path], wav: Path
) -> None:
    cmd = [sys.executable, "-m", "fusionedge.cli", "run", str(live_model), "--headless"]
    cmd += ["--camera", str(cameras["red"]), "--camera", str(cameras["blue"])]
    cmd += ["--mic", str(wav), "--providers", "cpu", "--duration", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert f"{len(lines)} results from 2 streams" in done.stderr
    assert {x["stream"] for x in lines} == {0, 1}
    assert sum(x["present"]["audio"] for x in lines) >= 0.9 * len(lines)
    assert set(lines[0]) >= {"stream", "t", "label", "scores", "latency_ms", "present"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [([], "add --headless"), (["--headless", "--web", "8000"], "--web shows one stream")],
)
def test_cli_refuses_a_window_or_web_view_for_several_streams(
    live_model: Path, cameras: dict[str, Path], capsys, extra: list[str], message: str
) -> None:
    args = ["run", str(live_model), "--camera", str(cameras["red"]), "--camera", "1", *extra]
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_options_reach_every_stream(live_model: Path, cameras: dict[str, Path]) -> None:
    """--rate caps each stream, not the total."""
    config = MultiConfig(
        live_model,
        (StreamInputs(str(cameras["red"])), StreamInputs(str(cameras["blue"]))),
        providers="cpu",
        duration_s=1.0,
        options=LiveOptions(rate_hz=10),
    )
    out = io.StringIO()
    run_multi(config, out=out)
    per_stream = Counter(json.loads(line)["stream"] for line in out.getvalue().splitlines())
    assert set(per_stream) == {0, 1}
    assert all(n <= 13 for n in per_stream.values()), per_stream
