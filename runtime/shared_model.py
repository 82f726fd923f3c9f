"""SharedModel: one Predictor for several live loops, their concurrent calls batched.

    predictor = Predictor.from_path("model.onnx", threads=0, spinning=False)
    model = SharedModel(predictor)
    runners = [LiveRunner(model, camera, audio) for camera, audio in streams]

A LiveRunner takes it in place of the Predictor. Its run() batches the calls of
concurrent threads: leader/follower, no thread of its own. A caller that finds a run slot
free leads the next run with every call queued by then (up to max_batch); callers that
arrive meanwhile queue, and when a run ends one of them leads the next.

Calls that merely happen to coincide make small batches: streams fall into step in pairs,
one pair's Python work overlapping the other's model run. So a leader first gathers:
while the model is busy at least half the time, it waits (up to half a run) for its share
of the streams that are in no run (the threads that called within the last second:
runtime/batch_wait.py). On the 2-core machine, 4 streams and a model that is
the bottleneck, one run over both cores, the wait took the batches from 1-3 rows to 4
and the results per second from 1.5x to 1.9-2.2x those of 4 separate processes, at lower
p95 (benchmarks/RESULTS.md, "Many streams"). Below half load it never waits: the streams
are served as they come. A lone stream never waits, and one that stops calling (its
camera gone) is no longer waited for after a second.

A dispatcher thread was the alternative. Measured on the 2-core machine (quickstart
model, one-row calls): alone, the dispatcher's two hand-overs (caller -> dispatcher ->
caller) cost 0.12 ms of latency and 0.09 ms of CPU per call, the leader nothing
measurable. Everything but run() goes to the Predictor.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fusionedge.runtime.batch_wait import BatchWait
from fusionedge.runtime.predictor import Predictor


@dataclass
class SharedStats:
    """Counters since start: model runs, rows run, rows per run (a histogram), and rows
    rerun alone after their batch failed."""

    runs: int = 0
    rows: int = 0
    batch_sizes: dict[int, int] = field(default_factory=dict)
    reruns: int = 0

    def count(self, rows: int) -> None:
        self.runs += 1
        self.rows += rows
        self.batch_sizes[rows] = self.batch_sizes.get(rows, 0) + 1


class _Call:
    """One caller's rows, and what came back for them."""

    __slots__ = ("done", "embedding", "error", "inputs", "queued", "rows", "scores")

    def __init__(self, inputs: dict[str, np.ndarray]) -> None:
        self.inputs = inputs
        self.rows = len(next(iter(inputs.values())))
        self.scores: np.ndarray | None = None
        self.embedding: np.ndarray | None = None
        self.error: BaseException | None = None
        self.done = False
        self.queued = time.monotonic()


