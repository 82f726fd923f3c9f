"""The web view's server (runtime/web.py) without a browser or a model: addresses, methods,
the stream limit, strict JSON, slow clients and shutdown. The browser test is
tests/live/test_live_web.py."""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from fusionedge.runtime.web import RateMeter, WebView, parse_address, strict_json


def strict_loads(text: str | bytes) -> object:
    def refuse(name: str) -> object:
        raise AssertionError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def noisy_frame(seed: int, size: tuple[int, int] = (480, 640)) -> np.ndarray:
    """A frame that encodes to a large JPEG (fills socket buffers quickly)."""
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


@pytest.fixture
def view() -> Iterator[WebView]:
    web = WebView(("127.0.0.1", 0), info={"model": "m.onnx"}, max_streams=2, timeout_s=5)
    with web:
        yield web


def request(
    web: WebView, path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(*web.address, timeout=5)
    try:
        conn.request(method, path, headers=headers or {})
        res = conn.getresponse()
        return res.status, dict(res.getheaders()), res.read()
    finally:
        conn.close()


def open_stream(web: WebView, path: str) -> tuple[http.client.HTTPConnection, object]:
    conn = http.client.HTTPConnection(*web.address, timeout=5)
    conn.request("GET", path)
    return conn, conn.getresponse()


# ---------------------------------------------------------------------- addresses


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8080", ("127.0.0.1", 8080)),
        (" 0 ", ("127.0.0.1", 0)),
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("0.0.0.0:9000", ("0.0.0.0", 9000)),
        ("localhost:65535", ("localhost", 65535)),
        ("[::1]:8080", ("::1", 8080)),
        ("[::]:80", ("::", 80)),
    ],
)
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    "text", ["", "web", "host:", ":8080", "70000", "-1", "::1:8080", "[nope]:80", "8o80", "٨٠"]
)
def test_parse_address_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="--web"):
        parse_address(text)


def test_a_bare_port_binds_loopback_only() -> None:
    with WebView(parse_address("0")) as web:
        host, port = web.address
        assert host == "127.0.0.1" and port > 0
        assert web._server is not None
        assert web._server.socket.getsockname() == ("127.0.0.1", port)
        assert web.url == f"http://127.0.0.1:{port}/"


def test_a_taken_port_is_a_clear_error(view: WebView) -> None:
    with pytest.raises(OSError, match=r"--web: cannot listen on http://127\.0\.0\.1:\d+/"):
        WebView(view.address).start()


# ---------------------------------------------------------------------- endpoints


def test_latest_before_any_result_is_a_json_503(view: WebView) -> None:
    status, headers, body = request(view, "/api/latest")
    assert status == 503
    assert headers["Content-Type"] == "application/json"
    assert headers["Retry-After"] == "1"
    assert strict_loads(body) == {"error": "no result yet"}
    status, _, body = request(view, "/frame.jpg")
    assert status == 503 and strict_loads(body) == {"error": "no frame yet"}


def test_latest_is_the_published_line_verbatim(view: WebView) -> None:
    line = json.dumps({"t": 1.5, "label": "cat", "scores": {"cat": 0.9, "dog": 0.1}})
    view.publish(line, 10.0, -20.0, None)
    status, headers, body = request(view, "/api/latest")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert body.decode() == line
    assert headers["Cache-Control"] == "no-store"


def test_status_json_is_strict(view: WebView) -> None:
    assert (
        strict_json({"a": float("nan"), "b": [float("-inf"), 1.0]}) == '{"a":null,"b":[null,1.0]}'
    )
    view.publish("{}", float("nan"), float("-inf"), None)
    _, _, status = view.latest()
    assert strict_loads(status) == {"seq": 1, "fps": None, "audio_level_db": None, "frame": False}


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "BREW"])
def test_every_method_but_get_is_405(view: WebView, method: str) -> None:
    view.publish('{"n":1}')
    status, headers, body = request(view, "/api/latest", method)
    assert status == 405
    assert headers["Allow"] == "GET"
    if method != "HEAD":
        assert "read-only" in strict_loads(body)["error"]
    assert view.latest()[1] == '{"n":1}'  # nothing changed


def test_unknown_path_is_a_json_404(view: WebView) -> None:
    status, _, body = request(view, "/etc/passwd")
    assert status == 404 and "no such page" in strict_loads(body)["error"]


def test_another_host_name_is_refused_on_loopback(view: WebView) -> None:
    """DNS rebinding: a page on evil.example resolving to 127.0.0.1 must not read the view."""
    status, _, _ = request(view, "/api/latest", headers={"Host": "evil.example:8080"})
    assert status == 403
    for host in ("localhost", f"127.0.0.1:{view.address[1]}", "[::1]:1"):
        assert request(view, "/api/info", headers={"Host": host})[0] == 200


def test_page_is_self_contained(view: WebView) -> None:
    status, headers, body = request(view, "/")
    page = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<script src" not in page and "<link" not in page
    for endpoint in ("api/stream", "frame.jpg", "api/latest"):
        assert endpoint in page
    info = strict_loads(request(view, "/api/info")[2])
    assert info == {"model": "m.onnx", "max_streams": 2}


