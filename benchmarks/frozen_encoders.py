"""Training time with every encoder trained, against frozen encoders on cached embeddings.

    .venv/bin/python benchmarks/frozen_encoders.py [--data DIR] [--n 300] [--epochs 3]

Both runs use the default model on the same data with image augmentation off (cached
embeddings need inputs that do not change between epochs). The frozen run computes each
sample's embeddings once and then trains the placeholders, fusion and head only. The
encoders here are freshly initialised, so the frozen run shows speed, not accuracy: in
use they would be loaded from a pretrained run. Prints seconds per epoch (training plus
validation, from log.csv) and the ratio.
"""

from __future__ import annotations

import argparse
import csv
import logging
import tempfile
import time
from pathlib import Path

import torch

from fusionedge.training.config import load_config
from fusionedge.training.trainer import train

NO_AUGMENT = ["augment.image.rotate_deg=0", "augment.image.scale=0", "augment.image.translate=0"]


def epoch_seconds(run: Path) -> float:
    with (run / "log.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    return sum(float(r["seconds"]) for r in rows) / len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="data set folder (default: demo data)")
    parser.add_argument("--n", type=int, default=300, help="demo samples to write")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    common = [
        f"epochs={args.epochs}",
        f"device={args.device}",
        f"threads={args.threads}",
        "tensorboard=false",
        "patience=0",
        *NO_AUGMENT,
    ]
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            from fusionedge.demo.avdigits import generate

            data = Path(tmp) / "data"
            generate(data, n=args.n, seed=0, workers=1)
        results = {}
        for name, extra in [
            ("all encoders trained", []),
            ("encoders frozen, cached", ["freeze_encoders=[image, audio, text]"]),
        ]:
            out = Path(tmp) / name.replace(" ", "_").replace(",", "")
            t = time.perf_counter()
            train(data, out, load_config(None, [*common, *extra]), progress=False)
            results[name] = (epoch_seconds(out), time.perf_counter() - t)
    print(
        f"torch {torch.__version__}, device {args.device}, threads {args.threads}, "
        f"{args.epochs} epochs"
    )
    print(f"{'run':<28} {'s/epoch':>8} {'total s':>8}")
    for name, (per_epoch, total) in results.items():
        print(f"{name:<28} {per_epoch:>8.2f} {total:>8.1f}")
    (full, full_total), (frozen, frozen_total) = results.values()
    print(f"speed-up per epoch {full / frozen:.1f}x, whole run {full_total / frozen_total:.1f}x")


if __name__ == "__main__":
    main()
