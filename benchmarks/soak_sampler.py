"""ProcSampler: a process's memory, threads, open fds and CPU time, and the machine's
load, read from /proc every second on a thread of its own. Part of benchmarks/soak.py,
which samples the `fusionedge run` process under soak with it."""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path


class ProcSampler:
    """Every second: VmRSS, Threads, open fds and CPU time of a process, and the
    machine's load, on its own thread. `samples` rows have t (time.monotonic())."""

    def __init__(self, pid: int, period_s: float = 1.0) -> None:
        self.pid, self.period_s = pid, period_s
        self.samples: list[dict[str, float]] = []
        self.gone_at: float | None = None
        self._stop = threading.Event()
        self._tick = os.sysconf("SC_CLK_TCK")
        self._thread = threading.Thread(target=self._run, name="proc-sampler", daemon=True)

    def start(self) -> ProcSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _machine_busy(self) -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields) - idle, sum(fields)

    def sample(self) -> dict[str, float] | None:
        proc = Path(f"/proc/{self.pid}")
        try:
            status = (proc / "status").read_text()
            fds = len(os.listdir(proc / "fd"))
            stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            return None
        values = dict(re.findall(r"^(VmRSS|Threads):\s+(\d+)", status, re.M))
        if "VmRSS" not in values:  # a zombie: exited, not yet reaped
            return None
        busy, total = self._machine_busy()
        return {
            "t": time.monotonic(),
            "rss_mb": int(values["VmRSS"]) / 1024,
            "threads": int(values["Threads"]),
            "fds": fds,
            "cpu_s": (int(stat[11]) + int(stat[12])) / self._tick,  # utime + stime
            "load1": float(Path("/proc/loadavg").read_text().split()[0]),
            "machine_busy": busy,
            "machine_total": total,
        }

    def _run(self) -> None:
        start, k = time.monotonic(), 0
        while not self._stop.is_set():
            row = self.sample()
            if row is None:
                self.gone_at = time.monotonic()
                return
            self.samples.append(row)
            k += 1
            self._stop.wait(max(0.0, start + k * self.period_s - time.monotonic()))
