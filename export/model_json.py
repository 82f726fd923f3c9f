"""model.json: what an application in another language needs beside the ONNX file.

ONNX Runtime's bindings for Node.js, the browser, C#, Java, ... run the graph but cannot
read its custom metadata, so the spec (labels, tokenizer, preprocessing) that travels in
`fusionedge.spec` is out of their reach. Export therefore also writes model.json beside
the file: model.onnx -> model.json. docs/PREPROCESSING.md explains each entry;
examples/node/ reads one.

One model.json per export: it lists every file the export wrote (the fp32 file, the
int8/fp16 copies that were kept, the parts of a split model in model.split/), each with
the sha256 of its bytes (the whole file, as `sha256sum` prints it), so an application can
check that it holds the file the description belongs to. The copies and parts share one
spec, so one description serves them all.

Everything is derived from the ModelSpec and fusionedge.contract; the spec itself is
written once, under "spec", exactly as the file's metadata holds it (the vocabulary and
every number live there; the sections beside it name them and spell out the steps). The
few facts of the host preprocessing that the spec does not hold (OpenCV's interpolation,
soxr's quality, the rounding of a letterbox) are written here as constants, and
tests/export/test_model_json.py holds each one to what fusionedge.preprocess does.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fusionedge.contract import (
    INPUT_NAMES,
    OUTPUT_NAMES,
    PRECISION_KEY,
    SPEC_KEY,
    input_layout,
    split_folder,
)
from fusionedge.spec import ModelSpec
from fusionedge.tokenizer import PAD_ID, UNK_ID, pad_id
from fusionedge.version import __version__

FORMAT = "fusionedge.model_json"
FORMAT_VERSION = 1
# A model.json is a few kilobytes plus the tokenizer's vocabulary (30,522 WordPiece tokens
# for a BERT encoder, about 0.5 MB); a file far larger is not one.
MAX_MODEL_JSON_BYTES = 64 << 20

# Host preprocessing facts the spec does not state (fusionedge.preprocess); each is
# checked against that module's behaviour by tests/export/test_model_json.py.
SHRINK_INTERPOLATION = "INTER_AREA"  # OpenCV's, when the target has fewer pixels
ENLARGE_INTERPOLATION = "INTER_LINEAR"  # otherwise
SOXR_QUALITY = "HQ"  # soxr.resample(..., quality="HQ"): 20-bit precision, linear phase
PCM_SCALE = {"uint8": "(x - 128) / 128", "int16": "x / 32768", "int24": "x / 8388608",
             "int32": "x / 2147483648", "float": "as stored"}  # fmt: skip


def model_json_path(model_path: str | Path) -> Path:
    """model.onnx -> model.json, beside it."""
    path = Path(model_path)
    return path.with_name(path.stem + ".json")


def is_model_json(path: Path) -> bool:
    """Whether path holds a model.json that an export wrote (its "format" says so)."""
    try:
        with path.open("rb") as f:
            head = f.read(MAX_MODEL_JSON_BYTES + 1)
        data = json.loads(head) if len(head) <= MAX_MODEL_JSON_BYTES else None
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file's bytes, read in blocks."""
    sha = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def _file_entry(path: Path, base: Path, **extra: Any) -> dict[str, Any]:
    return {
        "path": path.relative_to(base).as_posix(),
        **extra,
        "bytes": path.stat().st_size,
        "sha256": sha256_file(path),
    }


def describe(
    model_path: str | Path,
    spec: ModelSpec,
    copies: Iterable[tuple[str, str | Path]] = (),
    split: bool = False,
) -> dict[str, Any]:
    """model.json's content for an exported file (and its copies and split parts).

    Args:
        model_path: The fp32 file.
        spec: Its spec.
        copies: (precision, path) of each int8/fp16 copy that was kept.
        split: Whether model_path's .split folder holds parts of this export.
    """
    model_path = Path(model_path)
    base = model_path.parent
    files = [_file_entry(model_path, base, precision="fp32")]
    files += [_file_entry(Path(p), base, precision=name) for name, p in copies]
    out: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "written_by": f"fusionedge {__version__}",
        "files": files,
    }
    if split:
        folder = split_folder(model_path)
        parts = sorted(folder.glob("*.onnx"))
        out["split"] = [_file_entry(p, base, part=p.stem) for p in parts]
    layout = input_layout(spec)
    out.update(
        {
            "task": spec.task,
            "modalities": list(spec.modalities),
            "labels": list(spec.labels),
            "inputs": [
                {"name": name, "dtype": dtype, "shape": ["N", *shape]}
                for name, (dtype, shape) in layout.items()
            ],
            "outputs": _outputs(spec),
            "present": (
                f"bool [N, {len(spec.modalities)}]: column j is true when modality "
                f"modalities[j] is given in that row; an absent modality's input is all zeros "
                "(what the Python runtime sends) and the model answers from the others"
            ),
            "preprocessing": preprocessing(spec),
            "spec": spec.to_dict(),
        }
    )
    return out