class SharedModel:
    """A Predictor whose run() batches the calls of concurrent threads.

    Args:
        predictor: The open Predictor to share (it is closed with this object).
        max_batch: At most this many rows per model run; a call with more rows runs alone.
        max_runs: At most this many model runs in progress at once. One run at a time
            leaves all but one core idle when the model has one thread (ONNX Runtime
            runs one session concurrently); a caller that finds fewer runs than this in
            progress leads the next one, the others queue and batch.
        max_wait_ms: How long a queued call waits for the other streams before its run
            starts: None (automatic): half the model's recent run time while the model
            is busy at least half the time, else no wait; a number: that, at any load;
            0: never wait (see runtime/batch_wait.py).
    """

    def __init__(
        self,
        predictor: Predictor,
        max_batch: int = 8,
        max_runs: int = 1,
        max_wait_ms: float | None = None,
    ) -> None:
        if min(max_batch, max_runs) < 1:
            raise ValueError(f"max_batch and max_runs must be at least 1: {max_batch}, {max_runs}")
        self.wait = BatchWait(max_runs, max_wait_ms)
        self.predictor = predictor
        self.max_batch = max_batch
        self.max_runs = max_runs
        self.stats = SharedStats()
        self._cond = threading.Condition()
        self._pending: list[_Call] = []
        self._running = 0  # model runs in progress, the one being gathered included
        self._calls_running = 0  # calls in those runs: their streams cannot join this one
        self._gathering = False  # a leader is gathering the next batch

    def __getattr__(self, name: str) -> Any:
        # Only reached for names this object lacks: spec, split, prepare, stack, encode...
        if name == "predictor":  # not set yet (a copy, or __init__ failing): no recursion
            raise AttributeError(name)
        return getattr(self.predictor, name)

    @property
    def wait_ms(self) -> float:
        """How long a queued call would now wait, at most, for the other streams."""
        with self._cond:
            return self.wait.wait_s(time.monotonic()) * 1000

    def run(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Predictor.run, batched with the calls of other threads waiting at the time.

        The arrays are checked here, in the caller's thread, so a caller's mistake is its
        own error and never reaches a batch. The results equal an unbatched run's.
        """
        self.predictor._check_arrays(inputs)
        call = _Call(inputs)
        with self._cond:
            self.wait.called(call.queued)
            self._pending.append(call)
            self._cond.notify_all()  # a leader gathering a batch may be waiting for it
            try:
                while not call.done:
                    free = self._running < self.max_runs and not self._gathering
                    if free and call in self._pending:
                        self._lead()
                    else:
                        self._cond.wait()  # its rows wait for a free run, or are in one
            except BaseException:  # Ctrl-C in a wait (main thread): nobody to run it for
                if call in self._pending:
                    self._pending.remove(call)
                raise
        if call.error is not None:
            raise call.error
        return call.scores, call.embedding  # type: ignore[return-value]

    def _lead(self) -> None:
        """Gathers and runs the next batch; called, and returns, with the lock held,
        which it drops while the model runs. Whatever happens (Ctrl-C included), its slot
        is given back and every call it took is answered."""
        self._running += 1
        calls: list[_Call] = []
        try:
            self._gathering = True
            try:
                self._gather()
                calls, rows = self._take_batch()
            finally:
                self._gathering = False
                self._cond.notify_all()  # the next caller may gather the next batch now
            self._calls_running += len(calls)
            start = time.monotonic()
            self._cond.release()
            try:
                self._run_batch(calls, rows)
            finally:
                self._cond.acquire()
            self.wait.ran(start, time.monotonic())
        finally:
            for call in calls:
                if not call.done:  # the leader died mid-run: no caller may wait forever
                    call.error = call.error or RuntimeError("the shared model run stopped")
                    call.done = True
            self._calls_running -= len(calls)
            self._running -= 1
            self._cond.notify_all()

    def _gather(self) -> None:
        """Waits, lock dropped, until this run's share of the streams has queued a call,
        the batch is full, or the oldest queued call has waited its wait."""
        now = time.monotonic()
        deadline = self._pending[0].queued + self.wait.wait_s(now)
        while (
            len(self._pending) < self._share(now)
            and sum(c.rows for c in self._pending) < self.max_batch
            and (left := deadline - now) > 0
        ):
            self._cond.wait(left)
            now = time.monotonic()

    def _share(self, now: float) -> int:
        """The calls this run is for: the streams in no run, spread over the runs that
        can start now (this one and the free slots), so that several runs at once each
        get a batch instead of the first taking every stream while other cores idle."""
        startable = self.max_runs - self._running + 1  # _running counts this one
        waiting_for = self.wait.streams(now) - self._calls_running
        return max(1, -(-waiting_for // startable))  # rounded up

    def _take_batch(self) -> tuple[list[_Call], int]:
        """The queued calls, oldest first: up to max_batch rows, and no more calls than
        the share when other runs can start beside this one (at least one call)."""
        others_can_start = self._running < self.max_runs
        most = self._share(time.monotonic()) if others_can_start else len(self._pending)
        calls = [self._pending.pop(0)]
        rows = calls[0].rows
        while (
            self._pending and len(calls) < most and rows + self._pending[0].rows <= self.max_batch
        ):
            rows += self._pending[0].rows
            calls.append(self._pending.pop(0))
        return calls, rows

    def _run_batch(self, calls: list[_Call], rows: int) -> None:
        if len(calls) == 1:
            self._run_alone(calls[0])
            return
        names = list(calls[0].inputs)
        batch = {name: np.concatenate([c.inputs[name] for c in calls]) for name in names}
        try:
            scores, embedding = self.predictor._run_checked(batch)
        except Exception:
            # One row's failure (a NonFiniteError names the batch's rows) must not fail
            # the others: each call runs again alone and gets its own answer or error.
            self.stats.reruns += rows
            for call in calls:
                self._run_alone(call)
            return
        self.stats.count(rows)
        start = 0
        for call in calls:
            end = start + call.rows
            call.scores, call.embedding = scores[start:end].copy(), embedding[start:end].copy()
            call.done = True
            start = end

    def _run_alone(self, call: _Call) -> None:
        try:
            call.scores, call.embedding = self.predictor._run_checked(call.inputs)
            self.stats.count(call.rows)
        except Exception as e:  # handed to the caller, in its own thread
            call.error = e
        call.done = True

    def close(self) -> None:
        """Closes the Predictor (no run may be in progress)."""
        self.predictor.close()

    def __enter__(self) -> SharedModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
