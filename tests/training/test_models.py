"""FusedModel over every registered part: shapes, scores, gradients and missing modalities.

The parametrisations read the registries, so a newly registered encoder, fusion or head
is covered without touching this file (timm's test_models does the same).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from support import tiny_config, tiny_spec, write_dataset

from fusionedge.contract import INPUT_NAMES
from fusionedge.spec import TASKS, SpecError
from fusionedge.training.model import ENCODERS, FUSIONS, HEADS, FusedModel
from fusionedge.training.registry import Registry

N = 6
ENCODER_COMBOS = list(
    itertools.product(
        ENCODERS["image"].names(), ENCODERS["audio"].names(), ENCODERS["text"].names()
    )
)


def make_inputs(spec, n: int = N, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random model inputs in the contract's dtypes and shapes, keyed by modality."""
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    if spec.image is not None:
        size = (n, spec.image.height, spec.image.width, 3)
        out["image"] = torch.randint(0, 256, size, generator=g, dtype=torch.uint8)
    if spec.audio is not None:
        t = torch.arange(spec.audio.num_samples) / spec.audio.sample_rate
        freq = 300 + 2000 * torch.rand(n, 1, generator=g)
        noise = 0.05 * torch.randn(n, spec.audio.num_samples, generator=g)
        out["audio"] = (0.4 * torch.sin(2 * torch.pi * freq * t) + noise).float()
    if spec.text is not None:
        vocab = spec.text.tokenizer.vocab_size
        tokens = torch.randint(2, vocab, (n, spec.text.max_length), generator=g)
        lengths = torch.randint(1, spec.text.max_length + 1, (n, 1), generator=g)
        tokens[torch.arange(spec.text.max_length)[None, :] >= lengths] = 0  # padding
        out["text"] = tokens
    return out


def call(model: FusedModel, inputs: dict[str, torch.Tensor], present: torch.Tensor):
    """model(image=..., audio=..., tokens=..., present=...) by the ONNX input names."""
    return model(**{INPUT_NAMES[m]: x for m, x in inputs.items()}, present=present)


def make_targets(spec, n: int = N) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    if spec.task in ("multiclass", "binary"):
        return torch.arange(n) % len(spec.labels)
    if spec.task == "multilabel":
        return (torch.rand(n, len(spec.labels), generator=g) < 0.5).float()
    return 100 + 10 * torch.randn(n, 1, generator=g)


def all_subsets(m: int) -> torch.Tensor:
    """bool [2**m, m]: every combination of present modalities, nothing present included."""
    return torch.tensor(list(itertools.product([False, True], repeat=m)))


def check_scores(spec, scores: torch.Tensor, embedding: torch.Tensor, n: int) -> None:
    assert scores.shape == (n, len(spec.labels))
    assert embedding.shape == (n, spec.embed_dim)
    assert scores.dtype == torch.float32 and embedding.dtype == torch.float32
    assert torch.isfinite(scores).all() and torch.isfinite(embedding).all()
    if spec.task in ("multiclass", "binary"):
        assert ((scores >= 0) & (scores <= 1)).all()
        torch.testing.assert_close(scores.sum(dim=1), torch.ones(n), atol=1e-5, rtol=0)
    elif spec.task == "multilabel":
        assert ((scores >= 0) & (scores <= 1)).all()


def check_gradients(spec, model: FusedModel) -> None:
    """Forward + backward in train mode: every part gets a finite, non-zero gradient.

    With two or more modalities every single parameter tensor must get one; with one
    modality a gate over modalities is legitimately constant (a softmax over one entry),
    so there each part as a whole must.
    """
    torch.manual_seed(0)
    model.train()
    inputs = make_inputs(spec)
    # Mixed rows: all present, and each modality missing somewhere, so the placeholders
    # are on the gradient path too (a single-modality model keeps one row without it).
    present = torch.ones(N, len(spec.modalities), dtype=torch.bool)
    for j in range(len(spec.modalities)):
        present[1 + j % (N - 1), j] = False
    logits, embedding = model.logits_and_embedding(inputs, present)
    assert logits.shape[0] == N and embedding.shape == (N, spec.embed_dim)
    loss = model.loss(logits, make_targets(spec))
    assert torch.isfinite(loss)
    loss.backward()
    groups = {f"encoders.{m}": model.encoders[m] for m in spec.modalities}
    groups.update(fusion=model.fusion, head=model.head)
    for group, module in groups.items():
        params = list(module.named_parameters())
        assert params, f"{group} has no parameters"
        for name, p in params:
            assert p.grad is not None, f"{group}.{name} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{group}.{name} has a non-finite gradient"
            if len(spec.modalities) > 1:
                assert p.grad.abs().sum() > 0, f"{group}.{name} has an all-zero gradient"
        assert sum(p.grad.abs().sum() for _, p in params) > 0, f"{group} got no gradient"
    # A fusion may mask placeholders out (attention does), so only finiteness is general.
    assert model.placeholders.grad is not None
    assert torch.isfinite(model.placeholders.grad).all()


