"""Helpers for the live-capture tests (imported as `live_helpers`; fixtures are in conftest.py).

Small media written on the fly, MJPEG-over-HTTP servers a test can kill and bring back
(numbered frames, whatever frame a script shows at the moment, or a camera with faults to
order: size changes, 4K, corrupt JPEGs), tone and recording writers for a PulseAudio
pipe-source FIFO, the private PulseAudio daemon itself (pulse_virtual_mic), and
`fusionedge run` in a subprocess with its JSON lines collected. benchmarks/soak.py
imports this module too (tests/live on sys.path).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import shutil
import signal
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


@dataclass(frozen=True)
class Clip:
    """What examples/make_clip.py wrote: video, audio and the timeline of samples."""

    avi: Path
    wav: Path
    timeline: list[dict]
    fps: float
    seconds: float

    @property
    def duration(self) -> float:
        return len(self.timeline) * self.seconds


# ---------------------------------------------------------------------- small media files


def numbered_frame(i: int, size: tuple[int, int] = (48, 64)) -> np.ndarray:
    """A BGR frame whose mean brightness encodes i (steps of 8, survives JPEG)."""
    image = np.zeros((*size, 3), dtype=np.uint8)
    image[:] = (16 + 8 * (i % 28), 64, 200 - 4 * (i % 28))
    return image


def frame_number(image: np.ndarray) -> int:
    """Inverse of numbered_frame (modulo 28)."""
    return round((float(image[..., 0].mean()) - 16) / 8)


def write_avi(path: Path, frames: int, fps: float, size: tuple[int, int] = (48, 64)) -> Path:
    """An MJPG .avi whose frame i is numbered_frame(i)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (size[1], size[0]))
    assert writer.isOpened(), "OpenCV cannot write MJPG AVI here"
    for i in range(frames):
        writer.write(numbered_frame(i, size))
    writer.release()
    return path


