"""The `fusionedge` parser: global flags, then one add_<command> step per subcommand.

Each subcommand's handler is in commands.py, which imports a package only when its
command runs, so building the parser (and `fusionedge --help`) loads nothing heavy.
"""

from __future__ import annotations

import argparse

from fusionedge.cli import commands, live_commands, predict_command
from fusionedge.demo import DEFAULT_SAMPLES
from fusionedge.version import __version__

DESCRIPTION = "Train, export and run multimodal models: the `fusionedge` command line."
# What parser.add_subparsers() returns; argparse exports no public name for it.
Subparsers = argparse._SubParsersAction


def build_parser() -> argparse.ArgumentParser:
    """The `fusionedge` parser: global flags, then one add_* step per subcommand."""
    parser = argparse.ArgumentParser(prog="fusionedge", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"fusionedge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    add_demo_data(sub)
    add_train(sub)
    add_eval(sub)
    add_compare(sub)
    add_export(sub)
    add_predict(sub)
    add_info(sub)
    add_bench(sub)
    add_run(sub)
    add_record(sub)
    add_devices(sub)
    add_doctor(sub)
    add_quickstart(sub)
    add_card(sub)
    add_triton(sub)
    return parser


def add_set_flag(p: argparse.ArgumentParser, description: str) -> None:
    """--set KEY=VALUE (repeatable): a training config override, parsed by load_config."""
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=description)


def add_demo_data(sub: Subparsers) -> None:
    p = sub.add_parser("demo-data", help="write the built-in avdigits demo data set")
    p.add_argument("dir", help="output folder (manifest.jsonl, img/, wav/)")
    p.add_argument(
        "--n", type=int, default=DEFAULT_SAMPLES, help=f"samples (default {DEFAULT_SAMPLES})"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--workers", type=int, default=0, help="processes (default: all cores)")
    p.set_defaults(run_command=commands.cmd_demo_data)


def add_train(sub: Subparsers) -> None:
    p = sub.add_parser("train", help="train a fused model on a manifest data set")
    p.add_argument("--data", required=True, help="data set folder with manifest.jsonl")
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--config", help="YAML config file (keys as in TrainConfig)")
    add_set_flag(p, "override a config key, e.g. --set model.fusion=gated (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue from RUN/last.safetensors")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run_command=commands.cmd_train)


def add_eval(sub: Subparsers) -> None:
    p = sub.add_parser("eval", help="evaluate a model, fused and per modality")
    p.add_argument("model", help="run folder (or its .safetensors checkpoint), or a .onnx file")
    p.add_argument("--data", required=True, help="data set folder with manifest.jsonl")
    p.add_argument("--split", default="test", choices=["train", "val", "test", "all"])
    p.add_argument(
        "--robustness",
        action="store_true",
        help="also every subset of modalities (others missing) and each modality under "
        "increasing noise; draws robustness.png in the run folder",
    )
    p.add_argument(
        "--live",
        action="store_true",
        help="also each sample as a live camera and microphone deliver it: the image in a "
        "JPEG camera frame, the audio at a random place in a noisy sliding window",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the --live scenes (default 0)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run_command=commands.cmd_eval)


def add_compare(sub: Subparsers) -> None:
    p = sub.add_parser("compare", help="train each fusion on the same budget, side by side")
    p.add_argument("--data", required=True, help="data set folder with manifest.jsonl")
    p.add_argument(
        "--fusions",
        default="concat,sum,attention,gated",
        help="comma-separated fusion names (default concat,sum,attention,gated)",
    )
    p.add_argument("--out", default="compare", help="output folder, one run per fusion")
    p.add_argument("--epochs", type=int, help="training epochs of every fusion")
    add_set_flag(p, "override a training config key for every fusion (repeatable)")
    p.add_argument("--split", default="test", choices=["train", "val", "test", "all"])
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads for latency")
    p.add_argument("--repeats", type=int, default=200, help="timed batch-1 calls per fusion")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run_command=commands.cmd_compare)


