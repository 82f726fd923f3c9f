"""Reading a Hugging Face BERT model folder for the hf_bert text encoder (training/bert.py).

Twice, and only while a training run starts: `prepare_params` (from build_spec) turns
the user's {"path", "freeze"} into the spec's parameters (the architecture from
config.json, pooling and normalisation from the sentence-transformers files) and the
wordpiece tokenizer from vocab.txt; `load_pretrained` (from the trainer, for a new run)
copies the weights in. Weights are read from model.safetensors, or from
pytorch_model.bin with torch.load(weights_only=True): plain tensors, never arbitrary
pickled objects.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fusionedge.spec import SpecError, TokenizerSpec, load_json
from fusionedge.training.bert import NAME, BertArchitecture, PretrainedText
from fusionedge.training.checkpoint import CheckpointError

log = logging.getLogger(__name__)


def _load_json(path: Path) -> Any:
    """A model folder's JSON file; unreadable, not UTF-8, malformed or absurdly nested
    JSON is a SpecError naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, ValueError) as e:  # ValueError: UnicodeDecodeError
        raise SpecError(f"{path}: not readable JSON ({e})") from e
    try:
        return load_json(text, str(path))
    except SpecError as e:
        raise SpecError(f"{path}: not readable JSON ({e})") from e


def _read_json(path: Path) -> dict[str, Any]:
    data = _load_json(path)
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a JSON object")
    return data


def _folder(path: str | Path) -> Path:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise SpecError(
            f"model.encoder_params.text.path: {str(path)!r} is not a folder; expected a "
            "Hugging Face BERT model folder (config.json, vocab.txt, model.safetensors)"
        )
    missing = [n for n in ("config.json", "vocab.txt") if not (folder / n).is_file()]
    if not any((folder / n).is_file() for n in ("model.safetensors", "pytorch_model.bin")):
        missing.append("model.safetensors (or pytorch_model.bin)")
    if missing:
        raise SpecError(f"{folder}: a Hugging Face BERT folder needs {', '.join(missing)}")
    return folder


def _sentence_settings(folder: Path) -> tuple[str, bool]:
    """Pooling and normalisation as the folder's sentence-transformers files say."""
    pooling = "mean"
    pool_file = folder / "1_Pooling" / "config.json"
    if pool_file.is_file():
        cfg = _read_json(pool_file)
        if cfg.get("pooling_mode_cls_token"):
            pooling = "cls"
        elif not cfg.get("pooling_mode_mean_tokens", True):
            modes = sorted(k for k, v in cfg.items() if k.startswith("pooling_mode") and v)
            raise SpecError(f"{pool_file}: pooling {modes}; the {NAME} encoder pools mean or cls")
    normalize = False
    modules_file = folder / "modules.json"
    if modules_file.is_file():
        modules = _load_json(modules_file)
        if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
            raise SpecError(f"{modules_file}: expected a JSON list of module objects")
        normalize = any(str(m.get("type", "")).endswith(".Normalize") for m in modules)
    return pooling, normalize


def read_tokenizer(folder: Path) -> TokenizerSpec:
    """The wordpiece spec from vocab.txt, lower-casing as tokenizer_config.json says."""
    from fusionedge.wordpiece import read_vocab

    cfg_file = folder / "tokenizer_config.json"
    cfg = _read_json(cfg_file) if cfg_file.is_file() else {}
    lowercase = cfg.get("do_lower_case", True)  # BertTokenizer's default
    strip = cfg.get("strip_accents")
    if strip is not None and strip != lowercase:
        raise SpecError(
            f"{cfg_file}: strip_accents={strip} with do_lower_case={lowercase}; the wordpiece "
            "tokenizer strips accents exactly when it lower-cases"
        )
    if not cfg.get("tokenize_chinese_chars", True):
        raise SpecError(f"{cfg_file}: tokenize_chinese_chars=false is not supported")
    try:
        return read_vocab(folder / "vocab.txt", lowercase=bool(lowercase))
    except ValueError as e:
        raise SpecError(str(e)) from e


