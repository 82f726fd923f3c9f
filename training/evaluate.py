"""`fusionedge eval` for a run folder: the best checkpoint, in PyTorch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fusionedge.evaluation import describe, load_split
from fusionedge.training.checkpoint import load_checkpoint, load_model
from fusionedge.training.device import resolve_device
from fusionedge.training.predict import evaluate_arrays


def resolve_checkpoint(model: str | Path) -> Path:
    """A run folder (its best.safetensors) or a checkpoint file itself."""
    path = Path(model)
    if path.is_dir():
        path = path / "best.safetensors"
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path} (expected a run folder written by "
            "`fusionedge train`, or a .safetensors checkpoint)"
        )
    return path


def evaluate_run(
    model: str | Path, data: str | Path, split: str = "test", device: str = "auto"
) -> dict[str, Any]:
    """Evaluates a trained model on one split of a data set, fused and per modality."""
    path = resolve_checkpoint(model)
    spec = load_checkpoint(path).spec
    manifest, arrays = load_split(data, split, spec)
    torch_device = resolve_device(device)
    result = evaluate_arrays(
        load_model(path, torch_device), spec, arrays, torch_device, by_modality=True
    )
    result.pop("loss")
    return describe(result, path, manifest, split, spec)


def robustness_run(
    model: str | Path,
    data: str | Path,
    split: str = "test",
    device: str = "auto",
    noise: bool = True,
) -> dict[str, Any]:
    """Missing- and noisy-modality evaluation (fusionedge.robustness) of a run, in PyTorch."""
    import torch

    from fusionedge.arrays import SampleArrays
    from fusionedge.robustness import evaluate_robustness, load_samples
    from fusionedge.training.predict import predict_logits

    path = resolve_checkpoint(model)
    spec = load_checkpoint(path).spec
    torch_device = resolve_device(device)
    net = load_model(path, torch_device)

    def score(arrays: SampleArrays) -> Any:
        logits = predict_logits(net, spec, arrays, torch_device)
        with torch.no_grad():
            return net.head.scores(torch.from_numpy(logits).to(torch_device)).cpu().numpy()

    return evaluate_robustness(spec, load_samples(data, split, spec), score, noise=noise)
