"""What each `fusionedge` subcommand does: argparse.Namespace in, exit status out.

The parser is in parser.py; `predict` is in predict_command.py and the live commands
(`run`, `devices`, `record`) in live_commands.py. Each command imports its package only
when it runs, so `fusionedge eval model.onnx` never loads torch.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fusionedge.jsonio import dumps

if TYPE_CHECKING:
    pass


def cmd_demo_data(args: argparse.Namespace) -> int:
    from fusionedge.demo.avdigits import generate

    summary = generate(args.dir, n=args.n, seed=args.seed, workers=args.workers)
    print(
        f"wrote {summary['n']} samples to {summary['manifest']} "
        f"({summary['seconds']:.1f} s): {dumps(summary['splits'])}"
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
    if os.environ.get("RANK", "0") != "0":
        return 0  # under torchrun, rank 0 reports for the job
    metrics = {k: v for k, v in result.best_metrics.items() if isinstance(v, float)}
    print(
        f"best epoch {result.best_epoch} of {result.epochs_run}: "
        + ", ".join(f"val {k} {v:.4f}" for k, v in metrics.items())
    )
    print(f"run folder: {result.run_dir}")
    return 0


def is_model_file(model: str | Path) -> bool:
    """An exported model for the runtime (an .onnx file or a split model's folder), as
    opposed to a run folder or checkpoint for PyTorch."""
    from fusionedge.runtime.split import is_split_folder

    return Path(model).suffix == ".onnx" or is_split_folder(model)


def evaluate(model: str, data: str, split: str) -> dict[str, Any]:
    """A run folder (PyTorch) or an .onnx file or split folder (ONNX Runtime, no torch):
    the same keys (a runtime evaluation adds "providers", the providers it ran on)."""
    if is_model_file(model):
        from fusionedge.runtime.onnx_eval import evaluate_model_file

        return evaluate_model_file(model, data, split)
    from fusionedge.training.torch_eval import evaluate_run

    return evaluate_run(model, data, split)


def robustness(model: str, data: str, split: str) -> dict[str, Any]:
    """The `robustness` key of `fusionedge eval --robustness`, with its chart drawn as
    robustness.png in the run folder (for a model file or split folder: NAME.robustness.png
    beside it, so that two models in one folder keep their own charts)."""
    from fusionedge.robustness_plot import draw_robustness

    path = Path(model)
    if is_model_file(model):
        from fusionedge.runtime.onnx_eval import robustness_model_file

        result = robustness_model_file(model, data, split)
        stem = path.stem if path.suffix == ".onnx" else path.name
        png = path.with_name(f"{stem}.robustness.png")
    else:
        from fusionedge.training.torch_eval import robustness_run

        result = robustness_run(model, data, split)
        png = (path if path.is_dir() else path.parent) / "robustness.png"
    result["png"] = str(draw_robustness(result, png))
    return result


def live(model: str, data: str, split: str, seed: int) -> dict[str, Any]:
    """The `live` key of `fusionedge eval --live`: each sample as the live loop meets it
    (fusionedge.live_eval), through the same backend as the plain evaluation."""
    if is_model_file(model):
        from fusionedge.runtime.onnx_eval import live_model_file

        return live_model_file(model, data, split, seed)
    from fusionedge.training.torch_eval import live_run

    return live_run(model, data, split, seed)


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
    if "groups" in result:
        groups = result["groups"]
        lines.append(
            f"  groups: {groups['n_groups']}, of which {groups['seen_in_train']} also in the "
            f"train split ({groups['samples_in_seen_groups']} of {groups['n_samples']} "
            "grouped samples)"
        )
    if "robustness" in result:
        from fusionedge.robustness import format_robustness

        lines += [format_robustness(result["robustness"]), f"chart: {result['robustness']['png']}"]
    if "live" in result:
        from fusionedge.live_eval import format_live

        lines.append(format_live(result["live"]))
    return "\n".join(lines)


def cmd_eval(args: argparse.Namespace) -> int:
    result = evaluate(args.model, args.data, args.split)
    if args.robustness:
        result["robustness"] = robustness(args.model, args.data, args.split)
    if args.live:
        result["live"] = live(args.model, args.data, args.split, args.seed)
    print(dumps(result) if args.json else format_eval(result))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from fusionedge.cli.compare import format_compare, parse_fusions, run_compare

    overrides = list(args.set) + ([f"epochs={args.epochs}"] if args.epochs else [])
    report = run_compare(
        args.data,
        args.out,
        parse_fusions(args.fusions),
        overrides,
        split=args.split,
        threads=args.threads,
        repeats=args.repeats,
    )
    print(dumps(report) if args.json else format_compare(report))
    if not args.json:
        print(f"report: {Path(args.out) / 'compare.json'}")
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from fusionedge.cli.quickstart import format_report, run_quickstart

    report = run_quickstart(args.out, args.n, args.seed, args.set)
    print(format_report(report))
    print(f"report: {Path(args.out) / 'report.json'}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from fusionedge.export.precision import PrecisionRefused, describe_copy
    from fusionedge.export.run import export_run, report_path

    refused = None
    try:
        report = export_run(
            args.run,
            args.out,
            args.data,
            args.opset,
            int8=args.int8,
            fp16=args.fp16,
            force=args.force,
            split=args.split,
        )
    except PrecisionRefused as e:
        report, refused = e.report, e
    parity = report["parity"]
    print(
        f"wrote {args.out} ({report['bytes'] / 1e6:.2f} MB, opset {report['opset']}, "
        f"{report['nodes']} nodes); parity: max |score difference| "
        f"{parity['max_abs_diff_scores']:.2e} over {parity['cases']} cases"
    )
    for precision in ("int8", "fp16"):
        if precision in report:
            print(describe_copy(precision, report[precision]))
    if "split" in report:
        split = report["split"]
        print(
            f"wrote {split['folder']}/ ({', '.join(f'{p}.onnx' for p in split['parts'])}); "
            f"parity: max |score difference| {split['parity']['max_abs_diff_scores']:.2e} "
            f"over {split['parity']['cases']} cases"
        )
    print(f"report: {report_path(Path(args.out))}")
    if refused is not None:
        print(f"fusionedge export: error: {refused}", file=sys.stderr)
        return 1
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from fusionedge.runtime.info import model_info

    info = model_info(args.model, args.verify, args.providers, args.tolerance)
    print(dumps(info) if args.json else format_info(args.model, info))
    failure = info_failure(info)
    if failure is not None:
        print(f"fusionedge info: error: {failure}", file=sys.stderr)
        return 2
    return 0


def info_failure(info: dict[str, Any]) -> str | None:
    """Why `info` exits 2: the first problem of the file, or the failed verification."""
    if info["problems"]:
        return info["problems"][0]
    verify = info.get("verify")
    if verify is not None and not verify["passed"]:
        return f"{info['path']}: golden-case verification failed: {verify['reason']}"
    return None


def format_info(model: str, info: dict[str, Any]) -> str:
    spec = info["spec"]
    lines = [
        f"{model}: {info['bytes'] / 1e6:.2f} MB, fusionedge {spec['fusionedge_version']}, "
        f"schema {spec['schema_version']}, opset {info['opset']}, {info['precision']}",
        f"  task {spec['task']}, {len(spec['labels'])} labels: {', '.join(spec['labels'])}",
    ]
    width = max(map(len, [*info["inputs"], *info["outputs"]])) + 2
    lines += [f"  input  {name:<{width}}{value}" for name, value in info["inputs"].items()]
    lines += [f"  output {name:<{width}}{value}" for name, value in info["outputs"].items()]
    if "split_parts" in info:
        parts = ", ".join(f"{k}.onnx {v / 1e6:.2f} MB" for k, v in info["split_parts"].items())
        lines.append(f"  split model: {parts} (inputs and outputs above are the fusion part's)")
    lines += [
        f"  preprocessing: {dumps(info['preprocessing'])}",
        f"  validation metrics at training: {dumps(info['metrics'])}",
        f"  providers available: {', '.join(info['providers_available'])}",
        *format_integrity(info),
    ]
    return "\n".join(lines)


def format_integrity(info: dict[str, Any]) -> list[str]:
    """The integrity lines of `info`: digest, golden cases, problems, verification."""
    digest = info["digest"] or "none (exported before fusionedge stored one)"
    lines = [
        f"  digest: {digest}" + (" (matches the file)" if info["digest_verified"] else ""),
        f"  golden cases: {'stored' if info['golden_cases'] else 'none'}",
    ]
    lines += [f"  PROBLEM: {p}" for p in info["problems"]] or ["  spec and graph agree"]
    verify = info.get("verify")
    if verify is not None:
        lines.append(format_verify(verify))
    return lines


def format_verify(verify: dict[str, Any]) -> str:
    if verify.get("max_abs_diff") is None:
        return f"  verify: FAIL: {verify['reason']}"
    head = (
        f"  verify: {verify['cases']} golden cases on {', '.join(verify['providers'])}: "
        f"max |score difference| {verify['max_abs_diff']:.2e} (tolerance "
        f"{verify['tolerance']:g}, {verify['precision']})"
    )
    return f"{head}: pass" if verify["passed"] else f"{head}: FAIL: {verify['reason']}"


def cmd_bench(args: argparse.Namespace) -> int:
    from fusionedge.cli.benchmark import bench, format_bench
    from fusionedge.runtime.bench import BenchOptions, parse_batches

    options = BenchOptions(
        batches=parse_batches(args.batch),
        repeats=args.repeats,
        seconds=args.seconds,
        warmup=args.warmup,
        threads=args.threads,
        providers=args.providers,
        spinning=not args.no_spinning,
        data=Path(args.data) if args.data else None,
        split=args.split,
        seed=args.seed,
    )
    report = bench(args.model, options, args.vs_torch)
    print(dumps(report) if args.json else format_bench(report))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from fusionedge.cli.doctor import print_doctor

    # A report, not a test: a missing GPU or microphone is an answer, so exit 0.
    print_doctor(args.max_cameras, args.json)
    return 0


def cmd_card(args: argparse.Namespace) -> int:
    from fusionedge.card import card_paths, have_matplotlib, write_card

    md = write_card(args.model, args.out, tuple(args.sources))
    folder = card_paths(Path(args.model), Path(args.out) if args.out else None)[1]
    plots = sorted(folder.glob("*.png")) if have_matplotlib() else []
    shown = f"; plots in {folder}/ ({len(plots)})" if plots else "; no plots (install matplotlib)"
    print(f"wrote {md}{shown}")
    return 0


def cmd_triton(args: argparse.Namespace) -> int:
    from fusionedge.runtime.triton_repo import TritonOptions, write_repository

    options = TritonOptions(args.name, args.max_batch, args.instances, args.device)
    report = write_repository(args.model, args.repo, options)
    for name, kind in report["models"].items():
        print(f"wrote {Path(report['repository']) / name}/ ({kind})")
    name = report["name"]
    print(
        f"serve: tritonserver --model-repository={report['repository']}; models {name} "
        f"(ONNX Runtime backend{', ensemble' if report['split'] else ''}) and {name}_raw "
        "(Python backend: needs fusionedge in the server's Python)"
    )
    return 0
