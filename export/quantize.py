"""Lower-precision copies of an exported fp32 model file: int8 (static QDQ) and fp16.

Both copies are made with ONNX Runtime's own tools from the fp32 file `fusionedge export`
wrote, and keep its contract: the same input and output names and dtypes and the same
`fusionedge.spec` metadata, plus `fusionedge.precision`, so Predictor loads them unchanged.

What stays fp32, and why:
- the log-mel front end (a Conv1d DFT, power, mel MatMul, log): power spectra span many
  decades, and 8-bit (or fp16) steps flush the quiet bins that the log then spreads over
  the whole feature range (docs/ARCHITECTURE.md, "Known pitfalls"). Measured on the demo model:
  quantising it too took val accuracy from 98.4 to 87.0 (benchmarks/int8_cpu.py). Its
  nodes are found by the module the exporter recorded for each node, never by op type
  or position.
- in int8, everything but Conv and MatMul: the ops with integer kernels that carry the
  arithmetic. Quantising the rest would add Quantize/Dequantize pairs for no speed: the
  uint8 -> float image normalisation (two elementwise ops over a uint8 image: requantising
  it only loses precision), the text embedding Gather (a table lookup that feeds the fp32
  GRU, which ONNX Runtime cannot quantise), the placeholder Where and the stack/flatten
  of modality embeddings (data movement) and the output Softmax (scores must keep full
  resolution: 8-bit scores step by 1/256). Gemm is left out too: in these models it is
  the batch-1 Linear layers (projections, fusion MLP, head; tens to hundreds of
  features), where QGemm with its Quantize/Dequantize measured no faster than fp32 on
  the demo model, and quantising the fusion's last Gemm would put the `embedding`
  output itself through 8 bits.
"""

from __future__ import annotations

import ast
import logging
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from fusionedge.arrays import SampleArrays
from fusionedge.contract import DIGEST_KEY, GOLDEN_KEY, PRECISION_KEY, SPEC_KEY
from fusionedge.export.integrity import golden_cases, seal
from fusionedge.spec import ModelSpec
from fusionedge.training.frontend import LogMel

log = logging.getLogger(__name__)

# The exporter stores each node's module path ("encoders.audio.logmel") and the classes
# of the modules it sits in; both lists are written as Python literals.
SCOPES_KEY = "pkg.torch.onnx.name_scopes"
CLASSES_KEY = "pkg.torch.onnx.class_hierarchy"
FRONTEND_CLASS = f"{LogMel.__module__}.{LogMel.__qualname__}"
CALIBRATION_BATCH = 16


@dataclass(frozen=True)
class Int8Options:
    """How the int8 copy is made.

    Defaults follow ONNX Runtime's advice for x86 CPUs without VNNI (most that run
    fusionedge at the edge): unsigned activations, signed weights, 7-bit weights
    (reduce_range) so the AVX2 u8 x s8 multiply-add cannot saturate its 16-bit sums.
    Measured on the demo model (AVX2, no VNNI), against these defaults: full 8-bit
    weights lost another 0.8-1.6 points of val accuracy to that saturation, per-tensor
    weights 0.3-0.6 points, at the same speed (benchmarks/int8_cpu.py).

    Attributes:
        op_types: Op types to quantise (see the module docstring for the rest); empty
            for every op type ONNX Runtime can quantise.
        per_channel: One weight scale per output channel (more accurate for convolutions
            whose channels differ in range).
        reduce_range: 7-bit weights.
        activation_type: "uint8" or "int8".
        calibration_samples: Most training samples the activation ranges are taken from.
        missing_fraction: Share of calibration batches that run with modalities marked
            missing, so the placeholder paths are calibrated too.
        seed: For which samples and which modalities are dropped.
    """

    op_types: tuple[str, ...] = ("Conv", "MatMul")
    per_channel: bool = True
    reduce_range: bool = True
    activation_type: str = "uint8"
    calibration_samples: int = 256
    missing_fraction: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.activation_type not in ("uint8", "int8"):
            raise ValueError(
                f"activation_type must be 'uint8' or 'int8', got {self.activation_type!r}"
            )
        if self.calibration_samples < 1:
            raise ValueError(f"calibration_samples must be >= 1, got {self.calibration_samples}")
        if not 0.0 <= self.missing_fraction <= 1.0:
            raise ValueError(f"missing_fraction must be in [0, 1], got {self.missing_fraction}")


