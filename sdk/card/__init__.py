"""A model card (card.md) and its plots for a run folder or an exported model file.

    write_card("run/")          # run/card.md, run/card/*.png
    write_card("model.onnx")    # model.card.md, model.card/*.png, beside the file

Everything on the card is read from files; nothing is run and no number is made up.
Three steps, each its own module: collect_facts (facts.py, with reading.py for the files
and sources.py for the measured figures), render_markdown (markdown.py, with text.py and
limits.py) and draw_plots (plots.py: one PNG each, matplotlib's Agg canvas, imported
inside the functions that draw so that the core loads without matplotlib). This module
ties them together and is the API the rest of fusionedge imports.

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

from pathlib import Path
from typing import Any

from fusionedge.card.facts import MAX_CLASS_ROWS, collect_facts, exports_of
from fusionedge.card.limits import known_limits
from fusionedge.card.markdown import render_markdown
from fusionedge.card.plots import (
    PLOT_HINT,
    PLOTS,
    draw_all,
    have_matplotlib,
    plot_confusion,
    plot_curves,
    plot_latency,
    plot_modalities,
    remove_stale,
)
from fusionedge.card.reading import log, model_report_path, read_json
from fusionedge.card.sources import evaluations, latency_series, live_figures
from fusionedge.card.text import NOT_MEASURED

__all__ = [
    "CARD_FOLDER",
    "MAX_CLASS_ROWS",
    "NOT_MEASURED",
    "PLOTS",
    "PLOT_HINT",
    "card_paths",
    "collect_facts",
    "draw_plots",
    "evaluations",
    "exports_of",
    "have_matplotlib",
    "known_limits",
    "latency_series",
    "live_figures",
    "model_report_path",
    "plot_confusion",
    "plot_curves",
    "plot_latency",
    "plot_modalities",
    "read_json",
    "render_markdown",
    "write_card",
    "write_card_or_warn",
]

CARD_FOLDER = "card"


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


def draw_plots(facts: dict[str, Any], folder: Path) -> dict[str, Path | None]:
    """Every plot that has data; {} when matplotlib is missing."""
    remove_stale(folder)
    # have_matplotlib is looked up in this module, so that fusionedge.card.have_matplotlib
    # stays the one switch for plots (the tests turn it off there).
    if not have_matplotlib():
        return {}
    return draw_all(facts, folder)


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
