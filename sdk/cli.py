"""The `fusionedge` command. Each subcommand imports its package only when it runs, so
`fusionedge eval model.onnx` never loads torch and `fusionedge --help` loads nothing."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from fusionedge.demo import DEFAULT_SAMPLES
from fusionedge.version import __version__

log = logging.getLogger("fusionedge")


def cmd_demo_data(args: argparse.Namespace) -> int:
    from fusionedge.demo.avdigits import generate

    summary = generate(args.dir, n=args.n, seed=args.seed, workers=args.workers)
    print(
        f"wrote {summary['n']} samples to {summary['manifest']} "
        f"({summary['seconds']:.1f} s): {json.dumps(summary['splits'])}"
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from fusionedge.training.config import load_config
    from fusionedge.training.trainer import train

    config = None
    if not args.resume or args.config or args.set:
        config = load_config(args.config, args.set)
    result = train(
        args.data,
        args.out,
        config,
        resume=args.resume,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    metrics = {k: v for k, v in result.best_metrics.items() if isinstance(v, float)}
    print(
        f"best epoch {result.best_epoch} of {result.epochs_run}: "
        + ", ".join(f"val {k} {v:.4f}" for k, v in metrics.items())
    )
    print(f"run folder: {result.run_dir}")
    return 0


def evaluate(model: str, data: str, split: str) -> dict[str, Any]:
    path = Path(model)
    if path.suffix == ".onnx":
        raise ValueError(
            f"{model}: evaluating .onnx files comes with the runtime; pass a run folder for now"
        )
    from fusionedge.training.evaluate import evaluate_run

    return evaluate_run(path, data, split)


def format_eval(result: dict[str, Any]) -> str:
    key = "mae" if result["task"] == "regression" else "accuracy"
    lines = [
        f"{result['split']} split, {result['n']} samples ({result['task']})",
        f"  {'inputs':<16}{key:>10}{'macro_f1':>10}",
    ]
    rows = [("fused", result["metrics"])]
    rows += [(f"{m} only", v) for m, v in result.get("by_modality", {}).items()]
    for name, values in rows:
        f1 = values.get("macro_f1")
        lines.append(
            f"  {name:<16}{values[key]:>10.4f}" + (f"{f1:>10.4f}" if f1 is not None else "")
        )
    return "\n".join(lines)


def cmd_eval(args: argparse.Namespace) -> int:
    result = evaluate(args.model, args.data, args.split)
    print(json.dumps(result) if args.json else format_eval(result))
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from fusionedge.demo.avdigits import generate
    from fusionedge.training.config import load_config
    from fusionedge.training.trainer import train

    out = Path(args.out)
    data, run = out / "data", out / "run"
    if not (data / "manifest.jsonl").exists():
        generate(data, n=args.n, seed=args.seed)
    else:
        log.info("reusing the demo data in %s", data)
    if not (run / "best.safetensors").exists():
        train(data, run, load_config(None, args.set), progress=sys.stderr.isatty())
    else:
        log.info("reusing the trained run in %s", run)
    result = evaluate(str(run), str(data), "test")
    (out / "report.json").write_text(json.dumps({"eval": result}, indent=2))
    print(format_eval(result))
    print(f"report: {out / 'report.json'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fusionedge", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"fusionedge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo-data", help="write the built-in avdigits demo data set")
    p.add_argument("dir", help="output folder (manifest.jsonl, img/, wav/)")
    p.add_argument(
        "--n", type=int, default=DEFAULT_SAMPLES, help=f"samples (default {DEFAULT_SAMPLES})"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--workers", type=int, default=0, help="processes (default: all cores)")
    p.set_defaults(run=cmd_demo_data)

    p = sub.add_parser("train", help="train a fused model on a manifest data set")
    p.add_argument("--data", required=True, help="data set folder with manifest.jsonl")
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--config", help="YAML config file (keys as in TrainConfig)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set model.fusion=gated (repeatable)",
    )
    p.add_argument("--resume", action="store_true", help="continue from RUN/last.safetensors")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("eval", help="evaluate a model, fused and per modality")
    p.add_argument("model", help="run folder (or its .safetensors checkpoint)")
    p.add_argument("--data", required=True, help="data set folder with manifest.jsonl")
    p.add_argument("--split", default="test", choices=["train", "val", "test", "all"])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=cmd_eval)

    p = sub.add_parser("quickstart", help="demo data, training and evaluation in one go")
    p.add_argument("--out", default="quickstart", help="output folder (default ./quickstart)")
    p.add_argument(
        "--n", type=int, default=DEFAULT_SAMPLES, help=f"demo samples (default {DEFAULT_SAMPLES})"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a training config key (repeatable)",
    )
    p.set_defaults(run=cmd_quickstart)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, OSError) as e:
        # Caller mistakes (bad data, bad config, missing files) end in one clear line;
        # anything else is a bug and keeps its traceback.
        print(f"fusionedge {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