def tone(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    """The frequency of the largest spectral peak (Hann window)."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


# ---------------------------------------------------------------------- MJPEG server


class _MjpegHandler(http.server.BaseHTTPRequestHandler):
    server: _MjpegHttpServer

    def do_GET(self) -> None:
        owner = self.server.owner
        owner.connections += 1
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        sent_here = 0
        try:
            while not self.server.dead.is_set():
                if owner.frozen.is_set():  # connection open, nothing sent: a hung camera
                    time.sleep(0.02)
                    continue
                _, jpg = cv2.imencode(".jpg", numbered_frame(owner.sent))
                data = jpg.tobytes()
                self.wfile.write(
                    b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(data)
                    + data
                    + b"\r\n"
                )
                self.wfile.flush()
                owner.sent += 1
                sent_here += 1
                if owner.per_connection and sent_here >= owner.per_connection:
                    return  # the camera resets the connection; the server stays up
                time.sleep(1 / owner.fps)
        except OSError:  # the client went away
            pass

    def log_message(self, *args: object) -> None:
        pass


class _MjpegHttpServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: MjpegServer
    dead: threading.Event


class MjpegServer:
    """Serves numbered JPEG frames as multipart/x-mixed-replace on 127.0.0.1.

    kill() closes the listening socket and every open stream (a camera that went away);
    start() brings it back on the same port; frozen.set() keeps connections open but
    sends nothing (a hung camera); per_connection ends each stream after that many frames
    while the server stays up (a camera that resets its connection).
    """

    def __init__(self, fps: float = 30.0, per_connection: int | None = None) -> None:
        self.fps = fps
        self.per_connection = per_connection
        self.port = 0
        self.sent = 0
        self.connections = 0
        self.frozen = threading.Event()
        self._server: _MjpegHttpServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def start(self) -> MjpegServer:
        server = _MjpegHttpServer(("127.0.0.1", self.port), _MjpegHandler)
        server.owner, server.dead = self, threading.Event()
        self.port = server.server_address[1]
        threading.Thread(
            target=server.serve_forever, args=(0.05,), name="mjpeg", daemon=True
        ).start()
        self._server = server
        return self

    def kill(self) -> None:
        if self._server is not None:
            self._server.dead.set()
            self._server.shutdown()
            self._server.server_close()
            self._server = None
            time.sleep(0.1)  # handlers notice `dead` within one frame and close


class PacedMjpegServer(MjpegServer):
    """Serves current() as MJPEG at fps, paced by the clock (frame k of a connection at
    k / fps after it opened, so a slow turn does not make the stream drift); subclasses
    say what current() shows. kill() and start() as for MjpegServer.

    skip_missed (class attribute, default False): slots missed while a send blocked (a
    client slower than fps) are skipped rather than sent in a catch-up burst, as a camera
    does not make frames in the past."""

    skip_missed = False

    def current(self) -> bytes:
        raise NotImplementedError

    def start(self) -> PacedMjpegServer:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            server: _MjpegHttpServer

            def do_GET(self) -> None:
                owner.connections += 1
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                start, sent = time.monotonic(), 0
                try:
                    while not self.server.dead.is_set():
                        data = owner.current()
                        self.wfile.write(
                            b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                            % len(data)
                            + data
                            + b"\r\n"
                        )
                        self.wfile.flush()
                        owner.sent += 1
                        sent += 1
                        if owner.skip_missed:
                            sent = max(sent, int((time.monotonic() - start) * owner.fps))
                        time.sleep(max(0.0, start + sent / owner.fps - time.monotonic()))
                except OSError:
                    pass

            def log_message(self, *args: object) -> None:
                pass

        server = _MjpegHttpServer(("127.0.0.1", self.port), Handler)
        server.owner, server.dead = self, threading.Event()
        self.port = server.server_address[1]
        threading.Thread(
            target=server.serve_forever, args=(0.05,), name="mjpeg-paced", daemon=True
        ).start()
        self._server = server
        return self


def textured_jpegs(size: tuple[int, int], count: int = 4, seed: int = 0) -> list[bytes]:
    """count JPEGs (quality 90) of size (width, height): a horizontal ramp with noise, so
    each is as large as a camera's picture of a real scene, and no two are the same."""
    w, h = size
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
    out = []
    for _ in range(count):
        noise = rng.normal(0, 12, (h, w, 3)).astype(np.float32)
        image = np.clip(ramp + noise, 0, 255).astype(np.uint8)
        out.append(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    return out


CORRUPT_KINDS = ("truncated", "bitflip", "garbage")


def corrupt_jpeg(good: bytes, kind: str, rng: np.random.Generator) -> bytes:
    """A broken JPEG made from a good one: "truncated" (cut at 30-70 %, no end marker),
    "bitflip" (a run of random bytes in the middle of the entropy-coded data), "garbage"
    (start and end markers around random bytes)."""
    n = len(good)
    if kind == "truncated":
        return good[: int(n * rng.uniform(0.3, 0.7))]
    if kind == "bitflip":
        lo = int(n * 0.5)
        run = rng.integers(0, 256, max(16, n // 50), dtype=np.uint8).tobytes()
        return good[:lo] + run + good[lo + len(run) :]
    if kind == "garbage":
        return b"\xff\xd8" + rng.integers(0, 256, 20000, dtype=np.uint8).tobytes() + b"\xff\xd9"
    raise ValueError(f"unknown corruption {kind!r}; one of {CORRUPT_KINDS}")


class FaultyMjpegServer(PacedMjpegServer):
    """A camera with faults to order: serves pre-encoded textured JPEGs of `size`
    (width, height) at fps, skipping missed slots (skip_missed).

    Faults: kill() / start() (the camera gone: the listening socket and every stream
    closed, then back on the same port); `size` may change at any time (a camera that
    changes resolution mid-stream; sizes not given to the constructor are encoded on
    first use); while `corrupt` is set every frame is broken, cycling through
    CORRUPT_KINDS. `sent_by_kind` counts frames sent by "WxH" or corruption kind.
    """

    skip_missed = True

    def __init__(
        self,
        fps: float = 30.0,
        size: tuple[int, int] = (640, 480),
        sizes: tuple[tuple[int, int], ...] = (),
        seed: int = 0,
    ) -> None:
        super().__init__(fps=fps)
        self.size = size
        self.corrupt = False
        self.sent_by_kind: dict[str, int] = {}
        self._frames = {s: textured_jpegs(s, seed=seed) for s in {size, *sizes}}
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._k = 0

    def current(self) -> bytes:
        with self._lock:
            size = self.size
            if size not in self._frames:
                self._frames[size] = textured_jpegs(size)
            frames = self._frames[size]
            good = frames[self._k % len(frames)]
            if self.corrupt:
                kind = CORRUPT_KINDS[self._k % len(CORRUPT_KINDS)]
                data = corrupt_jpeg(good, kind, self._rng)
            else:
                kind, data = f"{size[0]}x{size[1]}", good
            self._k += 1
            self.sent_by_kind[kind] = self.sent_by_kind.get(kind, 0) + 1
            return data

    def counters(self) -> dict[str, int]:
        """A snapshot: connections, frames sent, and frames by kind."""
        with self._lock:
            return {"connections": self.connections, "sent": self.sent, **self.sent_by_kind}


# ---------------------------------------------------------------------- virtual microphone


class FifoWriter:
    """Writes s16le mono into the pipe-source FIFO at real-time pace, from a thread, one
    20 ms block at a time (subclasses say what each block holds).

    pause() stops writing (the source starves, as a stalled device would) and returns once
    no block is being written, so `written` stays put from then on; resume() goes on,
    paced from the moment it resumes.
    """

    def __init__(self, fifo: Path, rate: int) -> None:
        self.fifo, self.rate = fifo, rate
        self.written = 0
        self.errors: list[str] = []
        self._running = threading.Event()
        self._running.set()
        self._closed = threading.Event()
        self._writing = threading.Lock()  # held while a block is checked, written, counted
        self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)
        self._thread.start()

    def block(self, n: int) -> np.ndarray:
        """The next n samples, float in [-1, 1]."""
        raise NotImplementedError

    def pause(self, timeout: float = 2.0) -> None:
        self._running.clear()
        # A block the writer began before the flag cleared is finished (and counted)
        # before this returns; the timeout is for a FIFO nobody reads (write blocked).
        if self._writing.acquire(timeout=timeout):
            self._writing.release()

    def resume(self) -> None:
        self._running.set()

    def close(self) -> None:
        self._closed.set()
        self._running.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        n = self.rate // 50
        try:
            # O_RDWR never blocks on open (the pipe source is the reader) and survives
            # the reader going away and coming back.
            fd = os.open(self.fifo, os.O_RDWR)
        except OSError as e:
            self.errors.append(repr(e))
            return
        try:
            start, sent = time.monotonic(), 0
            while not self._closed.is_set():
                if not self._running.is_set():
                    self._running.wait(0.05)
                    start, sent = time.monotonic(), 0
                    continue
                with self._writing:
                    if not self._running.is_set():
                        continue  # paused since the check above
                    pcm = np.clip(self.block(n), -1, 1)
                    os.write(fd, (pcm * 32767).astype("<i2").tobytes())
                    sent += n
                    self.written += n
                time.sleep(max(0.0, start + sent / self.rate - time.monotonic()))
        except OSError as e:
            self.errors.append(repr(e))
        finally:
            os.close(fd)


class FifoTone(FifoWriter):
    """A sine tone; resume() may change its frequency."""

    def __init__(self, fifo: Path, rate: int, freq: float, amplitude: float = 0.5) -> None:
        self.freq, self.amplitude, self._phase = freq, amplitude, 0
        super().__init__(fifo, rate)

    def resume(self, freq: float | None = None) -> None:
        if freq is not None:
            self.freq = freq
        super().resume()

    def block(self, n: int) -> np.ndarray:
        t = (self._phase + np.arange(n)) / self.rate
        self._phase += n
        return self.amplitude * np.sin(2 * np.pi * self.freq * t)


class FifoPlayer(FifoWriter):
    """Silence before play(), the recording from then on (from the next 20 ms block),
    silence after it."""

    def __init__(self, fifo: Path, rate: int, pcm: np.ndarray) -> None:
        self.pcm = pcm
        self.t0: float | None = None
        self._pos = 0
        super().__init__(fifo, rate)

    def play(self, t0: float) -> None:
        """Starts the recording; t0 (time.monotonic()) is when the caller says it starts."""
        self.t0 = t0

    def block(self, n: int) -> np.ndarray:
        if self.t0 is None:
            return np.zeros(n, np.float32)
        pcm = self.pcm[self._pos : self._pos + n]
        self._pos += n
        return np.pad(pcm, (0, n - len(pcm)))


@dataclass
class VirtualMic:
    """A PulseAudio pipe source that is the default source of a private daemon."""

    fifo: Path
    rate: int
    env: dict[str, str]
    log: Path

    def tone(self, freq: float) -> FifoTone:
        return FifoTone(self.fifo, self.rate, freq)

    def pactl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["pactl", *args], env=self.env, capture_output=True, text=True, timeout=10
        )


PULSE_TOOLS = ("pulseaudio", "pactl")


def missing_pulse_tools() -> list[str]:
    """Which of the PulseAudio programs pulse_virtual_mic needs are not on PATH."""
    return [tool for tool in PULSE_TOOLS if shutil.which(tool) is None]


@contextlib.contextmanager
def pulse_virtual_mic(rate: int = 16000) -> Iterator[VirtualMic]:
    """A private PulseAudio daemon with a `rate` Hz mono module-pipe-source, "virtmic",
    as its default source; terminated (then killed) on leaving, its folder removed.

    The daemon gets its own XDG_RUNTIME_DIR, PULSE_RUNTIME_PATH and HOME under a short
    temporary folder (unix socket paths are limited to 107 bytes) and anonymous auth on
    its socket (no cookie to share). Nothing in this process changes: a client needs
    mic.env["PULSE_SERVER"] (LiveRun passes it to `fusionedge run`). Used by the
    virtual_mic fixture (conftest.py) and benchmarks/soak.py.
    """
    missing = missing_pulse_tools()
    if missing:
        raise RuntimeError(f"{' and '.join(missing)} not on PATH")
    root = Path(tempfile.mkdtemp(prefix="fe-pulse-"))
    runtime, home = root / "pulse", root / "home"
    runtime.mkdir(mode=0o700)
    home.mkdir()
    socket = runtime / "native"
    env = {
        **os.environ,
        "XDG_RUNTIME_DIR": str(root),
        "PULSE_RUNTIME_PATH": str(runtime),
        "HOME": str(home),
        "PULSE_SERVER": f"unix:{socket}",
        "PULSE_COOKIE": str(home / "cookie"),
    }
    log_path = root / "pulseaudio.log"
    log = log_path.open("w")
    cmd = [
        "pulseaudio",
        "--daemonize=no",
        "-n",  # no default.pa: only the modules named here
        "--exit-idle-time=-1",
        "--disallow-exit",
        "--realtime=no",
        "--high-priority=no",
        "--use-pid-file=no",
        "--log-target=stderr",
        f"--load=module-native-protocol-unix auth-anonymous=1 socket={socket}",
    ]
    proc = subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        mic = VirtualMic(root / "mic.fifo", rate, env, log_path)
        up = wait_for(lambda: proc.poll() is None and mic.pactl("info").returncode == 0, 15)
        if not up:
            raise RuntimeError(f"pulseaudio did not come up:\n{log_path.read_text()[-3000:]}")
        loaded = mic.pactl(
            "load-module",
            "module-pipe-source",
            "source_name=virtmic",
            f"file={mic.fifo}",
            "format=s16le",
            f"rate={mic.rate}",
            "channels=1",
        )
        if loaded.returncode != 0:
            raise RuntimeError(f"module-pipe-source: {loaded.stderr}")
        default = mic.pactl("set-default-source", "virtmic")
        if default.returncode != 0:
            raise RuntimeError(f"set-default-source: {default.stderr}")
        yield mic
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def fusionedge_cmd() -> list[str]:
    """The `fusionedge` console script of this environment (or `python -m` the CLI)."""
    script = Path(sys.executable).with_name("fusionedge")
    return [str(script)] if script.exists() else [sys.executable, "-m", "fusionedge.cli"]


def wait_for(check: Callable[[], bool], timeout: float, step: float = 0.1) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(step)
    return check()


def default_sigint() -> None:
    """In the child before exec: SIGINT back to its default. A test suite started in the
    background by a non-interactive shell ignores SIGINT, the child inherits that, and
    Python then installs no KeyboardInterrupt handler: wait(interrupt=True) would wait for
    nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class LiveRun:
    """`fusionedge run MODEL --headless ...` in a subprocess, its JSON result lines (each
    stamped `_arrived`, the monotonic time it was read) and its stderr collected by
    threads. A context manager: leaving it kills a run that is still going."""

    def __init__(self, model: Path, camera: str, mic: VirtualMic, *options: str) -> None:
        cmd = [
            *fusionedge_cmd(),
            *("run", str(model), "--camera", camera, "--mic", "pulse", "--headless"),
            *options,
        ]
        env = {**os.environ, "PULSE_SERVER": mic.env["PULSE_SERVER"]}
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            bufsize=1,
            preexec_fn=default_sigint,
        )
        self.lines: list[dict] = []
        # (time.monotonic() when read, the line): when each warning came
        self.err_lines: list[tuple[float, str]] = []
        self._err: list[str] = []
        self._readers = [
            threading.Thread(target=f, daemon=True) for f in (self._read_out, self._read_err)
        ]
        for reader in self._readers:
            reader.start()

    def _read_out(self) -> None:
        for raw in self.proc.stdout:
            if raw.strip():
                line = json.loads(raw)
                line["_arrived"] = time.monotonic()
                self.lines.append(line)

    def _read_err(self) -> None:
        for raw in self.proc.stderr:
            self._err.append(raw)
            self.err_lines.append((time.monotonic(), raw))

    @property
    def stderr(self) -> str:
        return "".join(self._err)

    @property
    def pid(self) -> int:
        """The `fusionedge run` process (the console script execs Python: no wrapper)."""
        return self.proc.pid

    def both_present(self) -> bool:
        """The last line saw a camera frame and microphone audio."""
        last = self.lines[-1] if self.lines else None
        return bool(last) and last["present"]["image"] and last["present"]["audio"]

    def wait(self, timeout: float, interrupt: bool = False) -> int:
        """Waits for the run to end (after a SIGINT, as Ctrl+C, if interrupt) and for
        its output to be read; returns the exit code."""
        if interrupt:
            self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=5)
        return code

    def __enter__(self) -> LiveRun:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
