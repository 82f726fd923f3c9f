"""The card's plots, one PNG each, drawn on matplotlib's Agg canvas. matplotlib (and
numpy) are imported inside the functions that draw, so that the card, and the core with
it, loads without matplotlib (the `card` extra)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

from fusionedge.card.facts import MAX_CLASS_ROWS, labels_of, primary, task_of
from fusionedge.card.sources import evaluations, latency_series, pct_order

PLOT_HINT = 'pip install "fusionedge[card]"'
PLOTS = {
    "curves": "training_curves.png",
    "confusion": "confusion_matrix.png",
    "modalities": "per_modality.png",
    "latency": "latency_percentiles.png",
}


def have_matplotlib() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def remove_stale(folder: Path) -> None:
    """Deletes the plots an earlier card drew: a plot must not outlive its data, nor stay
    behind once matplotlib is gone."""
    for stale in PLOTS.values():
        (folder / stale).unlink(missing_ok=True)


def draw_all(facts: dict[str, Any], folder: Path) -> dict[str, Path | None]:
    """Every plot that has data, by PLOTS key (None: nothing to draw). Needs matplotlib:
    fusionedge.card.draw_plots checks for it first."""
    folder.mkdir(parents=True, exist_ok=True)
    metrics = facts["metrics"] or {}
    labels, task = labels_of(facts), task_of(facts)
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
    keys = sorted({k for s in series for k in s["stats"] if k.endswith("_ms")}, key=pct_order)
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
