"""`fusionedge info MODEL [--verify]`: what a model file takes and gives, read from the file
alone, whether its spec agrees with its graph and its bytes with its digest, and (with
--verify) whether this machine still computes the golden scores export stored."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fusionedge.contract import (
    DIGEST_KEY,
    FRONTEND_PART,
    FUSION_PART,
    GOLDEN_KEY,
    INPUT_NAMES,
    PRECISION_KEY,
)
from fusionedge.integrity import TOLERANCE, GoldenCases, IntegrityError
from fusionedge.runtime.model_file import (
    ModelFileError,
    digest_problem,
    graph_problems,
    spec_from_metadata,
)
from fusionedge.runtime.sessions import load_errors, open_session, session_options
from fusionedge.runtime.split import SplitGraph, is_split_folder, part_kind
from fusionedge.spec import ModelSpec

CPU = "CPUExecutionProvider"
# Ops a token table may pass through between its initializer and the Gather that reads it
# (an fp16 copy casts it, a quantised one dequantises it).
TABLE_PASSES = ("Cast", "Identity", "DequantizeLinear")


def model_info(
    path: str | Path,
    verify: bool = False,
    providers: str | Sequence[str] = "auto",
    tolerance: float | None = None,
) -> dict[str, Any]:
    """Spec, inputs, outputs, labels, training metrics, providers and file size, and
    `problems`: each way the spec disagrees with the graph or the file with its digest
    (empty for a sound file). With verify, `verify` holds the golden-case check
    (verify_golden) on these providers.

    Raises:
        FileNotFoundError: no file at path.
        ModelFileError: not an ONNX model, or not one written by fusionedge.
    """
    path = Path(path)
    info = _split_info(path) if is_split_folder(path) else _file_info(path)
    if verify:
        info["verify"] = (
            verify_golden(path, providers, tolerance)
            if not info["problems"]
            else {"passed": False, "reason": "not run: the file has the problems listed"}
        )
    return info


def _split_info(path: Path) -> dict[str, Any]:
    """A split model: its fusion file carries the same spec; the parts are listed, and
    every part is checked as the Predictor checks it."""
    parts = {p.stem: p.stat().st_size for p in sorted(path.glob("*.onnx"))}
    info = _file_info(path / f"{FUSION_PART}.onnx") | {
        "path": str(path),
        "bytes": sum(parts.values()),
        "split_parts": parts,
    }
    try:
        SplitGraph(path, lambda part: open_session(part, session_options(), [CPU]))
    except ModelFileError as e:
        info["problems"] = [str(e)]
    text = path / "text.onnx"  # the text encoder part holds the token table
    spec = ModelSpec.from_dict(info["spec"])
    vocabulary = _vocabulary_problem(_onnx_model(text), spec) if text.is_file() else None
    info["problems"] += [f"{text}: {vocabulary}"] if vocabulary else []
    return info


def _file_info(path: Path) -> dict[str, Any]:
    import onnxruntime as ort

    # The Predictor's way of opening a file (and its errors); the CPU alone, since only
    # the metadata and the input and output types are read.
    session = open_session(path, session_options(), [CPU])
    metadata = session.get_modelmeta().custom_metadata_map
    spec = spec_from_metadata(metadata, path)
    part = part_kind(metadata)
    logmel = (path.parent / f"{FRONTEND_PART}.onnx").is_file()
    model = _onnx_model(path)
    digest = digest_problem(path, metadata)
    problems = graph_problems(session, spec, part, logmel) + ([digest] if digest else [])
    if part in (None, "text"):
        problems += [p for p in [_vocabulary_problem(model, spec)] if p]
    return {
        "path": str(path),
        "bytes": path.stat().st_size,
        "opset": _opset(model),
        "precision": metadata.get(PRECISION_KEY, "fp32"),
        "digest": metadata.get(DIGEST_KEY),
        "digest_verified": DIGEST_KEY in metadata and digest is None,
        "golden_cases": GOLDEN_KEY in metadata,
        "problems": [f"{path}: {p}" for p in problems],
        "spec": spec.to_dict(),
        "inputs": {i.name: f"{i.type} {i.shape}" for i in session.get_inputs()},
        "outputs": {o.name: f"{o.type} {o.shape}" for o in session.get_outputs()},
        "labels": list(spec.labels),
        "preprocessing": _preprocessing(spec.to_dict(), spec.modalities),
        "metrics": spec.metrics,
        "providers_available": ort.get_available_providers(),
    }


def verify_golden(
    path: Path, providers: str | Sequence[str] = "auto", tolerance: float | None = None
) -> dict[str, Any]:
    """Reruns the golden cases export stored, on these providers, against their scores.

    Returns passed, max_abs_diff, tolerance (the file's precision's unless given), cases,
    providers (those the session got), missing_providers (requested, not active: a
    check asked for on CUDA that ran on the CPU did not pass) and reason when not passed.
    """
    from fusionedge.runtime.predictor import Predictor
    from fusionedge.runtime.result import NonFiniteError

    with Predictor.from_path(path, providers=providers) as predictor:
        metadata = predictor.session.get_modelmeta().custom_metadata_map
        precision = metadata.get(PRECISION_KEY, "fp32")
        limit = TOLERANCE.get(precision, TOLERANCE["fp32"]) if tolerance is None else tolerance
        out: dict[str, Any] = {
            "precision": precision,
            "tolerance": limit,
            "providers": predictor.providers,
            "missing_providers": predictor.missing_providers,
        }
        if GOLDEN_KEY not in metadata:
            reason = "the file stores no golden cases (exported before fusionedge stored them)"
            return out | {"passed": False, "cases": 0, "max_abs_diff": None, "reason": reason}
        try:
            golden = GoldenCases.from_json(metadata[GOLDEN_KEY])
            scores = predictor.run(golden.inputs(predictor.spec))[0]
        # ONNX Runtime's own error types (load_errors) are also what a failed run raises,
        # e.g. for a token id beyond the graph's table.
        except (IntegrityError, NonFiniteError, *load_errors()) as e:
            reason = f"the golden cases did not run: {e}"
            return out | {"passed": False, "cases": 0, "max_abs_diff": None, "reason": reason}
    return out | _compare(golden, scores, limit, predictor.missing_providers, providers)


def _compare(
    golden: GoldenCases,
    scores: np.ndarray,
    limit: float,
    missing: list[str],
    providers: str | Sequence[str],
) -> dict[str, Any]:
    diff = float(np.abs(scores.astype(np.float64) - golden.scores).max())
    out = {"cases": len(golden.scores), "max_abs_diff": diff, "computed_on": golden.computed_on}
    if diff > limit:
        reason = f"max |score difference| {diff:.3g} exceeds the tolerance {limit:g}"
        return out | {"passed": False, "reason": reason}
    if missing and providers != "auto":
        # The caller named these providers: a pass on others answers another question.
        reason = f"{', '.join(missing)} requested but not active here; the check ran on the CPU"
        return out | {"passed": False, "reason": reason}
    return out | {"passed": True}


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


def _onnx_model(path: Path) -> Any | None:
    """The file as an onnx ModelProto, when the onnx package is installed (a `train`
    extra, optional here): the graph's weights, which ONNX Runtime does not show."""
    try:
        import onnx
    except ImportError:
        return None
    return onnx.load(str(path), load_external_data=False)