def test_frame_is_drawn_once_per_result_and_only_when_asked(view: WebView) -> None:
    calls: list[int] = []

    def render() -> np.ndarray:
        calls.append(1)
        return np.full((48, 64, 3), 120, np.uint8)

    view.publish("{}", render=render)
    assert calls == []  # publishing draws nothing
    for _ in range(3):
        status, headers, body = request(view, "/frame.jpg")
        assert status == 200 and headers["X-Frame-Seq"] == "1"
        assert body[:2] == b"\xff\xd8"
    assert len(calls) == 1


# ---------------------------------------------------------------------- streams


def test_sse_sends_each_result_line_and_a_status(view: WebView) -> None:
    conn, res = open_stream(view, "/api/stream")
    try:
        assert res.status == 200 and res.getheader("Content-Type") == "text/event-stream"
        view.publish('{"n":1}', 5.0, -12.5, lambda: np.zeros((8, 8, 3), np.uint8))
        text = b""
        while b"event: status" not in text:
            text += res.fp.read1(4096)
        assert 'id: 1\ndata: {"n":1}\n\n' in text.decode()
        status = text.decode().split("event: status\ndata: ")[1].split("\n")[0]
        assert strict_loads(status) == {
            "seq": 1,
            "fps": 5.0,
            "audio_level_db": -12.5,
            "frame": True,
        }
    finally:
        conn.close()


def test_mjpeg_sends_multipart_jpegs(view: WebView) -> None:
    conn, res = open_stream(view, "/stream.mjpg")
    try:
        assert res.status == 200
        assert res.getheader("Content-Type").startswith("multipart/x-mixed-replace; boundary=")
        view.publish("{}", render=lambda: np.full((48, 64, 3), 200, np.uint8))
        data = b""
        while b"\xff\xd9" not in data:
            data += res.fp.read1(65536)
        assert data.startswith(b"--fusionedge-frame\r\nContent-Type: image/jpeg\r\n")
        assert b"X-Frame-Seq: 1\r\n" in data
    finally:
        conn.close()


def test_too_many_stream_clients_get_a_503_until_one_leaves(view: WebView) -> None:
    first = open_stream(view, "/api/stream")
    second = open_stream(view, "/stream.mjpg")
    assert first[1].status == 200 and second[1].status == 200
    for path in ("/api/stream", "/stream.mjpg"):
        status, headers, body = request(view, path)
        assert status == 503 and headers["Retry-After"] == "5"
        assert "too many stream clients (at most 2)" in strict_loads(body)["error"]
    # Plain requests are not limited.
    assert request(view, "/api/info")[0] == 200
    first[0].close()
    first[1].close()
    # The server notices the gone client at its next write (a result or a keep-alive).
    deadline = time.monotonic() + 10
    while view.streams > 1 and time.monotonic() < deadline:
        view.publish("{}")
        time.sleep(0.05)
    assert view.streams == 1
    third = open_stream(view, "/api/stream")
    assert third[1].status == 200
    third[0].close()
    second[0].close()


def test_a_client_that_stops_reading_never_blocks_publish(view: WebView) -> None:
    """A stalled MJPEG client: publish stays instant; the client, reading again, gets the
    newest frames, not a queue of old ones."""
    frames = [noisy_frame(i) for i in range(4)]
    conn, res = open_stream(view, "/stream.mjpg")
    stall_until = time.monotonic() + 1.0
    longest, published = 0.0, 0
    while time.monotonic() < stall_until:  # the client reads nothing meanwhile
        i = published
        t = time.perf_counter()
        view.publish(f'{{"n":{i}}}', render=lambda i=i: frames[i % 4])
        longest = max(longest, time.perf_counter() - t)
        published += 1
        time.sleep(0.002)
    assert longest < 0.05, f"publish took {longest * 1000:.1f} ms with a stalled client"
    newest = view.latest()[0]
    seqs: list[int] = []
    data = b""
    deadline = time.monotonic() + 10
    while (not seqs or seqs[-1] < newest) and time.monotonic() < deadline:
        data += res.fp.read1(1 << 20)
        seqs = [int(s) for s in re.findall(rb"X-Frame-Seq: (\d+)", data)]
    conn.close()
    assert seqs and seqs[-1] == newest
    assert len(seqs) < published / 4, f"{len(seqs)} frames sent of {published}: queued"


def test_close_ends_streams_and_frees_the_port() -> None:
    web = WebView(("127.0.0.1", 0)).start()
    port = web.address[1]
    conn, res = open_stream(web, "/api/stream")
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(res.read()), daemon=True)
    reader.start()
    t = time.monotonic()
    web.close()
    reader.join(timeout=5)
    assert not reader.is_alive(), "a stream outlived the server"
    assert time.monotonic() - t < 3
    conn.close()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 1):
        pass


def test_rate_meter() -> None:
    meter = RateMeter(window_s=2.0)
    assert meter.tick(0.0) == 0.0
    rates = [meter.tick(0.1 * i) for i in range(1, 31)]
    assert rates[-1] == pytest.approx(10.0)
