"""Every registered part exports to ONNX and gives PyTorch's answers in ONNX Runtime.

Every fusion is covered with the default encoders, and every encoder at least once with
the concat fusion (not the full product: each export takes seconds). Each model is
exported once per session (conftest.export_tiny).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

from fusionedge.arrays import SampleArrays
from fusionedge.contract import INPUT_NAMES, SPEC_KEY, modality_subsets, subset_name
from fusionedge.export.integrity import stamp_digest
from fusionedge.export.onnx_export import example_inputs
from fusionedge.export.parity import (
    BATCH_SIZES,
    TOLERANCE,
    ParityError,
    cases,
    check_parity,
)
from fusionedge.spec import MODALITIES, ModelSpec
from fusionedge.training.registry import ENCODERS, FUSIONS

DEFAULT_ENCODERS = {m: ENCODERS[m].names()[0] for m in MODALITIES}  # tiny_spec's defaults


def combos() -> list[dict[str, str]]:
    """Every fusion with the default encoders; then every other encoder with concat."""

    def with_encoders(names: dict[str, str], fusion: str) -> dict[str, str]:
        return {**{f"{m}_encoder": names[m] for m in MODALITIES}, "fusion": fusion}

    out = [with_encoders(DEFAULT_ENCODERS, f) for f in FUSIONS.names()]
    most = max(len(ENCODERS[m].names()) for m in MODALITIES)
    for k in range(1, most):
        names = {
            m: ENCODERS[m].names()[k] if k < len(ENCODERS[m].names()) else DEFAULT_ENCODERS[m]
            for m in MODALITIES
        }
        out.append(with_encoders(names, "concat"))
    return out


COMBOS = combos()
DEFAULT_COMBO = COMBOS[FUSIONS.names().index("concat")]


def combo_id(combo: dict[str, str]) -> str:
    return "+".join(combo[f"{m}_encoder"] for m in MODALITIES) + "/" + combo["fusion"]


@pytest.fixture(scope="module", params=COMBOS, ids=combo_id)
def exported(request: pytest.FixtureRequest, export_tiny):
    return export_tiny(**request.param)


@pytest.fixture(scope="module")
def default_export(export_tiny):
    return export_tiny(**DEFAULT_COMBO)


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def torch_scores(model, inputs: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        scores, _ = model(**{k: torch.from_numpy(v) for k, v in inputs.items()})
    return scores.numpy()


def test_combinations_cover_every_registered_part() -> None:
    used = {m: {c[f"{m}_encoder"] for c in COMBOS} for m in MODALITIES}
    for m in MODALITIES:
        assert used[m] == set(ENCODERS[m].names()), m
        assert {c[f"{m}_encoder"] for c in COMBOS if c["fusion"] == "concat"} == used[m]
    assert {c["fusion"] for c in COMBOS} == set(FUSIONS.names())
    default_fusions = {
        c["fusion"]
        for c in COMBOS
        if all(c[f"{m}_encoder"] == DEFAULT_ENCODERS[m] for m in MODALITIES)
    }
    assert default_fusions == set(FUSIONS.names())


def test_parity_cases_cover_every_batch_size_and_subset(default_export) -> None:
    spec = default_export.spec
    got = [(c.source, c.batch, c.present) for c in cases(default_export.model, None)]
    every = modality_subsets(spec.modalities, empty=True)
    expected = [("random", b, subset_name(s)) for b in BATCH_SIZES for s in every]
    assert sorted(got) == sorted(expected)
    assert len(every) == 2 ** len(spec.modalities)  # the empty one too
    assert BATCH_SIZES == (1, 4, 32) and TOLERANCE == 1e-4


def test_parity_at_every_batch_size_and_subset(exported) -> None:
    report = check_parity(exported.model, exported.path)
    n_subsets = 2 ** len(exported.spec.modalities)
    assert report["cases"] == len(BATCH_SIZES) * n_subsets
    assert report["failed"] == 0
    assert report["batch_sizes"] == [1, 4, 32]
    assert report["sources"] == ["random"]
    assert report["max_abs_diff_scores"] <= 1e-4, report["worst"]
    assert report["max_abs_diff_embedding"] <= 1e-4, report


def test_parity_over_text_lengths(exported) -> None:
    """Token rows with 0, 1, half and full length before the padding."""
    spec = exported.spec
    length = spec.text.max_length
    lengths = np.array([0, 1, length // 2, length])
    base = example_inputs(spec, len(lengths), seed=7)
    tokens = np.random.default_rng(7).integers(
        2, spec.text.tokenizer.vocab_size, base["tokens"].shape
    )
    tokens[np.arange(length)[None, :] >= lengths[:, None]] = 0
    assert (tokens != 0).sum(axis=1).tolist() == lengths.tolist()
    samples = SampleArrays(
        ids=[f"len{n}" for n in lengths],
        present=np.ones((len(lengths), len(spec.modalities)), dtype=bool),
        image=base["image"],
        audio=base["audio"],
        tokens=tokens,
    )
    report = check_parity(exported.model, exported.path, samples)
    assert report["sources"] == ["random", "validation"]
    assert report["cases"] == 2 * len(BATCH_SIZES) * 2 ** len(spec.modalities)
    assert report["max_abs_diff_scores"] <= 1e-4, report["worst"]

    # The text really reaches the scores: text-only rows of different lengths differ.
    text_only = dict(samples.inputs(), present=np.array([[False, False, True]] * len(lengths)))
    got = session(exported.path).run(["scores"], text_only)[0]
    np.testing.assert_allclose(got, torch_scores(exported.model, text_only), atol=1e-4)
    assert np.abs(got[1] - got[3]).max() > 1e-3, got


def test_present_mask_changes_the_exported_scores(exported) -> None:
    """`present` is a real input of the graph, not folded into a constant."""
    spec = exported.spec
    inputs = example_inputs(spec, 4, seed=3)
    sess = session(exported.path)
    answers = []
    for subset in modality_subsets(spec.modalities, empty=True):
        mask = np.array([m in subset for m in spec.modalities])
        run = dict(inputs, present=np.broadcast_to(mask, inputs["present"].shape).copy())
        answers.append(sess.run(["scores"], run)[0])
    for i, a in enumerate(answers):
        for b in answers[i + 1 :]:
            assert np.abs(a - b).max() > 1e-4


def test_file_follows_the_model_contract(exported) -> None:
    spec = exported.spec
    proto = onnx.load(str(exported.path))
    onnx.checker.check_model(proto, full_check=True)

    inputs = {i.name: i.type.tensor_type for i in proto.graph.input}
    assert list(inputs) == ["image", "audio", "tokens", "present"]
    outputs = {o.name: o.type.tensor_type for o in proto.graph.output}
    assert list(outputs) == ["scores", "embedding"]
    dtypes = {
        "image": onnx.TensorProto.UINT8,
        "audio": onnx.TensorProto.FLOAT,
        "tokens": onnx.TensorProto.INT64,
        "present": onnx.TensorProto.BOOL,
        "scores": onnx.TensorProto.FLOAT,
        "embedding": onnx.TensorProto.FLOAT,
    }
    shapes = {
        "image": [spec.image.height, spec.image.width, 3],
        "audio": [spec.audio.num_samples],
        "tokens": [spec.text.max_length],
        "present": [3],
        "scores": [len(spec.labels)],
        "embedding": [spec.embed_dim],
    }
    batch_symbols = set()
    for name, tensor in {**inputs, **outputs}.items():
        assert tensor.elem_type == dtypes[name], name
        dims = tensor.shape.dim
        assert dims[0].dim_param and not dims[0].HasField("dim_value"), (name, dims[0])
        batch_symbols.add(dims[0].dim_param)
        assert [d.dim_value for d in dims[1:]] == shapes[name], name
    assert len(batch_symbols) == 1  # one batch dimension shared by every input and output

    opsets = {o.domain: o.version for o in proto.opset_import}
    assert set(opsets) <= {"", "ai.onnx"}, opsets  # no custom domains
    assert max(opsets.values()) >= 18
    assert exported.facts["opset"] >= 18
    assert {n.domain for n in proto.graph.node} <= {"", "ai.onnx"}
    assert not proto.functions
    assert exported.facts["ops"] == sorted({n.op_type for n in proto.graph.node})
    assert "STFT" not in exported.facts["ops"] and "DFT" not in exported.facts["ops"]

    metadata = {p.key: p.value for p in proto.metadata_props}
    assert ModelSpec.from_json(metadata[SPEC_KEY]) == spec
    assert json.loads(metadata[SPEC_KEY])["schema_version"] == spec.schema_version
    assert exported.facts["bytes"] == exported.path.stat().st_size


def test_dynamic_batch_gives_each_row_its_own_answer(exported) -> None:
    """An unseen batch size runs, and every row equals that row run alone."""
    spec = exported.spec
    inputs = example_inputs(spec, 7, seed=11)
    inputs["present"] = np.random.default_rng(11).random((7, len(spec.modalities))) < 0.6
    sess = session(exported.path)
    scores, embedding = sess.run(["scores", "embedding"], inputs)
    assert scores.shape == (7, len(spec.labels)) and embedding.shape == (7, spec.embed_dim)
    for i in range(7):
        row = {k: v[i : i + 1] for k, v in inputs.items()}
        one_scores, one_embedding = sess.run(["scores", "embedding"], row)
        np.testing.assert_allclose(one_scores[0], scores[i], atol=1e-5)
        np.testing.assert_allclose(one_embedding[0], embedding[i], atol=1e-4)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)  # multiclass: softmax


def test_reference_evaluator_agrees_with_onnxruntime(exported) -> None:
    """onnx's own reference implementation reads the graph as ONNX Runtime does."""
    spec = exported.spec
    inputs = example_inputs(spec, 4, seed=5)
    inputs["present"] = np.array(
        [[True, True, True], [True, False, True], [False, True, False], [False, False, False]]
    )
    reference = ReferenceEvaluator(str(exported.path)).run(["scores", "embedding"], inputs)
    runtime = session(exported.path).run(["scores", "embedding"], inputs)
    np.testing.assert_allclose(reference[0], runtime[0], atol=1e-4)
    np.testing.assert_allclose(reference[1], runtime[1], atol=1e-4)


