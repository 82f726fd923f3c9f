"""The card's file readers: JSON, log.csv, spec.json, the run a checkpoint lies in, and
the data set's manifest. A file that is missing or unreadable reads as nothing (logged),
so that the card says "not measured" instead of failing."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fusionedge.spec import ModelSpec

# One logger for the whole card, named as when the card was one module, so that a filter
# or level set on "fusionedge.card" still covers every warning it logs.
log = logging.getLogger("fusionedge.card")


def model_report_path(model: Path) -> Path:
    """model.onnx -> model.report.json (export's report, beside the file)."""
    return model.with_name(model.stem + ".report.json")


def read_json(path: Path) -> Any:
    """A JSON file, or None when it is missing or unreadable (logged)."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        log.warning("card: skipping %s: %s", path, e)
        return None


def read_log(path: Path) -> list[dict[str, float]]:
    """log.csv as rows of floats (an empty or unparsable cell is left out)."""
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            parsed = {}
            for key, value in row.items():
                try:
                    parsed[key] = float(value)
                except (TypeError, ValueError):
                    continue
            rows.append(parsed)
    return rows


def read_spec(run: Path | None) -> ModelSpec | None:
    if run is None or not (run / "spec.json").is_file():
        return None
    try:
        return ModelSpec.from_json((run / "spec.json").read_bytes())
    except ValueError as e:
        log.warning("card: %s/spec.json unreadable: %s", run, e)
        return None


def run_of_checkpoint(checkpoint: str | None) -> Path | None:
    if not checkpoint:
        return None
    path = Path(checkpoint)
    run = path if path.is_dir() else path.parent
    return run if (run / "metrics.json").is_file() or (run / "spec.json").is_file() else None


def data_summary(data: str | None, labels: tuple[str, ...]) -> dict[str, Any]:
    """Per split: samples, samples per modality, distinct groups, samples per label; from
    the manifest when it is still reachable, else {"path", "error"}."""
    if not data:
        return {"path": None, "error": "no data path recorded"}
    from fusionedge.manifest import read_manifest

    try:
        manifest = read_manifest(data, require_labels=False, check_files=False)
    except (OSError, ValueError) as e:
        return {"path": data, "error": f"not readable here ({type(e).__name__})"}
    splits: dict[str, dict[str, Any]] = {}
    for r in manifest.records:
        s = splits.setdefault(
            r.split, {"n": 0, "modalities": {}, "groups": set(), "labels": {}, "no_group": 0}
        )
        count_record(s, r, manifest.modalities)
    for s in splits.values():
        s["groups"] = len(s["groups"])
    order = [x for x in ("train", "val", "test") if x in splits] + sorted(
        x for x in splits if x not in ("train", "val", "test")
    )
    return {
        "path": str(manifest.path),
        "modalities": list(manifest.modalities),
        "splits": {k: splits[k] for k in order},
    }


def count_record(s: dict[str, Any], r: Any, modalities: Iterable[str]) -> None:
    """Adds one manifest record to its split's counts."""
    s["n"] += 1
    for m in modalities:
        s["modalities"][m] = s["modalities"].get(m, 0) + int(r.has(m))
    if r.group is None:
        s["no_group"] += 1
    else:
        s["groups"].add(r.group)
    names = r.label if isinstance(r.label, list) else [r.label]
    for name in names:
        if isinstance(name, str):
            s["labels"][name] = s["labels"].get(name, 0) + 1
