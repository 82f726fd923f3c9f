"""`fusionedge quickstart`: the whole path on the demo data, with the numbers users ask for.

demo data -> training -> export -> evaluation through the runtime -> parity and latency
against PyTorch on the same weights. Like cli.py, this module reaches every package (and
imports each only when it runs); library code never imports it.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from fusionedge.jsonio import dumps
from fusionedge.timing import Laps

log = logging.getLogger(__name__)


def compare_latency(
    model: Any, predictor: Any, samples: Any, repeats: int = 200, warmup: int = 20
) -> dict[str, Any]:
    """Batch-1 milliseconds per sample of PyTorch eager and ONNX Runtime, same weights.

    Model compute only (inputs already decoded). The two alternate in blocks of calls
    (fusionedge.timing, as in `fusionedge bench`), so drift in clock speed or background load hits
    both alike: the ratio is the figure to read, the absolute times are context.
    """
    import torch

    from fusionedge.cli.benchmark import torch_call
    from fusionedge.runtime.bench import inference_call
    from fusionedge.timing import batch_of_one, latency_stats

    model = model.cpu().eval()
    one = batch_of_one(samples.inputs())
    calls = {"runtime": inference_call(predictor, one), "torch": torch_call(model)(one)}
    out: dict[str, Any] = {}
    for name, figures in latency_stats(calls, repeats, warmup).items():
        out[f"{name}_p50"] = figures["p50_ms"]
        out[f"{name}_p95"] = figures["p95_ms"]
    out["speedup_p50"] = out["torch_p50"] / out["runtime_p50"]
    out.update(
        repeats=repeats,
        batch=1,
        torch_threads=torch.get_num_threads(),
        providers=predictor.providers,
    )
    return out


def run_quickstart(out: str | Path, n: int, seed: int, overrides: list[str]) -> dict[str, Any]:
    """Runs every stage that has no output yet in `out`, then writes out/report.json."""
    from fusionedge.card import write_card_or_warn
    from fusionedge.demo.avdigits import generate
    from fusionedge.evaluation import split_arrays
    from fusionedge.export.run import export_run
    from fusionedge.runtime.onnx_eval import evaluate_model_file, live_model_file
    from fusionedge.runtime.predictor import Predictor
    from fusionedge.training.checkpoint import load_model
    from fusionedge.training.config import load_config
    from fusionedge.training.torch_eval import evaluate_run
    from fusionedge.training.trainer import train

    out = Path(out)
    data, run, onnx_path = out / "data", out / "run", out / "model.onnx"
    laps = Laps()
    seconds, lap = laps.seconds, laps.lap

    if (data / "manifest.jsonl").exists():
        log.info("reusing the demo data in %s", data)
    else:
        generate(data, n=n, seed=seed)
        lap("demo_data")
    if (run / "best.safetensors").exists():
        log.info("reusing the trained run in %s", run)
    else:
        train(data, run, load_config(None, overrides), progress=sys.stderr.isatty())
        lap("train")
    export = export_run(run, onnx_path, data)
    lap("export")
    with Predictor.from_path(onnx_path) as predictor:  # one session for every figure below
        runtime_eval = evaluate_model_file(predictor, data, "test")
        lap("eval_runtime")
        # What a camera and a microphone would make of the same test samples: the figure
        # a user meets in `fusionedge run`, next to the one the files give.
        live = live_model_file(predictor, data, "test")
        lap("eval_live")
        torch_eval = evaluate_run(run, data, "test")
        lap("eval_torch")
        _, samples = split_arrays(data, predictor.spec, ("test",), 100, seed=None)
        latency = compare_latency(load_model(run / "best.safetensors"), predictor, samples)
        lap("latency")
    report = {
        "eval": runtime_eval,
        "torch_eval": {"metrics": torch_eval["metrics"], "by_modality": torch_eval["by_modality"]},
        "live": live,
        "parity_max_abs_diff": export["parity"]["max_abs_diff_scores"],
        "parity": export["parity"],
        "latency_ms": latency,
        "export": {k: export[k] for k in ("bytes", "opset", "ops", "seconds")},
        "seconds": seconds,
    }
    (out / "report.json").write_text(dumps(report, indent=2) + "\n")
    # The cards train and export wrote came before these figures: write them again.
    write_card_or_warn(run)
    write_card_or_warn(onnx_path)
    return report


def format_report(report: dict[str, Any]) -> str:
    """The final table of the quickstart."""
    from fusionedge.live_eval import format_live

    runtime, torch_eval = report["eval"], report["torch_eval"]
    rows = [("fused", runtime["metrics"], torch_eval["metrics"])]
    rows += [
        (f"{m} only", v, torch_eval["by_modality"][m]) for m, v in runtime["by_modality"].items()
    ]
    lines = [
        f"test split, {runtime['n']} samples: accuracy through ONNX Runtime "
        f"({', '.join(runtime['providers'])}) and PyTorch",
        f"  {'inputs':<14}{'runtime':>9}{'pytorch':>9}",
    ]
    lines += [f"  {name:<14}{r['accuracy']:>9.4f}{t['accuracy']:>9.4f}" for name, r, t in rows]
    lines.append(format_live(report["live"]))
    latency = report["latency_ms"]
    lines += [
        f"parity: max |score difference| {report['parity_max_abs_diff']:.2e} over "
        f"{report['parity']['cases']} cases (tolerance {report['parity']['tolerance']:g})",
        f"latency, batch 1, p50: runtime {latency['runtime_p50']:.2f} ms, pytorch "
        f"{latency['torch_p50']:.2f} ms ({latency['speedup_p50']:.1f}x)",
        "seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in report["seconds"].items()),
    ]
    return "\n".join(lines)