# ------------------------------------------------------------------ broken exports


def rewrite(src: Path, dst: Path, edit) -> Path:
    """A copy of src with edit applied, stamped with a fresh digest: it stands for a file a
    broken exporter wrote (whose digest matches its wrong graph), so that the parity check,
    not the runtime's digest check, is what refuses it."""
    proto = onnx.load(str(src))
    edit(proto)
    onnx.save(proto, str(dst))
    stamp_digest(dst)
    return dst


def assert_names_worst_case(error: ParityError) -> dict[str, Any]:
    report = error.report
    worst = report["worst"]
    message = str(error)
    assert (
        f"worst case: {worst['source']} inputs, batch {worst['batch']}, "
        f"present {worst['present'] or 'none'}"
    ) in message
    assert f"{report['failed']} of {report['cases']} cases fail" in message
    assert worst["scores"] == report["max_abs_diff_scores"] > report["tolerance"]
    return report


def test_corrupted_weight_fails_parity_naming_the_worst_case(default_export, tmp_path) -> None:
    name = "encoders.image.cnn.proj.weight"

    def corrupt(proto: onnx.ModelProto) -> None:
        (init,) = [i for i in proto.graph.initializer if i.name == name]
        weight = numpy_helper.to_array(init)
        init.CopyFrom(numpy_helper.from_array(-3.0 * weight + 0.5, name))

    broken = rewrite(default_export.path, tmp_path / "broken.onnx", corrupt)
    with pytest.raises(ParityError) as info:
        check_parity(default_export.model, broken)
    report = assert_names_worst_case(info.value)
    # Only the cases that see the image can differ: 3 batch sizes x 4 subsets with it.
    assert "image" in report["worst"]["present"].split("+")
    assert report["failed"] == len(BATCH_SIZES) * 4
    assert report["cases"] == len(BATCH_SIZES) * 8


