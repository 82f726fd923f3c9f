"""The soak's report as Markdown tables (format_table): one row per measure against its
target, then one row per kind of fault with the evidence that it happened. Part of
benchmarks/soak.py; live_helpers is importable because soak.py put tests/live on
sys.path."""

from __future__ import annotations

from typing import Any

from live_helpers import CORRUPT_KINDS
from soak_faults import HD, UHD
from soak_stats import scaled

_OK = {True: "PASS", False: "MISS"}


def _num(x: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if x is None else fmt.format(x)


def _growth(figures: dict[str, Any], key: str) -> str:
    """A growth, in bold where it is the one the target judges."""
    text = _num(figures[key], "{:+.1f}" if key.endswith("mb") else "{:+.0f}")
    return f"**{text}**" if figures.get("judged") == key else text


def format_table(report: dict[str, Any]) -> str:
    lines = [_heading(report), "", *_measure_rows(report), "", *_fault_rows(report)]
    return "\n".join(lines)


def _heading(report: dict[str, Any]) -> str:
    c, m = report["config"], report["machine"]
    return (
        f"fusionedge run soak: {c['minutes']:.1f} min ({c['warmup_s']:.0f} s fault-free "
        f"warm-up, {c['cycles']} x {c['cycle']} cycle of {c['cycle_period_s']:.0f} s), "
        f"nice {m['niceness']}, load avg {_num(m['load1_mean'], '{:.2f}')} "
        f"(max {_num(m['load1_max'], '{:.2f}')}), "
        f"machine busy {_num(m['machine_busy_percent'], '{:.0f}')} % of {m['cpus']} cores, "
        f"fusionedge run {_num(m['process_cpu_percent'], '{:.0f}')} % of one core"
    )


def _measure_rows(report: dict[str, Any]) -> list[str]:
    r, mem, cnt, tg = report["rates"], report["memory"], report["counts"], report["targets"]
    lines = [
        "| measure | figure | target | |",
        "| --- | --- | --- | --- |",
        f"| results/s outside fault windows vs fault-free | {_num(r['outside_faults_hz'])} vs "
        f"{_num(r['fault_free_hz'])} (**{_num(scaled(r['ratio'], 100), '{:.1f}')} %**); with "
        f"image and audio {_num(r['outside_faults_complete_hz'])} vs "
        f"{_num(r['fault_free_complete_hz'])} "
        f"({_num(scaled(r['complete_ratio'], 100), '{:.1f}')} %) | >= 90 % | "
        f"{_OK[tg['rate_ratio_ge_0.9']]} |",
        f"| RSS, median of the first -> last cycle | {_num(mem['first_cycle_mb'])} -> "
        f"{_num(mem['last_cycle_mb'])} MB ({_growth(mem, 'growth_mb')} MB), since warm-up "
        f"{_growth(mem, 'growth_since_warmup_mb')} MB; robust slope "
        f"{_num(mem['slope_mb_per_min'], '{:+.2f}')} MB/min; warm-up "
        f"{_num(mem['warmup_mb'])} MB, peak {_num(mem['peak_mb'])} MB; clean tail of the "
        f"first -> last cycle {_num(mem['first_cycle_tail_mb'])} -> "
        f"{_num(mem['last_cycle_tail_mb'])} MB | <= 10 MB | {_OK[tg['rss_growth_le_10mb']]} |",
    ]
    for key, name in (("threads", "threads"), ("fds", "open fds")):
        k = {**cnt[key], "judged": mem["judged"].removesuffix("_mb")}
        lines.append(
            f"| {name}, median of warm-up / first / last cycle | "
            f"{_num(k['warmup'], '{:.0f}')} / {_num(k['first_cycle'], '{:.0f}')} / "
            f"{_num(k['last_cycle'], '{:.0f}')} (growth {_growth(k, 'growth')}, since warm-up "
            f"{_growth(k, 'growth_since_warmup')}); range "
            f"{_num(k['min_after_warmup'], '{:.0f}')}-{_num(k['max'], '{:.0f}')} | flat | "
            f"{_OK[tg[f'{key}_flat']]} |"
        )
    cr = report["crashes"]
    lines.append(
        f"| crashes | alive at end: {cr['alive_at_end']}, exit code {cr['exit_code']} on "
        f"SIGINT, {cr['tracebacks']} tracebacks | 0 | {_OK[tg['no_crashes']]} |"
    )
    return lines


def _fault_rows(report: dict[str, Any]) -> list[str]:
    lines = [
        "| fault | times | results/s during | image / audio present during | recovery "
        "median / max | evidence |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for kind, k in report["faults_by_kind"].items():
        lines.append(
            f"| {kind} | {k['count']} | {_num(k['rate_hz'])} | "
            f"{_num(scaled(k['image_present'], 100), '{:.0f}')} / "
            f"{_num(scaled(k['audio_present'], 100), '{:.0f}')} % | "
            f"{_num(k['recovery_s_median'], '{:.2f}')} / "
            f"{_num(k['recovery_s_max'], '{:.2f}')} s | {_evidence(kind, k)} |"
        )
    return lines


def _evidence(kind: str, k: dict[str, Any]) -> str:
    """That the fault happened: what the server sent or the writer wrote, the input marked
    absent, the warnings and decoder errors on stderr."""
    server, err = k["server"], k["stderr"]
    if kind == "camera_gone":
        return (
            f"image absent in {_num(scaled(k['absent_once_stale_min'], 100), '{:.0f}')} %+ "
            f"once stale; {server.get('connections', 0)} reconnections; "
            f"{err.get('camera_warning', 0)} camera warnings"
        )
    if kind == "mic_stall":
        return (
            f"audio absent in {_num(scaled(k['absent_once_stale_min'], 100), '{:.0f}')} %+ "
            f"once stale; FIFO samples written during <= {k['fifo_samples_during_max']}; "
            f"{err.get('audio_warning', 0)} audio warnings"
        )
    if kind == "corrupt_jpeg":
        sent = ", ".join(f"{server.get(c, 0)} {c}" for c in CORRUPT_KINDS)
        return (
            f"sent {sent}; {err.get('decoder_error', 0)} decoder errors, "
            f"{err.get('camera_warning', 0)} camera warnings, "
            f"{server.get('connections', 0)} reconnections"
        )
    size = "x".join(map(str, UHD if kind == "4k_burst" else HD))
    return (
        f"sent {server.get(size, 0)} {size} frames; preprocess p50 "
        f"{_num(k['preprocess_ms_p50'], '{:.2f}')} ms; {server.get('connections', 0)} "
        f"reconnections"
    )
