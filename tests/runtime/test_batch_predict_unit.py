"""`fusionedge predict MODEL --data D --out preds.jsonl` (runtime/batch_predict.py): one
JSON line per sample, in constant memory, resumable, shardable, accuracy as `eval`'s."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from fusionedge.cli import main
from fusionedge.manifest import read_manifest
from fusionedge.runtime import Predictor
from fusionedge.runtime.batch_predict import BatchOptions, predict_dataset
from fusionedge.runtime.batch_work import Shard, parse_shard, shard_of


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def by_id(path: Path) -> list[str]:
    """The file's lines, sorted by id (the order shards are compared in)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return sorted(lines, key=lambda line: json.loads(line)["id"])


def copy_of(data: Path, root: Path) -> Path:
    shutil.copytree(data, root)
    return root


def repeated_dataset(source: Path, root: Path, n: int) -> Path:
    """n samples (unique ids) that reuse three samples' files: a large data set for the
    price of a manifest."""
    (root / "img").mkdir(parents=True)
    (root / "wav").mkdir()
    base = read_manifest(source).split("train")[:3]
    for r in base:
        shutil.copy(r.image, root / "img" / r.image.name)
        shutil.copy(r.audio, root / "wav" / r.audio.name)
    lines = []
    for i in range(n):
        r = base[i % 3]
        lines.append(
            {
                "id": f"s{i:05d}",
                "image": f"img/{r.image.name}",
                "audio": f"wav/{r.audio.name}",
                "label": r.label,
                "split": "test",
            }
        )
    (root / "manifest.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return root


# ---------------------------------------------------------------------- shards


def test_parse_shard_accepts_i_of_n_and_refuses_the_rest() -> None:
    assert parse_shard("0/4") == Shard(0, 4)
    assert parse_shard(" 3/4 ") == Shard(3, 4)
    for bad in ("4/4", "-1/4", "0/0", "1/-2"):
        with pytest.raises(ValueError, match=r"0 <= I < N"):
            parse_shard(bad)
    for bad in ("1", "a/b", "1/2/3", "", "0.5/2"):
        with pytest.raises(ValueError, match="expects I/N"):
            parse_shard(bad)


def test_a_shard_is_a_stable_hash_of_the_id_alone() -> None:
    # The documented formula, so any tool can reproduce the split of work.
    for sample_id in ("s1", "train007", "ünïcode id", "x" * 300):
        digest = hashlib.sha256(sample_id.encode("utf-8")).digest()
        assert shard_of(sample_id, 7) == int.from_bytes(digest[:8], "big") % 7
    assert shard_of("s1", 1) == 0
    # Spread: 3000 ids over 4 shards, each within 20 % of a quarter.
    counts = [0] * 4
    for i in range(3000):
        counts[shard_of(f"id-{i}", 4)] += 1
    assert all(600 <= c <= 900 for c in counts), counts


def test_shards_are_disjoint_and_together_equal_one_unsharded_run(
    predictor: Predictor, runtime_data: Path, tmp_path: Path
) -> None:
    whole = tmp_path / "all.jsonl"
    summary = predict_dataset(predictor, runtime_data, whole, BatchOptions(batch_size=7))
    n = len(read_manifest(runtime_data).records)
    assert summary.selected == summary.predicted == n and summary.errors == 0
    parts: list[list[str]] = []
    for i in range(3):
        out = tmp_path / f"shard{i}.jsonl"
        # Another batch size too: a shard's batches hold other samples than the whole run's.
        s = predict_dataset(
            predictor, runtime_data, out, BatchOptions(batch_size=4, shard=Shard(i, 3))
        )
        assert s.shard == Shard(i, 3) and s.predicted == s.selected
        ids = [json.loads(line)["id"] for line in by_id(out)]
        assert all(shard_of(x, 3) == i for x in ids)
        parts.append(by_id(out))
    ids = [json.loads(line)["id"] for part in parts for line in part]
    assert len(ids) == len(set(ids)) == n  # disjoint, and nothing missing
    assert sorted(line for part in parts for line in part) == sorted(by_id(whole))
    assert all(parts), "a shard of 3 got no samples of 78"


# ---------------------------------------------------------------------- lines


def test_each_line_has_id_label_scores_present_and_true_label(
    predictor: Predictor, runtime_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "preds.jsonl"
    predict_dataset(predictor, runtime_data, out, BatchOptions(split="test", batch_size=5))
    records = read_manifest(runtime_data).split("test")
    lines = read_lines(out)
    assert [x["id"] for x in lines] == [r.id for r in records]  # manifest order
    for line, r in zip(lines, records, strict=True):
        assert set(line) == {"id", "label", "scores", "present", "true_label"}
        assert line["true_label"] == r.label
        assert line["present"] == {"image": True, "audio": True, "text": r.text is not None}
        assert line["label"] == max(line["scores"], key=line["scores"].get)
        direct = predictor.predict(image=r.image, audio=r.audio, text=r.text)
        assert direct.label == line["label"]
        for k, v in direct.scores.items():
            assert line["scores"][k] == pytest.approx(v, abs=1e-5)


def test_unlabelled_lines_have_no_true_label(
    predictor: Predictor, runtime_data: Path, tmp_path: Path
) -> None:
    data = copy_of(runtime_data, tmp_path / "data")
    manifest = data / "manifest.jsonl"
    lines = [json.loads(x) for x in manifest.read_text().splitlines()]
    manifest.write_text("".join(json.dumps(x | {"label": None}) + "\n" for x in lines))
    out = tmp_path / "preds.jsonl"
    summary = predict_dataset(predictor, data, out, BatchOptions(split="val"))
    assert summary.accuracy is None and summary.predicted == 18
    assert all("true_label" not in x and x["label"] for x in read_lines(out))


def test_bad_files_become_error_lines_and_the_run_goes_on(
    predictor: Predictor, runtime_data: Path, tmp_path: Path
) -> None:
    data = copy_of(runtime_data, tmp_path / "data")
    test = read_manifest(data).split("test")
    test[1].image.write_bytes(b"not a png at all")
    test[4].audio.unlink()
    out = tmp_path / "preds.jsonl"
    summary = predict_dataset(predictor, data, out, BatchOptions(split="test", batch_size=3))
    lines = read_lines(out)
    assert [x["id"] for x in lines] == [r.id for r in test]
    assert summary.errors == 2 and summary.predicted == len(test) - 2
    bad = {x["id"]: x for x in lines if "error" in x}
    assert set(bad) == {test[1].id, test[4].id}
    assert bad[test[1].id]["error"].startswith("image: ")
    assert bad[test[4].id]["error"].startswith("audio: ")
    assert "cannot read" in bad[test[4].id]["error"]
    assert set(bad[test[1].id]) == {"id", "error"}
    assert all("scores" in x for x in lines if "error" not in x)


# ---------------------------------------------------------------------- resume


def test_resume_skips_done_ids_and_cuts_a_partial_last_line(
    predictor: Predictor, runtime_data: Path, tmp_path: Path
) -> None:
    whole = tmp_path / "whole.jsonl"
    predict_dataset(predictor, runtime_data, whole, BatchOptions(batch_size=8))
    complete = whole.read_text(encoding="utf-8").splitlines(keepends=True)

    killed = tmp_path / "killed.jsonl"
    killed.write_text("".join(complete[:20]) + complete[20][:37], encoding="utf-8")
    summary = predict_dataset(predictor, runtime_data, killed, BatchOptions(batch_size=8))
    assert summary.dropped_partial_line
    assert summary.skipped == 20 and summary.predicted == len(complete) - 20
    assert killed.read_text(encoding="utf-8") == whole.read_text(encoding="utf-8")

    again = predict_dataset(predictor, runtime_data, killed, BatchOptions(batch_size=8))
    assert again.skipped == len(complete) and again.done == 0
    assert not again.dropped_partial_line
    assert killed.read_text(encoding="utf-8") == whole.read_text(encoding="utf-8")
    assert again.accuracy == summary.accuracy  # resumed lines count towards it


def test_resume_refuses_a_file_that_is_not_predict_output(
    predictor: Predictor, runtime_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "notes.jsonl"
    out.write_text('{"id": "train000"}\nsome notes\n')
    with pytest.raises(ValueError, match=r"notes.jsonl:2: not a line of"):
        predict_dataset(predictor, runtime_data, out)
    assert out.read_text() == '{"id": "train000"}\nsome notes\n'


# ---------------------------------------------------------------------- memory


def test_decoding_stays_a_bounded_number_of_batches_ahead(
    predictor: Predictor, runtime_data: Path, tmp_path: Path
) -> None:
    data = repeated_dataset(runtime_data, tmp_path / "big", 400)
    out = tmp_path / "preds.jsonl"
    options = BatchOptions(batch_size=8, prefetch=2)
    summary = predict_dataset(predictor, data, out, options)
    assert summary.predicted == 400
    # Queued + being queued + being predicted; loading everything would reach 400.
    assert 8 <= summary.max_decoded_ahead <= (options.prefetch + 2) * options.batch_size


def test_peak_memory_does_not_grow_with_the_decoded_data(
    predictor: Predictor, runtime_data: Path, tmp_path: Path
) -> None:
    """tracemalloc peak (numpy reports its buffers to it) for N and 4N samples: the extra
    3N samples may cost their manifest records, not their decoded arrays."""
    spec = predictor.spec
    decoded_bytes = (
        spec.image.height * spec.image.width * 3
        + spec.audio.num_samples * 4
        + spec.text.max_length * 8
    )
    # A first, untraced run: one-time allocations (imports, session warm-up) would
    # otherwise count against the smaller run only and hide growth.
    warm = repeated_dataset(runtime_data, tmp_path / "warm", 20)
    predict_dataset(predictor, warm, tmp_path / "warm.jsonl", BatchOptions(batch_size=8))
    peaks = {}
    for n in (100, 400):
        data = repeated_dataset(runtime_data, tmp_path / f"d{n}", n)
        tracemalloc.start()
        try:
            predict_dataset(predictor, data, tmp_path / f"p{n}.jsonl", BatchOptions(batch_size=8))
            peaks[n] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    growth_per_sample = (peaks[400] - peaks[100]) / 300
    # Holding every decoded sample would grow by >= decoded_bytes (about 17 kB) a sample;
    # streaming grows by the records and ids (about 3 kB).
    assert growth_per_sample < 0.5 * decoded_bytes, (peaks, decoded_bytes)


# ---------------------------------------------------------------------- the CLI


def test_accuracy_from_the_lines_equals_eval(
    model_path: Path, runtime_data: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "preds.jsonl"
    for split in ("test", "all"):
        assert main(["eval", str(model_path), "--data", str(runtime_data), "--split", split,
                     "--json"]) == 0  # fmt: skip
        evaluated = json.loads(capsys.readouterr().out)
        argv = ["predict", str(model_path), "--data", str(runtime_data), "--split", split]
        argv += ["--out", str(out), "--batch", "5", "--json", "--no-progress"]
        assert main(argv) == 0
        summary = json.loads(capsys.readouterr().out)
        lines = read_lines(out)
        assert len(lines) == evaluated["n"] == summary["labelled"]
        accuracy = sum(x["label"] == x["true_label"] for x in lines) / len(lines)
        assert accuracy == evaluated["metrics"]["accuracy"] == summary["accuracy"]
        out.unlink()


def test_cli_prints_progress_and_a_summary_and_resumes(
    model_path: Path, runtime_data: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "preds.jsonl"
    argv = ["predict", str(model_path), "--data", str(runtime_data), "--out", str(out)]
    assert main([*argv, "--split", "val", "--shard", "1/2"]) == 0
    captured = capsys.readouterr()
    n = len(read_lines(out))
    assert f"predict: {n}/{n} samples" in captured.err and "samples/s" in captured.err
    assert f"{n} samples of the val split, shard 1/2 predicted into {out}" in captured.out
    assert "0 already there, skipped; 0 errors" in captured.out
    assert "accuracy " in captured.out
    assert main([*argv, "--split", "val", "--shard", "1/2"]) == 0
    assert f"{n} already there, skipped" in capsys.readouterr().out
    assert len(read_lines(out)) == n


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--data", "D", "--out", "o.jsonl", "--image", "x.png"], "--data predicts a whole"),
        (["--data", "D", "--text", "red", "--out", "o"], "either --data (with --out) or"),
        (["--data", "D"], "--data needs --out"),
        (["--out", "o.jsonl", "--text", "red"], "--out: only with --data"),
        (["--shard", "0/2", "--batch", "4", "--text", "red"], "--batch, --shard: only with"),
        (["--data", "{data}", "--out", "{tmp}/o.jsonl", "--shard", "2/2"], "0 <= I < N"),
        (["--data", "{data}", "--out", "{tmp}/o.jsonl", "--batch", "0"], "--batch must be"),
    ],
)
def test_cli_refuses_mixed_or_bad_flags_in_one_line(
    model_path: Path, runtime_data: Path, tmp_path: Path, capsys, extra: list[str], message: str
) -> None:
    extra = [x.format(data=runtime_data, tmp=tmp_path) for x in extra]
    assert main(["predict", str(model_path), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fusionedge predict: error:"), err
    assert message in err[0]
    assert not (tmp_path / "o.jsonl").exists()


def test_one_sample_predict_still_works(model_path: Path, runtime_data: Path, capsys) -> None:
    r = read_manifest(runtime_data).split("test")[0]
    argv = ["predict", str(model_path), "--image", str(r.image), "--text", "red", "--json"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["label"] in ("blue", "green", "red")


SCRIPT = """
import json, sys
from fusionedge.runtime import Predictor
from fusionedge.runtime.batch_predict import BatchOptions, predict_dataset

model, data, out = sys.argv[1:4]
with Predictor.from_path(model, providers="cpu", threads=1) as predictor:
    summary = predict_dataset(predictor, data, out, BatchOptions(split="test"))
print("CHECK " + json.dumps({
    "torch": sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")),
    "predicted": summary.predicted,
}))
"""


def test_batch_prediction_loads_no_torch(
    model_path: Path, runtime_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "preds.jsonl"
    done = subprocess.run(
        [sys.executable, "-I", "-c", SCRIPT, str(model_path), str(runtime_data), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    check = json.loads(done.stdout.split("CHECK ", 1)[1])
    assert check == {"torch": [], "predicted": len(read_lines(out))}


class NaNForText:
    """A Predictor whose model gives NaN scores for rows that have text (a stand-in for
    a model that blows up on some inputs)."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.spec = predictor.spec

    def run(self, inputs: dict) -> tuple:
        from fusionedge.runtime import NonFiniteError

        if inputs["present"][:, 2].any():
            raise NonFiniteError("the model gave non-finite scores for sample 0 of the batch")
        return self.predictor.run(inputs)


def test_rows_with_nan_scores_become_error_lines_and_the_others_are_predicted(
    predictor: Predictor, runtime_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "preds.jsonl"
    options = BatchOptions(split="test", batch_size=4)
    summary = predict_dataset(NaNForText(predictor), runtime_data, out, options)  # type: ignore[arg-type]
    records = read_manifest(runtime_data).split("test")
    lines = read_lines(out)
    assert [x["id"] for x in lines] == [r.id for r in records]
    for line, r in zip(lines, records, strict=True):
        if r.text is not None:
            assert line == {"id": r.id, "error": line["error"]}
            assert "non-finite scores for this sample" in line["error"]
        else:
            assert line["present"]["text"] is False and "scores" in line
    assert summary.errors == sum(r.text is not None for r in records) > 0