def test_gru_exported_without_linear_before_reset_fails_parity(default_export, tmp_path) -> None:
    """The exporter bug pytorch#189225 (docs/ARCHITECTURE.md, "Known pitfalls"): the parity
    check must catch it."""
    flipped = []

    def flip(proto: onnx.ModelProto) -> None:
        for node in proto.graph.node:
            for attr in node.attribute:
                if node.op_type == "GRU" and attr.name == "linear_before_reset":
                    assert attr.i == 1  # how torch 2.13 exports nn.GRU
                    attr.i = 0
                    flipped.append(node.name)

    broken = rewrite(default_export.path, tmp_path / "gru.onnx", flip)
    assert flipped
    with pytest.raises(ParityError) as info:
        check_parity(default_export.model, broken)
    report = assert_names_worst_case(info.value)
    assert "text" in report["worst"]["present"].split("+")
    assert report["failed"] == len(BATCH_SIZES) * 4  # the cases with text present


def test_swapped_outputs_fail_parity(default_export, tmp_path) -> None:
    """A file whose scores come from the wrong place (here: a constant) is caught."""
    broken = tmp_path / "swapped.onnx"
    shutil.copy(default_export.path, broken)

    def constant_scores(proto: onnx.ModelProto) -> None:
        n = len(default_export.spec.labels)
        value = numpy_helper.from_array(np.full((1, n), 1.0 / n, np.float32), "uniform")
        proto.graph.initializer.append(value)
        scores = proto.graph.output[0].name
        for node in proto.graph.node:
            node.output[:] = [f"{o}__orig" if o == scores else o for o in node.output]
        shape = onnx.helper.make_node("Shape", ["embedding"], ["emb_shape"])
        start = numpy_helper.from_array(np.array([0], np.int64), "zero")
        end = numpy_helper.from_array(np.array([1], np.int64), "one")
        proto.graph.initializer.extend([start, end])
        first = onnx.helper.make_node("Slice", ["emb_shape", "zero", "one"], ["batch_dim"])
        cols = numpy_helper.from_array(np.array([n], np.int64), "cols")
        proto.graph.initializer.append(cols)
        concat = onnx.helper.make_node("Concat", ["batch_dim", "cols"], ["out_shape"], axis=0)
        expand = onnx.helper.make_node("Expand", ["uniform", "out_shape"], [scores])
        proto.graph.node.extend([shape, first, concat, expand])

    rewrite(broken, broken, constant_scores)
    with pytest.raises(ParityError) as info:
        check_parity(default_export.model, broken)
    report = assert_names_worst_case(info.value)
    assert report["failed"] == report["cases"]


# ------------------------------------------------------------------ modality subsets


@pytest.mark.parametrize("modalities", [("image", "audio"), ("text",)], ids="+".join)
def test_subset_of_modalities_exports(export_tiny, modalities: tuple[str, ...]) -> None:
    exported = export_tiny(modalities=modalities)
    proto = onnx.load(str(exported.path))
    onnx.checker.check_model(proto, full_check=True)
    names = [INPUT_NAMES[m] for m in modalities] + ["present"]
    assert [i.name for i in proto.graph.input] == names
    assert exported.facts["input_names"] == names
    assert [o.name for o in proto.graph.output] == ["scores", "embedding"]
    present = proto.graph.input[-1].type.tensor_type.shape.dim
    assert present[0].dim_param and present[1].dim_value == len(modalities)
    metadata = {p.key: p.value for p in proto.metadata_props}
    spec = ModelSpec.from_json(metadata[SPEC_KEY])
    assert spec == exported.spec and spec.modalities == modalities

    report = check_parity(exported.model, exported.path)
    assert report["cases"] == len(BATCH_SIZES) * 2 ** len(modalities)
    assert report["max_abs_diff_scores"] <= 1e-4, report["worst"]
