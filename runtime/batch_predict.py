"""`fusionedge predict MODEL --data D --out preds.jsonl`: a data set through the runtime,
in constant memory, resumable and shardable (numpy and onnxruntime; no torch).

    from fusionedge.runtime import Predictor
    from fusionedge.runtime.batch_predict import BatchOptions, parse_shard, predict_dataset

    with Predictor.from_path("model.onnx") as predictor:
        summary = predict_dataset(predictor, "data/", "preds.jsonl",
                                  BatchOptions(split="test", shard=parse_shard("0/4")))

What it writes: one JSON line per sample, in manifest order,

    {"id": "s1", "label": "seven", "scores": {...}, "present": {...}, "true_label": "seven"}

("true_label" only where the manifest line has a label; "value" for regression, "active"
for multilabel, as in a Result). A sample whose file does not decode (or whose scores
come out NaN) gets {"id": ..., "error": "why"} instead, and the run goes on; the summary
counts those lines.

- Constant memory: samples are decoded a batch at a time by fusionedge.arrays.load_arrays
  (threads, the decoder `eval` uses) in a producer thread that stays at most `prefetch`
  batches ahead of the model; each batch's lines are written and flushed before the next
  is taken. What grows with the data set is the manifest's records (a few hundred bytes a
  line, read by read_manifest) and the set of ids already written, never decoded samples.
- Resume: ids already in the output file (error lines included) are skipped; a last line
  cut short by a killed run is cut off the file before anything is appended.
- Shards: sample `id` belongs to shard int.from_bytes(sha256(id)[:8], "big") % N, which
  depends on the id alone, so the N shards are disjoint, together are the whole split, and
  each machine of a Slurm array, a set of Kubernetes jobs or Ray tasks computes its own
  share from I/N with no coordination.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from fusionedge.arrays import SampleArrays, load_arrays
from fusionedge.evaluation import empty_split_message
from fusionedge.jsonio import dumps
from fusionedge.manifest import SPLITS, ManifestError, Record, read_manifest
from fusionedge.runtime.batch_work import Shard, read_done
from fusionedge.runtime.predictor import Predictor
from fusionedge.runtime.result import NonFiniteError, make_results

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchOptions:
    """What to predict and how.

    Attributes:
        split: "train", "val", "test" or "all" (default: every sample).
        batch_size: Samples per model run (and per decode, and per flush).
        shard: This process's share of the split; None for all of it.
        prefetch: Batches decoded ahead of the model (bounds memory with batch_size).
        workers: Decode threads per batch; None: load_arrays' default (cores, at most 8).
    """

    split: str = "all"
    batch_size: int = 32
    shard: Shard | None = None
    prefetch: int = 2
    workers: int | None = None

    def __post_init__(self) -> None:
        if self.split not in (*SPLITS, "all"):
            raise ValueError(f"split must be one of {(*SPLITS, 'all')}, got {self.split!r}")
        if self.batch_size < 1:
            raise ValueError(f"--batch must be at least 1, got {self.batch_size}")
        if self.prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, got {self.prefetch}")


@dataclass
class BatchSummary:
    """What a run did. selected = skipped + predicted + errors (unless interrupted).

    Attributes:
        out: The output file.
        split, shard: What was selected ("all" / None for everything).
        selected: Samples of the split in this shard.
        skipped: Of those, already in the output file (resumed).
        predicted: Lines with a prediction written now.
        errors: Lines with an "error" written now.
        dropped_partial_line: A truncated last line was cut off the output file.
        seconds: Wall time of the run (after the model was open).
        labelled, correct: Classification only: predictions in the output file for the
            selected samples (resumed ones included) with a true label, and how many match.
        max_decoded_ahead: Most samples decoded but not yet written at any moment (the
            memory bound: at most (prefetch + 2) * batch_size).
    """

    out: Path
    split: str
    shard: Shard | None
    selected: int = 0
    skipped: int = 0
    predicted: int = 0
    errors: int = 0
    dropped_partial_line: bool = False
    seconds: float = 0.0
    labelled: int = 0
    correct: int = 0
    max_decoded_ahead: int = 0

    @property
    def done(self) -> int:
        return self.predicted + self.errors

    @property
    def samples_per_s(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "split": self.split,
            "shard": None if self.shard is None else str(self.shard),
            "selected": self.selected,
            "skipped": self.skipped,
            "predicted": self.predicted,
            "errors": self.errors,
            "dropped_partial_line": self.dropped_partial_line,
            "seconds": self.seconds,
            "samples_per_s": self.samples_per_s,
            "accuracy": self.accuracy,
            "labelled": self.labelled,
            "max_decoded_ahead": self.max_decoded_ahead,
        }


ProgressFn = Callable[[BatchSummary, int], None]  # (summary so far, samples to do in all)


# ---------------------------------------------------------------------- decoding


@dataclass
class _Decoded:
    """One batch: its records, the arrays of those that decoded (None when none did), and
    the error of each one that did not."""

    records: list[Record]
    arrays: SampleArrays | None
    errors: dict[str, str]


def decode_batch(
    records: list[Record], predictor: Predictor, manifest_path: Path, workers: int | None
) -> _Decoded:
    """load_arrays on a batch; when some files fail, each failed record gets its error
    and the others are decoded again without it (failures are rare: no cost otherwise)."""
    spec = predictor.spec
    try:
        arrays = load_arrays(records, spec, manifest_path, with_targets=False, workers=workers)
        return _Decoded(records, arrays, {})
    except ManifestError as e:
        by_line: dict[int, list[str]] = {}
        for p in e.problems:
            by_line.setdefault(p.line, []).append(f"{p.field}: {p.message}")
    errors = {r.id: "; ".join(by_line[r.line]) for r in records if r.line in by_line}
    good = [r for r in records if r.id not in errors]
    arrays = (
        load_arrays(good, spec, manifest_path, with_targets=False, workers=workers)
        if good
        else None
    )
    return _Decoded(records, arrays, errors)


class _Pipeline:
    """Decodes batches in one producer thread, at most `prefetch` batches ahead of the
    consumer: memory holds at most prefetch + 2 decoded batches (queued, being queued,
    being predicted)."""

    _END = object()

    def __init__(
        self,
        batches: Iterator[list[Record]],
        decode: Callable[[list[Record]], _Decoded],
        prefetch: int,
    ) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=prefetch)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.ahead = 0  # decoded and not yet released by the consumer
        self.max_ahead = 0
        self._thread = threading.Thread(
            target=self._produce, args=(batches, decode), name="batch-decode", daemon=True
        )
        self._thread.start()

    def _produce(
        self, batches: Iterator[list[Record]], decode: Callable[[list[Record]], _Decoded]
    ) -> None:
        try:
            for records in batches:
                if self._stop.is_set():
                    return
                item = decode(records)
                with self._lock:
                    self.ahead += len(records)
                    self.max_ahead = max(self.max_ahead, self.ahead)
                self._put(item)
        except BaseException as e:  # handed to the consumer, which raises it
            self._put(e)
            return
        self._put(self._END)

    def _put(self, item: Any) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[_Decoded]:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def release(self, n: int) -> None:
        with self._lock:
            self.ahead -= n

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


# ---------------------------------------------------------------------- the run


def select(data: str | Path, options: BatchOptions) -> tuple[Path, list[Record]]:
    """The manifest path and the records of the split in this shard, in manifest order.
    Files are not checked here: one that is missing or does not decode becomes that
    sample's error line, not the end of the run."""
    manifest = read_manifest(data, require_labels=False, check_files=False)
    records = manifest.split(options.split)
    if not records:
        raise ValueError(empty_split_message(manifest, (options.split,)))
    if options.shard is not None:
        records = [r for r in records if options.shard.has(r.id)]
    return manifest.path, records


