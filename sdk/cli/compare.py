"""`fusionedge compare`: the same training budget for each fusion, side by side.

Each fusion is trained with the same config, seed and epochs (only model.fusion differs),
exported, and measured through the runtime: accuracy and macro F1 on a split, accuracy
with one modality missing (mean and worst over the modalities), parameters, and batch-1
inference latency, timed interleaved across the fusions on the same threads so background
load hits them alike. Like cli.py, this module reaches every package (importing each
only when it runs); library code never imports it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from fusionedge.jsonio import dumps

log = logging.getLogger(__name__)

DEFAULT_FUSIONS = ("concat", "sum", "attention", "gated")


def parse_fusions(text: str) -> tuple[str, ...]:
    """ "concat,gated" -> ("concat", "gated"), checked against the fusion registry.

    Raises:
        ValueError: an unknown or repeated name, naming the accepted ones.
    """
    from fusionedge.training.model import FUSIONS  # fills the registries

    names = tuple(n.strip() for n in text.split(",") if n.strip())
    known = FUSIONS.names()
    unknown = [n for n in names if n not in known]
    if not names or unknown or len(set(names)) != len(names):
        raise ValueError(
            f"--fusions: expected distinct comma-separated names from {', '.join(known)}; "
            f"got {text!r}"
        )
    return names


def train_one(data: Path, folder: Path, fusion: str, overrides: list[str]) -> dict[str, Any]:
    """Trains (unless folder/run has a finished run) and exports one fusion."""
    from fusionedge.export.run import export_run
    from fusionedge.training.config import load_config
    from fusionedge.training.trainer import train

    run, onnx_path = folder / "run", folder / "model.onnx"
    if (run / "best.safetensors").exists():
        log.info("reusing the trained run in %s", run)
    else:
        train(data, run, load_config(None, [*overrides, f"model.fusion={fusion}"]), progress=False)
    export = export_run(run, onnx_path, data)
    return {"run": str(run), "model": str(onnx_path), "bytes": export["bytes"]}


def count_parameters(run: Path) -> int:
    from fusionedge.training.checkpoint import load_model

    return int(sum(p.numel() for p in load_model(run / "best.safetensors").parameters()))


def measure_one(model: Path, data: Path, split: str) -> dict[str, Any]:
    """Accuracy, macro F1 and missing-modality accuracy of an exported model, in the runtime."""
    from fusionedge.robustness import subset_name
    from fusionedge.runtime.onnx_eval import evaluate_model_file, robustness_model_file
    from fusionedge.runtime.predictor import Predictor

    evaluation = evaluate_model_file(model, data, split)
    with Predictor.from_path(model) as predictor:
        rob = robustness_model_file(predictor, data, split, noise=False)
    mods = evaluation["modalities"]
    without = {m: rob["subsets"][subset_name([o for o in mods if o != m])] for m in mods}
    out = {
        "accuracy": evaluation["metrics"].get("accuracy"),
        "macro_f1": evaluation["metrics"].get("macro_f1"),
        "missing_one_mean": float(np.mean(list(without.values()))) if len(mods) > 1 else None,
        "missing_one_worst": min(without.values()) if len(mods) > 1 else None,
        "accuracy_without": without,
        "subsets": rob["subsets"],
    }
    if "subsets_clean" in rob and len(mods) > 1:
        # The demo breaks a camera or microphone on purpose on most samples; on the clean
        # ones a missing modality costs only what the others cannot make up for.
        clean = rob["subsets_clean"]
        out["subsets_clean"] = clean
        out["missing_one_worst_clean"] = min(
            clean[subset_name([o for o in mods if o != m])] for m in mods
        )
    return out


def latencies(
    models: dict[str, Path], data: Path, split: str, threads: int, repeats: int
) -> dict[str, dict[str, float]]:
    """Batch-1 inference milliseconds (Predictor.run on decoded samples) per fusion,
    timed in alternating blocks (fusionedge.timing)."""
    from fusionedge.arrays import load_arrays
    from fusionedge.evaluation import pick_split
    from fusionedge.runtime.bench import inference_call
    from fusionedge.runtime.predictor import Predictor
    from fusionedge.timing import batch_of_one, latency_stats

    manifest, _, records = pick_split(data, (split,), 50)
    predictors = {f: Predictor.from_path(p, threads=threads) for f, p in models.items()}
    try:
        calls = {}
        for fusion, predictor in predictors.items():
            # Decoded per model: each fusion's spec says how (they share one data set).
            inputs = load_arrays(records, predictor.spec, manifest.path).inputs()
            calls[fusion] = inference_call(predictor, batch_of_one(inputs))
        figures = latency_stats(calls, repeats, warmup=20)
        return {f: s | {"providers": predictors[f].providers} for f, s in figures.items()}
    finally:
        for predictor in predictors.values():
            predictor.close()


def run_compare(
    data: str | Path,
    out: str | Path,
    fusions: tuple[str, ...],
    overrides: list[str],
    split: str = "test",
    threads: int = 1,
    repeats: int = 200,
) -> dict[str, Any]:
    """Trains, exports and measures each fusion under out/FUSION/; writes out/compare.json."""
    data, out = Path(data), Path(out)
    rows: dict[str, dict[str, Any]] = {}
    for fusion in fusions:
        log.info("fusion %s: training and export", fusion)
        info = train_one(data, out / fusion, fusion, overrides)
        rows[fusion] = {
            **measure_one(Path(info["model"]), data, split),
            "parameters": count_parameters(Path(info["run"])),
            **info,
        }
    timing = latencies(
        {f: Path(r["model"]) for f, r in rows.items()}, data, split, threads, repeats
    )
    for fusion, t in timing.items():
        rows[fusion]["latency_ms"] = t
    report = {
        "data": str(data),
        "split": split,
        "overrides": list(overrides),
        "threads": threads,
        "repeats": repeats,
        "fusions": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(dumps(report, indent=2) + "\n")
    return report


def format_compare(report: dict[str, Any]) -> str:
    """The comparison as a Markdown table (readable in a terminal as it is)."""

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}"

    lines = [
        f"{report['split']} split of {report['data']}; budget: "
        f"{' '.join(report['overrides']) or 'default config'}; latency: batch 1, "
        f"{report['threads']} thread(s), p50 of {report['repeats']} interleaved calls",
        "",
        "| fusion | accuracy % | macro F1 % | one missing, mean % | one missing, worst % "
        "| one missing, worst, clean samples % | parameters | latency p50 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for fusion, r in report["fusions"].items():
        lines.append(
            f"| {fusion} | {pct(r['accuracy'])} | {pct(r['macro_f1'])} "
            f"| {pct(r['missing_one_mean'])} | {pct(r['missing_one_worst'])} "
            f"| {pct(r.get('missing_one_worst_clean'))} "
            f"| {r['parameters']:,} | {r['latency_ms']['p50_ms']:.2f} |"
        )
    return "\n".join(lines)
