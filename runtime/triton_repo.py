"""A Triton Inference Server model repository from a fusionedge model file or split folder.

`fusionedge triton MODEL --repo DIR [--name N]` writes, into DIR (other models there are
left alone):

- `N/` for Triton's ONNX Runtime backend: config.pbtxt (platform onnxruntime_onnx), the
  file as `1/model.onnx` and labels.txt. The inputs and outputs are the model contract's
  (fusionedge.contract): prepared arrays in, scores and embedding out. For a split model
  folder, `N/` is instead an ensemble (platform "ensemble") over one model per part,
  `N_image/`, `N_audio/`, ..., `N_fusion/`, so clients see the same inputs and outputs.
- `N_raw/` for Triton's Python backend: model.py runs fusionedge.runtime's Predictor on
  raw inputs (camera frames of any size, PCM at any rate with its sample rate, text) and
  answers a label and the scores. It serves where the server has no ONNX Runtime backend
  and clients that should not preprocess; the server's Python needs fusionedge installed.

The configs come from the contract as the spec states it, after the Predictor has held
the spec to the graph and the file to its digest, so a repository is never written for a
file the runtime would refuse. Nothing here needs torch, onnx or Triton's packages:
config.pbtxt is protobuf text format, written directly.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fusionedge.contract import (
    FRONTEND_PART,
    FUSION_PART,
    OUTPUT_NAMES,
    SPEC_KEY,
    embedding_input,
)
from fusionedge.runtime.model_file import Layout, contract_io
from fusionedge.runtime.predictor import Predictor
from fusionedge.runtime.triton_raw import RAW_INPUTS, RAW_LABEL, RAW_MODEL_PY
from fusionedge.spec import ModelSpec

# numpy dtype names (the contract's) -> Triton's data types.
TRITON_TYPES = {"uint8": "TYPE_UINT8", "float32": "TYPE_FP32", "int64": "TYPE_INT64"}
TRITON_TYPES |= {"bool": "TYPE_BOOL", "int32": "TYPE_INT32", "object": "TYPE_STRING"}
# --device -> instance_group kind. KIND_AUTO: a GPU where the server has one, else CPU.
KINDS = {"auto": "KIND_AUTO", "cpu": "KIND_CPU", "gpu": "KIND_GPU"}
# --device -> the raw model's ONNX Runtime providers (fusionedge.runtime.providers names).
RAW_PROVIDERS = {"auto": "auto", "cpu": "cpu", "gpu": "cuda"}
LABELS_FILE = "labels.txt"
RAW_SUFFIX = "_raw"
VERSION = "1"  # the one model version written
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class TritonOptions:
    """How the repository's models are served.

    Attributes:
        name: The model's name on the server (its folder); None: the file's stem.
        max_batch: max_batch_size: the most samples Triton puts into one model run.
        instances: Model instances (copies running side by side) per device.
        device: "auto" (a GPU where the server has one), "cpu" or "gpu".
        queue_delay_us: How long dynamic batching waits for more requests (microseconds).
        dynamic_batching: Let Triton merge concurrent requests into one run.
    """

    name: str | None = None
    max_batch: int = 16
    instances: int = 1
    device: str = "auto"
    queue_delay_us: int = 1000
    dynamic_batching: bool = True

    def check(self) -> None:
        """Raises ValueError naming an option out of range."""
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {self.max_batch}")
        if self.instances < 1:
            raise ValueError(f"instances must be at least 1, got {self.instances}")
        if self.device not in KINDS:
            raise ValueError(f"device must be one of {sorted(KINDS)}, got {self.device!r}")
        if self.queue_delay_us < 0:
            raise ValueError(f"queue_delay_us must be >= 0, got {self.queue_delay_us}")
        if self.name is not None and not NAME_PATTERN.match(self.name):
            raise ValueError(
                f"model name {self.name!r}: use letters, digits, '_', '.' and '-' (it is a "
                "folder name and part of the server's URLs)"
            )


# ---------------------------------------------------------------------- protobuf text


class Enum(str):
    """An enum value in protobuf text (written bare: TYPE_FP32, not "TYPE_FP32")."""


def pbtxt_string(text: str) -> str:
    """A protobuf text string literal: quotes, backslashes and control characters escaped,
    non-ASCII as octal UTF-8 bytes (the escapes every protobuf text parser reads)."""
    out = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        if char in "\"\\'":
            out.append("\\" + char)
        elif 32 <= byte < 127:
            out.append(char)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def _scalar(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return pbtxt_string(value)
    raise TypeError(f"no protobuf text form for {type(value).__name__}")


def to_pbtxt(message: dict[str, Any], indent: str = "") -> str:
    """A message as protobuf text: dict values are messages, lists of dicts repeated
    messages, other lists repeated scalars; the keys in their order."""
    lines = []
    inner = indent + "  "
    for key, value in message.items():
        if isinstance(value, dict):
            lines += [f"{indent}{key} {{", to_pbtxt(value, inner), f"{indent}}}"]
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            items = [f"{inner}{{\n{to_pbtxt(v, inner + '  ')}\n{inner}}}" for v in value]
            lines += [f"{indent}{key} [", ",\n".join(items), f"{indent}]"]
        elif isinstance(value, list):
            lines.append(f"{indent}{key}: [ {', '.join(_scalar(v) for v in value)} ]")
        else:
            lines.append(f"{indent}{key}: {_scalar(value)}")
    return "\n".join(line for line in lines if line)


# ---------------------------------------------------------------------- configs


def tensor(name: str, dtype: str, dims: Sequence[int | str | None], **extra: Any) -> dict:
    """One input or output: the batch axis dropped, a free axis (None or a name) as -1."""
    shape = [d if isinstance(d, int) else -1 for d in dims]
    return {"name": name, "data_type": Enum(TRITON_TYPES[dtype]), "dims": shape, **extra}


def io_tensors(layout: Layout, labels: bool = False) -> list[dict]:
    """A contract layout (name -> dtype, shape with the batch axis) as Triton tensors;
    with labels, the scores output names the label file (Triton's classification
    extension then answers "score:index:label")."""
    out = []
    for name, (dtype, shape) in layout.items():
        extra = {"label_filename": LABELS_FILE} if labels and name == OUTPUT_NAMES[0] else {}
        out.append(tensor(name, dtype, shape[1:], **extra))
    return out


def batching(options: TritonOptions, kind: str | None = None, count: int = 1) -> dict:
    """max_batch_size, dynamic_batching (when on) and the instance group."""
    config: dict[str, Any] = {"max_batch_size": options.max_batch}
    if options.dynamic_batching:
        config["dynamic_batching"] = {"max_queue_delay_microseconds": options.queue_delay_us}
    if kind is not None:
        config["instance_group"] = [{"count": count, "kind": Enum(kind)}]
    return config


def parameters(values: dict[str, str]) -> list[dict]:
    return [{"key": k, "value": {"string_value": v}} for k, v in values.items()]


def onnx_config(
    name: str, inputs: Layout, outputs: Layout, spec: ModelSpec, options: TritonOptions
) -> str:
    """config.pbtxt of one ONNX file for the ONNX Runtime backend."""
    config = {
        "name": name,
        "platform": "onnxruntime_onnx",
        **batching(options, KINDS[options.device], options.instances),
        "input": io_tensors(inputs),
        "output": io_tensors(outputs, labels=OUTPUT_NAMES[0] in outputs),
        "parameters": parameters({SPEC_KEY: spec.to_json(indent=None)}),
    }
    return to_pbtxt(config) + "\n"


def raw_config(name: str, spec: ModelSpec, options: TritonOptions) -> str:
    """config.pbtxt of the Python-backend model: raw inputs (each optional: a request
    sends the modalities it has), label and scores out. Runs on CPU whatever --device
    says; its ONNX Runtime session uses the GPU by the `providers` parameter."""
    wanted = {*spec.modalities, *(["sample_rate"] if spec.audio is not None else [])}
    inputs = [tensor(n, d, s, optional=True) for n, (d, s) in RAW_INPUTS.items() if n in wanted]
    outputs = [
        tensor(RAW_LABEL, "object", (1,)),
        tensor(OUTPUT_NAMES[0], "float32", (len(spec.labels),), label_filename=LABELS_FILE),
    ]
    # Editable on the server: providers ("auto", "cpu", "cuda") and intra-op threads per
    # instance (0: ONNX Runtime's default, one per core; lower it with many instances).
    values = {"providers": RAW_PROVIDERS[options.device], "threads": "0"}
    values[SPEC_KEY] = spec.to_json(indent=None)
    config = {
        "name": name,
        "backend": "python",
        **batching(options, "KIND_CPU", options.instances),
        "input": inputs,
        "output": outputs,
        "parameters": parameters(values),
    }
    return to_pbtxt(config) + "\n"


def ensemble_config(
    name: str, spec: ModelSpec, parts: Sequence[str], options: TritonOptions
) -> str:
    """config.pbtxt of the ensemble over a split model's parts: the single file's inputs
    and outputs. Every encoder runs on every request (absent inputs are zeros); the fusion
    part swaps an absent modality's embedding for its learned placeholder, as the single
    file does, so the scores equal the single file's."""
    inputs, outputs = contract_io(spec)
    steps = []
    for part in parts:
        step_in, step_out = contract_io(spec, part, logmel=FRONTEND_PART in parts)
        renamed = {OUTPUT_NAMES[1]: embedding_input(part)} if part in spec.modalities else {}
        steps.append(
            {
                "model_name": part_name(name, part),
                "model_version": -1,
                "input_map": [{"key": k, "value": k} for k in step_in],
                "output_map": [{"key": k, "value": renamed.get(k, k)} for k in step_out],
            }
        )
    config = {
        "name": name,
        "platform": "ensemble",
        "max_batch_size": options.max_batch,
        "input": io_tensors(inputs),
        "output": io_tensors(outputs, labels=True),
        "ensemble_scheduling": {"step": steps},
        "parameters": parameters({SPEC_KEY: spec.to_json(indent=None)}),
    }
    return to_pbtxt(config) + "\n"


