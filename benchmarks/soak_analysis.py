"""From a soak's Raw recording to its report (analyse): the steps in order, and the
report's sections that are not figures of their own module (the configuration, the
machine, crashes, the targets). Part of benchmarks/soak.py, whose docstring says what is
measured and how."""

from __future__ import annotations

import os
import platform
from typing import Any

from soak_fault_effects import figures_by_kind, per_fault_figures
from soak_faults import CYCLES, FPS, HD, UHD, VGA
from soak_process import (
    Samples,
    add_rss_around_faults,
    count_figures,
    cpu_figures,
    memory_figures,
    phase_figures,
)
from soak_record import Raw
from soak_results import Results, StderrEvents, result_rates
from soak_stats import median

RATE_TARGET, RSS_TARGET_MB = 0.90, 10.0


def analyse(raw: Raw) -> dict[str, Any]:
    """The report: configuration, machine, the figures each target judges (rates, memory,
    counts, crashes) and the targets, then each fault, each phase and every sample."""
    results = Results.from_lines(raw.lines, raw.t0)
    events = StderrEvents.from_raw(raw)
    per_fault = per_fault_figures(raw, results, events)
    samples = Samples.from_raw(raw)
    per_phase = phase_figures(raw, samples)
    add_rss_around_faults(per_fault, samples, raw.duration_s)
    rates = result_rates(raw, results)
    memory = memory_figures(raw, per_phase, samples)
    counts = count_figures(raw, per_phase, samples)
    totals = events.totals()
    crashes = crash_figures(raw, totals["traceback"])
    crash_count = int(not raw.alive_at_end) + int(raw.exit_code != 0) + totals["traceback"]
    return {
        "config": config_section(raw),
        "machine": machine_section(raw, samples),
        "rates": rates,
        "memory": memory,
        "counts": counts,
        "crashes": crashes,
        "crash_count": crash_count,
        "stderr_totals": totals,
        "targets": judge_targets(rates, memory, counts, crash_count),
        "faults_by_kind": figures_by_kind(per_fault),
        "faults": per_fault,
        "phases": per_phase,
        "samples": samples.rows,
    }


def crash_figures(raw: Raw, tracebacks: int) -> dict[str, Any]:
    return {
        "alive_at_end": raw.alive_at_end,
        "exit_code": raw.exit_code,
        "tracebacks": tracebacks,
        "stderr_tail": "".join(line for _, line in raw.err_lines[-5:]),
    }


def judge_targets(
    rates: dict[str, Any],
    memory: dict[str, Any],
    counts: dict[str, dict[str, Any]],
    crash_count: int,
) -> dict[str, bool]:
    """Each target met or not; memory, threads and fds by the growth memory["judged"]
    names."""
    judged_mb = memory["judged"]
    judged = judged_mb.removesuffix("_mb")
    return {
        "rate_ratio_ge_0.9": rates["ratio"] is not None and rates["ratio"] >= RATE_TARGET,
        "rss_growth_le_10mb": memory[judged_mb] is not None and memory[judged_mb] <= RSS_TARGET_MB,
        "threads_flat": counts["threads"][judged] is not None and counts["threads"][judged] <= 0,
        "fds_flat": counts["fds"][judged] is not None and counts["fds"][judged] <= 0,
        "no_crashes": crash_count == 0,
    }


def config_section(raw: Raw) -> dict[str, Any]:
    faults_in_cycle, period = CYCLES[raw.cycle]
    return {
        "minutes": raw.duration_s / 60,
        "duration_s": raw.duration_s,
        "warmup_s": raw.warmup_s,
        "cycle": raw.cycle,
        "cycle_faults": [{"kind": k, "start_s": s, "length_s": n} for k, s, n in faults_in_cycle],
        "cycle_period_s": period,
        "cycles": len({f.cycle for f in raw.faults}),
        "grace_s": raw.grace_s,
        "camera": {"fps": FPS, "size": VGA, "hd": HD, "uhd": UHD},
        "command": raw.command,
        "argv": raw.argv,
        "startup_s": raw.startup_s,
    }


def machine_section(raw: Raw, samples: Samples) -> dict[str, Any]:
    """This machine, this process's niceness and the run's MALLOC_* environment, and the
    load during the run."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "niceness": raw.niceness,
        "malloc_env": raw.malloc_env,
        "load1_mean": median([s["load1"] for s in samples.rows]),
        "load1_max": max((s["load1"] for s in samples.rows), default=None),
        **cpu_figures(samples),
    }
