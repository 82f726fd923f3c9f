"""`fusionedge run` with several streams: a LiveRunner per camera, one batching model.

    fusionedge run model.onnx --camera a.avi --camera b.avi --mic a.wav --mic b.wav --headless

Each stream (a camera and its microphone; one microphone may serve every stream) gets its
own LiveRunner on its own thread, with the live loop's rules unchanged: newest frame,
audio window ending at that frame, nothing queued. All runners share one SharedModel, so
the model calls of streams that are ready at the same moment run as one batch
(runtime/shared_model.py). Results go out as the JSON lines of `fusionedge run`, each with
a "stream" key: the stream's index in the order given.

A window or the web view shows one stream, so several streams are headless only (the
CLI refuses the others with a message).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from fusionedge.runtime.audio_sources import AudioSource
from fusionedge.runtime.camera import CameraSource
from fusionedge.runtime.live import LiveOptions, LiveResult, LiveRunner
from fusionedge.runtime.live_app import open_audio, refuse_unused_inputs, result_line, stdin_text
from fusionedge.runtime.predictor import Predictor
from fusionedge.runtime.shared_model import SharedModel

log = logging.getLogger(__name__)
JOIN_TIMEOUT_S = 10.0  # a turn in progress ends well within this; more means a hang


@dataclass(frozen=True)
class StreamInputs:
    """One stream's sources: a camera (index, URL or video file) and a microphone
    (device or audio file); either may be None, not both."""

    camera: str | None = None
    mic: str | None = None


@dataclass(frozen=True)
class MultiConfig:
    """What `fusionedge run` with several streams was asked for (see LiveConfig for the
    fields they share). threads: ONNX Runtime threads, 0 (the default) for every core:
    one batched run over every core gave more results at lower p95 than a one-thread run
    per core (default_runs). max_batch: at most this many rows per model run; max_runs:
    at most this many model runs at once (SharedModel; None: cores // threads); max_wait_ms:
    how long a queued call waits for the other streams (SharedModel; None: automatic)."""

    model: Path
    streams: tuple[StreamInputs, ...]
    text: str | None = None
    jsonl: Path | None = None
    duration_s: float | None = None
    options: LiveOptions = field(default_factory=LiveOptions)
    threads: int = 0
    providers: str = "auto"
    loop: bool = False
    max_batch: int = 8
    max_runs: int | None = None
    max_wait_ms: float | None = None


def pair_streams(cameras: Sequence[str], mics: Sequence[str]) -> tuple[StreamInputs, ...]:
    """--camera and --mic lists -> streams, in order: the i-th camera with the i-th
    microphone, or one microphone shared by every camera. A camera is never shared: its
    newest frame is taken by one loop."""
    n = max(len(cameras), len(mics))
    if cameras and len(cameras) != n:
        raise ValueError(
            f"{len(cameras)} cameras for {n} microphones: give one camera per stream "
            "(a camera cannot be shared between streams)"
        )
    if len(mics) not in (0, 1, n):
        raise ValueError(
            f"{len(mics)} microphones for {n} cameras: give one per camera, or one for all"
        )
    return tuple(
        StreamInputs(
            camera=cameras[i] if cameras else None,
            mic=(mics[i] if len(mics) == n else mics[0]) if mics else None,
        )
        for i in range(n)
    )


def read_streams_file(path: Path) -> tuple[StreamInputs, ...]:
    """A streams file: a JSON list of {"camera": ..., "mic": ...} objects, one per stream
    (either key may be left out; a microphone named by several streams is opened once)."""
    entries = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: expected a JSON list of streams, got {type(entries).__name__}")
    streams = []
    for i, entry in enumerate(entries):
        extra = set(entry) - {"camera", "mic"} if isinstance(entry, dict) else {"(not an object)"}
        if extra:
            raise ValueError(f"{path}: stream {i} has unknown keys {sorted(extra)}")
        camera, mic = entry.get("camera"), entry.get("mic")
        streams.append(StreamInputs(None if camera is None else str(camera), mic))
    return tuple(streams)


@dataclass
class _Stream:
    index: int
    runner: LiveRunner
    camera: CameraSource | None
    audio: AudioSource | None
    thread: threading.Thread | None = None

    @property
    def files(self) -> list[Any]:
        """Its sources that end by themselves (files); the stream ends when all have."""
        return [s for s in (self.camera, self.audio) if s is not None and s.ends]


class _Output:
    """The JSON lines of every stream, one line at a time, and the first stream error."""

    def __init__(
        self,
        out: IO[str],
        jsonl: Path | None,
        on_result: Callable[[int, LiveResult], Any] | None,
    ) -> None:
        self.out, self.jsonl, self.on_result = out, jsonl, on_result
        self.sink: IO[str] | None = None
        self.count = 0
        self.error: BaseException | None = None
        self.failed = threading.Event()
        self._lock = threading.Lock()  # lines from several threads must not interleave

    def open(self) -> None:
        self.sink = self.jsonl.open("a", encoding="utf-8") if self.jsonl else None

    def emit(self, index: int, result: LiveResult) -> None:
        # Strict JSON, as run_live writes it; "stream" first, so a reader can split by it.
        line = result_line(result, stream=index)
        with self._lock:
            print(line, file=self.out, flush=True)
            if self.sink is not None:
                self.sink.write(line + "\n")
                self.sink.flush()
            self.count += 1
        if self.on_result is not None:
            self.on_result(index, result)

    def fail(self, error: BaseException) -> None:
        with self._lock:
            self.error = self.error or error
        self.failed.set()

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()


def run_multi(
    config: MultiConfig,
    out: IO[str] = sys.stdout,
    on_result: Callable[[int, LiveResult], Any] | None = None,
) -> int:
    """Runs every stream until the duration ends, every stream's file sources end, or
    Ctrl-C; an error in one stream (or from on_result) stops them all and is raised.

    on_result, when given, is called with (stream index, result) on that stream's
    thread, after the JSON line went out; calls from several streams may overlap.
    Returns the number of results of all streams together. Every thread it started has
    ended when it returns.
    """
    # Spinning off, as in run_live: idle ONNX Runtime threads would starve capture.
    predictor = Predictor.from_path(
        config.model, providers=config.providers, threads=config.threads, spinning=False
    )
    try:
        model = SharedModel(
            predictor,
            config.max_batch,
            config.max_runs or default_runs(config),
            max_wait_ms=config.max_wait_ms,
        )
    except ValueError:  # a bad max_batch, max_runs or max_wait_ms
        predictor.close()
        raise
    sources: list[CameraSource | AudioSource] = []
    streams: list[_Stream] = []
    output = _Output(out, config.jsonl, on_result)
    try:
        _check_inputs(config, predictor)
        streams = _open_streams(config, model, sources)
        output.open()
        _serve(streams, output, config.duration_s)
    except KeyboardInterrupt:
        pass
    finally:
        for stream in streams:
            stream.runner.stop()
        hung = _join(streams)
        for source in sources:
            source.stop()
        output.close()
        if not hung:  # closing under a turn still running would crash it, not end it
            model.close()
        stats = model.stats
        # One line on how well the calls batched (benchmarks/multi_stream.py reads it).
        log.info(
            "model runs: %d for %d rows, rows per run %s, %d rows rerun alone; "
            "a call waits up to %.2f ms for the other streams (model load %.2f)",
            stats.runs,
            stats.rows,
            json.dumps(dict(sorted(stats.batch_sizes.items()))),
            stats.reruns,
            model.wait_ms,
            model.wait.load(time.monotonic()),
        )
    if output.error is not None:
        raise output.error
    return output.count


def default_runs(config: MultiConfig) -> int:
    """Model runs at once by default: a core per ONNX Runtime thread, so one run when it
    has every core (threads 0). On the 2-core machine, 4 streams and a model that is the
    bottleneck, one two-thread run of 4 gathered rows gave 1.9-2.2x the results of 4 separate
    processes, two one-thread runs of 2 rows 1.70x (benchmarks/multi_stream.py)."""
    cores = os.cpu_count() or 1
    return max(1, cores // config.threads) if config.threads > 0 else 1


def _check_inputs(config: MultiConfig, predictor: Predictor) -> None:
    """Refuses, before any device opens, what the model or the streams cannot take."""
    if not config.streams:
        raise ValueError("no streams given")
    given = {
        "image": any(s.camera is not None for s in config.streams),
        "audio": any(s.mic is not None for s in config.streams),
        "text": config.text is not None,
    }
    refuse_unused_inputs(config.model, predictor.spec, given)
    cameras: set[str] = set()
    for i, s in enumerate(config.streams):
        if s.camera is None and s.mic is None:
            raise ValueError(f"stream {i} has neither a camera nor a microphone")
        # A file can be opened twice (two decoders); a device or URL has one newest frame.
        if s.camera is not None and not Path(s.camera).is_file():
            if s.camera in cameras:
                raise ValueError(f"camera {s.camera!r} is named by two streams")
            cameras.add(s.camera)


def _open_streams(
    config: MultiConfig, model: SharedModel, sources: list[CameraSource | AudioSource]
) -> list[_Stream]:
    """Starts each stream's sources (appended to sources, for stopping) and its runner;
    a microphone named by several streams is opened once and shared."""
    text = stdin_text() if config.text == "-" else config.text
    mics: dict[str, AudioSource] = {}
    streams = []
    for i, inputs in enumerate(config.streams):
        camera = None
        if inputs.camera is not None:
            camera = CameraSource(inputs.camera, loop=config.loop).start()
            sources.append(camera)
        if inputs.mic is not None and inputs.mic not in mics:
            mics[inputs.mic] = open_audio(inputs.mic, model.spec.audio.sample_rate, config.loop)
            sources.append(mics[inputs.mic])
        audio = None if inputs.mic is None else mics[inputs.mic]
        runner = LiveRunner(model, camera, audio, text, config.options)  # type: ignore[arg-type]
        streams.append(_Stream(i, runner, camera, audio))
    return streams


def _serve(streams: list[_Stream], output: _Output, duration_s: float | None) -> None:
    """Starts a thread per stream and waits (Ctrl-C-able) until all have ended, one
    failed, or the duration is over."""
    end = None if duration_s is None else time.monotonic() + duration_s
    for stream in streams:
        stream.thread = threading.Thread(
            target=_loop, args=(stream, output, end), name=f"stream-{stream.index}", daemon=True
        )
        stream.thread.start()
    # A timed wait, not join(): the main thread must stay interruptible by Ctrl-C.
    while any(s.thread.is_alive() for s in streams if s.thread is not None):
        if output.failed.wait(0.1) or (end is not None and time.monotonic() >= end):
            return


def _loop(stream: _Stream, output: _Output, end: float | None) -> None:
    """One stream's thread: its runner's results to the output, until stopped, the
    duration is over or its file sources have ended."""
    files = stream.files
    try:
        for result in stream.runner:
            output.emit(stream.index, result)
            if end is not None and time.monotonic() >= end:
                return
            if files and all(s.finished.is_set() for s in files):
                return
    except Exception as e:  # ends the run; raised by run_multi in the caller's thread
        log.debug("stream %d failed", stream.index, exc_info=True)
        output.fail(e)


def _join(streams: list[_Stream]) -> bool:
    """Waits for the stream threads (already told to stop); True if one is still running."""
    hung = False
    for stream in streams:
        if stream.thread is not None:
            stream.thread.join(JOIN_TIMEOUT_S)
            if stream.thread.is_alive():
                log.warning("stream %d did not stop within %.0f s", stream.index, JOIN_TIMEOUT_S)
                hung = True
    return hung
