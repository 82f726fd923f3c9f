"""`fusionedge export RUN --out model.onnx`: export, check, compare, report."""

from __future__ import annotations

import json
import logging
import os
import platform
from pathlib import Path
from typing import Any

import onnx
import torch

from fusionedge.arrays import SampleArrays, load_arrays
from fusionedge.export.onnx_export import DEFAULT_OPSET, export_onnx
from fusionedge.export.parity import ParityError, check_parity
from fusionedge.manifest import read_manifest
from fusionedge.training.checkpoint import atomic_write_bytes, load_model
from fusionedge.training.evaluate import resolve_checkpoint
from fusionedge.version import __version__

log = logging.getLogger(__name__)
PARITY_SAMPLES = 32


def report_path(model_path: Path) -> Path:
    """model.onnx -> model.report.json, beside it."""
    return model_path.with_name(model_path.stem + ".report.json")


def validation_samples(run: Path, data: str | Path | None, model) -> SampleArrays | None:
    """Up to PARITY_SAMPLES real samples: the val split of --data, else of the run's data."""
    if data is None:
        metrics = run / "metrics.json" if run.is_dir() else run.parent / "metrics.json"
        data = json.loads(metrics.read_text()).get("data") if metrics.is_file() else None
        if data is None or not Path(data).exists():
            log.warning(
                "no data set to draw real samples from (pass --data); parity is "
                "checked on random inputs only"
            )
            return None
    manifest = read_manifest(data)
    records = (manifest.split("val") or manifest.split("all"))[:PARITY_SAMPLES]
    return load_arrays(records, model.spec, manifest.path)


def export_run(
    run: str | Path, out: str | Path, data: str | Path | None = None, opset: int = DEFAULT_OPSET
) -> dict[str, Any]:
    """Exports a trained run to one ONNX file and writes the export report beside it.

    The file appears at `out` only when it passed the checker and the parity check; on a
    parity failure the report is still written (so the failure can be studied) and
    ParityError is raised.
    """
    run, out = Path(run), Path(out)
    if out.suffix != ".onnx":
        raise ValueError(f"--out must name an .onnx file, got {out}")
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
    try:
        report["parity"] = check_parity(model, tmp, validation_samples(run, data, model))
    except ParityError as e:
        report["parity"] = e.report
        atomic_write_bytes(report_path(out), json.dumps(report, indent=2).encode())
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, out)
    atomic_write_bytes(report_path(out), json.dumps(report, indent=2).encode())
    return report
