"""The facts a card states, gathered from a run folder or an exported model file into one
dict; the markdown and the plots read only that dict (and the files it names)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fusionedge.card.reading import (
    data_summary,
    model_report_path,
    read_json,
    read_log,
    read_spec,
    run_of_checkpoint,
)
from fusionedge.card.sources import collect_sources

# More labels than this are not listed, tabulated or drawn one by one.
MAX_CLASS_ROWS = 50


def collect_facts(target: Path, sources: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Everything the card says, read from files; nothing is computed that a file does not
    hold except counts (the manifest's) and per-class precision (a confusion matrix's)."""
    target = Path(target)
    if not target.exists():
        raise FileNotFoundError(f"{target}: no such run folder or model file")
    facts: dict[str, Any] = {"target": target, "files": []}
    facts["kind"], run, model, report = locate(target)
    facts.update(run=run, model=model, report=report)
    if report is not None:
        facts["files"].append(model_report_path(target))
    read_run(facts, run)
    if facts["spec"] is None and report is None:
        raise ValueError(f"{target}: neither spec.json nor {model_report_path(target).name}")
    metrics = facts["metrics"] or {}
    labels = tuple(facts["spec"].labels if facts["spec"] else report["labels"])
    facts["data"] = data_summary(metrics.get("data"), labels)
    facts["exports"] = exports_of(run, model, report)
    identity = {target.resolve()}
    if run is not None:
        identity |= {run.resolve(), (run / "best.safetensors").resolve()}
    identity |= {Path(e["model"]).resolve() for e in facts["exports"] if e.get("model")}
    folders = [f for f in {target.parent, *([run, run.parent] if run else [])} if f.is_dir()]
    if target.is_dir():
        folders.append(target)
    facts["sources"] = collect_sources(identity, sorted(set(folders)), tuple(sources))
    facts["files"] += [Path(e["_path"]) for e in facts["exports"] if "_path" in e]
    facts["files"] += [s["path"] for s in facts["sources"]]
    return facts


def locate(target: Path) -> tuple[str, Path | None, Path | None, dict | None]:
    """(kind, run folder, model file, export report) of an existing target."""
    if target.is_dir():
        if not (target / "metrics.json").is_file() and not (target / "spec.json").is_file():
            raise ValueError(f"{target}: not a run folder (no metrics.json or spec.json)")
        return "run", target, None, None
    if target.suffix != ".onnx":
        raise ValueError(f"{target}: give a run folder or an .onnx model file")
    report = read_json(model_report_path(target))
    run = run_of_checkpoint(report.get("checkpoint")) if report else None
    return "model", run, target, report


def read_run(facts: dict[str, Any], run: Path | None) -> None:
    """config, metrics, log and spec of the run folder into facts (None or [] without
    one), each file read added to facts["files"]."""
    for name in ("config.json", "metrics.json"):
        value = read_json(run / name) if run else None
        facts[name.split(".")[0]] = value
        if value is not None:
            facts["files"].append(run / name)
    facts["log"] = read_log(run / "log.csv") if run else []
    if facts["log"]:
        facts["files"].append(run / "log.csv")
    facts["spec"] = read_spec(run)
    if facts["spec"] is not None:
        facts["files"].append(run / "spec.json")


def exports_of(run: Path | None, model: Path | None, report: dict | None) -> list[dict]:
    """Export reports of this model: its own, or for a run the *.report.json files in the
    run folder and the folder above whose checkpoint lies in the run."""
    if report is not None:
        return [report]
    if run is None:
        return []
    found = []
    for folder in (run, run.parent):
        for p in sorted(folder.glob("*.report.json")):
            rep = read_json(p)
            if (
                isinstance(rep, dict)
                and rep.get("checkpoint")
                and Path(rep["checkpoint"]).resolve().parent == run.resolve()
            ):
                found.append({**rep, "_path": p})
    return found


# A run's spec.json is read first; a model whose run is gone falls back on its report.


def task_of(facts: dict[str, Any]) -> str:
    return facts["spec"].task if facts["spec"] else facts["report"]["task"]


def labels_of(facts: dict[str, Any]) -> tuple[str, ...]:
    return tuple(facts["spec"].labels if facts["spec"] else facts["report"]["labels"])


def modalities_of(facts: dict[str, Any]) -> tuple[str, ...]:
    return tuple(facts["spec"].modalities if facts["spec"] else facts["report"]["modalities"])


def primary(task: str) -> tuple[str, bool]:
    """The task's headline metric and whether higher is better."""
    if task == "regression":
        return "mae", False
    if task == "multilabel":
        return "macro_f1", True
    return "accuracy", True
