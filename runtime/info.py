"""`fusionedge info MODEL`: what a model file takes and gives, read from the file alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fusionedge.contract import FUSION_PART
from fusionedge.runtime.model_file import spec_from_metadata
from fusionedge.runtime.sessions import open_session, session_options
from fusionedge.runtime.split import is_split_folder


def model_info(path: str | Path) -> dict[str, Any]:
    """Spec, inputs, outputs, labels, training metrics, providers and file size.

    Raises:
        FileNotFoundError: no file at path.
        ModelFileError: not an ONNX model, or not one written by fusionedge.
    """
    import onnxruntime as ort

    path = Path(path)
    if is_split_folder(path):
        # A split model: its fusion file carries the same spec; the parts are listed.
        parts = {p.stem: p.stat().st_size for p in sorted(path.glob("*.onnx"))}
        return model_info(path / f"{FUSION_PART}.onnx") | {
            "path": str(path),
            "bytes": sum(parts.values()),
            "split_parts": parts,
        }
    # The Predictor's way of opening a file (and its errors); the CPU alone, since only
    # the metadata and the input and output types are read.
    session = open_session(path, session_options(), ["CPUExecutionProvider"])
    spec = spec_from_metadata(session.get_modelmeta().custom_metadata_map, path)
    return {
        "path": str(path),
        "bytes": path.stat().st_size,
        "opset": _opset(path),
        "spec": spec.to_dict(),
        "inputs": {i.name: f"{i.type} {i.shape}" for i in session.get_inputs()},
        "outputs": {o.name: f"{o.type} {o.shape}" for o in session.get_outputs()},
        "labels": list(spec.labels),
        "preprocessing": _preprocessing(spec.to_dict(), spec.modalities),
        "metrics": spec.metrics,
        "providers_available": ort.get_available_providers(),
    }


def _preprocessing(spec: dict[str, Any], modalities: tuple[str, ...]) -> dict[str, Any]:
    """Each modality's spec section; a pretrained (wordpiece) vocabulary is summarised by
    its size, since its 30k tokens would bury everything else."""
    out = {m: spec[m] for m in modalities}
    tokenizer = out.get("text", {}).get("tokenizer", {})
    if tokenizer.get("kind") == "wordpiece":
        summary = {k: v for k, v in tokenizer.items() if k != "vocab"}
        summary["vocab_size"] = len(tokenizer["vocab"])
        out["text"] = {**out["text"], "tokenizer": summary}
    return out


def _opset(path: Path) -> int | None:
    """The default-domain opset, when the onnx package is installed (it is optional here)."""
    try:
        import onnx
    except ImportError:
        return None
    model = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
