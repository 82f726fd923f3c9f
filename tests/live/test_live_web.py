"""`fusionedge run ... --headless --web 127.0.0.1:PORT` driven by a real headless Chromium.

The run reads the MJPEG test camera and the PulseAudio virtual microphone; the page must
show frames that change, follow the results (checked against the run's own --jsonl lines
and /api/latest), and fetch nothing from elsewhere. The endpoints are checked over HTTP:
/api/latest is a --jsonl line verbatim, /api/stream sends events, /stream.mjpg JPEG
parts, POST is 405, the socket listens on 127.0.0.1 only, and Ctrl+C stops the server.

Browser tooling: Playwright's Python package driving the system Chromium through
executable_path (its own browser download is not used). Only the page test is skipped when
either is missing (Debian `apt-get install chromium`, `pip install playwright`); the HTTP
checks run without them. FUSIONEDGE_CHROMIUM names another Chromium binary. The
screenshot is written under pytest's tmp dir (its path is printed) and copied to
$FUSIONEDGE_TEST_ARTIFACTS when that is set.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from live_helpers import LiveRun, MjpegServer, VirtualMic, wait_for

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_path() -> str | None:
    named = os.environ.get("FUSIONEDGE_CHROMIUM")
    if named:
        return named if Path(named).is_file() else None
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


@dataclass
class WebRun:
    run: LiveRun
    base: str
    port: int
    jsonl: Path

    def jsonl_lines(self) -> list[str]:
        # Whole lines only: the run may be halfway through writing the last one.
        text = self.jsonl.read_text()
        return text[: text.rfind("\n") + 1].splitlines()

    def jsonl_times(self) -> set[float]:
        return {json.loads(x)["t"] for x in self.jsonl_lines()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as res:
            return res.status, dict(res.headers), res.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.fixture(scope="module")
def browser_path() -> str:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("the web view test needs Playwright: pip install playwright")
    path = chromium_path()
    if path is None:
        pytest.skip(
            "the web view test needs Chromium: apt-get install chromium "
            "(or FUSIONEDGE_CHROMIUM=/path/to/chromium)"
        )
    return path


@pytest.fixture(scope="module")
def web_run(
    live_model: Path,
    virtual_mic: VirtualMic,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WebRun]:
    camera = MjpegServer(fps=20).start()
    tone = virtual_mic.tone(440.0)
    port = free_port()
    jsonl = tmp_path_factory.mktemp("web") / "results.jsonl"
    run = LiveRun(
        live_model,
        camera.url,
        virtual_mic,
        *("--web", f"127.0.0.1:{port}"),
        *("--jsonl", str(jsonl)),
        *("--providers", "cpu"),
        *("--duration", "120"),  # a safety net: the last test ends it with Ctrl+C
    )
    try:
        with run:
            assert wait_for(run.both_present, 30.0), (run.proc.poll(), run.stderr[-3000:])
            yield WebRun(run, f"http://127.0.0.1:{port}", port, jsonl)
    finally:
        tone.close()
        camera.kill()


def test_it_listens_on_loopback_only(web_run: WebRun) -> None:
    assert f"web view on http://127.0.0.1:{web_run.port}/" in web_run.run.stderr
    tcp = Path("/proc/net/tcp")
    if not tcp.exists():
        pytest.skip("no /proc/net/tcp to read the listening address from")
    listening = [
        fields[1]
        for fields in (line.split() for line in tcp.read_text().splitlines()[1:])
        if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == web_run.port
    ]
    assert listening == [f"0100007F:{web_run.port:04X}"], listening
    tcp6 = Path("/proc/net/tcp6")
    if tcp6.exists():
        assert f":{web_run.port:04X} " not in tcp6.read_text()


def test_the_page_shows_live_frames_and_follows_the_results(
    web_run: WebRun, browser_path: str, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    requests: list[str] = []
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=browser_path, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 620})
            page.on("request", lambda r: requests.append(r.url))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: m.type == "error" and errors.append(m.text))
            page.goto(web_run.base + "/", wait_until="load")
            # Frames arrive: the <img> has been replaced several times with a real JPEG.
            # (polled from Python: the page's CSP forbids the eval wait_for_function uses)
            shown = lambda: int(page.get_attribute("#frame", "data-frames"))  # noqa: E731
            assert wait_for(lambda: shown() >= 5, 15.0), shown()
            assert frame_size(page) == [640, 480]
            # ... and they change over time (the test camera's colour steps every frame).
            digests, counts = [], []
            for _ in range(4):
                digests.append(pixel_digest(page))
                counts.append(int(page.get_attribute("#frame", "data-frames")))
                time.sleep(0.3)
            assert len(set(digests)) > 1, digests
            assert counts[-1] > counts[0], counts
            # The label follows the results: what the page shows is the label of the result
            # with the same t in the run's own --jsonl lines, and it is recent.
            checked = 0
            for _ in range(5):
                # One read of the page: label, its result's t and the top bar, so an update
                # between reads cannot pair one result's label with another's bars.
                label, t, top_bar = page.evaluate(
                    "(() => { const l = document.getElementById('label');"
                    " const top = document.querySelector('#bars .row.top .name');"
                    " return [l.textContent, l.dataset.t, top && top.textContent]; })()"
                )
                t = float(t)
                status, _, body = get(web_run.base + "/api/latest")
                assert status == 200
                latest = json.loads(body)
                # The run writes its --jsonl line and publishes to the page independently:
                # give the line a moment to land.
                assert wait_for(lambda t=t: t in web_run.jsonl_times(), 3.0), t
                by_t = {json.loads(x)["t"]: json.loads(x) for x in web_run.jsonl_lines()}
                assert label == by_t[t]["label"]
                # Recent: the page is at most a few results behind the newest. 3 s, not the
                # 0.05 s it usually is, because the 2 shared cores may be busy with a suite.
                assert 0 <= latest["t"] - t < 3.0, (latest["t"], t)
                top = max(by_t[t]["scores"].items(), key=lambda kv: kv[1])
                assert top_bar == top[0]
                checked += 1
                time.sleep(0.2)
            assert checked == 5
            chips = page.eval_on_selector_all(
                "#present .chip", "cs => cs.map(c => [c.dataset.modality, c.className])"
            )
            assert dict(chips) == {"image": "chip on", "audio": "chip on", "text": "chip"}
            assert "dBFS" in page.inner_text("#level")  # the 440 Hz tone is playing
            assert re.fullmatch(r"\d+ ms", page.inner_text("#latency"))
            assert float(page.inner_text("#fps")) > 1
            assert page.inner_text("#conn") == "live"
            shot = tmp_path / "web_view.png"
            page.screenshot(path=str(shot))
        finally:
            browser.close()
    print(f"\nweb view screenshot: {shot}")
    artifacts = os.environ.get("FUSIONEDGE_TEST_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / shot.name)
    assert not errors, errors
    outside = [u for u in requests if not u.startswith(web_run.base + "/") and "blob:" not in u]
    assert not outside, outside


# The page swaps the frame's src for each new frame; while the new one decodes the image
# has no size, so the digest waits for it (null: swapped again meanwhile, ask again).
PIXEL_DIGEST = """(async () => {
  const img = document.getElementById('frame');
  await img.decode().catch(() => {});
  if (!img.naturalWidth) return null;
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const ctx = c.getContext('2d');
  ctx.drawImage(img, 0, 0);
  const d = ctx.getImageData(0, 0, c.width, c.height).data;
  let h = 0;
  for (let i = 0; i < d.length; i += 97) h = (h * 31 + d[i]) >>> 0;
  return h;
})()"""


def frame_size(page) -> list[int]:
    """The frame's natural size, asked again while a new frame is swapped in (0 x 0
    until it has decoded, as pixel_digest meets it)."""
    for _ in range(50):
        size = page.evaluate(
            "(() => { const i = document.getElementById('frame');"
            " return [i.naturalWidth, i.naturalHeight]; })()"
        )
        if size != [0, 0]:
            return size
        time.sleep(0.02)
    raise AssertionError("the frame never had a size for 1 s")


def pixel_digest(page) -> int:
    """A hash of the frame's pixels, asked again while a new frame is swapped in."""
    for _ in range(50):
        digest = page.evaluate(PIXEL_DIGEST)
        if digest is not None:
            return digest
        time.sleep(0.02)
    raise AssertionError("the frame never had a size for 1 s")