def add_export(sub: Subparsers) -> None:
    p = sub.add_parser("export", help="export a trained run to one ONNX file")
    p.add_argument("run", help="run folder (or its .safetensors checkpoint)")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument(
        "--data",
        help="data set for the parity check on real samples "
        "(default: the one the run was trained on)",
    )
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    p.add_argument(
        "--int8",
        action="store_true",
        help="also write NAME.int8.onnx: static int8, calibrated on the training split",
    )
    p.add_argument("--fp16", action="store_true", help="also write NAME.fp16.onnx (for CUDA)")
    p.add_argument(
        "--split",
        action="store_true",
        help="also write NAME.split/: one file per modality encoder and one for fusion + "
        "head, for live loops that encode each modality only when it has new data",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="keep an int8/fp16 copy that loses more than 1 point of accuracy",
    )
    p.set_defaults(run_command=commands.cmd_export)


def add_predict(sub: Subparsers) -> None:
    p = sub.add_parser(
        "predict",
        help="predict one sample, or with --data a whole data set into JSON lines, with an "
        "ONNX model (no torch)",
    )
    p.add_argument("model", help="a .onnx file or a split model's folder (fusionedge export)")
    p.add_argument("--image", help="image file")
    p.add_argument("--audio", help="audio file (WAV, FLAC, ...)")
    p.add_argument("--text", help="a line of text (blank text counts as none)")
    p.add_argument(
        "--data",
        help="batch mode: every sample of this data set folder (manifest.jsonl), one JSON "
        "line each into --out; instead of --image/--audio/--text",
    )
    p.add_argument(
        "--split",
        choices=["train", "val", "test", "all"],
        help="with --data: the split to predict (default all)",
    )
    p.add_argument(
        "--out",
        help="with --data: the JSON-lines file to write; ids already in it are skipped (resume)",
    )
    p.add_argument("--batch", type=int, help="with --data: samples per model run (default 32)")
    p.add_argument(
        "--shard",
        metavar="I/N",
        help="with --data: only shard I of N (0 <= I < N), chosen by a hash of each id: "
        "N processes with 0/N ... N-1/N together predict every sample once",
    )
    p.add_argument(
        "--no-progress", action="store_true", help="with --data: no progress line on stderr"
    )
    p.add_argument("--providers", default="auto", help="auto (default), cpu or cuda")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run_command=predict_command.cmd_predict)


def add_info(sub: Subparsers) -> None:
    p = sub.add_parser(
        "info",
        help="what an ONNX model file takes and gives, and whether it is intact "
        "(exit 2 when its spec disagrees with its graph or it was changed after export)",
    )
    p.add_argument("model", help="a .onnx file written by fusionedge export")
    p.add_argument(
        "--verify",
        action="store_true",
        help="rerun the golden cases export stored and compare the scores (exit 2 on a "
        "difference over the tolerance)",
    )
    p.add_argument("--providers", default="auto", help="with --verify: auto (default), cpu or cuda")
    p.add_argument(
        "--tolerance",
        type=float,
        help="with --verify: largest |score difference| that passes (default: 1e-4 for "
        "fp32, 1e-2 for int8/fp16 copies)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run_command=commands.cmd_info)


def add_bench(sub: Subparsers) -> None:
    p = sub.add_parser("bench", help="latency per stage and throughput, optionally vs PyTorch")
    p.add_argument("model", help="a .onnx file written by fusionedge export")
    p.add_argument(
        "--vs-torch",
        metavar="RUN",
        help="run folder (or checkpoint) of the same weights, timed in PyTorch eager "
        "alternately with the runtime",
    )
    p.add_argument("--batch", default="1,8,32", help="batch sizes (default 1,8,32)")
    p.add_argument(
        "--threads", type=int, default=0, help="intra-op threads of both (default: their own)"
    )
    p.add_argument(
        "--repeats", type=int, help="timed calls per batch size (default: fit --seconds)"
    )
    p.add_argument(
        "--seconds", type=float, default=3.0, help="time budget without --repeats (default 3)"
    )
    p.add_argument("--warmup", type=int, default=5, help="untimed calls per batch size")
    p.add_argument("--data", help="data set folder: real samples instead of synthetic ones")
    p.add_argument("--split", default="test", choices=["train", "val", "test", "all"])
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic inputs")
    p.add_argument("--providers", default="auto", help="auto (default), cpu or cuda")
    p.add_argument("--no-spinning", action="store_true", help="idle ONNX Runtime threads sleep")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run_command=commands.cmd_bench)