def _opset(model: Any | None) -> int | None:
    """The default-domain opset (None without the onnx package)."""
    if model is None:
        return None
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def token_table_rows(model: Any) -> int | None:
    """Rows of the token embedding table: the initializer a Gather on the `tokens` input
    reads (through casts or dequantisation); None when no such table is found."""
    graph = model.graph
    tables = {i.name: list(i.dims) for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    for node in graph.node:
        if node.op_type != "Gather" or node.input[1:2] != [INPUT_NAMES["text"]]:
            continue
        name = node.input[0]
        while name not in tables and name in producers:
            if producers[name].op_type not in TABLE_PASSES:
                break
            name = producers[name].input[0]
        if len(tables.get(name, [])) == 2:
            return int(tables[name][0])
    return None


def _vocabulary_problem(model: Any | None, spec: ModelSpec) -> str | None:
    """Whether every token id the spec's tokenizer can give is a row of the graph's token
    table. Checked only where the onnx package can read the table: without it, the digest
    alone holds the vocabulary to what export wrote."""
    if model is None or spec.text is None:
        return None
    rows = token_table_rows(model)
    ids = spec.text.tokenizer.vocab_size
    if rows is None or ids <= rows:
        return None
    return (
        f"the spec's vocabulary has {ids} token ids but the graph's token embedding table "
        f"has {rows} rows: ids {rows} to {ids - 1} fall outside it"
    )
