"""The card's "Known limits": what the files show the model cannot be trusted with, and
which figures no file holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fusionedge.card.facts import labels_of, primary, task_of
from fusionedge.card.sources import evaluations, latency_series, live_figures
from fusionedge.card.text import NOT_MEASURED, fmt, per_class_rows

# A modality alone scoring this far (in the metric's units) below the fused model is a
# known limit worth a line.
LOW_ALONE_GAP = 0.10
SMALL_SPLIT = 100


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


def known_limits(facts: dict[str, Any]) -> list[str]:
    """Lines for what the files show the model cannot be trusted with."""
    metrics = facts["metrics"] or {}
    out = group_limits(metrics)
    out += modality_limits(facts)
    for path, live in live_figures(facts):
        if live.get("gap") is not None and live["gap"] > 0.05:
            out.append(
                f"Live conditions cost {live['gap'] * 100:.1f} points against offline "
                f"(`{path.name}`)."
            )
    out += validation_limits(metrics, labels_of(facts))
    config = facts["config"] or {}
    if metrics and metrics.get("best_epoch") == metrics.get("epochs_run") == config.get("epochs"):
        out.append("The best epoch is the last one: more epochs might still help.")
    for rep in facts["exports"]:
        if (rep.get("parity") or {}).get("failed"):
            out.append(f"Parity FAILED for `{Path(rep['model']).name}`.")
    return out


def group_limits(metrics: dict[str, Any]) -> list[str]:
    """Whether validation shares groups (speakers, sessions) with training."""
    vg = metrics.get("val_groups") or {}
    if vg.get("seen_in_train"):
        return [
            f"{vg['seen_in_train']} of {vg['n_groups']} validation groups also occur in "
            f"training ({vg['samples_in_seen_groups']} samples): validation partly measures "
            "memory of those speakers or sessions, not generalisation."
        ]
    if metrics and not vg.get("n_groups"):
        return [
            "The validation samples carry no group: nothing shows whether validation shares "
            "speakers, sessions or recordings with training."
        ]
    return []


def modality_limits(facts: dict[str, Any]) -> list[str]:
    """Modalities that score far below the fused model alone, or are often missing; from
    the first evaluation (the others are the same samples or splits again)."""
    out: list[str] = []
    key, higher = primary(task_of(facts))
    for ev in evaluations(facts)[:1]:
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
    return out


def validation_limits(metrics: dict[str, Any], labels: tuple[str, ...]) -> list[str]:
    """Classes recalled poorly at training's validation, and a validation split so small
    that one sample moves accuracy visibly."""
    out = []
    rows = per_class_rows(metrics.get("val") or {}, labels)
    weak = [f"{r[0]} ({fmt(r[2], 2)})" for r in rows if r[2] is not None and r[2] < 0.8]
    if weak:
        out.append(f"Validation recall under 0.8: {', '.join(weak[:20])}.")
    n_val = sum(rows[i][1] for i in range(len(rows))) if rows else None
    if n_val is not None and n_val < SMALL_SPLIT:
        out.append(
            f"Only {n_val} validation samples: one sample moves accuracy by {1 / n_val:.3f}."
        )
    return out