def add_run(sub: Subparsers) -> None:
    p = sub.add_parser("run", help="live inference on a camera, a microphone and text")
    p.add_argument("model", help="a .onnx file or a split model's folder (fusionedge export)")
    _add_run_sources(p)
    _add_run_batching(p)
    _add_run_outputs(p)
    _add_run_pacing(p)
    p.add_argument(
        "--threads",
        type=int,
        help="ONNX Runtime threads (default: 1 with one --camera/--mic stream, for latency; "
        "with several or with --streams, 0: every core, for one batched run at a time)",
    )
    p.add_argument("--providers", default="auto", help="auto (default), cpu or cuda")
    p.set_defaults(run_command=live_commands.cmd_run)


def _add_run_sources(p: argparse.ArgumentParser) -> None:
    """run: the cameras and microphones, one stream or several."""
    p.add_argument(
        "--camera",
        action="append",
        help="camera index, http/rtsp URL, or a video file; repeat for several streams "
        "(one live loop each, model calls batched; needs --headless)",
    )
    p.add_argument(
        "--mic",
        action="append",
        help="'default', a device name or index, or an audio file; with several cameras, "
        "repeat once per camera or give one for all",
    )
    p.add_argument(
        "--streams",
        metavar="FILE",
        help='several streams from a JSON list of {"camera": ..., "mic": ...} (instead of '
        "--camera/--mic; needs --headless)",
    )


def _add_run_batching(p: argparse.ArgumentParser) -> None:
    """run with several streams: how their model calls are batched (SharedModel)."""
    p.add_argument(
        "--max-batch",
        type=int,
        default=8,
        help="several streams: at most this many rows per batched model run (default 8)",
    )
    p.add_argument(
        "--max-runs",
        type=int,
        help="several streams: at most this many model runs at once (default: cores // "
        "threads, so 1 with the default --threads 0; further calls queue and run batched)",
    )
    p.add_argument(
        "--batch-wait-ms",
        type=float,
        help="several streams: how long a queued model call waits for the other streams' "
        "calls, at any load (default: half the model's recent run time while it is busy at "
        "least half the time, else none; 0: never wait)",
    )


def _add_run_outputs(p: argparse.ArgumentParser) -> None:
    """run: the text input, where results go and how long it runs."""
    p.add_argument("--text", help="a fixed text, or - to read lines from stdin")
    p.add_argument("--headless", action="store_true", help="JSON lines on stdout, no window")
    p.add_argument("--jsonl", help="also append the JSON lines to this file")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument(
        "--loop",
        action="store_true",
        help="play --camera and --mic files again from the start when they end",
    )
    p.add_argument(
        "--web",
        metavar="[HOST:]PORT",
        help="also serve a live web view (page, /api/latest, /api/stream, /stream.mjpg) on "
        "this port; a bare PORT listens on 127.0.0.1 only. Works with --headless",
    )


def _add_run_pacing(p: argparse.ArgumentParser) -> None:
    """run: how often it predicts and how it judges its inputs (LiveOptions)."""
    p.add_argument(
        "--rate",
        type=float,
        help="at most this many predictions per second (default: one per new camera frame)",
    )
    p.add_argument(
        "--stale-ms",
        type=float,
        default=500.0,
        help="an input older than this counts as missing (default 500)",
    )
    p.add_argument(
        "--smoothing", type=float, default=0.0, help="score smoothing over time, 0 (off) to <1"
    )
    p.add_argument(
        "--audio-hop-ms",
        type=float,
        default=100.0,
        help="split models: re-encode audio after this much new audio (default 100)",
    )


