"""Train a model on your own folder of files, export it to ONNX, and see what it scores.

    python examples/train_and_export.py DATA OUT [--epochs N] [--set key=value ...]

DATA is a data set folder: one with a manifest.jsonl (README, "Data set format"), or
plain files sorted by label, from which this script first writes the manifest:

    DATA/<label>/<name>.png (or .jpg)   a picture
    DATA/<label>/<name>.wav (or .flac)  a sound, paired with the picture by <name>
    DATA/<label>/<name>.txt             optional: a line of text

The steps, each one call of the Python API (what `fusionedge train`, `export` and `eval`
do on the command line):
  1. read_manifest: check the data set; every problem is listed at once
  2. train: PyTorch (CUDA when there is one) -> OUT/run/
  3. export_run: one ONNX file, checked against PyTorch -> OUT/model.onnx
  4. evaluate_model_file: that file in ONNX Runtime (no torch), as an application runs
     it: accuracy on the val and test splits, all inputs together and each one alone
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fusionedge.export.run import export_run
from fusionedge.manifest import read_manifest
from fusionedge.metrics import primary_metric
from fusionedge.runtime.onnx_eval import evaluate_model_file
from fusionedge.training.config import load_config
from fusionedge.training.trainer import train

# File suffix -> the manifest field it fills.
KINDS = {".png": "image", ".jpg": "image", ".wav": "audio", ".flac": "audio", ".txt": "text"}


def manifest_from_folders(data: Path) -> int:
    """Writes DATA/manifest.jsonl from DATA/<label>/<name>.* files; returns the sample count.

    Lines get no "split": fusionedge then places each sample by a hash of its id (80 %
    train, 10 % val, 10 % test), and it stays there when you add more files.
    """
    lines: dict[str, dict[str, str]] = {}
    for f in sorted(data.glob("*/*")):
        if (kind := KINDS.get(f.suffix.lower())) is not None:
            id_ = f"{f.parent.name}/{f.stem}"
            line = lines.setdefault(id_, {"id": id_, "label": f.parent.name})
            # Paths are relative to the manifest's folder.
            line[kind] = f.read_text().strip() if kind == "text" else f.relative_to(data).as_posix()
    (data / "manifest.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines.values()))
    return len(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path, help="data set folder")
    parser.add_argument("out", type=Path, help="output folder (run/ and model.onnx go here)")
    parser.add_argument("--epochs", type=int, help="at most this many epochs")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a training setting, e.g. model.fusion=attention (repeatable)",
    )
    args = parser.parse_args()

    # 1. The data set, checked before any training starts: a ManifestError (a ValueError,
    #    as every error bad input causes) lists every problem with file, line and field.
    if not (args.data / "manifest.jsonl").exists():
        print(f"wrote manifest.jsonl: {manifest_from_folders(args.data)} samples")
    try:
        manifest = read_manifest(args.data)
    except ValueError as e:
        sys.exit(str(e))
    counts = {s: len(manifest.split(s)) for s in ("train", "val", "test")}
    print(
        f"data: {len(manifest.records)} samples {counts}, inputs {manifest.modalities}, "
        f"labels {manifest.classes}"
    )

    # 2. Training. The configuration is the defaults, then each key=value (as --set on
    #    the command line); an unknown key is an error listing the keys there are.
    overrides = [*args.set, *([f"epochs={args.epochs}"] if args.epochs else [])]
    config = load_config(None, overrides)
    result = train(args.data, args.out / "run", config, progress=sys.stderr.isatty())
    # The task's main figure: accuracy (macro_f1 for multi-label, mae for numbers).
    key, _ = primary_metric(result.spec.task)
    print(
        f"trained: best epoch {result.best_epoch} of {result.epochs_run}, "
        f"val {key} {result.best_metrics[key]:.4f}"
    )

    # 3. Export. The file appears only once ONNX Runtime gave PyTorch's scores on real
    #    and random inputs (every subset of inputs); the report says by how much.
    model = args.out / "model.onnx"
    report = export_run(args.out / "run", model, args.data)
    print(
        f"exported: largest score difference to PyTorch "
        f"{report['parity']['max_abs_diff_scores']:.1e}"
    )

    # 4. Evaluation of the file itself, through ONNX Runtime. The columns after "fused"
    #    are the same model given that input alone (the others marked missing): what it
    #    does when a camera is covered or a microphone fails.
    print(f"{key:<10}{'fused':>8}" + "".join(f"{m:>8}" for m in result.spec.modalities))
    for split in ("val", "test"):
        if not counts[split]:
            print(f"{split:<10}(no samples)")
            continue
        scores = evaluate_model_file(model, args.data, split)
        alone = [scores["by_modality"][m][key] for m in result.spec.modalities]
        print(f"{split:<10}{scores['metrics'][key]:>8.4f}" + "".join(f"{a:>8.4f}" for a in alone))
    print(f"model: {model}")
    print(f"next: python examples/embed_predictor.py {model} FOLDER_OF_INPUTS")


if __name__ == "__main__":
    main()