def part_name(name: str, part: str) -> str:
    """A split part's model name on the server: model_image, model_fusion, ..."""
    return f"{name}_{part}"


def split_parts(spec: ModelSpec, logmel: bool) -> list[str]:
    """A split model's parts in the order they run: front end, encoders, fusion."""
    return [*([FRONTEND_PART] if logmel else []), *spec.modalities, FUSION_PART]


# ---------------------------------------------------------------------- the repository

# Folder -> {path inside it: text to write, a file or folder to copy, or None (a folder)}.
Files = dict[str, str | Path | None]


def default_name(model: Path) -> str:
    """model.onnx -> "model", model.split/ -> "model"; characters a name may not hold
    become "_"."""
    stem = model.name.removesuffix(".onnx").removesuffix(".split") or "model"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", stem).lstrip(".-") or "model"


def labels_text(spec: ModelSpec) -> str:
    """labels.txt: one label per line, in score order."""
    bad = [label for label in spec.labels if "\n" in label or "\r" in label]
    if bad:
        raise ValueError(f"labels {bad} hold a line break; Triton's label file has one per line")
    return "".join(f"{label}\n" for label in spec.labels)


def plan_models(model: Path, spec: ModelSpec, logmel: bool, options: TritonOptions) -> dict:
    """Every model folder to write, with its files (Files)."""
    name = options.name or default_name(model)
    labels = labels_text(spec)
    models: dict[str, Files] = {}
    if model.is_dir():
        parts = split_parts(spec, logmel)
        for part in parts:
            inputs, outputs = contract_io(spec, part, logmel)
            files: Files = {f"{VERSION}/model.onnx": model / f"{part}.onnx"}
            files["config.pbtxt"] = onnx_config(
                part_name(name, part), inputs, outputs, spec, options
            )
            if part == FUSION_PART:
                files[LABELS_FILE] = labels
            models[part_name(name, part)] = files
        # An ensemble has no files, but Triton still wants its version folder.
        config = ensemble_config(name, spec, parts, options)
        models[name] = {"config.pbtxt": config, LABELS_FILE: labels, VERSION: None}
    else:
        config = onnx_config(name, *contract_io(spec), spec, options)
        models[name] = {"config.pbtxt": config, LABELS_FILE: labels, f"{VERSION}/model.onnx": model}
    raw = name + RAW_SUFFIX
    models[raw] = {
        "config.pbtxt": raw_config(raw, spec, options),
        LABELS_FILE: labels,
        f"{VERSION}/model.py": RAW_MODEL_PY,
        f"{VERSION}/{raw_model_file(model)}": model,
    }
    return models


