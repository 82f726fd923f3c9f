"""Real handwriting + real speech, leave one speaker out: do fusionedge's defaults generalise?

    python benchmarks/real_av.py ../shared/data/real-av-dev --out /tmp/real-av [--folds 3]
        [--set key=value ...] [--backend onnx|torch] [--json]

Builds an image + audio data set from a folder laid out like real-av-dev
(benchmarks/real_av_data.py: each recording paired with a degraded handwritten digit,
test speaker and test images never seen in training, validation on another unseen
speaker), then per fold:

- trains fusionedge with its defaults (plus any --set), exports the ONNX file and
  evaluates it through the torch-free runtime: fused, image alone, audio alone;
- trains the plain late-fusion baseline (benchmarks/late_fusion_baseline.py) on the same
  split and scores it on the same test samples.

Prints a table per fold and the mean, and writes OUT/real_av.json. `--backend torch`
evaluates the PyTorch run instead of exporting (quicker while comparing settings).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from late_fusion_baseline import accuracy, train_baseline
from real_av_data import build

from fusionedge.arrays import load_arrays
from fusionedge.manifest import read_manifest
from fusionedge.spec import ModelSpec

log = logging.getLogger("real_av")
COLUMNS = ("fused", "image", "audio", "baseline", "live")


def fusionedge_fold(
    fold: Path, out: Path, overrides: list[str], backend: str, live: bool
) -> dict[str, Any]:
    from fusionedge.training.config import load_config
    from fusionedge.training.trainer import train

    run = out / "run"
    if not (run / "best.safetensors").exists():
        train(fold, run, load_config(None, overrides), progress=False)
    if backend == "torch":
        from fusionedge.training.torch_eval import evaluate_run

        result = evaluate_run(run, fold, "test")
        if live:
            from fusionedge.training.torch_eval import live_run

            result["live"] = live_run(run, fold, "test")
    else:
        from fusionedge.export.run import export_run
        from fusionedge.runtime.onnx_eval import evaluate_model_file

        model = out / "model.onnx"
        if not model.exists():
            export_run(run, model, fold)
        result = evaluate_model_file(model, fold, "test")
        if live:
            from fusionedge.runtime.onnx_eval import live_model_file

            result["live"] = live_model_file(model, fold, "test")
    metrics = json.loads((run / "metrics.json").read_text())
    row = {
        "fused": result["metrics"]["accuracy"],
        **{m: v["accuracy"] for m, v in result["by_modality"].items()},
        "val": metrics.get("val", {}).get("accuracy"),
        "epochs": metrics.get("epochs_run"),
    }
    if live:
        row["live"] = result["live"]["event_accuracy"]
        row["live_per_window"] = result["live"]["accuracy"]
    return row


def baseline_fold(fold: Path, spec_path: Path, epochs: int) -> float:
    spec = ModelSpec.from_json(spec_path.read_text())
    manifest = read_manifest(fold)
    train = load_arrays(manifest.split("train"), spec, manifest.path)
    test = load_arrays(manifest.split("test"), spec, manifest.path)
    model = train_baseline(train, spec.audio, len(spec.labels), epochs=epochs)
    return accuracy(model, test)


def summarise(folds: dict[str, dict[str, Any]]) -> dict[str, float]:
    first = next(iter(folds.values()))
    keys = [k for k in (*COLUMNS, "live_per_window") if k in first]
    mean = {k: float(np.mean([f[k] for f in folds.values()])) for k in keys}
    if "baseline" in mean:
        mean["fused_minus_baseline"] = mean["fused"] - mean["baseline"]
    best_single = np.mean([max(f["image"], f["audio"]) for f in folds.values()])
    mean["fused_minus_best_single"] = float(mean["fused"] - best_single)
    if "live" in mean:
        mean["live_gap"] = mean["fused"] - mean["live"]
    return mean


def table(folds: dict[str, dict[str, Any]], mean: dict[str, float]) -> str:
    cols = [k for k in COLUMNS if k in mean]
    lines = [
        "| test speaker | " + " | ".join(cols) + " |",
        "| --- |" + " --- |" * len(cols),
    ]
    for speaker, f in folds.items():
        lines.append(f"| {speaker} | " + " | ".join(f"{f[c]:.3f}" for c in cols) + " |")
    lines.append("| **mean** | " + " | ".join(f"**{mean[c]:.3f}**" for c in cols) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="a folder laid out like real-av-dev")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--folds", type=int, default=3, help="test speakers, in sorted order")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--backend", choices=("onnx", "torch"), default="onnx")
    parser.add_argument("--baseline-epochs", type=int, default=15)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--seed", type=int, default=0, help="seeds the pairing and degradation")
    parser.add_argument(
        "--live", action="store_true", help="also the live-condition evaluation (eval --live)"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)

    folders = build(args.data, args.out / "data", args.seed)
    results: dict[str, dict[str, Any]] = {}
    for speaker in sorted(folders)[: args.folds]:
        t0 = time.perf_counter()
        fold_out = args.out / f"fold-{speaker}"
        row = fusionedge_fold(folders[speaker], fold_out, args.set, args.backend, args.live)
        if not args.no_baseline:
            row["baseline"] = baseline_fold(
                folders[speaker], fold_out / "run" / "spec.json", args.baseline_epochs
            )
        row["seconds"] = round(time.perf_counter() - t0, 1)
        results[speaker] = row
        log.info("fold %s: %s", speaker, row)
    mean = summarise(results)
    report = {"folds": results, "mean": mean, "overrides": args.set, "backend": args.backend}
    (args.out / "real_av.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2) if args.json else table(results, mean))
    if not args.json:
        print(
            f"fused - baseline {mean.get('fused_minus_baseline', float('nan')):+.3f}, "
            f"fused - best single modality {mean['fused_minus_best_single']:+.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
