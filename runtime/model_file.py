"""Reading a fusionedge ONNX file: its spec from the metadata, then the spec held to the
graph and the file to the digest export stored, with errors that name what disagrees.

Nothing ties a spec to its graph but these checks: a spec whose image size, label count
or input names disagree with the graph fails later as an ONNX Runtime error or a
mismatched zip, and one whose labels were reordered gives confident wrong labels. The
graph's inputs and outputs are read from the ONNX Runtime session; what a session cannot
show (the weights: a token table's size, the order of the labels) is covered by the
digest, which export computes over the whole file (fusionedge.integrity).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fusionedge.contract import (
    DIGEST_KEY,
    FRONTEND_PART,
    FUSION_PART,
    INPUT_NAMES,
    OUTPUT_NAMES,
    PRESENT,
    SPEC_KEY,
    embedding_input,
    input_layout,
)
from fusionedge.integrity import IntegrityError, file_digest
from fusionedge.spec import ModelSpec, SpecError

log = logging.getLogger(__name__)


class ModelFileError(ValueError):
    """The file is not an ONNX model, or not one fusionedge wrote (or can read)."""


def spec_from_metadata(metadata: dict[str, str], path: str | Path) -> ModelSpec:
    """The ModelSpec stored under `fusionedge.spec`.

    Raises:
        ModelFileError: no fusionedge metadata (an ONNX file from another tool), or a spec
            this version cannot read (for example a newer schema version).
    """
    if SPEC_KEY not in metadata:
        keys = sorted(metadata) or "none"
        raise ModelFileError(
            f"{path}: no '{SPEC_KEY}' metadata (metadata keys: {keys}); this ONNX file was "
            "not exported by `fusionedge export`, which stores the preprocessing and labels "
            "the runtime needs"
        )
    try:
        return ModelSpec.from_json(metadata[SPEC_KEY])
    except SpecError as e:
        raise ModelFileError(f"{path}: its fusionedge spec cannot be read: {e}") from e


# ---------------------------------------------------------------------- spec vs graph

BATCH = "N"  # the batch axis: dynamic in the contract, a name (never a number) in the graph
ANY = None  # an axis the contract leaves free (the audio front end's samples and frames)
LOGMEL = "logmel"  # a split model's audio front end output, the audio part's input
# ONNX Runtime's tensor type names -> numpy's.
NUMPY_TYPES = {"float": "float32", "double": "float64", "float16": "float16"}

Dim = int | str | None
Layout = dict[str, tuple[str, tuple[Dim, ...]]]


def contract_io(
    spec: ModelSpec, part: str | None = None, logmel: bool = False
) -> tuple[Layout, Layout]:
    """(inputs, outputs) that the spec promises a file has: name -> (numpy dtype, shape).

    part: None for the single file, else a split part's name; logmel: the split audio
    part takes log-mel frames (there is an audio front end file) rather than PCM.
    """
    dim = spec.embed_dim
    embedding: Layout = {OUTPUT_NAMES[1]: ("float32", (BATCH, dim))}
    heads: Layout = {OUTPUT_NAMES[0]: ("float32", (BATCH, len(spec.labels)))} | embedding
    layout = {n: (dtype, (BATCH, *shape)) for n, (dtype, shape) in input_layout(spec).items()}
    audio = spec.audio
    if part is None:
        return layout, heads
    if part == FUSION_PART:
        inputs = {embedding_input(m): ("float32", (BATCH, dim)) for m in spec.modalities}
        return inputs | {PRESENT: layout[PRESENT]}, heads
    if part == FRONTEND_PART and audio is not None:
        frames = ("float32", (BATCH, 1, audio.n_mels, ANY))
        return {INPUT_NAMES["audio"]: ("float32", (BATCH, ANY))}, {LOGMEL: frames}
    if part == "audio" and logmel and audio is not None:
        return {LOGMEL: ("float32", (BATCH, 1, audio.n_mels, audio.num_frames))}, embedding
    if part not in spec.modalities:
        raise ModelFileError(f"{part!r} is not a part of a model of {list(spec.modalities)}")
    name = INPUT_NAMES[part]
    return {name: layout[name]}, embedding


def _numpy_type(ort_type: str) -> str:
    name = ort_type.removeprefix("tensor(").removesuffix(")")
    return NUMPY_TYPES.get(name, name)


def _show(dims: tuple[Dim, ...] | list[Dim]) -> str:
    """A shape as messages write it, [N, 16, 16, 3]: a dynamic batch axis is N whatever the
    graph calls it, an axis left free is *."""
    shown = [
        BATCH if i == 0 and not isinstance(d, int) else "*" if d is None else str(d)
        for i, d in enumerate(dims)
    ]
    return "[" + ", ".join(shown) + "]"


def _dims_agree(want: tuple[Dim, ...], got: list[Dim], strict: bool) -> bool:
    """Whether a graph shape meets the contract's. The batch axis must be dynamic; a named
    axis where the contract fixes a size passes only when not strict (an output whose
    size the graph leaves to run time cannot disagree here)."""
    if len(want) != len(got):
        return False
    for w, g in zip(want, got, strict=True):
        if w == BATCH and isinstance(g, int):
            return False
        if isinstance(w, int) and g != w and (strict or isinstance(g, int)):
            return False
    return True


def io_problems(kind: str, want: Layout, found: list[Any]) -> list[str]:
    """What differs between the contract's inputs (or outputs) and the graph's NodeArgs."""
    graph = {a.name: (_numpy_type(a.type), list(a.shape)) for a in found}
    problems = []
    if list(want) != list(graph):
        problems.append(f"{kind}s: spec {list(want)}, graph {list(graph)}")
    for name in [n for n in want if n in graph]:
        (dtype, shape), (got_dtype, got_shape) = want[name], graph[name]
        if dtype != got_dtype or not _dims_agree(shape, got_shape, strict=kind == "input"):
            problems.append(
                f"{kind} {name!r}: spec {dtype} {_show(shape)}, "
                f"graph {got_dtype} {_show(got_shape)}"
            )
    return problems


def graph_problems(
    session: Any, spec: ModelSpec, part: str | None = None, logmel: bool = False
) -> list[str]:
    """Each way the spec disagrees with the session's graph (empty when they agree)."""
    inputs, outputs = contract_io(spec, part, logmel)
    problems = io_problems("input", inputs, session.get_inputs())
    problems += io_problems("output", outputs, session.get_outputs())
    if problems:
        labels = f"{len(spec.labels)} labels"
        return [
            f"the spec ({labels}, embed_dim {spec.embed_dim}) disagrees with the graph: "
            + "; ".join(problems)
        ]
    return []


