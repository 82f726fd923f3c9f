"""Batched PyTorch inference and evaluation over decoded sample arrays."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from fusionedge.arrays import SampleArrays
from fusionedge.evaluation import evaluate_scores
from fusionedge.spec import ModelSpec


def to_torch(arrays: SampleArrays) -> dict[str, torch.Tensor]:
    """Zero-copy torch views of in-memory arrays, keyed by modality name (+ "present",
    "targets"). Arrays decoded to disk are read by rows instead: rows_to_torch."""
    return rows_to_torch(arrays.rows(slice(None)))


def rows_to_torch(rows: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """SampleArrays.rows(...) as tensors sharing their memory."""
    return {k: torch.from_numpy(v) for k, v in rows.items()}


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module,
    spec: ModelSpec,
    arrays: SampleArrays,
    device: torch.device,
    present: np.ndarray | None = None,
    batch_size: int = 256,
) -> np.ndarray:
    """Logits [N, C] in eval mode; `present` overrides which modalities the model sees."""
    was_training = model.training
    model.eval()
    mask = torch.from_numpy(arrays.present if present is None else present)
    out = []
    for start in range(0, len(arrays), batch_size):
        sl = slice(start, start + batch_size)
        # A batch at a time: arrays decoded to disk are read here, one batch in memory.
        tensors = rows_to_torch(arrays.rows(sl))
        inputs = {m: tensors[m].to(device) for m in spec.modalities}
        logits, _ = model.logits_and_embedding(inputs, mask[sl].to(device))
        out.append(logits.float().cpu())
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, spec.num_outputs), np.float32)


def scorer(
    model: torch.nn.Module, spec: ModelSpec, arrays: SampleArrays, device: torch.device
) -> Callable[[np.ndarray], np.ndarray]:
    """A function present-mask -> scores [N, C] for evaluate_scores."""

    def scores(present: np.ndarray) -> np.ndarray:
        logits = predict_logits(model, spec, arrays, device, present)
        with torch.no_grad():
            return model.head.scores(torch.from_numpy(logits).to(device)).cpu().numpy()

    return scores


def evaluate_arrays(
    model: torch.nn.Module,
    spec: ModelSpec,
    arrays: SampleArrays,
    device: torch.device,
    by_modality: bool = False,
) -> dict[str, Any]:
    """Metrics (and the loss) of the model on labelled arrays."""
    logits = predict_logits(model, spec, arrays, device)
    with torch.no_grad():
        t_logits = torch.from_numpy(logits).to(device)
        loss = float(model.loss(t_logits, torch.from_numpy(arrays.targets).to(device)))
        scores = model.head.scores(t_logits).cpu().numpy()
    result = evaluate_scores(
        spec, arrays, scores, scorer(model, spec, arrays, device) if by_modality else None
    )
    result["loss"] = loss
    return result
