"""`fusionedge eval` for a run folder: the best checkpoint, in PyTorch."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from fusionedge.evaluation import describe, load_split
from fusionedge.training.checkpoint import load_model
from fusionedge.training.device import resolve_device
from fusionedge.training.predict import evaluate_arrays

if TYPE_CHECKING:
    from fusionedge.robustness import ArraysScoreFn
    from fusionedge.spec import ModelSpec


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
    torch_device = resolve_device(device)
    net = load_model(path, torch_device)
    spec = net.spec
    manifest, arrays = load_split(data, split, spec)
    result = evaluate_arrays(net, spec, arrays, torch_device, by_modality=True)
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
    from fusionedge.robustness import evaluate_robustness, load_samples

    spec, score = arrays_scorer(model, device)
    return evaluate_robustness(spec, load_samples(data, split, spec), score, noise=noise)


def arrays_scorer(model: str | Path, device: str = "auto") -> tuple[ModelSpec, ArraysScoreFn]:
    """A run's spec and a function decoded samples -> scores [N, C], in PyTorch: the
    backend of the robustness and live evaluations."""
    import torch

    from fusionedge.arrays import SampleArrays
    from fusionedge.training.predict import predict_logits

    torch_device = resolve_device(device)
    net = load_model(resolve_checkpoint(model), torch_device)
    spec = net.spec

    def score(arrays: SampleArrays) -> Any:
        logits = predict_logits(net, spec, arrays, torch_device)
        with torch.no_grad():
            return net.head.scores(torch.from_numpy(logits).to(torch_device)).cpu().numpy()

    return spec, score


def live_run(
    model: str | Path, data: str | Path, split: str = "test", seed: int = 0, device: str = "auto"
) -> dict[str, Any]:
    """Live-condition evaluation (fusionedge.live_eval) of a run, in PyTorch; turns are
    scored as a single-file model runs them (every turn encodes its own window)."""
    from fusionedge.live_eval import evaluate_live

    spec, score = arrays_scorer(model, device)
    return evaluate_live(spec, data, split, score, seed)