def digest_problem(path: Path, metadata: dict[str, str]) -> str | None:
    """Why the file's bytes do not match the digest export stored; None when they do.

    A file exported before digests existed has none: it is accepted (logged at INFO), so
    old files still load.
    """
    if DIGEST_KEY not in metadata:
        log.info(
            "%s has no '%s' (exported before fusionedge stored one): not checked", path, DIGEST_KEY
        )
        return None
    try:
        computed, stored = file_digest(path.read_bytes())
    except IntegrityError as e:
        return f"its bytes cannot be checked against its digest: {e}"
    if stored != [computed]:
        return (
            f"the file was changed after export: its bytes hash to {computed}, but export "
            f"stored {', '.join(stored) or 'no digest'} under '{DIGEST_KEY}' (an edited "
            "spec, label list or weight; export the run again instead of editing the file)"
        )
    return None


def model_problems(
    path: Path, session: Any, spec: ModelSpec, part: str | None = None, logmel: bool = False
) -> list[str]:
    """graph_problems, then digest_problem."""
    metadata = session.get_modelmeta().custom_metadata_map
    digest = digest_problem(path, metadata)
    return graph_problems(session, spec, part, logmel) + ([digest] if digest else [])


def check_model_file(
    path: Path, session: Any, spec: ModelSpec, part: str | None = None, logmel: bool = False
) -> None:
    """Raises ModelFileError naming every problem model_problems finds."""
    problems = model_problems(path, session, spec, part, logmel)
    if problems:
        raise ModelFileError(f"{path}: " + "; ".join(problems))
