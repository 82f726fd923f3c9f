"""Training on data decoded to disk (fusionedge.decoded): the same run as in memory."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from support import read_log, read_weights, tiny_config, write_dataset

from fusionedge.arrays import load_arrays
from fusionedge.decoded import write_decoded
from fusionedge.manifest import ManifestError, read_manifest
from fusionedge.training import run_data
from fusionedge.training.build import build_spec
from fusionedge.training.trainer import train

DEFAULT_AUGMENT = ("augment.audio.gain_db=12", "augment.image.zoom_out=0.6")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("decoded") / "data", {"train": 6, "val": 2})


def test_decoded_to_disk_reads_back_what_load_arrays_decodes(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = read_manifest(dataset)
    records = manifest.split("train")
    spec = build_spec(manifest, tiny_config(), records)
    # Chunks of 5 samples: the files are written in several appends.
    monkeypatch.setattr("fusionedge.decoded.CHUNK_BYTES", 5)
    monkeypatch.setattr("fusionedge.decoded.row_bytes", lambda spec: 1)
    memory = load_arrays(records, spec, manifest.path)
    disk = write_decoded(records, spec, manifest.path, tmp_path / "train")
    assert disk.ids == memory.ids
    assert np.array_equal(disk.present, memory.present)
    assert np.array_equal(disk.targets, memory.targets)
    order = np.random.default_rng(0).permutation(len(records))
    for key, rows in disk.rows(order).items():
        assert np.array_equal(rows, memory.rows(order)[key]), key
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == [
        "audio.raw",
        "image.raw",
        "tokens.raw",
    ]


def test_every_undecodable_file_is_named_across_chunks(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "data"
    shutil.copytree(dataset, copy)
    manifest = read_manifest(copy)
    records = manifest.split("train")
    spec = build_spec(manifest, tiny_config(), records)
    broken = [records[1], records[-1]]  # in the first chunk and the last
    for r in broken:
        r.image.write_bytes(b"not a png")
    monkeypatch.setattr("fusionedge.decoded.CHUNK_BYTES", 4)
    monkeypatch.setattr("fusionedge.decoded.row_bytes", lambda spec: 1)
    with pytest.raises(ManifestError) as caught:
        write_decoded(records, spec, manifest.path, tmp_path / "train")
    assert sorted(p.line for p in caught.value.problems) == sorted(r.line for r in broken)


def test_a_run_on_disk_equals_the_run_in_memory(
    dataset: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    extra = (*DEFAULT_AUGMENT, "epochs=3", "seed=5")
    caplog.set_level("INFO", logger="fusionedge.training.run_data")
    in_memory = train(dataset, tmp_path / "memory", tiny_config(*extra), progress=False)
    assert "in memory" in caplog.text
    caplog.clear()
    on_disk = train(
        dataset, tmp_path / "disk", tiny_config(*extra, "data_in_memory_mb=0"), progress=False
    )
    assert f"to {tmp_path / '.disk.decoded-'}" in caplog.text
    assert in_memory.best_metrics == on_disk.best_metrics
    a = read_weights(tmp_path / "memory" / "best.safetensors")
    b = read_weights(tmp_path / "disk" / "best.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    for row_a, row_b in zip(
        read_log(tmp_path / "memory"), read_log(tmp_path / "disk"), strict=True
    ):
        assert row_a["train_loss"] == row_b["train_loss"]
    # The decoded files went with the run; nothing is left beside the run folder.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk", "memory"]


def test_the_scratch_folder_goes_when_training_fails(tmp_path: Path) -> None:
    with (
        pytest.raises(RuntimeError, match="stopped"),
        run_data.decoding_scratch(tmp_path / "run") as scratch,
    ):
        (scratch / "train").mkdir(parents=True)
        (scratch / "train" / "image.raw").write_bytes(b"x" * 10)
        raise RuntimeError("stopped")
    assert list(tmp_path.iterdir()) == []
