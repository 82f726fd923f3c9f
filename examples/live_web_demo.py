"""A live demo in the browser: camera + microphone -> the model -> a web page.

    python examples/live_web_demo.py MODEL --camera 0 --mic default --port 8080
    python examples/live_web_demo.py MODEL --camera clip.avi --mic clip.wav   # no devices

This is `fusionedge run MODEL --camera ... --mic ... --headless --web PORT`, started from
Python. Open the printed address: the annotated frame, the top labels, which inputs are
live, latency and rates. Programs can read http://HOST:PORT/api/latest (the newest result
as JSON), /api/stream (server-sent events, one per result) and /stream.mjpg (video).

Without a camera or microphone, give a video file and an audio file: they play in real
time through the same capture stack (examples/make_clip.py makes a pair from a data set),
and the demo ends when they do. Ctrl+C stops it; the page and the devices close cleanly.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from fusionedge.runtime.live import LiveOptions
from fusionedge.runtime.live_app import LiveConfig, run_live
from fusionedge.runtime.web import url_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path, help="model.onnx or a model.split folder")
    parser.add_argument("--camera", help="camera index (0), http/rtsp URL or video file")
    parser.add_argument("--mic", help="'default', a device name or index, or an audio file")
    parser.add_argument("--text", help="a fixed text input, if the model takes text")
    parser.add_argument("--port", type=int, default=8080, help="web page port (8080)")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="127.0.0.1 (this machine only) or 0.0.0.0 (the whole network: "
        "anyone who reaches it can watch the camera)",
    )
    args = parser.parse_args()
    if not (args.camera or args.mic or args.text):
        parser.error("give at least one of --camera, --mic, --text")

    config = LiveConfig(
        model=args.model,
        camera=args.camera,
        mic=args.mic,
        text=args.text,
        headless=True,  # no OpenCV window: the browser is the display
        web=f"{args.host}:{args.port}",
        # Turns of the loop: the newest frame and the audio that ends with it; inputs
        # older than stale_ms count as missing (a covered camera, a muted microphone).
        options=LiveOptions(stale_ms=500, smoothing=0.0),
        threads=1,  # ONNX Runtime threads: leave the other cores to capture and the server
    )
    # run_live opens the model, starts the web server (before the devices, so a port in
    # use fails at once), then loops until Ctrl+C or until file sources end; whatever
    # way it ends it closes the server, the devices and the model.
    print(f"web view: {url_of(args.host, args.port)}  (Ctrl+C to stop)", flush=True)
    try:
        # Headless, run_live writes each result as a JSON line (the /api/latest text) to
        # `out`: here nowhere; sys.stdout would show them, a file would keep them.
        with open(os.devnull, "w") as nowhere:
            count = run_live(config, out=nowhere)
    except KeyboardInterrupt:  # Ctrl+C while the model was still opening
        count = 0
    except (ValueError, OSError) as e:  # a bad model file, a port in use, no such device
        sys.exit(f"error: {e}")
    print(f"stopped after {count} results", flush=True)


if __name__ == "__main__":
    main()
