"""`fusionedge run --web [HOST:]PORT`: a read-only web view of the live loop.

A standard-library HTTP server (ThreadingHTTPServer) in daemon threads serves:

- ``/``: one self-contained page (inline CSS and JS, nothing fetched from elsewhere) with
  the annotated frame, the top labels as bars, which modalities are live, the audio
  level, latency and rates, updating live;
- ``/api/latest``: the newest result, the same JSON text as a ``--jsonl`` line (503 with
  ``{"error": ...}`` before the first result);
- ``/api/stream``: server-sent events; per result a default ``message`` event whose data
  is that JSON line (``id:`` the result's sequence number) and a ``status`` event
  (``{"seq", "fps", "audio_level_db", "frame"}``);
- ``/stream.mjpg``: the annotated frames as multipart/x-mixed-replace JPEGs;
- ``/frame.jpg``: the newest annotated frame (``X-Frame-Seq`` header), what the page uses;
- ``/api/info``: the model's name, modalities, labels and task, and the stream limit.

The live loop only ever calls `WebView.publish`, which stores the newest result under a
lock and returns: no I/O, no encoding. Frames are drawn and encoded lazily, once per
result and only when a client asks. Each client is sent the newest result or frame when it
is ready for one; what came in between is dropped, never queued. Streams (SSE and MJPEG)
are limited to `max_streams` at once (503 beyond), a client that stops reading is cut off
after `timeout_s`, and `close()` ends every connection. GET only: any other method is 405.
Bound to loopback, requests naming another host (DNS rebinding) are refused with 403.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from fusionedge.jsonio import dumps

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
MAX_STREAMS = 8
BOUNDARY = "fusionedge-frame"
LOOPBACK_NAMES = ("localhost",)


def strict_json(obj: Any) -> str:
    """Compact strict JSON (fusionedge.jsonio): a non-finite float becomes null."""
    return dumps(obj, separators=(",", ":"))


def parse_address(text: str) -> tuple[str, int]:
    """`[HOST:]PORT` -> (host, port). A bare port binds 127.0.0.1; an IPv6 host is written
    in brackets (``[::1]:8080``); port 0 asks the system for a free one."""
    raw = text.strip()
    host, sep, port = raw.rpartition(":")
    if not sep:
        host = DEFAULT_HOST
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"--web {text!r}: {host!r} is not an IPv6 address") from None
    elif ":" in host:
        raise ValueError(f"--web {text!r}: write an IPv6 host in brackets, e.g. [::1]:8080")
    elif not host:
        raise ValueError(f"--web {text!r}: give PORT or HOST:PORT")
    if not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise ValueError(f"--web {text!r}: the port must be a number from 0 to 65535")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_of(host: str, port: int) -> str:
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


class RateMeter:
    """Events per second over the last `window_s` seconds."""

    def __init__(self, window_s: float = 2.0) -> None:
        self.window_s = window_s
        self._times: collections.deque[float] = collections.deque()

    def tick(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        self._times.append(now)
        while now - self._times[0] > self.window_s:
            self._times.popleft()
        span = self._times[-1] - self._times[0]
        return (len(self._times) - 1) / span if span > 0 else 0.0


class WebView:
    """The server and the newest result it shows. `start()`, then `publish()` per result
    from the live loop, `close()` at the end (or use it as a context manager).

    Args:
        address: (host, port) to listen on (see parse_address).
        info: Static facts about the model for /api/info (name, modalities, labels, ...).
        max_streams: Concurrent /api/stream and /stream.mjpg clients; more get a 503.
        timeout_s: A client that neither reads nor writes for this long is disconnected.
        jpeg_quality: Of /frame.jpg and /stream.mjpg.
    """

    def __init__(
        self,
        address: tuple[str, int],
        info: dict[str, Any] | None = None,
        max_streams: int = MAX_STREAMS,
        timeout_s: float = 10.0,
        jpeg_quality: int = 80,
    ) -> None:
        if max_streams < 1:
            raise ValueError(f"max_streams must be at least 1, got {max_streams}")
        self.address = address
        self.info_json = strict_json({**(info or {}), "max_streams": max_streams})
        self.max_streams = max_streams
        self.timeout_s = timeout_s
        self.jpeg_quality = jpeg_quality
        self.closing = threading.Event()
        self.streams = 0  # open stream clients (SSE + MJPEG)
        self._slots = threading.BoundedSemaphore(max_streams)
        self._cond = threading.Condition()
        self._seq = 0
        self._line: str | None = None
        self._status = strict_json({"seq": 0, "fps": None, "audio_level_db": None})
        self._render: Callable[[], np.ndarray] | None = None
        self._render_lock = threading.Lock()
        self._jpeg: tuple[int, bytes] | None = None
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> WebView:
        host, port = self.address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server_class = type("_Server", (_Server,), {"address_family": family})
        try:
            server = server_class((host, port), _Handler)
        except OSError as e:
            raise OSError(f"--web: cannot listen on {url_of(host, port)}: {e.strerror or e}") from e
        server.view = self
        self.address = (host, server.server_address[1])
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.1,), name="fusionedge-web", daemon=True
        )
        self._thread.start()
        log.info("web view on %s", self.url)
        if not is_loopback(host):
            log.warning(
                "the web view listens on %s: anyone who can reach this address can watch "
                "the camera",
                host,
            )
        return self

    @property
    def url(self) -> str:
        return url_of(*self.address)

    def close(self) -> None:
        """Stops serving and ends every open connection (streams included)."""
        self.closing.set()
        with self._cond:
            self._cond.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> WebView:
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the live side

    def publish(
        self,
        line: str,
        fps: float | None = None,
        level_db: float | None = None,
        render: Callable[[], np.ndarray] | None = None,
    ) -> int:
        """Makes `line` (a result's JSON text) the newest result; returns its sequence
        number. `render` draws its annotated BGR frame; it is called later, from a client's
        thread, at most once, and only if a client wants that frame. Never blocks on I/O."""
        with self._cond:
            self._seq += 1
            self._line = line
            self._status = strict_json(
                {
                    "seq": self._seq,
                    "fps": fps,
                    "audio_level_db": level_db,
                    "frame": render is not None,
                }
            )
            self._render = render
            self._cond.notify_all()
            return self._seq

    # ------------------------------------------------------------------ the client side

    def latest(self) -> tuple[int, str | None, str]:
        """(sequence number, result line or None, status JSON) of the newest result."""
        with self._cond:
            return self._seq, self._line, self._status

    def wait_newer(self, seq: int, timeout: float) -> int:
        """Waits until a result newer than `seq` exists (or closing, or timeout); returns
        the newest sequence number."""
        with self._cond:
            self._cond.wait_for(lambda: self._seq > seq or self.closing.is_set(), timeout)
            return self._seq

    def frame(self) -> tuple[int, bytes] | None:
        """(sequence number, JPEG) of the newest result's annotated frame, drawn and encoded
        once however many clients ask; None before the first frame."""
        with self._cond:
            seq, render = self._seq, self._render
        if render is None:
            return None
        with self._render_lock:
            if self._jpeg is not None and self._jpeg[0] >= seq:
                return self._jpeg
            import cv2

            try:
                image = render()
                ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
            except Exception:
                log.exception("web view: drawing a frame failed")
                return self._jpeg
            if ok:
                self._jpeg = (seq, buf.tobytes())
            return self._jpeg

    def _take_slot(self) -> bool:
        if not self._slots.acquire(blocking=False):
            return False
        with self._conns_lock:
            self.streams += 1
        return True

    def _give_slot(self) -> None:
        with self._conns_lock:
            self.streams -= 1
        self._slots.release()

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._conns_lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    view: WebView

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("web view: error serving %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def version_string(self) -> str:
        return "fusionedge"

    def setup(self) -> None:
        self.timeout = self.server.view.timeout_s  # applied to the socket by setup()
        super().setup()
        self.server.view._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.view._track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("web view %s: " + format, self.address_string(), *args)

    # Any method but GET (POST, PUT, DELETE, HEAD, OPTIONS, made-up ones): 405.
    def __getattr__(self, name: str) -> Any:
        if name.startswith("do_"):
            return self._not_allowed
        raise AttributeError(name)

    def _not_allowed(self) -> None:
        self._json(405, {"error": f"{self.command} not allowed: this server is read-only"})

    def do_GET(self) -> None:
        view = self.server.view
        if not self._host_allowed():
            self._json(403, {"error": "this host name is not served (the view is local)"})
            return
        path = urlsplit(self.path).path
        if path in ("/", "/index.html"):
            self._send(
                200, page_bytes(), "text/html; charset=utf-8", {"Content-Security-Policy": CSP}
            )
        elif path == "/api/latest":
            _, line, _ = view.latest()
            if line is None:
                self._json(503, {"error": "no result yet"}, {"Retry-After": "1"})
            else:
                self._send(200, line.encode(), "application/json")
        elif path == "/api/info":
            self._send(200, view.info_json.encode(), "application/json")
        elif path == "/frame.jpg":
            frame = view.frame()
            if frame is None:
                self._json(503, {"error": "no frame yet"}, {"Retry-After": "1"})
            else:
                self._send(200, frame[1], "image/jpeg", {"X-Frame-Seq": str(frame[0])})
        elif path == "/api/stream":
            self._stream(self._sse)
        elif path == "/stream.mjpg":
            self._stream(self._mjpeg)
        elif path == "/favicon.ico":
            self._send(204, b"", "image/x-icon")
        else:
            self._json(404, {"error": f"no such page: {path}"})

    # ------------------------------------------------------------------ responses

    def _host_allowed(self) -> bool:
        """Bound to loopback, only loopback host names: a web page elsewhere cannot read
        the camera through a DNS name rebound to 127.0.0.1."""
        if not is_loopback(self.server.view.address[0]):
            return True
        host = self.headers.get("Host")
        if host is None:
            return True
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return is_loopback(name.strip("[]"))

    def _headers(self, status: int, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        if status == 405:
            self.send_header("Allow", "GET")
        for key, value in (extra or {}).items():
            self.send_header(key, value)

    def _send(
        self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None
    ) -> None:
        self._headers(status, ctype, extra)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any, extra: dict[str, str] | None = None) -> None:
        self._send(status, strict_json(obj).encode(), "application/json", extra)

    def _stream(self, body: Callable[[], None]) -> None:
        view = self.server.view
        if not view._take_slot():
            self._json(
                503,
                {"error": f"too many stream clients (at most {view.max_streams}); try later"},
                {"Retry-After": "5"},
            )
            return
        self.close_connection = True
        try:
            body()
        except OSError:  # the client went away, stalled past the timeout, or closing
            pass
        finally:
            view._give_slot()

    def _sse(self) -> None:
        view = self.server.view
        self._headers(200, "text/event-stream", {"Connection": "close"})
        self.end_headers()
        self.wfile.write(b"retry: 1000\n\n")
        sent = 0
        while not view.closing.is_set():
            seq = view.wait_newer(sent, 1.0)
            if view.closing.is_set():
                break
            if seq == sent:
                self.wfile.write(b": keep-alive\n\n")  # finds clients that went away
                continue
            seq, line, status = view.latest()
            if line is not None:
                self.wfile.write(f"id: {seq}\ndata: {line}\n\n".encode())
            self.wfile.write(f"event: status\ndata: {status}\n\n".encode())
            self.wfile.flush()
            sent = seq

    def _mjpeg(self) -> None:
        view = self.server.view
        self._headers(
            200, f"multipart/x-mixed-replace; boundary={BOUNDARY}", {"Connection": "close"}
        )
        self.end_headers()
        sent = 0
        while not view.closing.is_set():
            if view.wait_newer(sent, 1.0) == sent:
                continue
            frame = view.frame()
            if frame is None or frame[0] <= sent:
                sent = view.latest()[0]
                continue
            sent, jpeg = frame
            self.wfile.write(
                f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n"
                f"X-Frame-Seq: {sent}\r\n\r\n".encode()
                + jpeg
                + b"\r\n"
            )
            self.wfile.flush()


CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src 'self' blob:; connect-src 'self'; base-uri 'none'; form-action 'none'"
)


@functools.cache
def page_bytes() -> bytes:
    """The page (runtime/web_page.html, package data): self-contained, no file from the
    internet, its script and style inline as the CSP above allows."""
    return resources.files("fusionedge.runtime").joinpath("web_page.html").read_bytes()