def prepare_params(params: dict[str, Any]) -> tuple[dict[str, Any], TokenizerSpec]:
    """The user's {"path", "freeze", ...} -> the spec's parameters and the tokenizer.

    The architecture goes into the spec so that the model can be rebuilt from the spec
    alone; pooling and normalize come from the folder unless the user set them.

    Raises:
        SpecError: the folder is missing, lacks a file, or is not a BERT model.
    """
    if "path" not in params:
        raise SpecError(
            f"model.encoder_params.text.path: the {NAME} text encoder needs the folder of a "
            "Hugging Face BERT model, e.g. --set model.encoder_params.text.path=/models/"
            "all-MiniLM-L6-v2"
        )
    if "architecture" in params:
        raise SpecError(
            "model.encoder_params.text.architecture: read from the folder's config.json; "
            "do not set it"
        )
    folder = _folder(params["path"])
    arch = BertArchitecture.from_config(_read_json(folder / "config.json"), str(folder))
    pooling, normalize = _sentence_settings(folder)
    out = {"pooling": pooling, "normalize": normalize, **params}
    out["architecture"] = dataclasses.asdict(arch)
    return out, read_tokenizer(folder)


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The folder's tensors: model.safetensors, else pytorch_model.bin read with
    weights_only=True (plain tensors; no arbitrary objects are unpickled)."""
    st = folder / "model.safetensors"
    if st.is_file():
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(st))
        except (SafetensorError, OSError) as e:  # truncated, damaged, unreadable
            raise CheckpointError(f"{st}: not a readable safetensors file ({e})") from e
    binary = folder / "pytorch_model.bin"
    if not binary.is_file():
        raise CheckpointError(f"{folder}: no model.safetensors or pytorch_model.bin")
    try:
        state = torch.load(binary, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"{binary}: not a plain tensor file torch can load safely ({e})"
        ) from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{binary}: expected a dict of tensors, got {type(state).__name__}")
    return state


def bert_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face names -> this module's: drops a "bert." prefix (checkpoints of
    BertFor... heads), renames old LayerNorm gamma/beta, keeps embeddings and layers."""
    out = {}
    for key, value in tensors.items():
        key = key.removeprefix("bert.")
        key = key.replace("LayerNorm.gamma", "LayerNorm.weight")
        key = key.replace("LayerNorm.beta", "LayerNorm.bias")
        if key.startswith(("embeddings.", "encoder.")) and not key.endswith("position_ids"):
            out[key] = value
    return out


def load_pretrained(model: nn.Module) -> list[str]:
    """Copies each pretrained text encoder's weights in from its folder; returns the
    folders read. Called once, when a new training run starts.

    Raises:
        SpecError: the folder's config.json no longer describes the spec's architecture.
        CheckpointError: the folder's weights are unreadable or do not fit it.
    """
    read = []
    for module in model.modules():
        if not isinstance(module, PretrainedText) or module.source is None:
            continue
        folder = _folder(module.source)
        arch = BertArchitecture.from_config(_read_json(folder / "config.json"), str(folder))
        if arch != module.arch:
            raise SpecError(
                f"{folder}/config.json describes {arch}, but the spec was built for "
                f"{module.arch}; the folder changed after the run started"
            )
        state = bert_state(read_weights(folder))
        own = module.bert.state_dict()
        missing = sorted(set(own) - set(state))
        if missing:
            raise CheckpointError(
                f"{folder}: the weights lack {len(missing)} BERT tensors, e.g. {missing[:3]}"
            )
        wrong = [k for k in own if tuple(state[k].shape) != tuple(own[k].shape)]
        if wrong:
            k = wrong[0]
            raise CheckpointError(
                f"{folder}: {k} has shape {tuple(state[k].shape)}, the architecture needs "
                f"{tuple(own[k].shape)}"
            )
        module.bert.load_state_dict({k: state[k].float() for k in own})
        log.info("loaded the %s text encoder's weights from %s", NAME, folder)
        read.append(str(folder))
    return read
