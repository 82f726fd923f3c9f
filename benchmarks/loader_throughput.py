"""Is the input pipeline fast enough to keep the training step busy?

    .venv/bin/python benchmarks/loader_throughput.py [--data DIR] [--n 300] [--device cpu]

The trainer decodes every sample once (sdk/arrays.py, in a thread pool) into arrays in
memory: that is its decoded-sample cache, so an epoch never touches the files again.
What is left per step is the loader (index the arrays, copy the batch to the device,
augment it there) and the step itself (forward, backward, optimiser). This prints the
samples per second of each, and their ratio: above 1 the loader keeps the step busy.
Without --data it writes avdigits demo data (--n samples) to a temporary folder.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fusionedge.arrays import load_arrays
from fusionedge.manifest import read_manifest
from fusionedge.training.augment import augment_batch
from fusionedge.training.build import build_spec
from fusionedge.training.config import load_config
from fusionedge.training.loss import training_loss
from fusionedge.training.model import FusedModel
from fusionedge.training.optim import make_optimizer
from fusionedge.training.predict import to_torch


def measure(data: Path, device: torch.device, batches: int, overrides: list[str]) -> None:
    config = load_config(None, [f"device={device}", *overrides])
    manifest = read_manifest(data)
    records = manifest.split("train")
    spec = build_spec(manifest, config, records)

    t = time.perf_counter()
    arrays = load_arrays(records, spec, manifest.path)
    decode = len(arrays) / (time.perf_counter() - t)

    tensors = to_torch(arrays)
    bs = config.batch_size
    rng = np.random.default_rng(0)
    generator = torch.Generator(device=device).manual_seed(0)

    def batch() -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        idx = torch.from_numpy(rng.integers(0, len(arrays), bs))
        inputs = {m: tensors[m][idx].to(device, non_blocking=True) for m in spec.modalities}
        inputs = augment_batch(inputs, config.augment, spec, generator)
        return inputs, tensors["present"][idx].to(device), tensors["targets"][idx].to(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    batch()
    sync()
    t = time.perf_counter()
    ready = [batch() for _ in range(batches)]
    sync()
    loader = batches * bs / (time.perf_counter() - t)

    model = FusedModel(spec).to(device).train()
    optimizer = make_optimizer(model, config)
    for i, (inputs, present, target) in enumerate([ready[0], *ready]):
        if i == 1:  # the first step (allocations, cuDNN autotuning) is not timed
            sync()
            t = time.perf_counter()
        loss = training_loss(model, inputs, present, target, config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync()
    step = batches * bs / (time.perf_counter() - t)

    print(
        f"{len(arrays)} training samples, batch {bs}, device {device}, torch threads "
        f"{torch.get_num_threads()}"
    )
    print(f"{'stage':<40} {'samples/s':>10}")
    print(f"{'decode files (once per run)':<40} {decode:>10.0f}")
    print(f"{'loader: index + copy + augment':<40} {loader:>10.0f}")
    print(f"{'training step (fwd + bwd + optimiser)':<40} {step:>10.0f}")
    print(
        f"loader / step = {loader / step:.1f}x "
        + ("(the loader keeps up)" if loader > step else "(the loader is the bottleneck)")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="data set folder (default: demo data)")
    parser.add_argument("--n", type=int, default=300, help="demo samples to write")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0: default")
    parser.add_argument("--set", action="append", default=[], help="config override")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            from fusionedge.demo.avdigits import generate

            data = Path(tmp) / "data"
            generate(data, n=args.n, seed=0, workers=1)
        measure(data, torch.device(args.device), args.batches, args.set)


if __name__ == "__main__":
    main()