def check_missing_modalities(spec, model: FusedModel) -> None:
    """Every subset of modalities (none included) predicts; absent inputs are ignored."""
    model.eval()
    m = len(spec.modalities)
    present = all_subsets(m)
    n = present.shape[0]
    with torch.no_grad():
        scores, embedding = call(model, make_inputs(spec, n), present)
        check_scores(spec, scores, embedding, n)
        # One sample alone with nothing present.
        one = call(model, make_inputs(spec, 1), torch.zeros(1, m, dtype=torch.bool))
        check_scores(spec, *one, 1)

        base = make_inputs(spec, 4, seed=10)
        other = make_inputs(spec, 4, seed=11)
        for j, modality in enumerate(spec.modalities):
            changed = dict(base)
            changed[modality] = other[modality]
            absent = torch.ones(4, m, dtype=torch.bool)
            absent[:, j] = False
            before, after = call(model, base, absent), call(model, changed, absent)
            assert torch.equal(before[0], after[0]), f"absent {modality} changed the scores"
            assert torch.equal(before[1], after[1]), f"absent {modality} changed the embedding"
            full = torch.ones(4, m, dtype=torch.bool)
            before, after = call(model, base, full), call(model, changed, full)
            moved = (before[1] - after[1]).abs().amax(dim=1)
            assert (moved > 1e-6).all(), f"present {modality} did not change the embedding"


def build(spec) -> FusedModel:
    torch.manual_seed(0)
    model = FusedModel(spec)
    # Distinct placeholders, as after training (they start at zero).
    with torch.no_grad():
        model.placeholders.normal_()
    return model


@pytest.mark.parametrize(
    ("image", "audio", "text"), ENCODER_COMBOS, ids=["-".join(c) for c in ENCODER_COMBOS]
)
def test_every_encoder_combination(image: str, audio: str, text: str) -> None:
    spec = tiny_spec(image_encoder=image, audio_encoder=audio, text_encoder=text)
    model = build(spec)
    model.eval()
    with torch.no_grad():
        scores, embedding = call(model, make_inputs(spec), torch.ones(N, 3, dtype=torch.bool))
    check_scores(spec, scores, embedding, N)
    check_gradients(spec, build(spec))
    check_missing_modalities(spec, build(spec))


@pytest.mark.parametrize("head", HEADS.names())
@pytest.mark.parametrize("fusion", FUSIONS.names())
def test_every_fusion_and_head(fusion: str, head: str) -> None:
    task = head if head in TASKS else "multiclass"
    spec = tiny_spec(
        task=task,
        fusion=fusion,
        head_params={"target_mean": 100.0, "target_std": 10.0} if task == "regression" else {},
    )
    model = build(spec)
    model.eval()
    inputs = make_inputs(spec)
    present = torch.ones(N, 3, dtype=torch.bool)
    with torch.no_grad():
        scores, embedding = call(model, inputs, present)
        logits, _ = model.logits_and_embedding(inputs, present)
    check_scores(spec, scores, embedding, N)
    if task == "binary":
        # One logit; the columns are [P(labels[0]), P(labels[1])].
        assert logits.shape == (N, 1)
        torch.testing.assert_close(scores[:, 1], torch.sigmoid(logits[:, 0]))
    if task == "regression":
        # Scores are in the target's own units: logits are standardised targets.
        torch.testing.assert_close(scores, logits * 10.0 + 100.0)
    check_gradients(spec, build(spec))
    check_missing_modalities(spec, build(spec))


SUBSETS = [("image", "audio"), ("image", "text"), ("audio",), ("text",)]


@pytest.mark.parametrize("modalities", SUBSETS, ids=["+".join(s) for s in SUBSETS])
@pytest.mark.parametrize("fusion", FUSIONS.names())
def test_modality_subsets_of_the_spec(modalities: tuple[str, ...], fusion: str) -> None:
    spec = tiny_spec(modalities=modalities, fusion=fusion)
    model = build(spec)
    assert set(model.encoders) == set(modalities)
    model.eval()
    with torch.no_grad():
        scores, embedding = call(
            model, make_inputs(spec), torch.ones(N, len(modalities), dtype=torch.bool)
        )
    check_scores(spec, scores, embedding, N)
    check_gradients(spec, build(spec))
    check_missing_modalities(spec, build(spec))


def test_forward_needs_every_input_of_the_spec() -> None:
    spec = tiny_spec(modalities=("image", "audio"))
    model = build(spec).eval()
    inputs = make_inputs(spec, 2)
    with pytest.raises(ValueError, match="audio"):
        model(image=inputs["image"], present=torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="present"):
        model(image=inputs["image"], audio=inputs["audio"])


