"""The model contract's names are written once, in fusionedge/contract.py (sdk/contract.py).

Training writes the names, export stores them in the file, the runtime reads them: a copy
that drifts would make files one release writes unreadable by another. This test reads
the library's source and fails on a second definition of any of them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fusionedge import contract

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ("sdk", "training", "export", "runtime")
CONTRACT = ROOT / "sdk" / "contract.py"


def quoted(text: str) -> str:
    """A string literal holding exactly `text` ("fusionedge.spec" is also a module name)."""
    return rf"""["']{re.escape(text)}["']"""


# What a copy of each name looks like in source.
COPIES = {
    "SPEC_KEY": quoted(contract.SPEC_KEY),
    "PRECISION_KEY": quoted(contract.PRECISION_KEY),
    "PART_KEY": quoted(contract.PART_KEY),
    "DIGEST_KEY": quoted(contract.DIGEST_KEY),
    "GOLDEN_KEY": quoted(contract.GOLDEN_KEY),
    "INPUT_NAMES": r"""["']text["']\s*:\s*["']tokens["']""",
    "OUTPUT_NAMES": r"""["']scores["'],\s*["']embedding["']""",
}


def library_files() -> list[Path]:
    return sorted(p for folder in LIBRARY for p in (ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("name", sorted(COPIES))
def test_each_name_is_written_only_in_the_contract(name: str) -> None:
    pattern = re.compile(COPIES[name])
    assert pattern.search(CONTRACT.read_text()), f"the pattern for {name} no longer matches"
    copies = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in library_files()
        if path != CONTRACT
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line) and not line.lstrip().startswith("#")
    ]
    assert not copies, f"{name} written again (import it from fusionedge.contract): {copies}"


def test_split_model_names_follow_the_contract(tmp_path: Path) -> None:
    assert contract.split_folder(tmp_path / "model.onnx") == tmp_path / "model.split"
    assert contract.embedding_input("audio") == "audio_embedding"
    assert set(contract.INPUT_NAMES) == {"image", "audio", "text"}
    assert contract.PRESENT not in contract.INPUT_NAMES.values()


def test_subsets_are_named_one_way_whatever_the_order() -> None:
    subsets = contract.modality_subsets(("image", "audio", "text"), empty=True)
    assert subsets[0] == () and len(subsets) == 8 and len(set(subsets)) == 8
    assert [len(s) for s in subsets] == sorted(len(s) for s in subsets)  # smallest first
    assert contract.modality_subsets(("image", "audio")) == [
        ("image",),
        ("audio",),
        ("image", "audio"),
    ]
    assert contract.subset_name(("image", "audio")) == contract.subset_name(["audio", "image"])
    assert contract.subset_name(("image", "audio")) == "audio+image"
    assert contract.subset_name(()) == "none"


def test_framing_rule_covers_the_window_exactly_once_per_frame() -> None:
    from fusionedge.spec import AudioSpec

    audio = AudioSpec()
    whole = audio.frame_samples(0, audio.num_frames)
    assert whole.start == 0 and whole.stop <= audio.num_samples
    assert whole.stop + audio.hop_length > audio.num_samples  # one more frame would not fit
    tail = audio.frame_samples(audio.num_frames - 3, 3)
    assert tail.stop == whole.stop
    assert tail.stop - tail.start == 2 * audio.hop_length + audio.n_fft
