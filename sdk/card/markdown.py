"""The card's text: one function per section, each a list of lines built from the facts
(fusionedge.card.facts) and the PNGs already written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fusionedge.card.facts import MAX_CLASS_ROWS, labels_of, modalities_of, primary, task_of
from fusionedge.card.limits import section_limits
from fusionedge.card.plots import PLOT_HINT, PLOTS
from fusionedge.card.sources import evaluations, latency_series, live_figures, pct_order
from fusionedge.card.text import (
    NOT_MEASURED,
    fmt,
    how_to_measure,
    per_class_rows,
    scalar_metrics,
    table,
)
from fusionedge.contract import input_layout
from fusionedge.spec import ModelSpec
from fusionedge.version import __version__


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
    labels, task = labels_of(facts), task_of(facts)
    shown = ", ".join(f"`{x}`" for x in labels[:MAX_CLASS_ROWS])
    more = f" and {len(labels) - MAX_CLASS_ROWS} more" if len(labels) > MAX_CLASS_ROWS else ""
    what = "target" if task == "regression" else f"{len(labels)} labels"
    lines = [
        "## What it is for",
        "",
        f"- Task: **{task}**, {what}: {shown}{more}",
        f"- Modalities: {', '.join(modalities_of(facts))} (any subset may be missing at "
        "prediction time; mark it absent)",
    ]
    spec = facts["spec"]
    if spec is not None:
        lines += model_lines(spec)
    elif facts["report"] and "inputs" in facts["report"]:
        rows = [[n, str(s)] for n, s in facts["report"]["inputs"].items()]
        lines += ["", "Inputs:", "", *table(["input", "shape"], rows)]
    else:
        lines.append("")
    return lines


def model_lines(spec: ModelSpec) -> list[str]:
    """The model's parts, its inputs and the preprocessing, from the spec."""
    parts = ", ".join(f"{m} `{c.name}`" for m, c in spec.encoders.items())
    lines = [
        f"- Model: encoders {parts}; fusion `{spec.fusion.name}`; head `{spec.head.name}`; "
        f"embedding width {spec.embed_dim}"
    ]
    lines += ["", "Inputs (batch axis first, dynamic):", ""]
    rows = [
        [n, d, "[N, " + ", ".join(map(str, s)) + "]"] for n, (d, s) in input_layout(spec).items()
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
    return [*lines, f"Preprocessing (done by the runtime): {'; '.join(pre)}.", ""]


def section_data(facts: dict[str, Any]) -> list[str]:
    lines = ["## Data and splits", ""]
    data, metrics = facts["data"], facts["metrics"] or {}
    if data.get("error"):
        lines += [f"Data set `{data['path']}`: {data['error']}; split counts {NOT_MEASURED}.", ""]
    else:
        lines += split_tables(facts, data)
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


def split_tables(facts: dict[str, Any], data: dict[str, Any]) -> list[str]:
    """Samples, modalities and groups per split; samples per label and split."""
    lines = [f"Data set: `{data['path']}` (counts read from the manifest now).", ""]
    mods = data["modalities"]
    rows = []
    for split, s in data["splits"].items():
        groups = s["groups"] if s["groups"] else "none"
        rows.append([split, s["n"], *[s["modalities"][m] for m in mods], groups])
    lines += table(["split", "samples", *[f"with {m}" for m in mods], "groups"], rows)
    labels = labels_of(facts)
    if task_of(facts) != "regression" and len(labels) <= MAX_CLASS_ROWS:
        splits = list(data["splits"])
        rows = [[x, *[data["splits"][sp]["labels"].get(x, 0) for sp in splits]] for x in labels]
        lines += ["Samples per label:", "", *table(["label", *splits], rows)]
    return lines


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
    labels, metrics = labels_of(facts), facts["metrics"] or {}
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
    key, _ = primary(task_of(facts))
    for ev in evals:
        lines += evaluation_lines(ev, labels, key)
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


def evaluation_lines(ev: dict[str, Any], labels: tuple[str, ...], key: str) -> list[str]:
    """One measured evaluation: its metrics, per class, and per modality."""
    r = ev["result"]
    lines = [
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


def section_latency(facts: dict[str, Any], plots: dict, md_dir: Path) -> list[str]:
    lines = ["## Latency", ""]
    series = latency_series(facts)
    if not series:
        return [
            *lines,
            f"Latency: {NOT_MEASURED}. Measure with {how_to_measure(facts, 'bench')}.",
            "",
        ]
    keys = sorted({k for s in series for k in s["stats"] if k.endswith("_ms")}, key=pct_order)
    rows = [[s["name"], *[s["stats"].get(k) for k in keys], s["source"].name] for s in series]
    lines += ["Milliseconds per call (percentiles as stored; no per-call times are kept):", ""]
    lines += table(["what", *keys, "source"], rows)
    return lines + _image(plots, "latency", md_dir, "latency percentiles")


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
        lines += export_lines(rep)
    return [*lines, ""]


def export_lines(rep: dict[str, Any]) -> list[str]:
    """One export report: the file, parity with PyTorch, and the int8/fp16 copies."""
    name = Path(rep.get("model", "model.onnx")).name
    lines = [
        f"- `{name}`: {rep['bytes']:,} bytes ({rep['bytes'] / 1e6:.2f} MB), opset "
        f"{rep.get('opset')}, {rep.get('nodes')} nodes"
    ]
    parity = rep.get("parity") or {}
    if "max_abs_diff_scores" in parity:
        verdict = "passed" if not parity.get("failed") else f"FAILED in {parity['failed']} cases"
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
    return lines


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
