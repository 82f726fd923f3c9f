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
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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
                200, PAGE.encode(), "text/html; charset=utf-8", {"Content-Security-Policy": CSP}
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

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>fusionedge live</title>
<style>
  :root { color-scheme: dark; --bg: #111418; --panel: #1b2027; --fg: #e8ecf1;
          --dim: #8a94a3; --on: #4cc46a; --off: #d9534f; --bar: #3a7bd5; }
  * { box-sizing: border-box; }
  body { margin: 0; background: var(--bg); color: var(--fg);
         font: 15px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; }
  header { display: flex; gap: 1em; align-items: baseline; padding: .6em 1em;
           background: var(--panel); }
  header h1 { font-size: 1.1em; margin: 0; }
  #conn { margin-left: auto; color: var(--dim); }
  #conn.live { color: var(--on); }
  main { display: flex; flex-wrap: wrap; gap: 1em; padding: 1em; }
  #view { flex: 1 1 480px; min-width: 320px; background: #000; display: flex;
          align-items: center; justify-content: center; aspect-ratio: 4 / 3; }
  #frame { max-width: 100%; max-height: 100%; display: block; }
  aside { flex: 0 1 340px; display: flex; flex-direction: column; gap: 1em; }
  section { background: var(--panel); border-radius: 6px; padding: .8em 1em; }
  h2 { font-size: .8em; text-transform: uppercase; letter-spacing: .08em;
       color: var(--dim); margin: 0 0 .5em; }
  #label { font-size: 2em; font-weight: 600; overflow-wrap: anywhere; }
  .row { display: grid; grid-template-columns: 7em 1fr 3.5em; gap: .5em;
         align-items: center; margin: .25em 0; }
  .row .name { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
  .track { background: #2a313b; height: .9em; border-radius: 3px; overflow: hidden; }
  .fill { background: var(--bar); height: 100%; width: 0; transition: width .1s; }
  .row.top .fill { background: var(--on); }
  .score { text-align: right; font-variant-numeric: tabular-nums; }
  .chips { display: flex; gap: .5em; flex-wrap: wrap; }
  .chip { padding: .15em .6em; border-radius: 1em; background: var(--off); color: #fff; }
  .chip.on { background: var(--on); color: #06140a; }
  dl { display: grid; grid-template-columns: auto 1fr; gap: .2em 1em; margin: 0; }
  dt { color: var(--dim); }
  dd { margin: 0; font-variant-numeric: tabular-nums; }
  #meter { height: .9em; background: #2a313b; border-radius: 3px; overflow: hidden;
           margin-top: .4em; }
  #meter div { height: 100%; width: 0; background: var(--on); transition: width .1s; }
</style>
</head>
<body>
<header><h1>fusionedge live</h1><span id="model"></span>
  <span id="conn">connecting&hellip;</span></header>
<main>
  <div id="view"><img id="frame" alt="annotated camera frame" data-frames="0"></div>
  <aside>
    <section><h2>Prediction</h2><div id="label" data-t="">&ndash;</div>
      <div id="bars"></div></section>
    <section><h2>Live inputs</h2><div class="chips" id="present"></div></section>
    <section><h2>Audio level</h2><div id="level">&ndash;</div>
      <div id="meter"><div></div></div></section>
    <section><h2>Timing</h2><dl>
      <dt>latency</dt><dd id="latency">&ndash;</dd>
      <dt>results/s</dt><dd id="fps">&ndash;</dd>
      <dt>frames shown/s</dt><dd id="shown">&ndash;</dd>
      <dt>dropped frames</dt><dd id="dropped">&ndash;</dd>
      <dt>mic overflows</dt><dd id="overflows">&ndash;</dd>
    </dl></section>
  </aside>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const img = $("frame");
const TOP = 5;
let wanted = 0, shownSeq = 0, inflight = false, frames = 0, objectUrl = null;
const shownTimes = [];

function fmt(x, digits) { return x === null || x === undefined ? "\\u2013" : x.toFixed(digits); }

function showResult(r) {
  const label = $("label");
  label.textContent = r.label === null ? "\\u2013" : r.label;
  label.dataset.t = String(r.t);
  const ranked = Object.entries(r.scores).sort((a, b) => b[1] - a[1]).slice(0, TOP);
  const bars = $("bars");
  while (bars.children.length > ranked.length) bars.lastChild.remove();
  while (bars.children.length < ranked.length) {
    const row = document.createElement("div");
    row.className = "row";
    row.innerHTML = '<span class="name"></span><div class="track"><div class="fill">' +
      '</div></div><span class="score"></span>';
    bars.appendChild(row);
  }
  ranked.forEach(([name, score], i) => {
    const row = bars.children[i];
    row.classList.toggle("top", i === 0);
    row.querySelector(".name").textContent = name;
    row.querySelector(".name").title = name;
    row.querySelector(".fill").style.width = (100 * Math.max(0, Math.min(1, score))) + "%";
    row.querySelector(".score").textContent = score.toFixed(2);
  });
  const present = $("present");
  present.replaceChildren(...Object.entries(r.present).map(([m, on]) => {
    const chip = document.createElement("span");
    chip.className = "chip" + (on ? " on" : "");
    chip.dataset.modality = m;
    chip.textContent = m + (on ? " live" : " off");
    return chip;
  }));
  $("latency").textContent = fmt(r.latency_ms, 0) + " ms";
  $("dropped").textContent = r.dropped_frames;
  $("overflows").textContent = r.overflows;
}

function showStatus(s) {
  $("fps").textContent = fmt(s.fps, 1);
  const db = s.audio_level_db;
  $("level").textContent = db === null ? "silent / none" : db.toFixed(1) + " dBFS";
  const fill = db === null ? 0 : Math.max(0, Math.min(1, (db + 60) / 60));
  $("meter").firstElementChild.style.width = (100 * fill) + "%";
  if (s.frame) want(s.seq);
}

function want(seq) {
  wanted = Math.max(wanted, seq);
  if (!inflight && wanted > shownSeq) fetchFrame();
}

async function fetchFrame() {
  inflight = true;
  let got = 0;
  const before = shownSeq;
  try {
    const res = await fetch("frame.jpg", { cache: "no-store" });
    got = res.ok ? Number(res.headers.get("X-Frame-Seq")) || 0 : 0;
    if (got > shownSeq) {  // never the same frame twice
      const url = URL.createObjectURL(await res.blob());
      img.src = url;
      await img.decode();
      if (objectUrl) URL.revokeObjectURL(objectUrl);
      objectUrl = url;
      shownSeq = Math.max(shownSeq, got);
      frames += 1;
      img.dataset.frames = String(frames);
      img.dataset.seq = String(shownSeq);
      const now = performance.now();
      shownTimes.push(now);
      while (now - shownTimes[0] > 2000) shownTimes.shift();
      const span = (shownTimes[shownTimes.length - 1] - shownTimes[0]) / 1000;
      $("shown").textContent = span > 0 ? fmt((shownTimes.length - 1) / span, 1) : "\\u2013";
    }
  } catch (e) { /* the next result asks again */ }
  inflight = false;
  // Only the newest frame: a result that came while this one loaded asks once more.
  if (shownSeq > before && wanted > shownSeq) setTimeout(fetchFrame, 0);
}

let polling = null;
function poll() {
  fetch("api/latest", { cache: "no-store" })
    .then((res) => (res.ok ? res.json() : null))
    .then((r) => { if (r) showResult(r); })
    .catch(() => {});
  if (!inflight) fetchFrame();
}

function connect() {
  const source = new EventSource("api/stream");
  source.onopen = () => {
    $("conn").textContent = "live";
    $("conn").className = "live";
    if (polling) { clearInterval(polling); polling = null; }
  };
  source.onmessage = (e) => showResult(JSON.parse(e.data));
  source.addEventListener("status", (e) => showStatus(JSON.parse(e.data)));
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) {
      // Refused (too many stream clients) or the runner stopped: poll slowly instead.
      $("conn").textContent = "polling (stream unavailable)";
      $("conn").className = "";
      if (!polling) polling = setInterval(poll, 1000);
      setTimeout(connect, 5000);
    } else {
      $("conn").textContent = "reconnecting\\u2026";
      $("conn").className = "";
    }
  };
}

fetch("api/info").then((res) => res.json()).then((info) => {
  if (!info.model) return;
  $("model").textContent = info.model;
  document.title = info.model + " \\u2013 fusionedge live";
}).catch(() => {});
connect();
</script>
</body>
</html>
"""