def _outputs(spec: ModelSpec) -> list[dict[str, Any]]:
    meaning = {
        "multiclass": "softmax probabilities; the label is labels[argmax]",
        "binary": "[1 - p, p] from one sigmoid; the label is labels[argmax]",
        "multilabel": "a sigmoid per label; labels with score >= 0.5 are active, the "
        "top label is labels[argmax]",
        "regression": "the predicted value, in the target's units",
    }[spec.task]
    scores, embedding = OUTPUT_NAMES
    return [
        {"name": scores, "dtype": "float32", "shape": ["N", spec.num_outputs], "meaning": meaning},
        {"name": embedding, "dtype": "float32", "shape": ["N", spec.embed_dim]},
    ]


def preprocessing(spec: ModelSpec) -> dict[str, Any]:
    """The host-side steps per modality, spelled out for a port (docs/PREPROCESSING.md)."""
    layout = input_layout(spec)
    out: dict[str, Any] = {}
    if spec.image is not None:
        out["image"] = _image(spec, layout)
    if spec.audio is not None:
        out["audio"] = _audio(spec, layout)
    if spec.text is not None:
        out["text"] = _text(spec, layout)
    return out


def _image(spec: ModelSpec, layout: dict[str, tuple[str, tuple[int, ...]]]) -> dict[str, Any]:
    assert spec.image is not None
    image = spec.image
    name = INPUT_NAMES["image"]
    resize: dict[str, Any] = {
        "mode": image.resize,
        "height": image.height,
        "width": image.width,
        "skip": "no resize when the decoded image is already height x width",
        "interpolation": {
            "rule": "shrink when width * height < source width * source height, else enlarge",
            "shrink": f"OpenCV {SHRINK_INTERPOLATION}",
            "enlarge": f"OpenCV {ENLARGE_INTERPOLATION}",
        },
    }
    if image.resize == "letterbox":
        resize["letterbox"] = {
            "scale": "min(width / source width, height / source height)",
            "size": "nw = max(1, round(source width * scale)), nh = max(1, "
            "round(source height * scale)); round half to even",
            "place": "top = (height - nh) // 2, left = (width - nw) // 2",
            "pad": "0 (black) in every channel, around the resized image",
        }
    return {
        "input": name,
        "dtype": layout[name][0],
        "shape": list(layout[name][1]),
        "layout": "HWC, row-major, RGB",
        "decode": {
            "exif_orientation": "applied",
            "icc_profile": "ignored",
            "grey": "copied to R, G and B",
            "alpha": "dropped, not composited",
            "16_bit": "the high byte (value >> 8)",
        },
        "resize": resize,
        "in_graph": {
            "normalize": "(x / 255 - mean) / std per RGB channel; the graph does it",
            "mean": list(image.mean),
            "std": list(image.std),
        },
    }


def _audio(spec: ModelSpec, layout: dict[str, tuple[str, tuple[int, ...]]]) -> dict[str, Any]:
    assert spec.audio is not None
    audio = spec.audio
    name = INPUT_NAMES["audio"]
    return {
        "input": name,
        "dtype": layout[name][0],
        "shape": list(layout[name][1]),
        "sample_rate": audio.sample_rate,
        "num_samples": audio.num_samples,
        "decode": {"pcm_to_float": PCM_SCALE, "library": "libsndfile (soundfile)"},
        "mono": "float32 mean of the channels",
        "resample": {
            "when": "the file's rate differs from sample_rate",
            "library": "soxr",
            "quality": SOXR_QUALITY,
            "length": "(frames * sample_rate + rate // 2) // rate samples",
        },
        "window": {
            "placement": "centre",
            "longer": "crop: keep samples [start, start + num_samples), "
            "start = (length - num_samples) // 2",
            "shorter": "zero-pad: the audio at start = (num_samples - length) // 2, "
            "zeros before and after",
        },
        "in_graph": {
            "frontend": "log-mel (periodic Hann, power, mel filters, "
            "log(mel + log_floor)), no centre padding; the graph does it",
            "n_fft": audio.n_fft,
            "hop_length": audio.hop_length,
            "n_mels": audio.n_mels,
            "f_min": audio.f_min,
            "f_max": audio.f_max,
            "log_floor": audio.log_floor,
            "normalize": audio.normalize,
            "frames": audio.num_frames,
        },
    }


