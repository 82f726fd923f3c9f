"""`fusionedge export RUN --out model.onnx`: export, check, compare, report."""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
from pathlib import Path
from typing import Any

import onnx
import torch

from fusionedge.arrays import SampleArrays
from fusionedge.contract import split_folder
from fusionedge.evaluation import split_arrays
from fusionedge.export.onnx_export import DEFAULT_OPSET, export_onnx
from fusionedge.export.parity import ParityError, check_parity
from fusionedge.export.precision import MAX_DROP_POINTS, add_copies
from fusionedge.export.split import export_split
from fusionedge.training.checkpoint import atomic_write_bytes, load_model
from fusionedge.training.torch_eval import resolve_checkpoint
from fusionedge.version import __version__

log = logging.getLogger(__name__)
PARITY_SAMPLES = 32


def report_path(model_path: Path) -> Path:
    """model.onnx -> model.report.json, beside it."""
    return model_path.with_name(model_path.stem + ".report.json")


def resolve_data(run: Path, data: str | Path | None) -> Path | None:
    """--data, else the data set the run was trained on (when it still exists)."""
    if data is not None:
        return Path(data)
    metrics = run / "metrics.json" if run.is_dir() else run.parent / "metrics.json"
    data = json.loads(metrics.read_text()).get("data") if metrics.is_file() else None
    return Path(data) if data is not None and Path(data).exists() else None


def validation_samples(run: Path, data: str | Path | None, model) -> SampleArrays | None:
    """Up to PARITY_SAMPLES real samples: the val split (every sample when it is empty) of
    --data, else of the run's data."""
    data = resolve_data(run, data)
    if data is None:
        log.warning(
            "no data set to draw real samples from (pass --data); parity is "
            "checked on random inputs only"
        )
        return None
    # seed=None: the first records rather than a seeded draw. Parity compares two backends
    # on the same inputs, so that the inputs are real matters, not that classes balance.
    _, samples = split_arrays(data, model.spec, ("val", "all"), PARITY_SAMPLES, seed=None)
    return samples


def export_checked_split(
    model, folder: Path, samples: SampleArrays | None, opset: int
) -> dict[str, Any]:
    """Writes the split parts into folder and checks them against PyTorch; a failed check
    removes the folder, so only parts that passed are ever left for a user to load."""
    tmp = folder.with_name(f".{folder.name}.checking")
    parts = export_split(model, tmp, opset)
    try:
        parity = check_parity(model, tmp, samples)
    except ParityError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ParityError({**e.report, "form": "split"}) from e
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return {
        "folder": str(folder),
        "parts": {
            name: {k: f[k] for k in ("bytes", "nodes", "inputs", "outputs")}
            for name, f in parts.items()
        },
        "parity": parity,
    }


def export_run(
    run: str | Path,
    out: str | Path,
    data: str | Path | None = None,
    opset: int = DEFAULT_OPSET,
    split: bool = False,
    int8: bool = False,
    fp16: bool = False,
    force: bool = False,
    max_drop: float = MAX_DROP_POINTS,
) -> dict[str, Any]:
    """Exports a trained run to one ONNX file and writes the export report beside it.

    The file appears at `out` only when it passed the checker and the parity check; on a
    parity failure the report is still written (so the failure can be studied) and
    ParityError is raised. With split=True the per-modality parts are written too, into
    out's .split folder (runtime/split.py), and checked the same way.

    int8 and fp16 also write out's stem + ".int8.onnx" / ".fp16.onnx" (export/precision.py),
    measured next to fp32 in the report; one that loses more than max_drop points of the
    task's metric is not written unless force, and PrecisionRefused is raised after the
    fp32 file and the report are.
    """
    run, out = Path(run), Path(out)
    if out.suffix != ".onnx":
        raise ValueError(f"--out must name an .onnx file, got {out}")
    if int8 and resolve_data(run, data) is None:
        raise ValueError(
            "--int8 calibrates on real training samples: pass --data (the run names no "
            "data set that still exists)"
        )
    checkpoint = resolve_checkpoint(run)
    model = load_model(checkpoint)
    tmp = out.with_name(f".{out.name}.tmp")
    facts = export_onnx(model, tmp, opset)
    report: dict[str, Any] = {
        "model": str(out),
        "checkpoint": str(checkpoint),
        "fusionedge_version": __version__,
        "torch_version": torch.__version__,
        "onnx_version": onnx.__version__,
        "python": platform.python_version(),
        **facts,
        "labels": list(model.spec.labels),
        "task": model.spec.task,
        "modalities": list(model.spec.modalities),
    }
    samples = validation_samples(run, data, model)
    try:
        report["parity"] = check_parity(model, tmp, samples)
        if split:
            report["split"] = export_checked_split(model, split_folder(out), samples, opset)
    except ParityError as e:
        report["parity" if "parity" not in report else "split"] = e.report
        atomic_write_bytes(report_path(out), json.dumps(report, indent=2).encode())
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, out)
    try:
        add_copies(report, out, resolve_data(run, data), model.spec, int8, fp16, force, max_drop)
    finally:
        atomic_write_bytes(report_path(out), json.dumps(report, indent=2).encode())
    return report
