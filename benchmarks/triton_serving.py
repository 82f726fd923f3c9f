"""Triton serving of a fusionedge model: throughput and p50/p95 latency at 1, 4 and 16
concurrent clients, dynamic batching on against off.

    FUSIONEDGE_TRITON_PYTHON=/path/to/env/bin/python \\
    .venv/bin/python benchmarks/triton_serving.py MODEL.onnx [--seconds 5] [--max-batch 16]

MODEL is an exported model (RESULTS.md uses the quickstart's, quickstart/model.onnx).
`fusionedge triton`
writes two repositories' worth of the raw (Python-backend) model, identical but for
dynamic_batching (`on`: the batcher merges concurrent requests, up to max_batch, waiting
at most 1 ms; `off`: one request per model run); both run on nvidia-pytriton's
tritonserver on 127.0.0.1, one instance each. That server has no ONNX Runtime backend,
so it is the raw model that is measured: each request is one sample as a client holds
it (a camera frame at the model's size, 1 s of PCM at the model's rate, a word), the
preparation runs inside the model. Each client (a thread with its own HTTP connection)
sends requests back to back for --seconds after a warm-up; throughput is requests
answered per second over all clients, latency is per request as the client sees it.
The server's Python (FUSIONEDGE_TRITON_PYTHON or --python) needs fusionedge and numpy<2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from typing import Any

import numpy as np

from fusionedge.runtime import Predictor
from fusionedge.runtime.triton_repo import TritonOptions, write_repository
from fusionedge.runtime.triton_server import local_server

CONCURRENCY = (1, 4, 16)


def request_inputs(predictor: Predictor) -> list[Any]:
    """One sample of every modality the model takes, as raw client arrays."""
    import tritonclient.http as http

    spec, rng = predictor.spec, np.random.default_rng(0)
    arrays: dict[str, np.ndarray] = {}
    if spec.image is not None:
        shape = (1, spec.image.height, spec.image.width, 3)
        arrays["image"] = rng.integers(0, 256, shape, dtype=np.uint8)
    if spec.audio is not None:
        pcm = 0.1 * rng.standard_normal((1, spec.audio.num_samples))
        arrays["audio"] = pcm.astype(np.float32)
        arrays["sample_rate"] = np.array([[spec.audio.sample_rate]], np.int32)
    if spec.text is not None:
        arrays["text"] = np.array([[b"seven"]], dtype=object)
    kinds = {"uint8": "UINT8", "float32": "FP32", "int32": "INT32", "object": "BYTES"}
    inputs = []
    for name, a in arrays.items():
        t = http.InferInput(name, list(a.shape), kinds[a.dtype.name])
        t.set_data_from_numpy(a)
        inputs.append(t)
    return inputs


def run_clients(url: str, model: str, inputs: list[Any], clients: int, seconds: float) -> dict:
    """`clients` threads sending requests back to back; throughput and latency."""
    import tritonclient.http as http

    latencies: list[list[float]] = [[] for _ in range(clients)]
    start = threading.Barrier(clients + 1)
    stop_at: list[float] = []

    def client(i: int) -> None:
        connection = http.InferenceServerClient(url)
        for _ in range(3):  # warm-up, not timed
            connection.infer(model, inputs)
        start.wait()
        while time.perf_counter() < stop_at[0]:
            t0 = time.perf_counter()
            connection.infer(model, inputs)
            latencies[i].append(time.perf_counter() - t0)
        connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    stop_at.append(time.perf_counter() + 1e9)
    start.wait()
    t0 = time.perf_counter()
    stop_at[0] = t0 + seconds
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    all_ms = np.array([x for per in latencies for x in per]) * 1e3
    return {
        "clients": clients,
        "requests": int(all_ms.size),
        "throughput_rps": round(all_ms.size / elapsed, 1),
        "p50_ms": round(float(np.percentile(all_ms, 50)), 2),
        "p95_ms": round(float(np.percentile(all_ms, 95)), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="an exported .onnx file (e.g. quickstart/model.onnx)")
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds per point")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--python", default=os.environ.get("FUSIONEDGE_TRITON_PYTHON"))
    args = parser.parse_args()
    with Predictor.from_path(args.model, providers="cpu") as predictor:
        inputs = request_inputs(predictor)
    report: dict[str, Any] = {"model": args.model, "max_batch": args.max_batch, "runs": {}}
    with tempfile.TemporaryDirectory() as repo:
        for name, batching in (("on", True), ("off", False)):
            options = TritonOptions(name, args.max_batch, device="cpu", dynamic_batching=batching)
            write_repository(args.model, repo, options)
        with local_server(repo, ["on_raw", "off_raw"], python=args.python or sys.executable) as url:
            for name in ("on", "off"):
                report["runs"][f"dynamic_batching_{name}"] = [
                    run_clients(url, f"{name}_raw", inputs, n, args.seconds) for n in CONCURRENCY
                ]
    report["cpus"] = os.cpu_count()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