def _text(spec: ModelSpec, layout: dict[str, tuple[str, tuple[int, ...]]]) -> dict[str, Any]:
    assert spec.text is not None
    tokenizer = spec.text.tokenizer
    name = INPUT_NAMES["text"]
    common = {
        "input": name,
        "dtype": layout[name][0],
        "shape": list(layout[name][1]),
        "max_length": spec.text.max_length,
        "vocab": "spec.text.tokenizer.vocab",
        "vocab_size": tokenizer.vocab_size,
        "lowercase": tokenizer.lowercase,
        "pad_id": pad_id(tokenizer),
        "padding": "pad_id after the tokens, up to max_length",
        "absent": "a row of zeros, with present false",
    }
    if tokenizer.kind == "char":
        return {
            **common,
            "tokenizer": "char",
            "steps": [
                "Unicode NFKC normalisation",
                "lower-case (when lowercase)" if tokenizer.lowercase else "no lower-casing",
                "split on white space and join with one space (trims both ends)",
                "keep the first max_length characters (code points)",
                "id of vocab[i] = i + 2; a character not in vocab -> unk_id",
            ],
            "unk_id": UNK_ID,
            "pad_id": PAD_ID,
        }
    from fusionedge.wordpiece import WordPieceTokenizer

    wordpiece = WordPieceTokenizer(tokenizer, spec.text.max_length)
    return {
        **common,
        "tokenizer": "wordpiece",
        "steps": [
            "BERT's: special tokens written in the text kept whole; control characters "
            "dropped, white space to spaces; spaces around CJK ideographs",
            "strip accents (NFD, drop combining marks) and lower-case (when lowercase)",
            "split on white space and around punctuation",
            "each word greedily into the longest vocab pieces, '##' marking a "
            "continuation; a word not covered or over 100 characters -> [UNK]",
            "[CLS] + pieces + [SEP], cut to max_length keeping [SEP]",
            "id = index in vocab (the last one when a token repeats)",
        ],
        "unk_id": wordpiece.unk_id,
        "cls_id": wordpiece.cls_id,
        "sep_id": wordpiece.sep_id,
    }


def write_model_json(
    model_path: str | Path,
    spec: ModelSpec,
    copies: Iterable[tuple[str, str | Path]] = (),
    split: bool = False,
) -> Path:
    """Writes model.json beside model_path atomically (a reader sees the old file or the
    new one; an interrupted write leaves no temporary); returns its path."""
    from fusionedge.training.checkpoint import atomic_write_bytes

    path = model_json_path(model_path)
    text = json.dumps(describe(model_path, spec, copies, split), indent=2, allow_nan=False)
    atomic_write_bytes(path, text.encode() + b"\n")
    return path


def write_for_file(model_path: str | Path) -> Path:
    """model.json for a file exported earlier (before export wrote one): the spec from
    its metadata, the int8/fp16 copies and split parts beside it that carry the same
    spec."""
    import onnx

    from fusionedge.export.precision import copy_path

    def metadata(path: Path) -> dict[str, str]:
        proto = onnx.load(str(path), load_external_data=False)
        return {p.key: p.value for p in proto.metadata_props}

    model_path = Path(model_path)
    meta = metadata(model_path)
    if SPEC_KEY not in meta:
        raise ValueError(f"{model_path}: no {SPEC_KEY} metadata; not a fusionedge export")
    spec = ModelSpec.from_json(meta[SPEC_KEY])
    copies = []
    for precision in ("int8", "fp16"):
        path = copy_path(model_path, precision)
        if path.is_file():
            other = metadata(path)
            if other.get(SPEC_KEY) == meta[SPEC_KEY] and other.get(PRECISION_KEY) == precision:
                copies.append((precision, path))
    folder = split_folder(model_path)
    parts = sorted(folder.glob("*.onnx")) if folder.is_dir() else []
    split = bool(parts) and all(metadata(p).get(SPEC_KEY) == meta[SPEC_KEY] for p in parts)
    return write_model_json(model_path, spec, copies, split)


def main(argv: list[str] | None = None) -> int:
    """python -m fusionedge.export.model_json MODEL.onnx: writes MODEL.json beside it."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m fusionedge.export.model_json MODEL.onnx", file=sys.stderr)
        return 2
    print(f"wrote {write_for_file(args[0])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