# ---------------------------------------------------------------------- finding nodes


def _literal_list(node: onnx.NodeProto, key: str) -> list[str]:
    for prop in node.metadata_props:
        if prop.key == key:
            try:
                value = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return []
            return [str(v) for v in value] if isinstance(value, list) else []
    return []


def nodes_under(model: onnx.ModelProto, module_path: str) -> list[str]:
    """Names of the nodes the exporter placed in the module at module_path or below it
    (e.g. "encoders.audio.logmel"), from each node's recorded name scopes."""
    prefix = module_path + "."
    return [
        n.name
        for n in model.graph.node
        if any(s == module_path or s.startswith(prefix) for s in _literal_list(n, SCOPES_KEY))
    ]


def nodes_of_class(model: onnx.ModelProto, qualified_class: str) -> list[str]:
    """Names of the nodes the exporter placed inside a module of this class (at any depth)."""
    return [n.name for n in model.graph.node if qualified_class in _literal_list(n, CLASSES_KEY)]


def frontend_nodes(model: onnx.ModelProto) -> list[str]:
    """The log-mel front end's nodes: those inside a LogMel module, whatever its path.

    Raises:
        ValueError: the model takes audio but no node carries the LogMel scope (a file
            whose node metadata was stripped, or not written by `fusionedge export`):
            quantising it blind would quantise the front end.
    """
    names = nodes_of_class(model, FRONTEND_CLASS)
    if not names and "audio" in {i.name for i in model.graph.input}:
        raise ValueError(
            f"cannot find the log-mel front end's nodes: no node's '{CLASSES_KEY}' metadata "
            f"names {FRONTEND_CLASS}; lower-precision copies need a file written by "
            "`fusionedge export` with its node metadata intact"
        )
    return names


def model_metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def set_metadata(model: onnx.ModelProto, metadata: dict[str, str]) -> None:
    del model.metadata_props[:]
    for key, value in sorted(metadata.items()):
        model.metadata_props.add(key=key, value=value)


def check_contract(fp32: onnx.ModelProto, copy: onnx.ModelProto, path: Path) -> None:
    """The copy must take and give exactly what the fp32 file does (names and dtypes).

    Raises:
        RuntimeError: naming each input or output that differs.
    """

    def io(m: onnx.ModelProto) -> dict[str, int]:
        return {v.name: v.type.tensor_type.elem_type for v in [*m.graph.input, *m.graph.output]}

    want, got = io(fp32), io(copy)
    if want != got:
        names = onnx.TensorProto.DataType.Name
        differ = {
            k: (names(want[k]) if k in want else None, names(got[k]) if k in got else None)
            for k in sorted(set(want) | set(got))
            if want.get(k) != got.get(k)
        }
        raise RuntimeError(
            f"{path}: inputs/outputs differ from the fp32 file (name: (fp32, copy)): {differ}"
        )


# ---------------------------------------------------------------------- calibration