def raw_model_file(model: Path) -> str:
    """Where the raw model keeps its copy of the model: model.onnx or model.split/."""
    return "model.split" if model.is_dir() else "model.onnx"


def write_folder(folder: Path, files: Files) -> None:
    """Writes one model folder, replacing the old one as a whole: a file of an earlier
    repository never mixes with these (and a failed write leaves the old one whole)."""
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for rel, content in files.items():
        path = tmp / rel
        if content is None:
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        elif content.is_dir():
            shutil.copytree(content, path)
        else:
            shutil.copyfile(content, path)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def write_repository(
    model: str | Path, repo: str | Path, options: TritonOptions | None = None
) -> dict[str, Any]:
    """Writes the Triton models of a model file (or split folder) into repo.

    Returns a report: the repository, the model's name, each model folder written with
    its kind ("onnxruntime", "ensemble", "python"), and whether the model is split.

    Raises:
        ValueError: an option out of range, or a label with a line break.
        ModelFileError, FileNotFoundError: the model is not one the runtime opens.
    """
    options = options or TritonOptions()
    options.check()
    model, repo = Path(model), Path(repo)
    # Opening it is the check: the spec against the graph, the file against its digest.
    with Predictor.from_path(model, providers="cpu", threads=1) as predictor:
        spec = predictor.spec
        logmel = predictor.split is not None and predictor.split.logmel_input
    models = plan_models(model, spec, logmel, options)
    repo.mkdir(parents=True, exist_ok=True)
    for folder, files in models.items():
        write_folder(repo / folder, files)
    name = options.name or default_name(model)
    kinds = {
        folder: "python"
        if folder == name + RAW_SUFFIX
        else "ensemble"
        if model.is_dir() and folder == name
        else "onnxruntime"
        for folder in models
    }
    return {"repository": str(repo), "name": name, "models": kinds, "split": model.is_dir()}


# ---------------------------------------------------------------------- the raw model