def add_record(sub: Subparsers) -> None:
    p = sub.add_parser("record", help="record labelled samples from a camera and a mic")
    p.add_argument("dir", help="data set folder to create or append to")
    p.add_argument("--label", required=True, help="label of the samples recorded now")
    p.add_argument("--count", type=int, default=10, help="samples (default 10)")
    p.add_argument("--camera", help="camera index, URL or video file")
    p.add_argument("--mic", help="'default', a device name or index, or an audio file")
    p.add_argument("--text", help="a text hint stored with every sample")
    p.add_argument("--interval", type=float, default=1.5, help="seconds between samples")
    p.add_argument("--window", type=float, default=1.0, help="seconds of audio per sample")
    p.add_argument("--rate", type=int, default=16000, help="microphone rate to ask for")
    p.add_argument("--split", choices=["train", "val", "test"], help="split of the new lines")
    p.add_argument(
        "--group",
        help="group of the new lines, e.g. a speaker (default: a new name for this session)",
    )
    p.add_argument("--warmup", type=float, default=1.0, help="seconds before the first sample")
    p.set_defaults(run_command=live_commands.cmd_record)


def add_devices(sub: Subparsers) -> None:
    p = sub.add_parser("devices", help="cameras that open and audio inputs, with rates")
    p.add_argument("--max-cameras", type=int, default=8, help="camera indices to try")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run_command=live_commands.cmd_devices)


def add_doctor(sub: Subparsers) -> None:
    p = sub.add_parser(
        "doctor",
        help="what this machine can run (GPU, CUDA libraries, providers, torch, audio, "
        "cameras), and the command that fixes each thing missing",
    )
    p.add_argument("--max-cameras", type=int, default=8, help="camera indices to try")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run_command=commands.cmd_doctor)


def add_quickstart(sub: Subparsers) -> None:
    p = sub.add_parser("quickstart", help="demo data, training, export and evaluation in one go")
    p.add_argument("--out", default="quickstart", help="output folder (default ./quickstart)")
    p.add_argument(
        "--n", type=int, default=DEFAULT_SAMPLES, help=f"demo samples (default {DEFAULT_SAMPLES})"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    add_set_flag(p, "override a training config key (repeatable)")
    p.set_defaults(run_command=commands.cmd_quickstart)


def add_card(sub: Subparsers) -> None:
    p = sub.add_parser(
        "card", help="write a model card (card.md and plots) for a run folder or model file"
    )
    p.add_argument("model", help="run folder or .onnx file written by fusionedge export")
    p.add_argument(
        "--out",
        help="folder for card.md and card/ (default: in the run folder, or NAME.card.md and "
        "NAME.card/ beside the model file)",
    )
    p.add_argument(
        "--from",
        dest="sources",
        action="append",
        default=[],
        metavar="JSON",
        help="an eval, bench or quickstart JSON report to take measured figures from, "
        "besides those found beside the run and the model (repeatable)",
    )
    p.set_defaults(run_command=commands.cmd_card)


def add_triton(sub: Subparsers) -> None:
    p = sub.add_parser(
        "triton", help="write a Triton Inference Server model repository for a model file"
    )
    p.add_argument("model", help=".onnx file, or split model folder, written by fusionedge export")
    p.add_argument("--repo", required=True, help="model repository folder (other models kept)")
    p.add_argument("--name", help="model name on the server (default: the file's stem)")
    p.add_argument(
        "--max-batch", type=int, default=16, help="max_batch_size, dynamic batching (default 16)"
    )
    p.add_argument("--instances", type=int, default=1, help="model instances (default 1)")
    p.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "gpu"],
        help="instance kind: auto (a GPU where the server has one), cpu or gpu (default auto)",
    )
    p.set_defaults(run_command=commands.cmd_triton)
