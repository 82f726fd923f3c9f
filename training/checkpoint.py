"""Checkpoints: one safetensors file each, with the spec and training state as JSON metadata.

No pickle anywhere: tensors (weights, optimiser moments, the torch RNG state) are
safetensors entries; everything else (the spec, epoch counters, optimiser hyper-parameters)
is JSON in the file's metadata. Writes go to a temporary file that is fsynced and then
renamed over the old one, so a run killed at any instant leaves either the previous
checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from fusionedge.contract import SPEC_KEY
from fusionedge.spec import ModelSpec, SpecError, load_json

if TYPE_CHECKING:
    from fusionedge.training.model import FusedModel

FORMAT = "fusionedge.checkpoint/1"


class CheckpointError(ValueError):
    """A file is not a fusionedge checkpoint, or does not fit the model."""


@dataclass
class Checkpoint:
    spec: ModelSpec
    model: dict[str, torch.Tensor]
    state: dict[str, Any]
    optimizer: dict[str, Any] | None = None
    rng: torch.Tensor | None = None
    ema: dict[str, torch.Tensor] | None = None


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Writes data to path so that readers see the old file or the new one, never a mix.

    The new file's mode follows the umask, as open() would give it (0644 under umask 022).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _create_temporary(path: Path) -> tuple[int, Path]:
    """A new hidden file beside path, created 0o666 so that the kernel applies the umask.

    Not tempfile.mkstemp: it creates 0600 whatever the umask, so run folders and export
    reports came out private. Reading the umask to chmod instead means os.umask(0) and
    back, which changes it for every thread in between (/proc/self/status is Linux only).
    O_EXCL with a random name is what mkstemp does, without the fixed mode.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue  # another writer drew the same name: draw again


def save_checkpoint(
    path: Path,
    spec: ModelSpec,
    model: torch.nn.Module,
    state: dict[str, Any] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    ema: torch.nn.Module | None = None,
) -> None:
    """Saves weights (and, for resuming, optimiser, weight-average and RNG state) to one
    safetensors file."""
    from safetensors.torch import save

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update(
            {f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.state_dict().items()}
        )
    meta = {
        "format": FORMAT,
        SPEC_KEY: spec.to_json(indent=None),
        "state": json.dumps(state or {}),
    }
    if optimizer is not None:
        opt = optimizer.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for index, values in opt["state"].items():
            for key, value in values.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optim.{index}.{key}"] = value.detach().cpu().contiguous()
                else:
                    scalars.setdefault(str(index), {})[key] = value
        meta["optimizer"] = json.dumps({"param_groups": opt["param_groups"], "scalars": scalars})
        tensors["rng.torch"] = torch.get_rng_state()
    atomic_write_bytes(Path(path), save(tensors, metadata=meta))


def load_checkpoint(path: Path) -> Checkpoint:
    """Reads a checkpoint written by save_checkpoint.

    Raises:
        CheckpointError: the file is not a safetensors file or not a fusionedge checkpoint.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({e})") from e
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a fusionedge checkpoint (metadata format is "
            f"{meta.get('format')!r}, expected {FORMAT!r})"
        )
    if SPEC_KEY not in meta:
        raise CheckpointError(
            f"{path}: checkpoint metadata has no '{SPEC_KEY}'; the "
            "file is damaged or was not written by fusionedge"
        )
    spec = _read_spec(path, meta[SPEC_KEY])
    model = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    optimizer = _optimizer_state(path, meta, tensors) if "optimizer" in meta else None
    ema = {k[len("ema.") :]: v for k, v in tensors.items() if k.startswith("ema.")}
    return Checkpoint(
        spec,
        model,
        _json_object(path, meta, "state"),
        optimizer,
        tensors.get("rng.torch"),
        ema or None,
    )


def _read_spec(path: Path, text: str) -> ModelSpec:
    try:
        return ModelSpec.from_json(text)
    except SpecError as e:
        raise CheckpointError(f"{path}: its spec ('{SPEC_KEY}') cannot be read: {e}") from e


def _json_object(path: Path, meta: dict[str, str], key: str) -> dict[str, Any]:
    """A metadata entry that holds a JSON object (an absent one is empty)."""
    try:
        value = load_json(meta.get(key, "{}"), f"metadata '{key}'")
    except SpecError as e:
        raise CheckpointError(f"{path}: {e}") from e
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: metadata '{key}' is not a JSON object")
    return value


def _optimizer_state(
    path: Path, meta: dict[str, str], tensors: dict[str, torch.Tensor]
) -> dict[str, Any]:
    """The optimiser's state_dict from its tensors ("optim.<index>.<name>") and the JSON
    of its hyper-parameters and scalars; a damaged entry is a CheckpointError."""
    opt_meta = _json_object(path, meta, "optimizer")
    state: dict[int, dict[str, Any]] = {}
    try:
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, index, name = key.split(".", 2)
                state.setdefault(int(index), {})[name] = value
        for index, values in opt_meta["scalars"].items():
            state.setdefault(int(index), {}).update(values)
        return {"state": state, "param_groups": opt_meta["param_groups"]}
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{path}: the optimiser state is damaged ({e!r})") from e


def load_model(path: Path, device: str | torch.device = "cpu") -> FusedModel:
    """Builds the model from the checkpoint's spec and loads its weights (eval mode)."""
    from fusionedge.training.model import FusedModel

    ckpt = load_checkpoint(path)
    model = FusedModel(ckpt.spec)
    try:
        model.load_state_dict(ckpt.model)
    except RuntimeError as e:
        raise CheckpointError(
            f"{path}: weights do not fit the model its spec describes: {e}"
        ) from e
    return model.to(device).eval()