def predict_dataset(
    predictor: Predictor,
    data: str | Path,
    out: str | Path,
    options: BatchOptions | None = None,
    progress: ProgressFn | None = None,
) -> BatchSummary:
    """Predicts every sample of a data set's split (this shard of it) into `out`, one JSON
    line each, skipping ids already there. See the module's docstring.

    Raises:
        ValueError: the split is empty, the output file is not this command's, bad options.
        ManifestError, FileNotFoundError: the data set cannot be read.
    """
    options = options or BatchOptions()
    out = Path(out)
    manifest_path, records = select(data, options)
    done = read_done(out)
    summary = BatchSummary(out, options.split, options.shard, selected=len(records))
    summary.dropped_partial_line = done.dropped_partial_line
    todo = [r for r in records if r.id not in done.ids]
    summary.skipped = len(records) - len(todo)
    for r in records:
        if r.id in done.outcome:
            summary.labelled += 1
            summary.correct += done.outcome[r.id]
    del done  # the ids are not needed any more
    if summary.skipped:
        log.info(
            "%s: %d of the %d samples selected are already there; skipped",
            out,
            summary.skipped,
            len(records),
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    batches = (todo[i : i + options.batch_size] for i in range(0, len(todo), options.batch_size))
    pipeline = _Pipeline(
        batches,
        lambda batch: decode_batch(batch, predictor, manifest_path, options.workers),
        options.prefetch,
    )
    try:
        with out.open("a", encoding="utf-8", newline="\n") as f:
            for decoded in pipeline:
                _write_batch(f, predictor, decoded, summary)
                pipeline.release(len(decoded.records))
                summary.max_decoded_ahead = pipeline.max_ahead
                summary.seconds = time.perf_counter() - start
                if progress is not None:
                    progress(summary, len(todo))
    finally:
        pipeline.close()
    summary.max_decoded_ahead = pipeline.max_ahead
    summary.seconds = time.perf_counter() - start
    return summary


def _write_batch(
    f: IO[str], predictor: Predictor, decoded: _Decoded, summary: BatchSummary
) -> None:
    """Predicts one decoded batch and writes its lines, in manifest order, in one write,
    flushed: a run killed now leaves at most one partial line, which resume cuts off."""
    errors = dict(decoded.errors)
    results: dict[str, dict[str, Any]] = {}
    if decoded.arrays is not None:
        results, non_finite = _predict(predictor, decoded.arrays)
        errors.update(non_finite)
    lines = []
    for record in decoded.records:
        if record.id in errors:
            lines.append({"id": record.id, "error": errors[record.id]})
            continue
        line = {"id": record.id, **results[record.id]}
        if record.label is not None:
            line["true_label"] = record.label
            if isinstance(record.label, str) and predictor.spec.task != "regression":
                summary.labelled += 1
                summary.correct += line["label"] == record.label
        lines.append(line)
    f.write("".join(dumps(line) + "\n" for line in lines))
    f.flush()
    summary.errors += len(errors)
    summary.predicted += len(lines) - len(errors)


def _predict(
    predictor: Predictor, arrays: SampleArrays
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """(line fields by id, error by id): one model run for the batch; when some row gives
    NaN scores, each row again by itself, so that only the bad rows become errors."""
    inputs = arrays.inputs()
    try:
        outputs = [(arrays.ids, *predictor.run(inputs))]
        errors: dict[str, str] = {}
    except NonFiniteError:
        outputs, errors = [], {}
        for i, sample_id in enumerate(arrays.ids):
            try:
                row = predictor.run({k: v[i : i + 1] for k, v in inputs.items()})
            except NonFiniteError as e:
                errors[sample_id] = str(e).replace("sample 0 of the batch", "this sample")
            else:
                outputs.append(([sample_id], *row))
    spec = predictor.spec
    fields: dict[str, dict[str, Any]] = {}
    index = {sample_id: i for i, sample_id in enumerate(arrays.ids)}
    for ids, scores, embedding in outputs:
        rows = [index[sample_id] for sample_id in ids]
        present = arrays.present[rows]
        for sample_id, result in zip(
            ids, make_results(spec, scores, embedding, present, {}, 1), strict=True
        ):
            entry: dict[str, Any] = {
                "label": result.label,
                # float32 scores in their shortest exact decimal (0.25, not 0.2500000...)
                "scores": {k: float(str(np.float32(v))) for k, v in result.scores.items()},
                "present": result.present,
            }
            if result.value is not None:
                entry["value"] = float(str(np.float32(result.value)))
            if result.active is not None:
                entry["active"] = result.active
            fields[sample_id] = entry
    return fields, errors


class Progress:
    """A progress line on a stream (stderr): done/total, errors, samples per second and
    time left. On a terminal one line rewritten in place; elsewhere (a Slurm log, a pod's
    log) one line every `interval` seconds, and the last."""

    def __init__(self, stream: IO[str] | None = None, interval: float | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval if interval is not None else (0.2 if self.tty else 10.0)
        self._last = -float("inf")

    def __call__(self, summary: BatchSummary, total: int) -> None:
        now = time.monotonic()
        last = summary.done >= total
        if not last and now - self._last < self.interval:
            return
        self._last = now
        rate = summary.samples_per_s
        left = f", {(total - summary.done) / rate:.0f} s left" if rate > 0 and not last else ""
        errors = f", {summary.errors} errors" if summary.errors else ""
        text = f"predict: {summary.done}/{total} samples{errors}, {rate:.1f} samples/s{left}"
        if self.tty:
            self.stream.write("\r" + text + ("\n" if last else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