def calibration_batches(
    samples: SampleArrays, options: Int8Options, batch: int = CALIBRATION_BATCH
) -> list[dict[str, np.ndarray]]:
    """The first calibration_samples samples in the model contract's layout, in batches.

    The first batches keep each sample's own `present` mask (samples lacking a modality
    in the data arrive as the runtime sends them: zeros, marked missing); a share of the
    batches (missing_fraction) repeats samples with random modalities marked missing,
    so the ranges after the placeholder swap include the learned placeholders.
    """
    rng = np.random.default_rng(options.seed)
    n = min(len(samples), options.calibration_samples)
    inputs = samples.subset(slice(0, n)).inputs()
    batches = [{k: v[i : i + batch] for k, v in inputs.items()} for i in range(0, n, batch)]
    dropped = []
    for b in batches[: round(len(batches) * options.missing_fraction)]:
        keep = rng.random(b["present"].shape) >= 0.5
        dropped.append(dict(b, present=b["present"] & keep))
    return batches + dropped


def _reader(batches: list[dict[str, np.ndarray]]):
    """An onnxruntime.quantization.CalibrationDataReader over prepared batches."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

        def rewind(self) -> None:
            self._it = iter(batches)

    return Reader()


# ---------------------------------------------------------------------- int8


def quantize_int8(
    fp32_path: str | Path,
    out_path: str | Path,
    samples: SampleArrays,
    options: Int8Options | None = None,
) -> dict[str, Any]:
    """Writes a static QDQ int8 copy of fp32_path, calibrated on samples; returns facts.

    Args:
        fp32_path: A file written by `fusionedge export`.
        out_path: Where the int8 file goes.
        samples: Training samples (with their present masks) to calibrate on.
        options: See Int8Options.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    options = options or Int8Options()
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    fp32 = onnx.load(str(fp32_path))
    excluded = frontend_nodes(fp32)
    batches = calibration_batches(samples, options)
    with tempfile.TemporaryDirectory(prefix="fusionedge-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # Shape inference only: the optimisation pass may fuse or rename nodes, while the
        # front end is excluded by name; ONNX Runtime optimises the int8 file at load.
        quant_pre_process(str(fp32_path), str(prepared), skip_optimization=True)
        quantize_static(
            str(prepared),
            str(out_path),
            _reader(batches),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(options.op_types),
            per_channel=options.per_channel,
            reduce_range=options.reduce_range,
            activation_type=QuantType.QUInt8
            if options.activation_type == "uint8"
            else QuantType.QInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=excluded,
        )
    quantized = onnx.load(str(out_path))
    finish_copy(fp32, quantized, out_path, "int8")
    counts = Counter(n.op_type for n in quantized.graph.node)
    return {
        "path": str(out_path),
        "bytes": out_path.stat().st_size,
        "options": {
            "op_types": list(options.op_types),
            "per_channel": options.per_channel,
            "reduce_range": options.reduce_range,
            "activation_type": options.activation_type,
            "weight_type": "int8",
            "format": "QDQ",
        },
        "calibration_samples": min(len(samples), options.calibration_samples),
        "calibration_batches": len(batches),
        "excluded_nodes": len(excluded),
        "quantized_nodes": quantized_node_count(quantized),
        "quantize_linear_nodes": counts.get("QuantizeLinear", 0),
        "dequantize_linear_nodes": counts.get("DequantizeLinear", 0),
    }


def quantized_node_count(model: onnx.ModelProto) -> int:
    """Nodes (other than Q/DQ) that read at least one DequantizeLinear output."""
    dq = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return sum(
        1
        for n in model.graph.node
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear") and dq & set(n.input)
    )


def finish_copy(fp32: onnx.ModelProto, copy: onnx.ModelProto, path: Path, precision: str) -> None:
    """Gives the copy the fp32 file's metadata plus its precision, checks it, saves it and
    seals it with golden cases and a digest of its own (export/integrity.py): the copy
    computes other scores than the fp32 file, and its bytes differ."""
    check_contract(fp32, copy, path)
    metadata = model_metadata(fp32) | {PRECISION_KEY: precision}
    for key in (DIGEST_KEY, GOLDEN_KEY):
        metadata.pop(key, None)
    set_metadata(copy, metadata)
    copy.producer_name = fp32.producer_name
    copy.doc_string = f"{fp32.doc_string} ({precision} copy)"
    copy = onnx.shape_inference.infer_shapes(copy, strict_mode=True)
    onnx.checker.check_model(copy, full_check=True)
    onnx.save(copy, str(path))
    seal(path, golden_cases(path, ModelSpec.from_json(metadata[SPEC_KEY])))


# ---------------------------------------------------------------------- fp16


def convert_fp16(fp32_path: str | Path, out_path: str | Path) -> dict[str, Any]:
    """Writes an fp16 copy for CUDA: fp32 inputs and outputs, front end in fp32.

    The copy is meant for CUDAExecutionProvider. ONNX Runtime's CPU provider still runs
    it, by inserting Casts around every op it has no fp16 kernel for (Conv, Gemm, GRU,
    ...: 50 more Casts in the demo model), which makes it no faster than fp32 there.
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    fp32 = onnx.load(str(fp32_path))
    blocked = frontend_nodes(fp32)
    half = convert_float_to_float16(
        onnx.load(str(fp32_path)), keep_io_types=True, node_block_list=blocked
    )
    drop_round_trips(half)
    # The converter appends the casts it adds at the end of the node list; ONNX requires
    # topological order.
    OnnxModel.graph_topological_sort(half.graph)
    finish_copy(fp32, half, out_path, "fp16")
    return {
        "path": str(out_path),
        "bytes": out_path.stat().st_size,
        "excluded_nodes": len(blocked),
        "float16_initializers": sum(
            i.data_type == onnx.TensorProto.FLOAT16 for i in half.graph.initializer
        ),
    }


def drop_round_trips(model: onnx.ModelProto) -> int:
    """Removes fp32 -> fp16 -> fp32 Cast pairs and fp32 -> fp32 Casts; returns how many.

    convert_float_to_float16 casts every blocked node's inputs and outputs on its own, so
    between two blocked nodes each value is rounded to fp16 and back: the front end would
    not really stay fp32, and a value read by two blocked nodes gets two Casts with the
    same output name (invalid SSA). Reading the fp32 value directly fixes both.
    """
    graph = model.graph
    dtypes = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.value_info]}
    dtypes |= {i.name: i.data_type for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}

    def cast_to(node: onnx.NodeProto) -> int | None:
        if node.op_type != "Cast":
            return None
        return next((a.i for a in node.attribute if a.name == "to"), None)

    rename: dict[str, str] = {}
    dropped: list[onnx.NodeProto] = []
    for node in graph.node:
        if cast_to(node) != onnx.TensorProto.FLOAT:
            continue
        first = producer.get(node.input[0])
        if dtypes.get(node.input[0]) == onnx.TensorProto.FLOAT:
            # A blocked node's fp32 initializer, cast to the type it already has.
            rename[node.output[0]] = node.input[0]
        elif (
            first is not None
            and cast_to(first) == onnx.TensorProto.FLOAT16
            and dtypes.get(first.input[0]) == onnx.TensorProto.FLOAT
        ):
            rename[node.output[0]] = first.input[0]
        else:
            continue
        dropped.append(node)
    for node in dropped:
        graph.node.remove(node)
    for node in graph.node:
        node.input[:] = [rename.get(x, x) for x in node.input]
    outputs = {o.name for o in graph.output}
    read = {x for n in graph.node for x in n.input} | outputs
    unused = [n for n in graph.node if cast_to(n) is not None and not set(n.output) & read]
    for node in unused:
        graph.node.remove(node)
    # Value types of dropped values, and of initializers (the converter retypes their
    # value_info to fp16 even where it keeps a blocked node's initializer fp32), are
    # left to shape inference.
    kept = {x for n in graph.node for x in [*n.input, *n.output]}
    initializers = {i.name for i in graph.initializer}
    stale = [v for v in graph.value_info if v.name not in kept or v.name in initializers]
    for v in stale:
        graph.value_info.remove(v)
    return len(rename)
