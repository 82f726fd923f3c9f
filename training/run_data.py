"""The data of one training run: the manifest's splits, checked, decoded to arrays."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusionedge.arrays import SampleArrays, load_arrays
from fusionedge.decoded import decoded_bytes, write_decoded
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
    data: str | Path,
    config: TrainConfig,
    ctx: DistContext,
    spec: ModelSpec | None,
    scratch: Path,
) -> RunData:
    """Reads, checks and decodes the data set; spec is the resumed run's, or None.

    The splits are decoded into memory, or into files in scratch when they are larger
    than config.data_in_memory_mb (see decoding_scratch).

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
    size = decoded_bytes(spec, len(train_records) + len(val_records))
    if size <= config.data_in_memory_mb * 2**20:
        where = "in memory"
        train = load_arrays(train_records, spec, manifest.path)
        val = load_arrays(val_records, spec, manifest.path)
    else:
        where = f"to {scratch} (over data_in_memory_mb={config.data_in_memory_mb:g})"
        train = write_decoded(train_records, spec, manifest.path, scratch / "train")
        val = write_decoded(val_records, spec, manifest.path, scratch / "val")
    log.info(
        "decoded %d train + %d val samples (%.2f GB) %s in %.1f s",
        len(train),
        len(val),
        size / 1e9,
        where,
        time.perf_counter() - t0,
    )
    weights = class_weights(config, spec, train.targets)
    return RunData(manifest.path, spec, train, val, val_groups, weights)


@contextlib.contextmanager
def decoding_scratch(run_dir: Path) -> Iterator[Path]:
    """A folder beside the run folder for data decoded to disk (created only when used),
    removed when the block ends however it ends. Beside it, not in /tmp: /tmp is often
    a RAM disk, and the point is to keep the data out of memory. The process id keeps
    the ranks of a distributed run apart."""
    scratch = run_dir.parent / f".{run_dir.name}.decoded-{os.getpid()}"
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
