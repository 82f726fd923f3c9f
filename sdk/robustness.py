"""Missing and noisy modalities: the `robustness` key of `fusionedge eval --robustness`.

A backend (PyTorch for run folders, ONNX Runtime for model files) supplies one function,
decoded samples -> scores; this module builds every input variant and scores it:
- subsets: each non-empty subset of the model's modalities, the others marked missing
  (present = False), named by the present modalities sorted and joined with "+";
- noise: one modality corrupted at increasing levels (sdk.corrupt), all others as they
  are, so a curve shows what that modality's degradation alone costs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from fusionedge import corrupt
from fusionedge.arrays import SampleArrays, load_arrays
from fusionedge.contract import modality_subsets, subset_name
from fusionedge.evaluation import split_records
from fusionedge.metrics import task_metrics
from fusionedge.spec import ModelSpec
from fusionedge.tokenizer import Tokenizer

ArraysScoreFn = Callable[[SampleArrays], np.ndarray]

# Corruption -> levels, mildest first. Image units: noise sigma in 0-255 pixel values,
# blur kernel in pixels, occlusion as the covered fraction; audio: SNR in dB; text: the
# per-character typo probability.
NOISE_LEVELS: dict[str, dict[str, tuple[float, ...]]] = {
    "image": {
        "noise_sigma": (10, 25, 50, 100),
        "blur_kernel": (3, 7, 15, 31),
        "occlusion_fraction": (0.1, 0.25, 0.5, 0.75),
    },
    "audio": {"noise_snr_db": (20, 10, 5, 0, -5)},
    "text": {"typo_rate": (0.05, 0.1, 0.2, 0.4)},
}
# The manifest field the demo generator writes: which input it broke on purpose.
CORRUPTED_FIELD = "_corrupted"


@dataclass
class RobustnessSamples:
    """A split decoded for a spec, with what the corruptions need beyond the arrays.

    Attributes:
        arrays: The decoded samples.
        texts: Raw text per row (None where the sample has none), for typos before
            tokenising.
        clean: bool [N], rows whose manifest line says `_corrupted: "none"`; None when
            the manifest does not carry that field.
        manifest: The manifest file.
    """

    arrays: SampleArrays
    texts: list[str | None]
    clean: np.ndarray | None
    manifest: Path


def load_samples(data: str | Path, split: str, spec: ModelSpec) -> RobustnessSamples:
    """A data set's split, decoded for the spec, with raw texts and the clean-row mask.

    Raises:
        ValueError: the split has no samples.
    """
    manifest, records = split_records(data, split)
    arrays = load_arrays(records, spec, manifest.path)
    # Record keeps only the contract's fields; the demo's marker is read from the raw lines.
    marks: dict[int, Any] = {}
    with manifest.path.open(encoding="utf-8-sig") as f:
        for number, raw in enumerate(f, start=1):
            if CORRUPTED_FIELD in raw:
                marks[number] = json.loads(raw).get(CORRUPTED_FIELD)
    clean = None
    if all(r.line in marks for r in records):
        clean = np.array([marks[r.line] == "none" for r in records], dtype=bool)
    return RobustnessSamples(arrays, [r.text for r in records], clean, manifest.path)


def metric_key(task: str) -> str:
    """The figure robustness reports: accuracy (subset accuracy for multilabel), or MAE."""
    return "mae" if task == "regression" else "accuracy"


def score_metric(spec: ModelSpec, targets: np.ndarray, scores: np.ndarray) -> float:
    return float(task_metrics(spec.task, targets, scores)[metric_key(spec.task)])


def corrupted_arrays(
    spec: ModelSpec,
    samples: RobustnessSamples,
    modality: str,
    kind: str,
    level: float,
    seed: int,
) -> SampleArrays:
    """The samples with one modality corrupted at one level (the others untouched)."""
    a = samples.arrays
    if modality == "image":
        if kind == "noise_sigma":
            return replace(a, image=corrupt.image_noise(a.image, level, seed))
        if kind == "blur_kernel":
            return replace(a, image=corrupt.image_blur(a.image, int(level)))
        return replace(a, image=corrupt.image_occlusion(a.image, level, seed))
    if modality == "audio":
        return replace(a, audio=corrupt.audio_noise(a.audio, level, seed))
    assert spec.text is not None and a.tokens is not None
    # Typos draw from the model's own letters: a wrong letter, not an unknown token.
    alphabet = "".join(c for c in spec.text.tokenizer.vocab if c.isalnum())
    noisy = corrupt.text_typos(samples.texts, level, seed, alphabet or corrupt.TYPO_ALPHABET)
    tokenizer = Tokenizer(spec.text)
    tokens = a.tokens.copy()
    for i, text in enumerate(noisy):
        if text is not None:
            tokens[i] = tokenizer.encode(text)
    return replace(a, tokens=tokens)


def evaluate_robustness(
    spec: ModelSpec,
    samples: RobustnessSamples,
    score: ArraysScoreFn,
    noise: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """The robustness object (see the module docstring for what each part means).

    Keys: "metric" (accuracy, or mae for regression), "n", "full" (all modalities as the
    samples have them), "subsets" {name: value} over all n samples, "missing_one"
    {modality: the full value minus the value without it (positive = worse; for MAE the
    sign is turned so it still reads as a loss)}, "worst_missing_one"; with a `_corrupted`
    marker in the manifest the same three over its clean rows, suffixed "_clean", and
    "n_clean"; with noise=True "noise" {modality: {corruption: {level: value}}}.

    Args:
        spec: The model's spec.
        samples: Labelled samples from load_samples.
        score: Decoded samples -> scores [N, C], as the model's `scores` output.
        noise: Also run the corruption sweeps (subsets alone are much cheaper).
        seed: Seed of the corruptions.
    """
    arrays = samples.arrays
    if arrays.targets is None:
        raise ValueError("robustness evaluation needs labelled samples")
    key = metric_key(spec.task)
    sign = -1.0 if key == "mae" else 1.0
    targets = arrays.targets
    clean = samples.clean if samples.clean is not None and samples.clean.any() else None
    parts: dict[str, np.ndarray | None] = {"": None}
    if clean is not None:
        parts["_clean"] = clean
    result: dict[str, Any] = {"metric": key, "n": len(arrays)}
    if clean is not None:
        result["n_clean"] = int(clean.sum())
    subset_scores: dict[tuple[str, ...], np.ndarray] = {}
    mods = spec.modalities
    # Largest first (the full model, then one missing, ...); a stable sort keeps the
    # order within a size.
    for names in sorted(modality_subsets(mods), key=len, reverse=True):
        keep = np.array([m in names for m in mods])
        subset_scores[names] = score(replace(arrays, present=arrays.present & keep))
    for suffix, rows in parts.items():

        def value(scores: np.ndarray, rows: np.ndarray | None = rows) -> float:
            return score_metric(
                spec, *((targets, scores) if rows is None else (targets[rows], scores[rows]))
            )

        subsets = {subset_name(names): value(s) for names, s in subset_scores.items()}
        full = subsets[subset_name(mods)]
        result[f"full{suffix}"] = full
        result[f"subsets{suffix}"] = subsets
        if len(mods) > 1:
            missing = {
                m: sign * (full - subsets[subset_name([o for o in mods if o != m])]) for m in mods
            }
            result[f"missing_one{suffix}"] = missing
            result[f"worst_missing_one{suffix}"] = max(missing.values())
    if noise:
        result["noise"] = {
            m: {
                kind: {
                    f"{level:g}": score_metric(
                        spec, targets, score(corrupted_arrays(spec, samples, m, kind, level, seed))
                    )
                    for level in levels
                }
                for kind, levels in NOISE_LEVELS[m].items()
            }
            for m in mods
        }
    return result


def format_robustness(rob: dict[str, Any]) -> str:
    """The human table of a robustness object."""
    key = rob["metric"]
    has_clean = "subsets_clean" in rob
    head = f"  {'present':<20}{key + ' (all)':>18}"
    if has_clean:
        head += f"{key + ' (clean)':>18}"
    lines = [
        f"robustness: {rob['n']} samples"
        + (f", {rob['n_clean']} clean (manifest _corrupted == none)" if has_clean else ""),
        head,
    ]
    for name, v in rob["subsets"].items():
        row = f"  {name:<20}{v:>18.4f}"
        if has_clean:
            row += f"{rob['subsets_clean'][name]:>18.4f}"
        lines.append(row)
    if "worst_missing_one" in rob:
        line = f"  worst loss with one modality missing: {rob['worst_missing_one']:.4f}"
        if has_clean:
            line += f" (clean samples: {rob['worst_missing_one_clean']:.4f})"
        lines.append(line)
    for m, kinds in rob.get("noise", {}).items():
        for kind, levels in kinds.items():
            values = ", ".join(f"{lv}: {v:.3f}" for lv, v in levels.items())
            lines.append(f"  {m} {kind:<20}{values}")
    return "\n".join(lines)
