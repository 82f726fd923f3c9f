"""`fusionedge export RUN --out model.onnx`: export, check, compare, report."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx
import torch

from fusionedge.arrays import SampleArrays
from fusionedge.card import write_card_or_warn
from fusionedge.contract import split_folder
from fusionedge.evaluation import split_arrays
from fusionedge.export.model_json import is_model_json, model_json_path, write_model_json
from fusionedge.export.onnx_export import DEFAULT_OPSET, export_onnx
from fusionedge.export.parity import ParityError, check_parity
from fusionedge.export.precision import MAX_DROP_POINTS, PrecisionRefused, add_copies, copy_path
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
    """Writes the split parts and checks them against PyTorch inside a hidden folder beside
    folder, then moves them to folder; a failed check (or any exception, Ctrl-C and
    SIGTERM included) removes them, so only parts that passed are ever left for a user to
    load."""
    with temporary(folder.with_name(f".{folder.name}.checking")) as checking:
        # export_split writes through a ".tmp" folder beside its target: with the target
        # inside `checking`, that one is inside too, and removing `checking` leaves nothing.
        checking.mkdir()
        parts_dir = checking / folder.name
        parts = export_split(model, parts_dir, opset)
        try:
            parity = check_parity(model, parts_dir, samples)
        except ParityError as e:
            raise ParityError({**e.report, "form": "split"}) from e
        shutil.rmtree(folder, ignore_errors=True)
        parts_dir.rename(folder)
    return {
        "folder": str(folder),
        "parts": {
            name: {k: f[k] for k in ("bytes", "nodes", "inputs", "outputs")}
            for name, f in parts.items()
        },
        "parity": parity,
    }


@contextlib.contextmanager
def temporary(path: Path) -> Iterator[Path]:
    """Yields a temporary file or folder name (one left by a killed export is removed
    first); whatever is still there when the block ends, however it ends (Ctrl-C and
    SIGTERM included, see terminate_raises), is removed. What should stay is moved out
    of it before."""
    _remove(path)
    try:
        yield path
    finally:
        _remove(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def terminate_raises() -> Iterator[None]:
    """While the block runs, SIGTERM raises SystemExit(128 + SIGTERM) in the main thread.

    By default SIGTERM (a supervisor stopping the job, `kill`) ends Python at once, and
    no finally or except clause runs; as an exception it unwinds through them like
    Ctrl-C's KeyboardInterrupt, so every temporary is removed. Installed only from the
    main thread (where Python runs handlers) and only over the default disposition: an
    application's own handler, or SIG_IGN, is left alone. The previous handler is back
    afterwards.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _check_companion(out: Path) -> None:
    """Refuses an out whose model.json would replace a file no export wrote: `--out
    run/config.onnx` would otherwise delete the run's config.json (and metrics.onnx its
    metrics.json), before any work is done."""
    companion = model_json_path(out)
    if companion.exists() and not is_model_json(companion):
        raise ValueError(
            f"--out {out}: the export writes {companion.name} beside the model (its "
            f"description for other languages), and {companion} exists and is not one; "
            f"name the model otherwise, e.g. --out {out.with_name('model.onnx')}"
        )


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

    Last, out's stem + ".json" (model.json, export/model_json.py) describes the files for
    applications that cannot read ONNX metadata; it is written only when the export got
    that far (also when a copy was refused), and an earlier one is removed once out is
    replaced.

    However it ends (an exception, Ctrl-C, SIGTERM, which raises SystemExit(143) while
    the export runs), no temporary file or folder is left beside out; files already
    checked and moved into place stay.
    """
    run, out = Path(run), Path(out)
    if out.suffix != ".onnx":
        raise ValueError(f"--out must name an .onnx file, got {out}")
    _check_companion(out)
    if int8 and resolve_data(run, data) is None:
        raise ValueError(
            "--int8 calibrates on real training samples: pass --data (the run names no "
            "data set that still exists)"
        )
    # Loaded before any temporary exists: Ctrl-C or SIGTERM landing inside a C extension's
    # first import comes out as ImportError("initialization failed"), a traceback, not
    # the interrupt. The export needs it anyway (parity runs the file in ONNX Runtime).
    import onnxruntime  # noqa: F401

    with terminate_raises():
        checkpoint = resolve_checkpoint(run)
        model = load_model(checkpoint)
        with temporary(out.with_name(f".{out.name}.tmp")) as tmp:
            report = checked_export(model, checkpoint, tmp, out, run, data, opset, split)
            os.replace(tmp, out)
        # A model.json left by an earlier export describes the file just replaced; the new
        # one is written last, once every file is in place, so an export that fails or is
        # interrupted from here on leaves none (and one that failed before left the old
        # pair untouched).
        _remove(model_json_path(out))
        refused = None
        try:
            add_copies(
                report, out, resolve_data(run, data), model.spec, int8, fp16, force, max_drop
            )
        except PrecisionRefused as e:
            refused = e  # the fp32 file is complete: model.json describes it, then raise
        finally:
            atomic_write_bytes(report_path(out), json.dumps(report, indent=2).encode())
        kept = [(p, copy_path(out, p)) for p in ("int8", "fp16") if report.get(p, {}).get("path")]
        write_model_json(out, model.spec, kept, split="split" in report)
        write_card_or_warn(out)
        if refused is not None:
            raise refused
    return report


def checked_export(
    model,
    checkpoint: Path,
    tmp: Path,
    out: Path,
    run: Path,
    data: str | Path | None,
    opset: int,
    split: bool,
) -> dict[str, Any]:
    """Exports to tmp and checks parity (and the split parts, placed beside out); returns
    the report. On a parity failure the report is written beside out before ParityError
    propagates."""
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
        raise
    return report
