"""PyTorch -> one self-describing ONNX file.

The dynamo exporter (torch.onnx.export(..., dynamo=True)) traces the model with a dynamic
batch dimension; the spec goes into the file's metadata under `fusionedge.spec`, so the
runtime needs nothing but the file. The graph is checked with onnx.checker (full check,
which includes strict shape inference) before it is written, then sealed
(export/integrity.py): golden cases and a digest of the file, which the runtime checks.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx
import torch

from fusionedge.contract import INPUT_NAMES, OUTPUT_NAMES, PRESENT, SPEC_KEY
from fusionedge.export.integrity import golden_cases, seal

# Seeded inputs in the contract's layout: core's, since the runtime rebuilds the golden
# cases from the same generator. Kept importable from here for export's other modules.
from fusionedge.integrity import example_inputs
from fusionedge.training.model import FusedModel

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18


@contextlib.contextmanager
def quiet_loggers(*names: str) -> Iterator[None]:
    """Holds the exporter's graph-pass loggers at WARNING: their INFO lines (one per
    deduplicated initializer) would bury the CLI's own output."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def rename_values(model: onnx.ModelProto, mapping: dict[str, str]) -> None:
    """Renames values everywhere in the main graph (node edges, inputs, outputs, shapes)."""
    graph = model.graph
    for node in graph.node:
        node.input[:] = [mapping.get(x, x) for x in node.input]
        node.output[:] = [mapping.get(x, x) for x in node.output]
    for value in [*graph.input, *graph.output, *graph.value_info]:
        value.name = mapping.get(value.name, value.name)


def name_outputs(model: onnx.ModelProto, names: tuple[str, ...] = OUTPUT_NAMES) -> None:
    """Gives the outputs the contract's names.

    The exporter names outputs after the last op ("softmax", "linear_4") and may already
    use "embedding" for an inner value (nn.Embedding's output), so inner clashes are
    renamed out of the way first.
    """
    current = [o.name for o in model.graph.output]
    inner = {o for n in model.graph.node for o in n.output} - set(current)
    rename_values(model, {name: f"{name}__inner" for name in names if name in inner})
    rename_values(model, dict(zip(current, names, strict=True)))


def export_onnx(model: FusedModel, path: str | Path, opset: int = DEFAULT_OPSET) -> dict[str, Any]:
    """Exports the model to path and returns facts for the export report.

    Raises:
        onnx.checker.ValidationError: the exported graph is not valid ONNX.
    """
    spec = model.spec
    inputs = {k: torch.from_numpy(v) for k, v in example_inputs(spec, batch=2).items()}
    doc = (
        f"fusionedge model: {'+'.join(spec.modalities)} -> {spec.task} over "
        f"{len(spec.labels)} label(s); the spec is in metadata '{SPEC_KEY}'"
    )
    facts = export_module(
        model, inputs, path, OUTPUT_NAMES, {SPEC_KEY: spec.to_json(indent=None)}, doc, opset
    )
    facts |= seal(path, golden_cases(Path(path), spec))
    facts["bytes"] = Path(path).stat().st_size  # with the golden cases and digest
    return facts | {"input_names": [INPUT_NAMES[m] for m in spec.modalities] + [PRESENT]}


def export_module(
    module: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    path: str | Path,
    output_names: tuple[str, ...],
    metadata: dict[str, str],
    doc: str,
    opset: int = DEFAULT_OPSET,
    dynamic: dict[str, dict[int, Any]] | None = None,
) -> dict[str, Any]:
    """Exports module(**inputs) with a dynamic batch dimension, names its outputs, stores
    the metadata, checks the graph and writes it to path; returns facts for a report.

    dynamic adds other dynamic dimensions: input name -> {axis: torch.export.Dim}.

    Raises:
        onnx.checker.ValidationError: the exported graph is not valid ONNX.
    """
    module = module.cpu().eval()
    batch = torch.export.Dim("batch", min=1, max=65536)
    start = time.perf_counter()
    with warnings.catch_warnings(), quiet_loggers("onnx_ir", "onnxscript"):
        # The exporter warns about internals (deprecated dynamic-shape helpers) that a
        # user can do nothing about; real failures raise.
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            (),
            kwargs=inputs,
            dynamo=True,
            opset_version=opset,
            verbose=False,
            dynamic_shapes={name: {0: batch, **(dynamic or {}).get(name, {})} for name in inputs},
        )
    proto = program.model_proto
    name_outputs(proto, output_names)
    meta = {p.key: p.value for p in proto.metadata_props} | metadata
    del proto.metadata_props[:]
    for key, value in sorted(meta.items()):
        proto.metadata_props.add(key=key, value=value)
    proto.producer_name = "fusionedge"
    proto.doc_string = doc
    proto = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    onnx.checker.check_model(proto, full_check=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return {
        "seconds": round(time.perf_counter() - start, 2),
        "opset": next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
        "ops": sorted({n.op_type for n in proto.graph.node}),
        "nodes": len(proto.graph.node),
        "inputs": {i.name: _shape(i) for i in proto.graph.input},
        "outputs": {o.name: _shape(o) for o in proto.graph.output},
        "bytes": path.stat().st_size,
    }


def _shape(value: onnx.ValueInfoProto) -> list[str | int]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
