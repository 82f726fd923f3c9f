"""read_manifest: every error names file, line and field; splits, modalities and classes."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from fusionedge.manifest import (
    MANIFEST_NAME,
    ManifestError,
    Problem,
    Record,
    group_overlap,
    read_manifest,
    split_for_id,
)

GOOD = {"id": "a", "image": "img/a.png", "audio": "wav/a.wav", "text": "a cat", "label": "cat"}


@pytest.fixture
def root(tmp_path: Path, media) -> Path:
    """A data set folder holding one real image and one real audio file."""
    media.png(tmp_path / "img" / "a.png", np.full((4, 6, 3), 200, np.uint8))
    media.audio(tmp_path / "wav" / "a.wav", media.sine(440, 8000, 0.05), 8000)
    return tmp_path


def only_problem(err: pytest.ExceptionInfo[ManifestError]) -> Problem:
    assert len(err.value.problems) == 1, err.value.problems
    return err.value.problems[0]


# Each bad line goes on line 2, after a valid line 1, so the line number is meaningful.
# (line text, field the problem names, fragment of its message)
ERROR_CASES = [
    pytest.param(
        '{"id": "b", "text": "x", "label": "cat"', "", "not valid JSON", id="invalid-json"
    ),
    pytest.param('{"id": "b", "text": "x", label: "cat"}', "", "not valid JSON", id="unquoted-key"),
    pytest.param('["b", "x", "cat"]', "", "expected a JSON object, got list", id="list-line"),
    pytest.param('"b"', "", "expected a JSON object, got str", id="string-line"),
    pytest.param('{"text": "x", "label": "cat"}', "id", "required", id="missing-id"),
    pytest.param('{"id": "  ", "text": "x", "label": "cat"}', "id", "non-empty", id="blank-id"),
    pytest.param('{"id": 7, "text": "x", "label": "cat"}', "id", "got 7", id="int-id"),
    pytest.param(
        '{"id": "b", "text": "x", "label": "cat", "colour": "red"}',
        "colour",
        "unknown field; accepted: id, image, audio, text, label, split",
        id="unknown-field",
    ),
    pytest.param(
        '{"id": "b", "image": "img/nope.png", "label": "cat"}',
        "image",
        "file not found: img/nope.png",
        id="image-missing",
    ),
    pytest.param(
        '{"id": "b", "audio": "wav/nope.wav", "label": "cat"}',
        "audio",
        "file not found: wav/nope.wav",
        id="audio-missing",
    ),
    pytest.param(
        '{"id": "b", "image": "img", "label": "cat"}', "image", "file not found", id="image-is-dir"
    ),
    pytest.param(
        '{"id": "b", "image": 5, "label": "cat"}', "image", "expected a file path", id="image-int"
    ),
    pytest.param(
        '{"id": "b", "audio": "", "label": "cat"}',
        "audio",
        "expected a file path",
        id="audio-empty",
    ),
    pytest.param(
        '{"id": "b", "text": 5, "label": "cat"}', "text", "expected a string", id="text-int"
    ),
    pytest.param(
        '{"id": "b", "text": ["x"], "label": "cat"}', "text", "expected a string", id="text-list"
    ),
    pytest.param('{"id": "b", "text": "x"}', "label", "required", id="missing-label"),
    pytest.param('{"id": "b", "text": "x", "label": null}', "label", "required", id="null-label"),
    pytest.param('{"id": "b", "text": "x", "label": true}', "label", "got True", id="bool-label"),
    pytest.param('{"id": "b", "text": "x", "label": ""}', "label", "class name", id="empty-label"),
    pytest.param('{"id": "b", "text": "x", "label": {"c": 1}}', "label", "got {", id="dict-label"),
    pytest.param(
        '{"id": "b", "text": "x", "label": ["cat", 1]}', "label", "got ['cat', 1]", id="mixed-list"
    ),
    # Python's json module accepts these non-standard tokens; they must not become targets.
    pytest.param('{"id": "b", "text": "x", "label": NaN}', "label", "finite", id="nan-label"),
    pytest.param('{"id": "b", "text": "x", "label": -Infinity}', "label", "finite", id="inf-label"),
    pytest.param('{"id": "b", "text": "x", "label": 1e400}', "label", "finite", id="overflow"),
    pytest.param(
        '{"id": "b", "text": "x", "label": "cat", "split": "training"}',
        "split",
        "expected one of train, val, test, got 'training'",
        id="bad-split",
    ),
    pytest.param(
        '{"id": "b", "text": "x", "label": "cat", "split": 1}', "split", "got 1", id="int-split"
    ),
    pytest.param(
        '{"id": "b", "text": "x", "label": "cat", "group": 3}',
        "group",
        "expected a non-empty string naming the sample's speaker, session or recording; got 3",
        id="int-group",
    ),
    pytest.param(
        '{"id": "b", "text": "x", "label": "cat", "group": " "}',
        "group",
        "non-empty string",
        id="blank-group",
    ),
    pytest.param(
        '{"id": "b", "text": "x", "label": "cat", "group": ["alice"]}',
        "group",
        "got ['alice']",
        id="list-group",
    ),
    pytest.param(
        '{"id": "b", "label": "cat"}',
        "",
        "needs at least one of image, audio, text",
        id="no-modality",
    ),
    pytest.param(
        '{"id": "b", "text": "  ", "label": "cat"}',
        "",
        "needs at least one of image, audio, text",
        id="only-empty-text",
    ),
]


@pytest.mark.parametrize(("line", "field", "fragment"), ERROR_CASES)
def test_error_names_file_line_and_field(root, media, line, field, fragment):
    manifest = media.manifest(root, [GOOD, line])
    with pytest.raises(ManifestError) as err:
        read_manifest(root)
    problem = only_problem(err)
    assert (problem.path, problem.line, problem.field) == (manifest, 2, field)
    assert fragment in problem.message
    where = f"{manifest}:2: {field}: " if field else f"{manifest}:2: "
    assert f"{where}{problem.message}" in str(err.value)


def test_mixed_label_kinds_flag_the_minority_lines(root, media):
    lines = [
        {"id": "a", "text": "x", "label": "cat"},
        {"id": "b", "text": "x", "label": 3.5},
        {"id": "c", "text": "x", "label": "dog"},
        {"id": "d", "text": "x", "label": ["cat"]},
    ]
    manifest = media.manifest(root, lines)
    with pytest.raises(ManifestError) as err:
        read_manifest(root)
    problems = err.value.problems
    assert [(p.line, p.field) for p in problems] == [(2, "label"), (4, "label")]
    assert "a number label among class labels" in problems[0].message
    assert "a multilabel label among class labels" in problems[1].message
    assert f"{manifest}:2: label: " in str(err.value)


def test_duplicate_id_names_the_first_line(root, media):
    manifest = media.manifest(
        root, [GOOD, {"id": "b", "text": "x", "label": "cat"}, {**GOOD, "text": "again"}]
    )
    with pytest.raises(ManifestError) as err:
        read_manifest(root)
    problem = only_problem(err)
    assert (problem.line, problem.field) == (3, "id")
    assert "duplicate id 'a' (first on line 1)" in problem.message
    assert f"{manifest}:3: id: duplicate id" in str(err.value)


def test_underscore_keys_are_user_notes(root, media):
    media.manifest(root, [{**GOOD, "_note": "blurry", "_source": {"cam": 2}}])
    (record,) = read_manifest(root).records
    assert record.id == "a" and record.label == "cat"


def test_empty_text_is_absent_not_an_error(root, media):
    media.manifest(root, [{**GOOD, "text": ""}, {**GOOD, "id": "b", "text": " \t "}])
    manifest = read_manifest(root)
    assert [r.text for r in manifest.records] == [None, None]
    assert not manifest.records[0].has("text")
    assert manifest.modalities == ("image", "audio")


def test_null_modalities_and_null_split_are_absent(root, media):
    media.manifest(
        root,
        [{"id": "a", "image": None, "audio": None, "text": "x", "label": "cat", "split": None}],
    )
    (record,) = read_manifest(root).records
    assert record.image is None and record.audio is None
    assert record.split == split_for_id("a")


def test_missing_label_is_accepted_when_not_required(root, media):
    media.manifest(root, [{"id": "a", "text": "x"}, {"id": "b", "text": "y", "label": None}])
    manifest = read_manifest(root, require_labels=False)
    assert [r.label for r in manifest.records] == [None, None]
    assert manifest.label_kind == "none" and manifest.classes == ()


def test_invalid_label_is_rejected_even_when_not_required(root, media):
    media.manifest(root, [{"id": "a", "text": "x", "label": False}])
    with pytest.raises(ManifestError) as err:
        read_manifest(root, require_labels=False)
    assert (only_problem(err).line, only_problem(err).field) == (1, "label")


def test_numeric_labels_become_floats_large_ones_included(root, media):
    media.manifest(
        root,
        [
            {"id": "a", "text": "x", "label": 3},
            {"id": "b", "text": "x", "label": -0.5},
            '{"id": "c", "text": "x", "label": 1e308}',
        ],
    )
    manifest = read_manifest(root)
    assert [r.label for r in manifest.records] == [3.0, -0.5, 1e308]
    assert all(type(r.label) is float for r in manifest.records)
    assert manifest.label_kind == "number" and manifest.classes == ()


def test_check_files_false_skips_the_existence_check(root, media):
    media.manifest(root, [{"id": "a", "image": "img/nope.png", "label": "cat"}])
    (record,) = read_manifest(root, check_files=False).records
    assert record.image == (root / "img" / "nope.png").resolve()


def test_empty_manifest_is_an_error_naming_the_file(root, media):
    manifest = media.manifest(root, ["", "   "])
    with pytest.raises(ManifestError) as err:
        read_manifest(root)
    problem = only_problem(err)
    assert problem.line == 0 and "no samples" in problem.message
    assert f"{manifest}: the manifest has no samples" in str(err.value)
    manifest.write_bytes(b"")
    with pytest.raises(ManifestError, match="no samples"):
        read_manifest(manifest)


def test_folder_without_manifest_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / MANIFEST_NAME)):
        read_manifest(tmp_path)
    with pytest.raises(FileNotFoundError, match="no data set manifest"):
        read_manifest(tmp_path / "nowhere" / "data.jsonl")


def test_all_problems_are_reported_at_once(root, media):
    lines = [
        GOOD,
        "{broken",
        {"id": "b", "text": "x", "label": "cat", "extra": 1, "split": "dev"},  # two problems
        "",
        {"id": "c", "image": "img/nope.png", "label": "cat"},
        {"id": "d", "text": "x"},
        {"id": "e", "text": "x", "label": "dog"},  # fine
    ]
    manifest = media.manifest(root, lines)
    with pytest.raises(ManifestError) as err:
        read_manifest(root)
    found = [(p.line, p.field) for p in err.value.problems]
    assert found == [(2, ""), (3, "extra"), (3, "split"), (5, "image"), (6, "label")]
    message = str(err.value)
    assert message.startswith("5 problem(s) in the data set:")
    for line, field in found:
        assert f"{manifest}:{line}: {field}" in message


def test_long_problem_lists_are_cut_in_the_message_but_kept_in_full(root, media):
    media.manifest(root, [{"id": f"s{i}", "text": "x"} for i in range(25)])
    with pytest.raises(ManifestError) as err:
        read_manifest(root)
    assert len(err.value.problems) == 25
    assert str(err.value).count("label: required") == 20
    assert "... and 5 more" in str(err.value)


def test_blank_lines_are_skipped_and_line_numbers_kept(root, media):
    manifest = media.manifest(
        root,
        [
            {"id": "a", "text": "x", "label": "cat"},
            "",
            "  \t",
            {"id": "b", "text": "y", "label": 1},
        ],
    )
    with pytest.raises(ManifestError) as err:
        read_manifest(root)
    assert only_problem(err).line == 4
    manifest.write_text(manifest.read_text().replace('"label": 1', '"label": "dog"'))
    assert [r.line for r in read_manifest(manifest).records] == [1, 4]


def test_split_for_id_is_deterministic_and_about_80_10_10():
    assert split_for_id("sample-42") == split_for_id("sample-42")
    counts = Counter(split_for_id(f"sample-{i}") for i in range(5000))
    assert set(counts) == {"train", "val", "test"}
    assert abs(counts["train"] / 5000 - 0.8) < 0.03
    assert abs(counts["val"] / 5000 - 0.1) < 0.02
    assert abs(counts["test"] / 5000 - 0.1) < 0.02


def test_split_for_id_fractions():
    ids = [f"x{i}" for i in range(2000)]
    assert {split_for_id(i, val_fraction=0.0, test_fraction=0.0) for i in ids} == {"train"}
    counts = Counter(split_for_id(i, val_fraction=0.5, test_fraction=0.0) for i in ids)
    assert set(counts) == {"train", "val"} and abs(counts["val"] / 2000 - 0.5) < 0.05
    # Growing val keeps every old val sample in val: no leakage into training.
    small = {i for i in ids if split_for_id(i, val_fraction=0.1) == "val"}
    assert small and all(split_for_id(i, val_fraction=0.2) == "val" for i in small)


def test_split_comes_from_the_id_unless_given(root, media):
    hashed_train = next(f"s{i}" for i in range(100) if split_for_id(f"s{i}") == "train")
    hashed_test = next(f"s{i}" for i in range(100) if split_for_id(f"s{i}") == "test")
    lines = [
        {"id": hashed_train, "text": "x", "label": "cat", "split": "test"},
        {"id": hashed_test, "text": "x", "label": "cat", "split": "val"},
        {"id": hashed_test + "-b", "text": "x", "label": "cat"},
    ]
    media.manifest(root, lines)
    manifest = read_manifest(root)
    assert [r.split for r in manifest.records] == ["test", "val", split_for_id(hashed_test + "-b")]
    assert [r.id for r in manifest.split("test")] == [hashed_train]
    assert len(manifest.split("all")) == 3
    with pytest.raises(ValueError, match="'dev'"):
        manifest.split("dev")


# Splits that split_for_id gave before groups existed: a data set without groups must keep
# every sample in the split it had, or test samples would move into training.
OLD_SPLITS = {
    "a": "train",
    "sample-1": "test",
    "sample-2": "val",
    "sample-3": "train",
    "sample-19": "test",
    "sample-21": "val",
    "x9": "test",
    "é-1": "train",
}


def test_lines_without_a_group_keep_the_split_of_their_id(root, media):
    assert {i: split_for_id(i) for i in OLD_SPLITS} == OLD_SPLITS
    media.manifest(root, [{"id": i, "text": "x", "label": "cat"} for i in OLD_SPLITS])
    records = read_manifest(root).records
    assert {r.id: r.split for r in records} == OLD_SPLITS
    assert all(r.group is None for r in records)


def test_group_is_parsed_and_null_group_is_absent(root, media):
    lines = [
        {**GOOD, "group": "alice"},
        {"id": "b", "text": "x", "label": "cat", "group": None},
    ]
    media.manifest(root, lines)
    assert [r.group for r in read_manifest(root).records] == ["alice", None]


def test_the_hash_split_keeps_each_group_in_one_split(root, media):
    # 200 groups of 5: every group lands whole in the split of its name's hash, and the
    # groups still spread over train, val and test.
    lines = [
        {"id": f"g{g}-s{s}", "text": "x", "label": "cat", "group": f"speaker-{g}"}
        for g in range(200)
        for s in range(5)
    ]
    media.manifest(root, lines)
    splits_of: dict[str, set[str]] = {}
    for r in read_manifest(root).records:
        splits_of.setdefault(r.group, set()).add(r.split)
    assert all(splits == {split_for_id(g)} for g, splits in splits_of.items())
    assert Counter(s for (s,) in splits_of.values()).keys() == {"train", "val", "test"}


def test_an_explicit_split_wins_over_the_group_hash(root, media):
    group = next(f"p{i}" for i in range(100) if split_for_id(f"p{i}") == "train")
    lines = [
        {"id": "a", "text": "x", "label": "cat", "group": group},
        {"id": "b", "text": "x", "label": "cat", "group": group, "split": "test"},
    ]
    media.manifest(root, lines)
    assert [r.split for r in read_manifest(root).records] == ["train", "test"]


def test_group_overlap_counts_only_lines_with_a_group():
    def rec(i: int, group: str | None) -> Record:
        return Record(id=f"s{i}", line=i, split="train", label="cat", text="x", group=group)

    train = [rec(0, "alice"), rec(1, "bob"), rec(2, None)]
    val = [rec(3, "alice"), rec(4, "alice"), rec(5, "carol"), rec(6, None)]
    assert group_overlap(train, val) == {
        "n_groups": 2,
        "n_samples": 3,
        "seen_in_train": 1,
        "samples_in_seen_groups": 2,
    }
    assert group_overlap([rec(0, None)], [rec(1, None)]) == {
        "n_groups": 0,
        "n_samples": 0,
        "seen_in_train": 0,
        "samples_in_seen_groups": 0,
    }


def test_modalities_classes_and_paths_are_inferred(root, media):
    lines = [
        {"id": "a", "image": "img/a.png", "label": "dog"},
        {"id": "b", "audio": "wav/a.wav", "label": "cat"},
        {"id": "c", "image": "./img/../img/a.png", "label": "dog"},
        {"id": "d", "audio": "wav/a.wav", "label": "bird"},
    ]
    media.manifest(root, lines)
    manifest = read_manifest(root / MANIFEST_NAME)
    assert manifest.modalities == ("image", "audio")
    assert manifest.classes == ("bird", "cat", "dog")
    assert manifest.label_kind == "class"
    assert manifest.root == root
    img = (root / "img" / "a.png").resolve()
    assert manifest.records[0].image == img and manifest.records[2].image == img
    assert manifest.records[1].audio.is_absolute()
    assert [r.has("image") for r in manifest.records] == [True, False, True, False]


def test_text_only_data_set(root, media):
    media.manifest(root, [{"id": "a", "text": "hello", "label": "x"}])
    manifest = read_manifest(root)
    assert manifest.modalities == ("text",)
    assert manifest.records[0].text == "hello"


def test_multilabel_labels_are_sorted_unique_tuples(root, media):
    lines = [
        {"id": "a", "text": "x", "label": ["rain", "dog", "rain"]},
        {"id": "b", "text": "y", "label": ["cat"]},
        {"id": "c", "text": "z", "label": []},
    ]
    media.manifest(root, lines)
    manifest = read_manifest(root)
    assert [r.label for r in manifest.records] == [("dog", "rain"), ("cat",), ()]
    assert manifest.label_kind == "multilabel"
    assert manifest.classes == ("cat", "dog", "rain")


def test_manifest_lines_may_use_unicode(root, media):
    line = {"id": "é-1", "text": "naïve café ☕", "label": "café"}
    (root / MANIFEST_NAME).write_text(json.dumps(line, ensure_ascii=False) + "\n", "utf-8")
    (record,) = read_manifest(root).records
    assert record.text == "naïve café ☕" and record.label == "café"


def test_invalid_utf8_line_names_file_and_line(root, media):
    manifest = root / MANIFEST_NAME
    manifest.write_bytes(
        json.dumps(GOOD).encode() + b'\n{"id": "b", "text": "caf\xe9", "label": "cat"}\n'
    )
    with pytest.raises(ManifestError) as err:
        read_manifest(root)
    assert f"{manifest}:2" in str(err.value)


def test_hold_out_keeps_groups_whole_and_ungrouped_data_as_before(root, media):
    from fusionedge.manifest import hold_out

    lines = [
        {"id": f"{g}-{i}", "text": "x", "label": "a", "group": g, "split": "train"}
        for g, n in [("big", 60), ("p", 10), ("q", 10), ("r", 10), ("s", 10)]
        for i in range(n)
    ]
    media.manifest(root, lines)
    records = read_manifest(root).records
    train, val = hold_out(list(records))
    assert {r.group for r in train}.isdisjoint({r.group for r in val})
    assert len(train) + len(val) == 100 and 10 <= len(val) <= 40
    assert "big" not in {r.group for r in val}  # would leave less than half to train
    plain = [{"id": f"s{i}", "text": "x", "label": "a", "split": "train"} for i in range(30)]
    media.manifest(root, plain)
    records = list(read_manifest(root).records)
    train, val = hold_out(records)
    assert val == records[::10] and train == [r for i, r in enumerate(records) if i % 10]


def test_missing_classes_names_labels_without_training_samples(root, media):
    from fusionedge.manifest import missing_classes

    lines = [
        {"id": "a", "text": "x", "label": "cat", "split": "train"},
        {"id": "b", "text": "y", "label": "dog", "split": "val"},
        {"id": "c", "text": "z", "label": "eel", "split": "test"},
    ]
    media.manifest(root, lines)
    manifest = read_manifest(root)
    assert missing_classes(manifest, manifest.split("train")) == ["dog", "eel"]
    assert missing_classes(manifest, manifest.records) == []
