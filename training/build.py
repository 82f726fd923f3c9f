"""From a data set and a training config to a ModelSpec (and from a spec to a model)."""

from __future__ import annotations

import numpy as np

from fusionedge.manifest import Manifest, Record
from fusionedge.spec import ComponentSpec, ModelSpec, SpecError, TextSpec
from fusionedge.tokenizer import learn_tokenizer
from fusionedge.training import bert, pretrained
from fusionedge.training.config import TrainConfig
from fusionedge.training.registry import ENCODERS, FUSIONS


def infer_task(manifest: Manifest, requested: str) -> str:
    """The task the labels allow, checked against what the config asks for."""
    natural = {"class": "multiclass", "multilabel": "multilabel", "number": "regression"}
    if manifest.label_kind not in natural:
        raise SpecError(f"{manifest.path}: training needs labels; none found")
    task = natural[manifest.label_kind]
    if task == "multiclass" and len(manifest.classes) == 2 and requested in ("auto", "binary"):
        task = "binary"
    if requested not in ("auto", task) and not (requested == "multiclass" and task == "binary"):
        raise SpecError(
            f"model.task: {requested!r} does not fit {manifest.label_kind} labels "
            f"of {manifest.path}; use 'auto' or {task!r}"
        )
    return task if requested == "auto" else requested


def build_spec(manifest: Manifest, config: TrainConfig, train: list[Record]) -> ModelSpec:
    """The spec of a model for this data set: its modalities, labels, task and parts.

    The tokenizer is learned from the training split's text only, so nothing of the
    validation or test text leaks into the model; a pretrained text encoder brings its
    own (training/bert.py), and its folder's architecture goes into the spec.
    """
    modalities = manifest.modalities
    task = infer_task(manifest, config.model.task)
    mc = config.model
    names = {"image": mc.image_encoder, "audio": mc.audio_encoder, "text": mc.text_encoder}
    for m in modalities:
        if names[m] not in ENCODERS[m]:
            raise SpecError(
                f"model.{m}_encoder: unknown {names[m]!r}; registered: {ENCODERS[m].names()}"
            )
    if mc.fusion not in FUSIONS:
        raise SpecError(f"model.fusion: unknown {mc.fusion!r}; registered: {FUSIONS.names()}")
    encoders = {m: ComponentSpec(names[m], dict(mc.encoder_params.get(m, {}))) for m in modalities}
    head_params = dict(mc.head_params)
    if task == "regression":
        values = np.array([r.label for r in train], dtype=np.float64)
        head_params.setdefault("target_mean", float(values.mean()))
        head_params.setdefault("target_std", float(values.std()) or 1.0)
        labels: tuple[str, ...] = ("value",)
    else:
        labels = manifest.classes
    text = None
    if "text" in modalities and names["text"] == bert.NAME:
        if config.augment.text.enabled:
            raise SpecError(
                "augment.text: typos and token dropout work on the char tokenizer's ids; "
                f"turn them off with model.text_encoder={bert.NAME}"
            )
        params, tokenizer = pretrained.prepare_params(encoders["text"].params)
        encoders["text"] = ComponentSpec(names["text"], params)
        text = TextSpec(max_length=config.text_max_length, tokenizer=tokenizer)
    elif "text" in modalities:
        texts = [r.text for r in train if r.text is not None]
        text = TextSpec(max_length=config.text_max_length, tokenizer=learn_tokenizer(texts))
    return ModelSpec(
        modalities=modalities,
        labels=labels,
        task=task,  # type: ignore[arg-type]
        encoders=encoders,
        fusion=ComponentSpec(mc.fusion, dict(mc.fusion_params)),
        head=ComponentSpec(task, head_params),
        embed_dim=mc.embed_dim,
        image=config.image if "image" in modalities else None,
        audio=config.audio if "audio" in modalities else None,
        text=text,
    )