def test_latest_is_a_jsonl_line_verbatim(web_run: WebRun) -> None:
    status, headers, body = get(web_run.base + "/api/latest")
    assert status == 200 and headers["Content-Type"] == "application/json"
    text = body.decode()
    assert wait_for(lambda: text in web_run.jsonl_lines(), 2.0)
    json.loads(text, parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))


def test_stream_sends_result_events(web_run: WebRun) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", web_run.port, timeout=5)
    try:
        conn.request("GET", "/api/stream")
        res = conn.getresponse()
        assert res.status == 200 and res.getheader("Content-Type") == "text/event-stream"
        data = b""
        deadline = time.monotonic() + 5
        while data.count(b"event: status") < 5 and time.monotonic() < deadline:
            data += res.fp.read1(65536)
    finally:
        conn.close()
    text = data.decode()
    results = [json.loads(x) for x in re.findall(r"^id: \d+\ndata: (.*)$", text, re.M)]
    statuses = [json.loads(x) for x in re.findall(r"^event: status\ndata: (.*)$", text, re.M)]
    assert len(results) >= 4 and len(statuses) >= 4
    assert all({"t", "label", "scores", "present"} <= r.keys() for r in results)
    assert [r["t"] for r in results] == sorted(r["t"] for r in results)
    assert all(s["frame"] for s in statuses)


def test_mjpeg_sends_annotated_frames(web_run: WebRun) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", web_run.port, timeout=5)
    try:
        conn.request("GET", "/stream.mjpg")
        res = conn.getresponse()
        ctype = res.getheader("Content-Type")
        assert res.status == 200 and ctype.startswith("multipart/x-mixed-replace; boundary=")
        boundary = ctype.split("boundary=")[1].encode()
        data = b""
        deadline = time.monotonic() + 5
        while data.count(b"--" + boundary) < 4 and time.monotonic() < deadline:
            data += res.fp.read1(1 << 20)
    finally:
        conn.close()
    parts = [p for p in data.split(b"--" + boundary)[1:-1]]
    assert len(parts) >= 2
    for part in parts:
        head, _, jpeg = part.partition(b"\r\n\r\n")
        assert b"Content-Type: image/jpeg" in head
        image = cv2.imdecode(np.frombuffer(jpeg.rstrip(b"\r\n"), np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape == (480, 640, 3)


def test_post_is_405(web_run: WebRun) -> None:
    status, headers, body = get(web_run.base + "/api/latest", "POST")
    assert status == 405 and headers["Allow"] == "GET"
    assert "read-only" in json.loads(body)["error"]


def test_ctrl_c_stops_the_runner_and_the_server(web_run: WebRun) -> None:
    """Last in the file: it ends the shared run."""
    code = web_run.run.wait(timeout=20, interrupt=True)
    assert code == 0, web_run.run.stderr[-3000:]
    assert "Traceback" not in web_run.run.stderr
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", web_run.port), 1),
    ):
        pass
