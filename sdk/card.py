"""A model card (card.md) and its plots for a run folder or an exported model file.

    write_card("run/")          # run/card.md, run/card/*.png
    write_card("model.onnx")    # model.card.md, model.card/*.png, beside the file

Everything on the card is read from files; nothing is run and no number is made up.
Three steps, each its own set of functions: collect_facts (the files), render_markdown
(the text) and the plot_* functions (one PNG each, matplotlib's Agg canvas, imported
inside them so that the core loads without matplotlib).

What the card reads:
- a run folder: config.json, spec.json, metrics.json, log.csv, and the data set's
  manifest (metrics.json "data") when it is still there;
- a model file: NAME.report.json beside it (export's report: labels, task, inputs, parity,
  sizes, int8/fp16 copies) and, through its "checkpoint", the run folder it came from;
  the spec is read from the run's spec.json, not from the ONNX metadata (the core reads
  no ONNX);
- measured figures (per class and per modality on a split, robustness, live conditions,
  latency), from JSON files the commands wrote and the user saved:
  `fusionedge eval ... --json` (recognised by "metrics", "split", "n"),
  `fusionedge bench ... --json` ("batches", "runtime") and the quickstart's report.json
  ("eval", "latency_ms"). They are looked up as `*.eval*.json`, `eval*.json`,
  `*.bench*.json`, `bench*.json` and `report.json` in the run folder, the model's folder
  and the folder above the run, and used only when the model they name is this run or
  one of its exports (a file given as `sources` is used whatever it names; the card
  says which model it measured). What no file holds is written as "not measured", with
  the command that measures it.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import math
from pathlib import Path
from typing import Any

from fusionedge.contract import input_layout
from fusionedge.spec import ModelSpec
from fusionedge.version import __version__

log = logging.getLogger(__name__)

NOT_MEASURED = "not measured"
CARD_FOLDER = "card"
PLOT_HINT = 'pip install "fusionedge[card]"'
# A modality alone scoring this far (in the metric's units) below the fused model is a
# known limit worth a line.
LOW_ALONE_GAP = 0.10
SMALL_SPLIT = 100
MAX_CLASS_ROWS = 50
PLOTS = {
    "curves": "training_curves.png",
    "confusion": "confusion_matrix.png",
    "modalities": "per_modality.png",
    "latency": "latency_percentiles.png",
}


# ---------------------------------------------------------------------------- paths


def card_paths(target: Path, out: Path | None = None) -> tuple[Path, Path]:
    """(card.md, plot folder) for a run folder or model file; with `out`, DIR/card.md and
    DIR/card/. A model file's card is NAME.card.md with NAME.card/ beside it, so that two
    models in one folder keep their own (as NAME.report.json does)."""
    if out is not None:
        return out / "card.md", out / CARD_FOLDER
    if target.is_dir():
        return target / "card.md", target / CARD_FOLDER
    stem = target.stem
    return target.with_name(f"{stem}.card.md"), target.with_name(f"{stem}.{CARD_FOLDER}")


def model_report_path(model: Path) -> Path:
    """model.onnx -> model.report.json (export's report, beside the file)."""
    return model.with_name(model.stem + ".report.json")


# ---------------------------------------------------------------------------- reading


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
        s["n"] += 1
        for m in manifest.modalities:
            s["modalities"][m] = s["modalities"].get(m, 0) + int(r.has(m))
        if r.group is None:
            s["no_group"] += 1
        else:
            s["groups"].add(r.group)
        names = r.label if isinstance(r.label, list) else [r.label]
        for name in names:
            if isinstance(name, str):
                s["labels"][name] = s["labels"].get(name, 0) + 1
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


# ---------------------------------------------------------------------------- sources


def source_kind(obj: Any) -> str | None:
    """What a JSON file is: "eval", "bench", "quickstart", or None."""
    if not isinstance(obj, dict):
        return None
    if "eval" in obj and "latency_ms" in obj:
        return "quickstart"
    if "metrics" in obj and "split" in obj and "n" in obj:
        return "eval"
    if "batches" in obj and "runtime" in obj:
        return "bench"
    return None


def _resolve(name: str, base: Path) -> set[Path]:
    path = Path(name)
    found = {path.resolve()} if path.is_absolute() else {(base / path).resolve(), path.resolve()}
    # A checkpoint names its run folder.
    return found | {p.parent for p in found if p.suffix == ".safetensors"}


def candidate_files(folders: list[Path]) -> list[Path]:
    patterns = ("*.eval*.json", "eval*.json", "*.bench*.json", "bench*.json", "report.json")
    seen: list[Path] = []
    for folder in folders:
        for pattern in patterns:
            for p in sorted(folder.glob(pattern)):
                if p.resolve() not in {s.resolve() for s in seen}:
                    seen.append(p)
    return seen


def collect_sources(
    identity: set[Path], folders: list[Path], given: tuple[Path, ...]
) -> list[dict[str, Any]]:
    """The measured-figure files: {"path", "kind", "model", "data"}. Found files count only
    when the model they name is in identity (the run folder, its checkpoint, its exports)."""
    out: list[dict[str, Any]] = []
    for path, explicit in [(p, True) for p in given] + [
        (p, False) for p in candidate_files(folders)
    ]:
        if any(s["path"].resolve() == path.resolve() for s in out):
            continue
        obj = read_json(path)
        kind = source_kind(obj)
        if kind is None:
            if explicit:
                raise ValueError(f"{path}: not an eval, bench or quickstart JSON report")
            continue
        named = obj["eval"].get("model") if kind == "quickstart" else obj.get("model")
        if not explicit and (not named or not (_resolve(named, path.parent) & identity)):
            continue
        out.append({"path": path, "kind": kind, "model": named, "data": obj})
    return out


def evaluations(facts: dict[str, Any]) -> list[dict[str, Any]]:
    """Every measured evaluation: {"source", "backend", "result"} (a quickstart report
    holds two: ONNX Runtime and PyTorch on the same samples)."""
    out = []
    for s in facts["sources"]:
        if s["kind"] == "eval":
            backend = "ONNX Runtime" if "providers" in s["data"] else "PyTorch"
            out.append({"source": s["path"], "backend": backend, "result": s["data"]})
        elif s["kind"] == "quickstart":
            ev = s["data"]["eval"]
            out.append({"source": s["path"], "backend": "ONNX Runtime", "result": ev})
            torch_eval = s["data"].get("torch_eval")
            if torch_eval:
                # The quickstart's PyTorch evaluation ran the run's checkpoint on the
                # same samples; its file names no model.
                merged = {**ev, **torch_eval, "model": "the run's best.safetensors (PyTorch)"}
                merged.pop("providers", None)
                out.append({"source": s["path"], "backend": "PyTorch", "result": merged})
    return out


# ---------------------------------------------------------------------------- facts


def collect_facts(target: Path, sources: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Everything the card says, read from files; nothing is computed that a file does not
    hold except counts (the manifest's) and per-class precision (a confusion matrix's)."""
    target = Path(target)
    if not target.exists():
        raise FileNotFoundError(f"{target}: no such run folder or model file")
    facts: dict[str, Any] = {"target": target, "files": []}
    report = None
    if target.is_dir():
        if not (target / "metrics.json").is_file() and not (target / "spec.json").is_file():
            raise ValueError(f"{target}: not a run folder (no metrics.json or spec.json)")
        facts["kind"], run, model = "run", target, None
    else:
        if target.suffix != ".onnx":
            raise ValueError(f"{target}: give a run folder or an .onnx model file")
        facts["kind"], model = "model", target
        report = read_json(model_report_path(target))
        run = run_of_checkpoint(report.get("checkpoint")) if report else None
    facts.update(run=run, model=model, report=report)
    if report is not None:
        facts["files"].append(model_report_path(target))
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


# ---------------------------------------------------------------------------- helpers


def fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def scalar_metrics(metrics: dict[str, Any]) -> list[tuple[str, float]]:
    return [(k, v) for k, v in metrics.items() if isinstance(v, int | float) and k != "n_present"]


def per_class_rows(metrics: dict[str, Any], labels: tuple[str, ...]) -> list[list[Any]]:
    """label, support, recall, precision (from the confusion matrix, rows = truth)."""
    matrix = metrics.get("confusion_matrix")
    recall = metrics.get("recall_per_class")
    if not matrix or len(matrix) != len(labels):
        return []
    cols = [sum(row[j] for row in matrix) for j in range(len(labels))]
    rows = []
    for i, name in enumerate(labels):
        support = sum(matrix[i])
        r = recall[i] if recall else (matrix[i][i] / support if support else None)
        p = matrix[i][i] / cols[i] if cols[i] else None
        rows.append([name, support, r, p])
    return rows


def primary(task: str) -> tuple[str, bool]:
    if task == "regression":
        return "mae", False
    if task == "multilabel":
        return "macro_f1", True
    return "accuracy", True


def how_to_measure(facts: dict[str, Any], flag: str) -> str:
    model = facts["model"] or (facts["exports"][0].get("model") if facts["exports"] else None)
    name = Path(model).stem if model else "eval"
    what = model or str(facts["run"])
    data = facts["data"].get("path") or "DATA"
    if flag == "bench":
        target = model or "MODEL.onnx"
        out = Path(target).with_name(Path(target).stem + ".bench.json")
        return f"`fusionedge bench {target} --json > {out}`"
    out = Path(what).parent / f"{name}.eval.json" if model else Path(what) / "eval.json"
    return f"`fusionedge eval {what} --data {Path(data).parent} {flag} --json > {out}`".replace(
        "  ", " "
    )


# ---------------------------------------------------------------------------- markdown


def render_markdown(facts: dict[str, Any], plots: dict[str, Path | None], md_dir: Path) -> str:
    """The card's text. plots maps each PLOTS key to the PNG written (None: nothing to
    draw); an empty dict means matplotlib is missing."""
    sections = [
        section_header(facts),
        section_purpose(facts),
        section_data(facts),
        section_training(facts, plots, md_dir),
        section_metrics(facts, plots, md_dir),
        section_robustness(facts),
        section_live(facts),
        section_latency(facts, plots, md_dir),
        section_size_parity(facts),
        section_limits(facts),
        section_plots(facts, plots, md_dir),
        section_sources(facts),
    ]
    return "\n".join(line for s in sections for line in s).rstrip() + "\n"


def _task(facts: dict[str, Any]) -> str:
    return facts["spec"].task if facts["spec"] else facts["report"]["task"]


def _labels(facts: dict[str, Any]) -> tuple[str, ...]:
    return tuple(facts["spec"].labels if facts["spec"] else facts["report"]["labels"])


def _modalities(facts: dict[str, Any]) -> tuple[str, ...]:
    return tuple(facts["spec"].modalities if facts["spec"] else facts["report"]["modalities"])


def _image(plots: dict[str, Path | None], key: str, md_dir: Path, alt: str) -> list[str]:
    path = plots.get(key)
    if path is None:
        return []
    return [f"![{alt}]({path.relative_to(md_dir).as_posix()})", ""]


def section_header(facts: dict[str, Any]) -> list[str]:
    target = facts["target"]
    kind = "run folder" if facts["kind"] == "run" else "exported model file"
    return [
        f"# Model card: {target.resolve().parent.name}/{target.resolve().name}",
        "",
        f"Written by `fusionedge card` (fusionedge {__version__}) from the files of the "
        f"{kind} `{target}`; every figure below is copied from a file listed under "
        f'"Sources". A figure no file holds is marked "{NOT_MEASURED}".',
        "",
    ]


def section_purpose(facts: dict[str, Any]) -> list[str]:
    labels, task = _labels(facts), _task(facts)
    shown = ", ".join(f"`{x}`" for x in labels[:MAX_CLASS_ROWS])
    more = f" and {len(labels) - MAX_CLASS_ROWS} more" if len(labels) > MAX_CLASS_ROWS else ""
    what = "target" if task == "regression" else f"{len(labels)} labels"
    lines = [
        "## What it is for",
        "",
        f"- Task: **{task}**, {what}: {shown}{more}",
        f"- Modalities: {', '.join(_modalities(facts))} (any subset may be missing at "
        "prediction time; mark it absent)",
    ]
    spec = facts["spec"]
    if spec is not None:
        parts = ", ".join(f"{m} `{c.name}`" for m, c in spec.encoders.items())
        lines.append(
            f"- Model: encoders {parts}; fusion `{spec.fusion.name}`; head `{spec.head.name}`; "
            f"embedding width {spec.embed_dim}"
        )
        lines += ["", "Inputs (batch axis first, dynamic):", ""]
        rows = [
            [n, d, "[N, " + ", ".join(map(str, s)) + "]"]
            for n, (d, s) in input_layout(spec).items()
        ]
        lines += table(["input", "dtype", "shape"], rows)
        pre = []
        if spec.image:
            pre.append(f"image {spec.image.width}x{spec.image.height} RGB ({spec.image.resize})")
        if spec.audio:
            secs = spec.audio.num_samples / spec.audio.sample_rate
            pre.append(f"audio {spec.audio.sample_rate} Hz mono, {secs:g} s window")
        if spec.text:
            pre.append(f"text up to {spec.text.max_length} tokens")
        lines += [f"Preprocessing (done by the runtime): {'; '.join(pre)}.", ""]
    elif facts["report"] and "inputs" in facts["report"]:
        rows = [[n, str(s)] for n, s in facts["report"]["inputs"].items()]
        lines += ["", "Inputs:", "", *table(["input", "shape"], rows)]
    else:
        lines.append("")
    return lines


def section_data(facts: dict[str, Any]) -> list[str]:
    lines = ["## Data and splits", ""]
    data, metrics = facts["data"], facts["metrics"] or {}
    if data.get("error"):
        lines += [f"Data set `{data['path']}`: {data['error']}; split counts {NOT_MEASURED}.", ""]
    else:
        lines += [f"Data set: `{data['path']}` (counts read from the manifest now).", ""]
        mods = data["modalities"]
        rows = []
        for split, s in data["splits"].items():
            groups = s["groups"] if s["groups"] else "none"
            rows.append([split, s["n"], *[s["modalities"][m] for m in mods], groups])
        lines += table(["split", "samples", *[f"with {m}" for m in mods], "groups"], rows)
        labels = _labels(facts)
        if _task(facts) != "regression" and len(labels) <= MAX_CLASS_ROWS:
            splits = list(data["splits"])
            rows = [[x, *[data["splits"][sp]["labels"].get(x, 0) for sp in splits]] for x in labels]
            lines += ["Samples per label:", "", *table(["label", *splits], rows)]
    balance = metrics.get("balance")
    if balance:
        lines.append(
            f"Training: sampler `{balance.get('sampler')}`, class weights "
            f"`{balance.get('class_weights')}` (metrics.json)."
        )
    vg = metrics.get("val_groups")
    if vg is not None:
        if vg.get("n_groups"):
            lines.append(
                f"Validation groups (metrics.json): {vg['n_groups']} groups, "
                f"{vg['seen_in_train']} of them also in train "
                f"({vg['samples_in_seen_groups']} of {vg['n_samples']} grouped val samples)."
            )
        else:
            lines.append("Validation groups (metrics.json): the val samples carry no group.")
    return [*lines, ""]


def section_training(facts: dict[str, Any], plots: dict, md_dir: Path) -> list[str]:
    lines = ["## Training", ""]
    metrics, rows = facts["metrics"] or {}, facts["log"]
    if not rows and not metrics:
        return [*lines, f"Training history: {NOT_MEASURED} (no run folder reachable).", ""]
    if metrics:
        lines.append(
            f"- Best epoch {metrics.get('best_epoch')} of {metrics.get('epochs_run')} run "
            f"(configured: {(facts['config'] or {}).get('epochs', 'n/a')})"
        )
    if rows:
        last = rows[-1]
        best = next((r for r in rows if r.get("epoch") == metrics.get("best_epoch")), None)
        for name, row in (("best epoch", best), ("last epoch", last)):
            if row is None:
                continue
            figures = ", ".join(
                f"{k} {fmt(v)}"
                for k, v in row.items()
                if k in ("train_loss", "val_loss") or k.startswith("val_")
            )
            lines.append(f"- log.csv, {name} ({int(row['epoch'])}): {figures}")
        total = sum(r.get("seconds", 0.0) for r in rows)
        lines.append(f"- Epoch time in all: {total:.1f} s")
    return [*lines, "", *_image(plots, "curves", md_dir, "training curves")]


def section_metrics(facts: dict[str, Any], plots: dict, md_dir: Path) -> list[str]:
    lines = ["## Metrics", ""]
    labels, metrics = _labels(facts), facts["metrics"] or {}
    val = metrics.get("val")
    lines += ["### Validation split, at training (metrics.json, best epoch)", ""]
    if val:
        lines += table(["metric", "value"], [[k, v] for k, v in scalar_metrics(val)])
        rows = per_class_rows(val, labels)
        if rows and len(rows) <= MAX_CLASS_ROWS:
            lines += ["Per class (precision from the confusion matrix):", ""]
            lines += table(["label", "support", "recall", "precision"], rows)
        lines += _image(plots, "confusion", md_dir, "validation confusion matrix")
    else:
        lines += [f"Validation metrics: {NOT_MEASURED} (no metrics.json reachable).", ""]
    evals = evaluations(facts)
    key, _ = primary(_task(facts))
    for ev in evals:
        r = ev["result"]
        lines += [
            f"### {r.get('split')} split, {r.get('n')} samples, {ev['backend']} "
            f"(`{ev['source'].name}`)",
            "",
            f"Model evaluated: `{r.get('model')}`.",
            "",
        ]
        lines += table(["metric", "value"], [[k, v] for k, v in scalar_metrics(r["metrics"])])
        rows = per_class_rows(r["metrics"], tuple(r.get("labels", labels)))
        if rows and len(rows) <= MAX_CLASS_ROWS:
            lines += ["Per class:", "", *table(["label", "support", "recall", "precision"], rows)]
        by = r.get("by_modality")
        if by:
            lines += [
                "Per modality (the others marked missing, over all samples; "
                "'when present': only the samples that have it):",
                "",
            ]
            rows = [["fused (all given)", r["n"], r["metrics"].get(key), None]]
            rows += [
                [f"{m} only", v.get("n_present"), v.get(key), v.get(f"{key}_when_present")]
                for m, v in by.items()
            ]
            lines += table(["inputs", "samples with it", key, f"{key} when present"], rows)
    if not evals:
        lines += [
            "### Held-out split, per class and per modality",
            "",
            f"Test-split and per-modality figures: {NOT_MEASURED}. Measure with "
            f"{how_to_measure(facts, '')} and run `fusionedge card` again.",
            "",
        ]
    else:
        lines += _image(plots, "modalities", md_dir, "per-modality metric")
    return lines


def section_robustness(facts: dict[str, Any]) -> list[str]:
    lines = ["## Robustness", ""]
    found = [ev for ev in evaluations(facts) if "robustness" in ev["result"]]
    if not found:
        return [
            *lines,
            f"Robustness (subsets of modalities, noise sweeps): {NOT_MEASURED}. Measure with "
            f"{how_to_measure(facts, '--robustness')}.",
            "",
        ]
    for ev in found:
        rob = ev["result"]["robustness"]
        lines += [f"From `{ev['source'].name}` ({ev['backend']}, {rob.get('n')} samples):", ""]
        clean = "subsets_clean" in rob
        header = ["modalities present", f"{rob['metric']} (all)"]
        header += [f"{rob['metric']} (clean)"] if clean else []
        rows = [
            [name, v, *([rob["subsets_clean"][name]] if clean else [])]
            for name, v in rob["subsets"].items()
        ]
        lines += table(header, rows)
        for m, kinds in rob.get("noise", {}).items():
            for kind, levels in kinds.items():
                values = ", ".join(f"{lv}: {fmt(v, 3)}" for lv, v in levels.items())
                lines.append(f"- {m} {kind}: {values}")
        png = rob.get("png")
        if png and Path(png).is_file():
            lines.append(f"- Chart drawn by eval: `{png}`")
        lines.append("")
    return lines


def live_figures(facts: dict[str, Any]) -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for s in facts["sources"]:
        if s["kind"] in ("eval", "quickstart") and "live" in s["data"]:
            out.append((s["path"], s["data"]["live"]))
    return out


def section_live(facts: dict[str, Any]) -> list[str]:
    lines = ["## Live conditions", ""]
    found = live_figures(facts)
    if not found:
        return [
            *lines,
            f"Live-condition accuracy (camera frames, noisy sliding audio windows): "
            f"{NOT_MEASURED}. Measure with {how_to_measure(facts, '--live')}.",
            "",
        ]
    for path, live in found:
        rows = [
            ["per window", live.get("accuracy")],
            ["per event (majority of full-utterance windows)", live.get("event_accuracy")],
            ["offline, same samples", live.get("offline_accuracy")],
            ["gap (offline - event)", live.get("gap")],
        ]
        lines += [
            f"From `{path.name}` ({live.get('n_samples')} samples, {live.get('n_windows')} "
            f"windows, seed {live.get('seed')}):",
            "",
            *table(["accuracy", "value"], rows),
        ]
    return lines


def latency_series(facts: dict[str, Any]) -> list[dict[str, Any]]:
    """Stored latency figures: {"name", "source", "stats" {pNN_ms...}}. Only percentiles
    and means are stored anywhere (no per-call times)."""
    out = []
    for s in facts["sources"]:
        d = s["data"]
        if s["kind"] == "bench":
            for b, v in d["batches"].items():
                st = v["stages"]["total"]
                out.append(
                    {
                        "name": f"runtime, batch {b}, whole pipeline",
                        "source": s["path"],
                        "stats": st,
                    }
                )
                inf = v["stages"]["inference"]
                out.append(
                    {"name": f"runtime, batch {b}, inference", "source": s["path"], "stats": inf}
                )
            for name in ("torch",):
                if name in d:
                    out.append(
                        {
                            "name": f"PyTorch eager, batch {d['batch']}",
                            "source": s["path"],
                            "stats": d[name],
                        }
                    )
        elif s["kind"] == "quickstart":
            lat = d["latency_ms"]
            for who, label in (("runtime", "ONNX Runtime"), ("torch", "PyTorch eager")):
                st = {
                    k.split("_")[1] + "_ms": v for k, v in lat.items() if k.startswith(who + "_p")
                }
                if st:
                    out.append(
                        {
                            "name": f"{label}, batch {lat.get('batch')}, model compute",
                            "source": s["path"],
                            "stats": st,
                        }
                    )
    for rep in facts["exports"]:
        for precision in ("int8", "fp16"):
            entry = rep.get(precision) or {}
            for which, st in (entry.get("latency") or {}).items():
                if isinstance(st, dict) and "p50_ms" in st:
                    src = rep.get("_path") or model_report_path(Path(rep["model"]))
                    out.append(
                        {
                            "name": f"{which} ({precision} check), batch 1",
                            "source": Path(src),
                            "stats": st,
                        }
                    )
    return out


def section_latency(facts: dict[str, Any], plots: dict, md_dir: Path) -> list[str]:
    lines = ["## Latency", ""]
    series = latency_series(facts)
    if not series:
        return [
            *lines,
            f"Latency: {NOT_MEASURED}. Measure with {how_to_measure(facts, 'bench')}.",
            "",
        ]
    keys = sorted({k for s in series for k in s["stats"] if k.endswith("_ms")}, key=_pct_order)
    rows = [[s["name"], *[s["stats"].get(k) for k in keys], s["source"].name] for s in series]
    lines += ["Milliseconds per call (percentiles as stored; no per-call times are kept):", ""]
    lines += table(["what", *keys, "source"], rows)
    return lines + _image(plots, "latency", md_dir, "latency percentiles")


def _pct_order(key: str) -> float:
    body = key.removesuffix("_ms")
    return -1.0 if body == "mean" else float(body[1:]) if body[1:].isdigit() else 1e9


def section_size_parity(facts: dict[str, Any]) -> list[str]:
    lines = ["## Size and parity", ""]
    run = facts["run"]
    if run is not None and (run / "best.safetensors").is_file():
        size = (run / "best.safetensors").stat().st_size
        lines.append(f"- Checkpoint `best.safetensors`: {size:,} bytes ({size / 1e6:.2f} MB)")
    if not facts["exports"]:
        lines += [
            f"- ONNX file size, opset and PyTorch-ONNX parity: {NOT_MEASURED} (no export "
            f"report found; `fusionedge export {run or 'RUN'} --out model.onnx` writes one).",
            "",
        ]
        return lines
    for rep in facts["exports"]:
        name = Path(rep.get("model", "model.onnx")).name
        lines.append(
            f"- `{name}`: {rep['bytes']:,} bytes ({rep['bytes'] / 1e6:.2f} MB), opset "
            f"{rep.get('opset')}, {rep.get('nodes')} nodes"
        )
        parity = rep.get("parity") or {}
        if "max_abs_diff_scores" in parity:
            verdict = (
                "passed" if not parity.get("failed") else f"FAILED in {parity['failed']} cases"
            )
            lines.append(
                f"- Parity with PyTorch: max |score difference| "
                f"{parity['max_abs_diff_scores']:.3g} over {parity.get('cases')} cases "
                f"(tolerance {parity.get('tolerance')}, {verdict})"
            )
        for precision in ("int8", "fp16"):
            entry = rep.get(precision)
            if not entry:
                lines.append(f"- {precision} copy: {NOT_MEASURED} (not asked for at export)")
                continue
            kept = entry.get("path") or "NOT kept"
            text = f"- {precision} copy: {kept}, {fmt(entry.get('bytes'))} bytes"
            if "metric" in entry:
                text += (
                    f"; {entry['metric']} {fmt(entry.get('fp32'), 3)} fp32 -> "
                    f"{fmt(entry.get(precision), 3)} {precision} on {entry.get('n')} "
                    f"{entry.get('split')} samples"
                )
            lines.append(text)
    return [*lines, ""]


def known_limits(facts: dict[str, Any]) -> list[str]:
    """Lines for what the files show the model cannot be trusted with."""
    out = []
    metrics = facts["metrics"] or {}
    vg = metrics.get("val_groups") or {}
    if vg.get("seen_in_train"):
        out.append(
            f"{vg['seen_in_train']} of {vg['n_groups']} validation groups also occur in "
            f"training ({vg['samples_in_seen_groups']} samples): validation partly measures "
            "memory of those speakers or sessions, not generalisation."
        )
    elif metrics and not vg.get("n_groups"):
        out.append(
            "The validation samples carry no group: nothing shows whether validation shares "
            "speakers, sessions or recordings with training."
        )
    key, higher = primary(_task(facts))
    for ev in evaluations(facts):
        r = ev["result"]
        fused = r["metrics"].get(key)
        for m, v in (r.get("by_modality") or {}).items():
            alone = v.get(key)
            if fused is None or alone is None:
                continue
            gap = fused - alone if higher else alone - fused
            if gap >= LOW_ALONE_GAP:
                out.append(
                    f"{m} alone: {key} {fmt(alone)} against {fmt(fused)} fused "
                    f"({r['split']} split, {ev['backend']}): expect that with only the {m}."
                )
            if v.get("n_present") is not None and v["n_present"] < r["n"]:
                out.append(
                    f"{m} is present in only {v['n_present']} of {r['n']} {r['split']} samples."
                )
        break  # the first evaluation; the others are the same samples or splits again
    for path, live in live_figures(facts):
        if live.get("gap") is not None and live["gap"] > 0.05:
            out.append(
                f"Live conditions cost {live['gap'] * 100:.1f} points against offline "
                f"(`{path.name}`)."
            )
    val = metrics.get("val") or {}
    rows = per_class_rows(val, _labels(facts))
    weak = [f"{r[0]} ({fmt(r[2], 2)})" for r in rows if r[2] is not None and r[2] < 0.8]
    if weak:
        out.append(f"Validation recall under 0.8: {', '.join(weak[:20])}.")
    n_val = sum(rows[i][1] for i in range(len(rows))) if rows else None
    if n_val is not None and n_val < SMALL_SPLIT:
        out.append(
            f"Only {n_val} validation samples: one sample moves accuracy by {1 / n_val:.3f}."
        )
    config = facts["config"] or {}
    if metrics and metrics.get("best_epoch") == metrics.get("epochs_run") == config.get("epochs"):
        out.append("The best epoch is the last one: more epochs might still help.")
    for rep in facts["exports"]:
        if (rep.get("parity") or {}).get("failed"):
            out.append(f"Parity FAILED for `{Path(rep['model']).name}`.")
    return out


def section_limits(facts: dict[str, Any]) -> list[str]:
    lines = ["## Known limits", ""]
    limits = known_limits(facts)
    lines += [f"- {x}" for x in limits] or ["- None found in the files read."]
    missing = [
        name
        for name, absent in (
            ("held-out per-modality figures", not evaluations(facts)),
            ("robustness", not any("robustness" in e["result"] for e in evaluations(facts))),
            ("live conditions", not live_figures(facts)),
            ("latency", not latency_series(facts)),
        )
        if absent
    ]
    if missing:
        lines.append(f"- {NOT_MEASURED.capitalize()}: {', '.join(missing)} (see above).")
    return [*lines, ""]


def section_plots(facts: dict[str, Any], plots: dict, md_dir: Path) -> list[str]:
    lines = ["## Plots", ""]
    if not plots:
        return [
            *lines,
            f"No plots: matplotlib is not installed. `{PLOT_HINT}` (or `pip install "
            f"matplotlib`), then `fusionedge card {facts['target']}`.",
            "",
        ]
    for key, name in PLOTS.items():
        path = plots.get(key)
        lines.append(
            f"- `{path.relative_to(md_dir).as_posix()}`" if path else f"- {name}: nothing to draw"
        )
    return [*lines, ""]


def section_sources(facts: dict[str, Any]) -> list[str]:
    lines = ["## Sources", ""]
    lines += [f"- `{p}`" for p in facts["files"]]
    if facts["data"].get("path") and not facts["data"].get("error"):
        lines.append(f"- `{facts['data']['path']}` (counted)")
    return [*lines, ""]


# ---------------------------------------------------------------------------- plots


def have_matplotlib() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure  # no pyplot: no global state, no display

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def plot_curves(rows: list[dict[str, float]], best_epoch: int | None, path: Path) -> Path | None:
    """Train and val loss (left) and the val metrics (right) per epoch, the best marked."""
    if not rows or "epoch" not in rows[0]:
        return None
    fig = _figure(10, 4)
    loss_ax, metric_ax = fig.subplots(1, 2)
    epochs = [r["epoch"] for r in rows]
    for key in ("train_loss", "val_loss"):
        if any(key in r for r in rows):
            loss_ax.plot(epochs, [r.get(key, math.nan) for r in rows], marker=".", label=key)
    loss_ax.set(xlabel="epoch", ylabel="loss", title="loss")
    metric_keys = [k for k in rows[0] if k.startswith("val_") and k != "val_loss"]
    for key in metric_keys:
        metric_ax.plot(epochs, [r.get(key, math.nan) for r in rows], marker=".", label=key)
    metric_ax.set(xlabel="epoch", title="validation metrics")
    for ax in (loss_ax, metric_ax):
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linestyle="--", label=f"best epoch {best_epoch}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.savefig(path)
    return path


def plot_confusion(
    matrix: list[list[int]], labels: tuple[str, ...], title: str, path: Path
) -> Path | None:
    """Counts, rows the true label; each cell annotated when the matrix is small."""
    if not matrix or len(matrix) != len(labels) or len(labels) > MAX_CLASS_ROWS:
        return None
    import numpy as np

    counts = np.asarray(matrix, dtype=float)
    side = max(4.0, 0.45 * len(labels) + 2)
    fig = _figure(side + 1, side)
    ax = fig.subplots()
    image = ax.imshow(counts, cmap="Blues")
    fig.colorbar(image, ax=ax, shrink=0.8, label="samples")
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    if len(labels) <= 20:
        top = counts.max() or 1.0
        for i in range(len(labels)):
            for j in range(len(labels)):
                colour = "white" if counts[i, j] > top / 2 else "black"
                ax.text(
                    j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=7, color=colour
                )
    fig.savefig(path)
    return path


def plot_modalities(result: dict[str, Any], key: str, title: str, path: Path) -> Path | None:
    """Fused against each modality alone (others marked missing), and 'when present'."""
    by = result.get("by_modality")
    if not by or result["metrics"].get(key) is None:
        return None
    names = ["fused", *[f"{m} only" for m in by]]
    alone = [result["metrics"][key], *[v.get(key, math.nan) for v in by.values()]]
    present = [math.nan, *[v.get(f"{key}_when_present", math.nan) for v in by.values()]]
    fig = _figure(7, 4)
    ax = fig.subplots()
    xs = list(range(len(names)))
    bars = ax.bar([x - 0.2 for x in xs], alone, 0.4, label="over all samples")
    ax.bar_label(bars, fmt="%.3f", fontsize=8)
    if any(not math.isnan(v) for v in present):
        bars = ax.bar([x + 0.2 for x in xs], present, 0.4, label="samples that have it")
        ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.set_xticks(xs, names)
    ax.set(ylabel=key, title=title)
    if key != "mae":
        ax.set_ylim(0, 1.08)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
    fig.savefig(path)
    return path


def plot_latency(series: list[dict[str, Any]], path: Path) -> Path | None:
    """A bar per stored percentile and series: the files keep percentiles, not per-call
    times, so this is not a histogram and says so."""
    if not series:
        return None
    keys = sorted({k for s in series for k in s["stats"] if k.endswith("_ms")}, key=_pct_order)
    keys = [k for k in keys if k != "mean_ms"] or keys
    fig = _figure(9, 0.5 * len(series) + 2)
    ax = fig.subplots()
    height = 0.8 / len(keys)
    for j, k in enumerate(keys):
        ys = [i + (j - (len(keys) - 1) / 2) * height for i in range(len(series))]
        values = [s["stats"].get(k, math.nan) for s in series]
        bars = ax.barh(ys, values, height, label=k.removesuffix("_ms"))
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
    ax.set_yticks(range(len(series)), [s["name"] for s in series], fontsize=8)
    ax.invert_yaxis()
    ax.set(
        xlabel="milliseconds",
        title="latency percentiles as stored (not a histogram: per-call times are not kept)",
    )
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path)
    return path


def draw_plots(facts: dict[str, Any], folder: Path) -> dict[str, Path | None]:
    """Every plot that has data; {} when matplotlib is missing."""
    for stale in PLOTS.values():  # a plot of an earlier card must not outlive its data
        (folder / stale).unlink(missing_ok=True)
    if not have_matplotlib():
        return {}
    folder.mkdir(parents=True, exist_ok=True)
    metrics = facts["metrics"] or {}
    labels, task = _labels(facts), _task(facts)
    key, _ = primary(task)
    evals = evaluations(facts)
    plots: dict[str, Path | None] = {
        "curves": plot_curves(facts["log"], metrics.get("best_epoch"), folder / PLOTS["curves"]),
        "confusion": plot_confusion(
            (metrics.get("val") or {}).get("confusion_matrix"),
            labels,
            f"validation confusion matrix (best epoch {metrics.get('best_epoch')})",
            folder / PLOTS["confusion"],
        ),
        "modalities": None,
        "latency": plot_latency(latency_series(facts), folder / PLOTS["latency"]),
    }
    with_modalities = [e for e in evals if e["result"].get("by_modality")]
    if with_modalities:
        ev = with_modalities[0]
        r = ev["result"]
        title = f"{r['split']} split, {r['n']} samples, {ev['backend']}: {key} by inputs given"
        plots["modalities"] = plot_modalities(r, key, title, folder / PLOTS["modalities"])
    return plots


# ---------------------------------------------------------------------------- entry


def write_card(
    path: str | Path, out: str | Path | None = None, sources: tuple[str | Path, ...] = ()
) -> Path:
    """Writes the card of a run folder or an .onnx model file; returns card.md's path.

    Args:
        path: A run folder (card.md and card/ inside it) or a model file (NAME.card.md and
            NAME.card/ beside it).
        out: A folder to write card.md and card/ into instead.
        sources: Eval, bench or quickstart JSON files to read measured figures from, in
            addition to those found beside the run and the model.

    Raises:
        FileNotFoundError: path does not exist.
        ValueError: path is neither a run folder nor a model file with a report or run.
    """
    target = Path(path)
    facts = collect_facts(target, tuple(Path(s) for s in sources))
    md, folder = card_paths(target, Path(out) if out is not None else None)
    md.parent.mkdir(parents=True, exist_ok=True)
    plots = draw_plots(facts, folder)
    text = render_markdown(facts, plots, md.parent)
    tmp = md.with_name(md.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(md)
    return md


def write_card_or_warn(path: str | Path) -> Path | None:
    """write_card for train and export, which call it on what they just wrote: a card that
    cannot be drawn must not fail the run or the export that made it, so a warning says
    why and None is returned."""
    try:
        return write_card(path)
    except (OSError, ValueError) as e:
        log.warning("model card not written for %s: %s", path, e)
        return None
