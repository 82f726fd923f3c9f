"""evaluation.pick_split: which samples every measurement takes (the split, a limit, labels)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import write_dataset

from fusionedge.evaluation import pick_split
from fusionedge.manifest import ManifestError, read_manifest

# Per class and split (3 classes): 30 train, 6 test and no val lines.
PER_SPLIT = {"train": 10, "test": 2}


def dataset(root: Path, per_split: dict[str, int] | None = None) -> Path:
    """A small real data set (4x4 PNGs only, to write fast)."""
    return write_dataset(root, per_split or PER_SPLIT, modalities=("image",), image_size=(4, 4))


def rewrite(root: Path, change: Callable[[int, dict[str, Any]], dict[str, Any]]) -> None:
    """Rewrites every manifest line i as change(i, line)."""
    path = root / "manifest.jsonl"
    lines = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
    text = "".join(json.dumps(change(i, x)) + "\n" for i, x in enumerate(lines))
    path.write_text(text, encoding="utf-8")


def ids(records) -> list[str]:
    return [r.id for r in records]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return dataset(tmp_path_factory.mktemp("pick_split"))


def test_one_split_gives_its_records_in_manifest_order(data: Path) -> None:
    manifest, split, records = pick_split(data, ["test"])
    assert split == "test"
    assert manifest.path == data / "manifest.jsonl"
    assert ids(records) == [r.id for r in manifest.records if r.split == "test"]
    assert len(records) == 6
    assert ids(pick_split(data, ["all"])[2]) == ids(manifest.records)


def test_the_first_non_empty_split_of_several_is_taken(data: Path) -> None:
    # val has no lines: skipped; of two non-empty splits the first named wins.
    _, split, records = pick_split(data, ["val", "test", "train"])
    assert split == "test" and {r.split for r in records} == {"test"}
    _, split, records = pick_split(data, ["val", "train", "test"])
    assert split == "train" and len(records) == 30
    assert pick_split(data, ["train", "test"])[1] == "train"


def test_a_limit_without_a_seed_takes_the_first_records(data: Path) -> None:
    everything = ids(pick_split(data, ["train"])[2])
    assert ids(pick_split(data, ["train"], limit=5)[2]) == everything[:5]
    assert ids(pick_split(data, ["train"], limit=5, seed=None)[2]) == everything[:5]
    # A limit at or above the split's size takes it all, seeded or not.
    assert ids(pick_split(data, ["train"], limit=30, seed=3)[2]) == everything
    assert ids(pick_split(data, ["train"], limit=100)[2]) == everything


def test_a_limit_with_a_seed_draws_reproducibly_in_manifest_order(data: Path) -> None:
    everything = ids(pick_split(data, ["train"])[2])
    draws = {seed: ids(pick_split(data, ["train"], limit=8, seed=seed)[2]) for seed in (0, 1, 2)}
    for seed, drawn in draws.items():
        assert len(drawn) == len(set(drawn)) == 8
        assert set(drawn) <= set(everything)
        assert drawn == [i for i in everything if i in drawn]  # kept in manifest order
        assert drawn != everything[:8]  # a draw, not the first records
        assert ids(pick_split(data, ["train"], limit=8, seed=seed)[2]) == drawn  # reproducible
    assert len({tuple(d) for d in draws.values()}) == 3  # different seeds, different draws


def test_a_seeded_draw_comes_from_the_split_that_was_picked(data: Path) -> None:
    _, split, records = pick_split(data, ["val", "test"], limit=4, seed=0)
    assert split == "test" and len(records) == 4 and {r.split for r in records} == {"test"}


def test_unlabelled_lines_are_refused_when_labels_are_required(tmp_path: Path) -> None:
    root = dataset(tmp_path)
    rewrite(root, lambda i, line: {k: v for k, v in line.items() if k != "label" or i % 4})
    with pytest.raises(ManifestError) as info:
        pick_split(root, ["train"])
    message = str(info.value)
    assert "manifest.jsonl:1: label: required" in message
    assert all(p.field == "label" for p in info.value.problems)
    assert len(info.value.problems) == 9  # lines 1, 5, 9, ...: every one named
    with pytest.raises(ManifestError, match="label: required"):
        pick_split(root, ["train"], require_labels=True)
    # Not required: the lines are taken, without labels.
    manifest, split, records = pick_split(root, ["train"], require_labels=False)
    assert split == "train" and len(records) == 30
    assert records[0].label is None and records[1].label is not None
    assert manifest.records == read_manifest(root, require_labels=False).records


def test_an_empty_split_names_itself_and_the_data_set(data: Path) -> None:
    manifest_path = data / "manifest.jsonl"
    with pytest.raises(ValueError) as info:
        pick_split(data, ["val"])
    message = str(info.value)
    assert message.startswith(f"{manifest_path}: ")
    assert "the 'val' split is empty" in message
    assert "group" not in message  # no groups in this data set: no hint about them


def test_an_empty_split_of_a_grouped_data_set_says_why(tmp_path: Path) -> None:
    root = dataset(tmp_path, {"train": 4})
    rewrite(root, lambda i, line: line | {"group": f"speaker{i % 2}"})
    with pytest.raises(ValueError, match=r"the 'test' split is empty; .*explicit split") as info:
        pick_split(root, ["test"])
    assert str(root / "manifest.jsonl") in str(info.value)


def test_no_samples_in_any_of_several_splits_lists_them(tmp_path: Path) -> None:
    root = dataset(tmp_path, {"train": 2})
    expected = f"{root / 'manifest.jsonl'}: no samples in any of the splits ['val', 'test']"
    for limit, seed in ((None, None), (3, 0)):
        with pytest.raises(ValueError) as info:
            pick_split(root, ["val", "test"], limit=limit, seed=seed)
        assert str(info.value) == expected


def test_an_unknown_split_name_is_refused(data: Path) -> None:
    with pytest.raises(ValueError, match=r"split must be one of .*'all'.*got 'validation'"):
        pick_split(data, ["validation"])


@pytest.mark.parametrize("limit", [0, -3])
def test_a_limit_below_one_is_refused_before_reading(limit: int, tmp_path: Path) -> None:
    """Not "the split is empty" (it is not), nor records[:-3] silently."""
    with pytest.raises(ValueError, match=rf"limit: expected .* at least 1 or None, got {limit}"):
        pick_split(tmp_path / "no-such-data", ["test"], limit=limit)