def test_rows_do_not_influence_each_other_in_eval_mode() -> None:
    spec = tiny_spec(fusion="attention")
    model = build(spec).eval()
    inputs = make_inputs(spec, 4)
    present = all_subsets(3)[[7, 3, 5, 0]]
    with torch.no_grad():
        batch = call(model, inputs, present)
        first = call(model, {m: x[:1] for m, x in inputs.items()}, present[:1])
    torch.testing.assert_close(batch[0][:1], first[0], atol=1e-6, rtol=1e-5)


REGISTRIES = {
    **{f"{m} encoder": r for m, r in ENCODERS.items()},
    "fusion": FUSIONS,
    "head": HEADS,
}


@pytest.mark.parametrize("kind", list(REGISTRIES))
def test_unknown_registry_name_lists_the_registered_ones(kind: str) -> None:
    registry = REGISTRIES[kind]
    assert registry.names(), f"no {kind} is registered"
    with pytest.raises(ValueError, match="no_such_part") as info:
        registry.create("no_such_part")
    message = str(info.value)
    assert kind in message
    for name in registry.names():
        assert repr(name) in message


def test_wrong_keyword_arguments_name_the_part() -> None:
    with pytest.raises(ValueError, match="'concat' does not accept") as info:
        FUSIONS.create("concat", num_modalities=2, embed_dim=8, no_such_option=1)
    assert isinstance(info.value.__cause__, TypeError)


def test_registering_a_name_twice_is_refused() -> None:
    registry = Registry("widget")
    registry.register("a")(dict)
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("a")(list)


@pytest.mark.parametrize("part", ["fusion", "image", "head"])
def test_model_with_an_unknown_part_is_refused(part: str) -> None:
    spec = tiny_spec()
    from fusionedge.spec import ComponentSpec

    if part == "fusion":
        spec = spec.replace(fusion=ComponentSpec("nope"))
        names = FUSIONS.names()
    elif part == "head":
        spec = spec.replace(head=ComponentSpec("nope"))
        names = HEADS.names()
    else:
        spec = spec.replace(encoders={**spec.encoders, "image": ComponentSpec("nope")})
        names = ENCODERS["image"].names()
    with pytest.raises(ValueError, match="'nope'") as info:
        FusedModel(spec)
    for name in names:
        assert name in str(info.value)


@pytest.mark.parametrize(
    ("key", "registry"),
    [
        ("model.fusion", FUSIONS),
        ("model.image_encoder", ENCODERS["image"]),
        ("model.audio_encoder", ENCODERS["audio"]),
        ("model.text_encoder", ENCODERS["text"]),
    ],
)
def test_build_spec_refuses_unknown_part_names(key: str, registry, tmp_path) -> None:
    from fusionedge.manifest import read_manifest
    from fusionedge.training.build import build_spec

    data = write_dataset(tmp_path, per_split={"train": 2})
    manifest = read_manifest(data)
    with pytest.raises(SpecError, match=key.replace(".", r"\.")) as info:
        build_spec(manifest, tiny_config(f"{key}=nope"), manifest.split("train"))
    for name in registry.names():
        assert name in str(info.value)


def test_heads_refuse_impossible_settings() -> None:
    with pytest.raises(ValueError, match="two labels"):
        HEADS.create("binary", embed_dim=4, num_outputs=3)
    with pytest.raises(ValueError, match="target_std"):
        HEADS.create("regression", embed_dim=4, num_outputs=1, target_std=0.0)


@pytest.mark.parametrize("fusion", ["concat", "sum", "gated"])
def test_placeholders_learn_where_the_fusion_sees_them(fusion: str) -> None:
    spec = tiny_spec(fusion=fusion)
    model = build(spec).train()
    inputs = make_inputs(spec)
    present = torch.ones(N, 3, dtype=torch.bool)
    present[:, 1] = False  # audio missing everywhere
    logits, _ = model.logits_and_embedding(inputs, present)
    model.loss(logits, make_targets(spec)).backward()
    grad = model.placeholders.grad
    assert grad[1].abs().sum() > 0, "the missing modality's placeholder got no gradient"
    assert grad[[0, 2]].abs().sum() == 0, "placeholders of present modalities got gradient"


def test_placeholders_are_what_the_fusion_sees_for_missing_modalities() -> None:
    spec = tiny_spec()
    model = build(spec).eval()
    encoded = torch.randn(2, 3, spec.embed_dim)
    present = torch.tensor([[True, False, True], [False, False, False]])
    seen = {}
    model.fusion.register_forward_hook(lambda mod, args, out: seen.update(tokens=args[0]))
    with torch.no_grad():
        model.fuse(encoded, present)
    tokens = seen["tokens"]
    np.testing.assert_array_equal(tokens[0, 0], encoded[0, 0])
    np.testing.assert_array_equal(tokens[0, 1], model.placeholders[1].detach())
    np.testing.assert_array_equal(tokens[1], model.placeholders.detach())
