"""The data of one training run: the manifest's splits, checked, decoded to arrays."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusionedge.arrays import SampleArrays, load_arrays
from fusionedge.manifest import (
    Manifest,
    ManifestError,
    Record,
    group_overlap,
    hold_out,
    missing_classes,
    read_manifest,
)
from fusionedge.spec import ModelSpec
from fusionedge.training import distributed
from fusionedge.training.balance import check_balance_options, class_weights
from fusionedge.training.build import build_spec
from fusionedge.training.config import TrainConfig
from fusionedge.training.distributed import DistContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunData:
    """Attributes:
    manifest_path: The data set's manifest.jsonl.
    spec: The model's spec (built from the training split, or the resumed run's).
    train, val: The decoded splits.
    val_groups: How many val groups training also saw (manifest.group_overlap).
    loss_weights: Class weights of the loss (training/balance.py), or None.
    """

    manifest_path: Path
    spec: ModelSpec
    train: SampleArrays
    val: SampleArrays
    val_groups: dict[str, int]
    loss_weights: np.ndarray | None


def training_splits(manifest: Manifest) -> tuple[list[Record], list[Record]]:
    """The train and val records; without a val split, a held-out tenth of train."""
    train_records, val_records = manifest.split("train"), manifest.split("val")
    if not train_records:
        raise ManifestError(f"{manifest.path}: no samples in the train split")
    if not val_records:
        # Without a validation split early stopping and "best" have nothing to go on;
        # hold out a deterministic tenth of the training samples instead.
        train_records, val_records = hold_out(train_records)
        log.warning(
            "no val split in %s: holding out %d of the training samples (whole groups "
            "when the lines have a `group`)",
            manifest.path,
            len(val_records),
        )
    return train_records, val_records


def warn_about_splits(manifest: Manifest, train: list[Record], val_groups: dict[str, int]) -> None:
    """Labels training never sees, and val groups that training does see."""
    unseen = missing_classes(manifest, train)
    if unseen:
        log.warning(
            "no training sample has the label(s) %s: the model cannot learn them. With few "
            "groups, a whole label can hash into val or test; give those lines a `split`",
            ", ".join(map(repr, unseen)),
        )
    if val_groups["seen_in_train"]:
        log.warning(
            "%d of %d val groups (%d of %d val samples with a group) also occur in the train "
            "split: validation, early stopping and best.safetensors then reward knowing those "
            "speakers or sessions, not handling new ones. Keep each group in one split: leave "
            "`split` out of the lines (the hash of their `group` picks one) or set it per group",
            val_groups["seen_in_train"],
            val_groups["n_groups"],
            val_groups["samples_in_seen_groups"],
            val_groups["n_samples"],
        )


def load_run_data(
    data: str | Path, config: TrainConfig, ctx: DistContext, spec: ModelSpec | None
) -> RunData:
    """Reads, checks and decodes the data set; spec is the resumed run's, or None.

    Raises:
        ManifestError: the data set has problems.
        ValueError: the balance options do not fit the task.
    """
    manifest = read_manifest(data)
    train_records, val_records = training_splits(manifest)
    val_groups = group_overlap(train_records, val_records)
    if ctx.is_main:
        warn_about_splits(manifest, train_records, val_groups)
    distributed.check_size(len(train_records), ctx)
    spec = spec or build_spec(manifest, config, train_records)
    # Refused before decoding and before the run folder is made.
    check_balance_options(config, spec)
    t0 = time.perf_counter()
    train = load_arrays(train_records, spec, manifest.path)
    val = load_arrays(val_records, spec, manifest.path)
    log.info(
        "decoded %d train + %d val samples in %.1f s",
        len(train),
        len(val),
        time.perf_counter() - t0,
    )
    weights = class_weights(config, spec, train.targets)
    return RunData(manifest.path, spec, train, val, val_groups, weights)
