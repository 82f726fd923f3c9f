"""`fusionedge run`: open the sources a user names, run the live loop, show or print results."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from fusionedge.runtime.audio_sources import AudioSource, MicrophoneSource, WavFileSource
from fusionedge.runtime.camera import CameraSource
from fusionedge.runtime.live import LiveOptions, LiveResult, LiveRunner
from fusionedge.runtime.predictor import Predictor
from fusionedge.runtime.web import RateMeter, WebView, parse_address
from fusionedge.spec import ModelSpec

log = logging.getLogger(__name__)
AUDIO_FILE_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif")


@dataclass(frozen=True)
class LiveConfig:
    """What `fusionedge run` was asked for.

    Attributes:
        model: The .onnx file.
        camera: Camera index, URL or video file; None for no camera.
        mic: "default", a device name or index, or an audio file; None for no audio.
        text: A fixed text, "-" for lines read from stdin, or None.
        headless: Print JSON lines instead of opening a window.
        jsonl: Also write the JSON lines to this file.
        duration_s: Stop after this long (None: until the sources end or Ctrl-C).
        options: Loop pacing, staleness and smoothing.
        threads: ONNX Runtime intra-op threads (few, so capture threads keep a core).
        providers: "auto", or provider names.
        web: "[HOST:]PORT" to serve the web view on (runtime/web.py), or None. A bare
            port listens on 127.0.0.1 only.
        loop: Play a video or audio file again from its start when it ends (a demo from
            files runs until stopped); devices and streams are not affected.
    """

    model: Path
    camera: str | None = None
    mic: str | None = None
    text: str | None = None
    headless: bool = False
    jsonl: Path | None = None
    duration_s: float | None = None
    options: LiveOptions = field(default_factory=LiveOptions)
    threads: int = 1
    providers: str = "auto"
    web: str | None = None
    loop: bool = False


def open_audio(mic: str, sample_rate: int, loop: bool = False) -> AudioSource:
    """An audio file plays in real time (again from the start with loop); anything else
    names a capture device."""
    if Path(mic).suffix.lower() in AUDIO_FILE_SUFFIXES:
        if not Path(mic).is_file():
            raise FileNotFoundError(f"--mic {mic}: no such audio file")
        return WavFileSource(mic, loop=loop).start()
    return MicrophoneSource(mic, sample_rate).start()


def stdin_text() -> Callable[[], str | None]:
    """The latest line typed on stdin, read by a background thread."""
    latest: list[str | None] = [None]

    def read() -> None:
        for line in sys.stdin:
            latest[0] = line.strip() or None

    threading.Thread(target=read, name="stdin-text", daemon=True).start()
    return lambda: latest[0]


def run_live(
    config: LiveConfig,
    out: IO[str] = sys.stdout,
    on_result: Callable[[LiveResult], Any] | None = None,
) -> int:
    """Runs until the duration ends, file sources end, the window closes or Ctrl-C.

    on_result, when given, is called with each result on the loop's thread, after the
    result went to the JSON lines, the web view and the window; it should return quickly
    (the next turn waits for it), and an exception from it ends the run.

    Returns the number of results.
    """
    web_address = None if config.web is None else parse_address(config.web)
    # Spinning off: idle ONNX Runtime threads would otherwise spin and starve capture.
    predictor = Predictor.from_path(
        config.model, providers=config.providers, threads=config.threads, spinning=False
    )
    session = _Session(out=out, on_result=on_result)
    try:
        inputs = {"image": config.camera, "audio": config.mic, "text": config.text}
        given = {m: value is not None for m, value in inputs.items()}
        refuse_unused_inputs(config.model, predictor.spec, given)
        runner = session.open(config, predictor, web_address)
        session.serve(runner, config)
    except KeyboardInterrupt:
        pass
    finally:
        session.close()
        predictor.close()
    return session.count


def refuse_unused_inputs(model: Path, spec: ModelSpec, given: dict[str, bool]) -> None:
    """Refuses, before any device opens, an input the model has no use for."""
    extra = [m for m, is_given in given.items() if is_given and m not in spec.modalities]
    if extra:
        raise ValueError(
            f"{model} takes {list(spec.modalities)}; it has no use "
            f"for the {', '.join(extra)} input given"
        )


def result_line(result: LiveResult, **extra: Any) -> str:
    """A result as one JSON line. Strict JSON: a NaN would make the line unreadable to
    JSON parsers (the Predictor refuses non-finite scores; this guards what reaches it)."""
    return json.dumps({**extra, **result.to_json()}, allow_nan=False)


@dataclass
class _Session:
    """What one run_live opened, so that whatever happens everything is closed."""

    out: IO[str]
    on_result: Callable[[LiveResult], Any] | None
    camera: CameraSource | None = None
    audio: AudioSource | None = None
    sink: IO[str] | None = None
    window: LiveWindow | None = None
    web: WebView | None = None
    count: int = 0

    def open(
        self, config: LiveConfig, predictor: Predictor, web_address: tuple[str, int] | None
    ) -> LiveRunner:
        spec = predictor.spec
        if web_address is not None:  # before the devices: a taken port fails at once
            self.web = WebView(web_address, info=web_info(config.model, spec)).start()
        if config.camera is not None:
            self.camera = CameraSource(config.camera, loop=config.loop).start()
        if config.mic is not None:
            self.audio = open_audio(config.mic, spec.audio.sample_rate, config.loop)
        text = stdin_text() if config.text == "-" else config.text
        runner = LiveRunner(predictor, self.camera, self.audio, text, config.options)
        self.sink = config.jsonl.open("a", encoding="utf-8") if config.jsonl else None
        self.window = None if config.headless else LiveWindow()
        return runner

    def serve(self, runner: LiveRunner, config: LiveConfig) -> None:
        """Hands each result on until the duration, the files or the window end the run."""
        # Sources that end by themselves (files): the run ends when all of them have.
        files = [s for s in (self.camera, self.audio) if s is not None and s.ends]
        end = None if config.duration_s is None else time.monotonic() + config.duration_s
        rate = RateMeter()
        for result in runner:
            if not self.hand_on(result, config.headless, rate):
                return
            self.count += 1
            if end is not None and time.monotonic() >= end:
                return
            if files and all(s.finished.is_set() for s in files):
                return

    def hand_on(self, result: LiveResult, headless: bool, rate: RateMeter) -> bool:
        """One result to every output; False when the window was closed."""
        line = result_line(result)
        if headless:
            print(line, file=self.out, flush=True)
        if self.sink is not None:
            self.sink.write(line + "\n")
            self.sink.flush()
        if self.web is not None:
            publish(self.web, line, result, rate.tick(), self.audio)
        if self.window is not None and not self.window.show(result, self.audio):
            return False
        if self.on_result is not None:
            self.on_result(result)
        return True

    def close(self) -> None:
        if self.web is not None:
            self.web.close()
        for source in (self.camera, self.audio):
            if source is not None:
                source.stop()
        if self.sink is not None:
            self.sink.close()
        if self.window is not None:
            self.window.close()


def level_db(audio: AudioSource | None) -> float:
    """The level of the newest 100 ms of audio in dBFS (-inf for silence or no audio)."""
    from fusionedge.runtime.overlay import audio_level_db

    recent = None
    if audio is not None:
        window = audio.ring.window(audio.device_rate // 10)
        recent = None if window is None else window.samples
    return audio_level_db(recent)


def web_info(model: Path, spec: ModelSpec) -> dict[str, Any]:
    """What the web view's /api/info says about the model."""
    return {
        "model": model.name,
        "modalities": list(spec.modalities),
        "labels": list(spec.labels),
        "task": spec.task,
    }


def publish(
    web: WebView, line: str, result: LiveResult, fps: float, audio: AudioSource | None
) -> None:
    """Hands one result to the web view; its frame is drawn only if a client asks."""
    from fusionedge.runtime.overlay import draw

    level = level_db(audio)
    web.publish(line, fps, level, lambda: draw(result, fps, level))


class LiveWindow:
    """An OpenCV window with the overlay; show() returns False once the user quits."""

    NAME = "fusionedge"

    def __init__(self) -> None:
        self._times: list[float] = []

    def show(self, result: LiveResult, audio: AudioSource | None) -> bool:
        import cv2

        from fusionedge.runtime.overlay import draw

        now = time.monotonic()
        self._times = [t for t in self._times if now - t < 2.0] + [now]
        fps = (len(self._times) - 1) / max(1e-6, self._times[-1] - self._times[0])
        cv2.imshow(self.NAME, draw(result, fps, level_db(audio)))
        key = cv2.waitKey(1) & 0xFF
        visible = cv2.getWindowProperty(self.NAME, cv2.WND_PROP_VISIBLE) >= 1
        return key not in (ord("q"), 27) and visible

    def close(self) -> None:
        import cv2

        cv2.destroyAllWindows()
