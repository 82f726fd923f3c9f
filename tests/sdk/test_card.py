"""fusionedge.card and `fusionedge card`: the card holds the files' figures, the plots are
real PNGs, and what no file holds says "not measured"."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from support import train_and_export, write_dataset

from fusionedge import card
from fusionedge.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny run exported to model.onnx, plus a saved `fusionedge eval --json` of it."""
    pytest.importorskip("torch")
    data = write_dataset(tmp_path_factory.mktemp("card_data"))
    root = tmp_path_factory.mktemp("card_model")
    model = train_and_export(data, root)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["eval", str(model), "--data", str(data), "--json"]) == 0
    (root / "model.eval.json").write_text(out.getvalue(), encoding="utf-8")
    return {"data": data, "run": root / "run", "model": model, "eval": root / "model.eval.json"}


def section(text: str, title: str) -> str:
    """The text from a heading that starts with `title` to the next heading of any level."""
    start = text.index(title)
    rest = text[start + len(title) :]
    end = re.search(r"^#{2,3} ", rest, re.M)
    return rest[: end.start()] if end else rest


def rows(text: str) -> dict[str, list[str]]:
    """Markdown table rows: first cell -> the other cells."""
    out = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and not line.startswith("|---"):
            out[cells[0]] = cells[1:]
    return out


def check_png(path: Path) -> np.ndarray:
    assert path.read_bytes()[:8] == PNG_MAGIC, path
    img = cv2.imread(str(path))
    assert img is not None, path
    h, w = img.shape[:2]
    assert 200 <= h <= 4000 and 300 <= w <= 4000, (path, img.shape)
    return img


def test_run_card_holds_metrics_and_log_figures(trained: dict[str, Path]) -> None:
    pytest.importorskip("matplotlib")
    md = card.write_card(trained["run"])
    assert md == trained["run"] / "card.md"
    text = md.read_text(encoding="utf-8")
    metrics = json.loads((trained["run"] / "metrics.json").read_text())
    val = metrics["val"]

    table = rows(section(text, "### Validation split"))
    for key, value in val.items():
        if isinstance(value, float):
            assert float(table[key][0]) == pytest.approx(value, abs=5e-5), key
    labels = json.loads((trained["run"] / "spec.json").read_text())["labels"]
    for i, label in enumerate(labels):
        support, recall = table[label][0], table[label][1]
        assert int(support) == sum(val["confusion_matrix"][i])
        assert float(recall) == pytest.approx(val["recall_per_class"][i], abs=5e-5)

    assert f"Best epoch {metrics['best_epoch']} of {metrics['epochs_run']}" in text
    log_rows = (trained["run"] / "log.csv").read_text().splitlines()
    header = log_rows[0].split(",")
    best = dict(zip(header, log_rows[metrics["best_epoch"]].split(","), strict=True))
    line = next(x for x in text.splitlines() if "log.csv, best epoch" in x)
    for key in ("train_loss", "val_loss"):
        shown = float(re.search(rf"{key} ([0-9.]+)", line).group(1))
        assert shown == pytest.approx(float(best[key]), abs=5e-5)

    # The data set's counts, read back from the manifest.
    manifest = [
        json.loads(x) for x in (trained["data"] / "manifest.jsonl").read_text().splitlines()
    ]
    splits = rows(section(text, "## Data and splits"))
    for split in ("train", "val", "test"):
        assert int(splits[split][0]) == sum(x["split"] == split for x in manifest)

    # The saved eval of the run's export is found (beside the run); robustness, live
    # conditions and latency are on no file: "not measured".
    assert "model.eval.json" in section(text, "## Sources")
    for title in ("## Robustness", "## Live conditions", "## Latency"):
        assert card.NOT_MEASURED in section(text, title), title

    plots = trained["run"] / "card"
    assert f"]({'card/training_curves.png'})" in text
    for name in ("training_curves.png", "confusion_matrix.png"):
        img = check_png(plots / name)
        if name == "training_curves.png":
            # Not blank: lines and text on white.
            assert img.std() > 10 and (img < 128).mean() > 0.005
    check_png(plots / "per_modality.png")
    assert not (plots / "latency_percentiles.png").exists()
    assert "latency_percentiles.png: nothing to draw" in text


def test_model_card_reads_the_saved_eval_and_export_report(trained: dict[str, Path]) -> None:
    pytest.importorskip("matplotlib")
    md = card.write_card(trained["model"])
    assert md == trained["model"].with_name("model.card.md")
    text = md.read_text(encoding="utf-8")
    ev = json.loads(trained["eval"].read_text())
    report = json.loads(trained["model"].with_name("model.report.json").read_text())

    held_out = section(text, f"### {ev['split']} split, {ev['n']} samples, ONNX Runtime")
    table = rows(held_out)
    assert float(table["accuracy"][0]) == pytest.approx(ev["metrics"]["accuracy"], abs=5e-5)
    for m, v in ev["by_modality"].items():
        assert int(table[f"{m} only"][0]) == v["n_present"]
        assert float(table[f"{m} only"][1]) == pytest.approx(v["accuracy"], abs=5e-5)
    parity = report["parity"]["max_abs_diff_scores"]
    assert f"{parity:.3g} over {report['parity']['cases']} cases" in text
    assert f"{report['bytes']:,} bytes" in text
    assert card.NOT_MEASURED in section(text, "## Robustness")
    assert card.NOT_MEASURED in section(text, "## Latency")
    assert str(trained["eval"]) in section(text, "## Sources")

    img = check_png(trained["model"].with_name("model.card") / "per_modality.png")
    assert img.std() > 10


def test_found_report_of_another_model_is_not_used(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    other = json.loads(trained["eval"].read_text())
    other["model"] = str(tmp_path / "someone_else.onnx")
    other["metrics"]["accuracy"] = 0.123456
    stray = trained["run"] / "eval.json"
    stray.write_text(json.dumps(other), encoding="utf-8")
    try:
        text = card.write_card(trained["run"], out=tmp_path / "c").read_text()
    finally:
        stray.unlink()
    assert "0.1235" not in text
    # Given explicitly, it is used, and the card names the model it measured.
    given = tmp_path / "given.json"
    given.write_text(json.dumps(other), encoding="utf-8")
    text = card.write_card(trained["run"], out=tmp_path / "d", sources=(given,)).read_text()
    assert "0.1235" in text and "someone_else.onnx" in text


def test_without_matplotlib_the_card_says_how_to_get_plots(
    trained: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(card, "have_matplotlib", lambda: False)
    run = shutil.copytree(trained["run"], tmp_path / "run")  # alone: no eval, no export
    text = card.write_card(run).read_text()
    assert card.PLOT_HINT in text and "![" not in text
    assert not list(run.glob("card/*.png"))  # the copied run's old plots are gone
    assert card.NOT_MEASURED in section(text, "### Held-out split")
    assert card.NOT_MEASURED in section(text, "## Size and parity")


def test_cli_card(trained: dict[str, Path], tmp_path: Path, capsys) -> None:
    assert main(["card", str(trained["run"]), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "card.md").is_file()
    assert str(tmp_path / "card.md") in capsys.readouterr().out
    assert main(["card", str(tmp_path / "missing")]) == 2
    assert "no such run folder" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert main(["card", str(trained["run"]), "--from", str(bad)]) == 2
