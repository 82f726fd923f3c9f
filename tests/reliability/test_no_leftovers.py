"""Nothing half-written, nothing orphaned, nothing read from where it should not be.

- `fusionedge export` (--split, --int8) stopped by an exception, Ctrl-C (SIGINT) or
  SIGTERM at a moment its temporaries exist leaves none of them behind.
- `fusionedge record` checks that the manifest takes a line before it saves anything,
  and removes a sample's files when its line cannot be written after all.
- Files follow the umask (the atomic writer used to create them 0600).
- Manifest paths stay inside the data set's folder unless its header opts in.

Everything runs for real: CLI processes, real signals, a real file-size limit
(RLIMIT_FSIZE, which binds root too, unlike chmod), real symlinks.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile as sf
from support import TINY_OVERRIDES, tiny_spec, write_dataset

from fusionedge.manifest import ManifestError, read_manifest

REPO = Path(__file__).resolve().parents[2]

# Runs the real CLI after setting what a test needs of the process: a umask, a file size
# limit ("-" for none), and SIGINT as KeyboardInterrupt. The last because a shell that
# starts a job in the background hands it SIGINT ignored, and Python keeps it ignored.
BOOT = """
import os, resource, signal, sys
umask, fsize, *argv = sys.argv[1:]
os.umask(int(umask, 8))
if fsize != "-":
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(fsize), hard))
signal.signal(signal.SIGINT, signal.default_int_handler)
from fusionedge.cli import main
sys.exit(main(argv))
"""


def cli_command(*args: str, umask: int = 0o022, fsize: int | None = None) -> list[str]:
    limit = "-" if fsize is None else str(fsize)
    return [sys.executable, "-c", BOOT, f"{umask:o}", limit, *args]


def cli(*args: str, umask: int = 0o022, fsize: int | None = None, timeout: float = 300):
    return subprocess.run(
        cli_command(*args, umask=umask, fsize=fsize),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def tree(root: Path) -> set[str]:
    """Every path under root, relative, folders included."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def one_error_line(stderr: str, command: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fusionedge {command}: error: "), lines
    return lines[0]


# ------------------------------------------------------------------ a trained run


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data set and a one-epoch run, trained by the CLI under umask 027."""
    root = tmp_path_factory.mktemp("leftovers")
    write_dataset(root / "data", {"train": 8, "val": 4})
    sets = [x for o in (*TINY_OVERRIDES, "epochs=1") for x in ("--set", o)]
    args = ["-q", "train", "--data", str(root / "data"), "--out", str(root / "run")]
    done = cli(*args, "--no-progress", *sets, umask=0o027)
    assert done.returncode == 0, done.stderr[-3000:]
    return root


def test_run_folder_files_follow_the_umask(trained: Path) -> None:
    run = trained / "run"
    names = {"best.safetensors", "last.safetensors", "spec.json", "config.json", "metrics.json"}
    assert names <= {p.name for p in run.iterdir()}
    assert {p.name: oct(mode(p)) for p in run.iterdir() if p.is_file()} == {
        p.name: oct(0o640) for p in run.iterdir() if p.is_file()
    }


@pytest.mark.parametrize(("umask", "expected"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_atomic_writes_follow_the_umask(tmp_path: Path, umask: int, expected: int) -> None:
    from fusionedge.training.checkpoint import atomic_write_bytes, save_checkpoint
    from fusionedge.training.model import FusedModel

    spec = tiny_spec(("text",))
    previous = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "model.report.json", b"{}")
        atomic_write_bytes(tmp_path / "spec.json", spec.to_json().encode())
        save_checkpoint(tmp_path / "best.safetensors", spec, FusedModel(spec))
        atomic_write_bytes(tmp_path / "spec.json", b"{}")  # replacing keeps the umask too
    finally:
        os.umask(previous)
    modes = {p.name: oct(mode(p)) for p in tmp_path.iterdir()}
    assert modes == {
        n: oct(expected) for n in ("model.report.json", "spec.json", "best.safetensors")
    }


# ------------------------------------------------------------------ interrupted export


def interrupt_when(
    command: list[str], folder: Path, trigger: str, signum: int, env: dict[str, str]
) -> subprocess.CompletedProcess:
    """Runs command, sends signum the moment `trigger` exists in folder, waits."""
    # Output to files, not pipes: nobody reads a pipe while polling, and a full one would
    # stall the export before the trigger appears.
    logs = folder.parent / f"{trigger.strip('.')}.log"
    with logs.open("w+") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=log, text=True, env=env)
        deadline = time.monotonic() + 400
        try:
            while not (folder / trigger).exists():
                assert proc.poll() is None, f"ended before {trigger}: {logs.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"{trigger} never appeared"
                time.sleep(0.02)
            proc.send_signal(signum)
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return subprocess.CompletedProcess(command, proc.returncode, "", logs.read_text())


@pytest.fixture
def export_env(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """An empty output folder and a private TMPDIR (int8 calibrates through one), both
    asserted empty of temporaries by the tests."""
    out = tmp_path / "out"
    out.mkdir()
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    yield out, {**os.environ, "TMPDIR": str(tmpdir)}
    # Only ours: torch keeps caches there (torchinductor_<user>, .ses) after any export.
    assert not [p.name for p in tmpdir.iterdir() if p.name.startswith("fusionedge")]


@pytest.mark.parametrize(
    ("trigger", "signum", "code"),
    [
        (".model.onnx.tmp", signal.SIGINT, 130),
        (".model.onnx.tmp", signal.SIGTERM, 128 + signal.SIGTERM),
        (".model.split.checking", signal.SIGTERM, 128 + signal.SIGTERM),
    ],
    ids=["sigint-single-file", "sigterm-single-file", "sigterm-split-check"],
)
def test_an_interrupted_export_leaves_nothing(
    trained: Path, export_env: tuple[Path, dict[str, str]], trigger: str, signum: int, code: int
) -> None:
    out, env = export_env
    before = tree(out)
    args = ["-q", "export", str(trained / "run"), "--out", str(out / "model.onnx")]
    command = cli_command(*args, "--split", "--data", str(trained / "data"))
    done = interrupt_when(command, out, trigger, signum, env)
    assert done.returncode == code, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert tree(out) == before


def test_sigterm_during_int8_keeps_the_checked_fp32_file_and_nothing_temporary(
    trained: Path, export_env: tuple[Path, dict[str, str]]
) -> None:
    out, env = export_env
    args = ["-q", "export", str(trained / "run"), "--out", str(out / "model.onnx")]
    command = cli_command(*args, "--int8", "--data", str(trained / "data"))
    done = interrupt_when(command, out, ".model.int8.onnx.tmp", signal.SIGTERM, env)
    assert done.returncode == 128 + signal.SIGTERM, done.stderr[-3000:]
    # model.onnx passed parity before the int8 copy began; the report says what was done.
    assert tree(out) == {"model.onnx", "model.report.json"}
    assert "int8" not in json.loads((out / "model.report.json").read_text())
    assert mode(out / "model.report.json") == 0o644  # the default umask of cli()


def test_an_export_that_fails_after_writing_its_temporary_leaves_nothing(
    trained: Path, export_env: tuple[Path, dict[str, str]]
) -> None:
    out, env = export_env
    broken = write_dataset(out.parent / "broken", {"val": 1})
    (broken / "img" / "val000.png").unlink()  # --data is read after the ONNX file is written
    args = ["export", str(trained / "run"), "--out", str(out / "model.onnx")]
    done = subprocess.run(
        cli_command(*args, "--data", str(broken)), capture_output=True, text=True, env=env
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert "val000.png" in done.stderr and "Traceback" not in done.stderr
    assert tree(out) == set()


# ------------------------------------------------------------------ record


@pytest.fixture(scope="module")
def tone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wav = tmp_path_factory.mktemp("tone") / "tone.wav"
    t = np.arange(2 * 16000) / 16000
    sf.write(str(wav), (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
    return wav


def record(data: Path, tone: Path, fsize: int | None = None) -> subprocess.CompletedProcess:
    args = ["record", str(data), "--label", "hum", "--mic", str(tone), "--count", "2"]
    args += ["--interval", "0.05", "--window", "0.2", "--warmup", "0.2"]
    return cli(*args, fsize=fsize, timeout=120)


def test_record_into_a_manifest_that_is_a_folder_writes_nothing(tmp_path: Path, tone: Path):
    data = tmp_path / "data"
    (data / "manifest.jsonl").mkdir(parents=True)
    done = record(data, tone)
    assert done.returncode == 2
    line = one_error_line(done.stderr, "record")
    assert f"cannot append a line to {data / 'manifest.jsonl'}: Is a directory" in line
    assert tree(data) == {"manifest.jsonl"}


def test_record_under_a_path_through_a_file_writes_nothing(tmp_path: Path, tone: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a folder")
    done = record(tmp_path / "notes.txt" / "data", tone)
    assert done.returncode == 2
    assert "cannot append a line to" in one_error_line(done.stderr, "record")
    assert tree(tmp_path) == {"notes.txt"}
    assert (tmp_path / "notes.txt").read_text() == "not a folder"


FSIZE = 200_000  # bytes: above a 0.2 s WAV (6.4 kB), below the manifests written here


@pytest.mark.parametrize("room", [0, 10], ids=["at-the-limit", "ten-bytes-below"])
def test_a_line_that_cannot_be_appended_takes_its_files_with_it(
    tmp_path: Path, tone: Path, room: int
) -> None:
    """The manifest is FSIZE - room bytes: opening it for appending works (the check
    before capture passes), the append then fails with EFBIG (whole, or after `room`
    bytes, which are cut off again)."""
    data = tmp_path / "data"
    data.mkdir()
    old = {"id": "old", "text": "", "label": "hum", "_pad": ""}
    old["text"] = "x" * (FSIZE - room - len(json.dumps(old)) - 1)
    manifest = data / "manifest.jsonl"
    manifest.write_text(json.dumps(old) + "\n")
    assert manifest.stat().st_size == FSIZE - room
    before = manifest.read_bytes()
    done = record(data, tone, fsize=FSIZE)
    assert done.returncode == 2
    line = one_error_line(done.stderr, "record")
    assert f"cannot append to {manifest}: File too large" in line
    assert manifest.read_bytes() == before
    assert tree(data) == {"manifest.jsonl", "img", "wav"}  # no WAV that no line names


def test_a_new_data_set_whose_first_file_fails_is_left_without_a_manifest(
    tmp_path: Path, tone: Path
) -> None:
    data = tmp_path / "data"
    done = record(data, tone, fsize=1000)  # the WAV cannot be written
    assert done.returncode == 2
    assert "cannot write" in one_error_line(done.stderr, "record")
    assert tree(data) == {"img", "wav"}  # no partial WAV, no empty manifest


def test_record_still_appends_normally(tmp_path: Path, tone: Path) -> None:
    data = tmp_path / "data"
    done = record(data, tone)
    assert done.returncode == 0, done.stderr[-3000:]
    records = read_manifest(data).records
    assert len(records) == 2 and all(r.audio.is_file() for r in records)
    assert tree(data) == {"manifest.jsonl", "img", "wav"} | {
        str(r.audio.relative_to(data)) for r in records
    }


# ------------------------------------------------------------------ manifest paths

HEADER = {"fusionedge_manifest": 1, "allow_outside_paths": True}


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    """tmp/media/a.png outside the data set tmp/data, which has img/in.png inside."""
    for path in (tmp_path / "media" / "a.png", tmp_path / "data" / "img" / "in.png"):
        path.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(path), np.zeros((4, 4, 3), np.uint8))
    return tmp_path


def write(data: Path, *lines: dict) -> Path:
    (data / "manifest.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return data


def problems(data: Path) -> list[str]:
    with pytest.raises(ManifestError) as info:
        read_manifest(data)
    return [str(p) for p in info.value.problems]


def sample(image: str, sample_id: str = "a") -> dict:
    return {"id": sample_id, "image": image, "label": "x"}


@pytest.mark.parametrize(
    "image",
    ["../media/a.png", "img/../../media/a.png", "ABSOLUTE"],
    ids=["dot-dot", "dot-dot-inside-a-path", "absolute"],
)
def test_paths_outside_the_data_set_are_refused_naming_line_field_and_path(
    shared: Path, image: str
) -> None:
    data = shared / "data"
    if image == "ABSOLUTE":
        image = str(shared / "media" / "a.png")
    write(data, sample("img/in.png", "ok"), sample(image))
    (problem,) = problems(data)
    target = (shared / "media" / "a.png").resolve()
    assert problem.startswith(f"{data / 'manifest.jsonl'}:2: image: '{image}' resolves to {target}")
    assert "outside the data set's folder" in problem
    assert '{"fusionedge_manifest": 1, "allow_outside_paths": true}' in problem


def test_the_header_opts_in_to_outside_paths(shared: Path) -> None:
    data = write(shared / "data", HEADER, sample("../media/a.png"), sample("img/in.png", "b"))
    manifest = read_manifest(data)
    assert [r.line for r in manifest.records] == [2, 3]  # the header is not a sample
    assert manifest.records[0].image == (shared / "media" / "a.png").resolve()


def test_a_symlinked_media_folder_leading_outside_needs_the_header(shared: Path) -> None:
    data = shared / "data"
    (data / "linked").symlink_to(shared / "media", target_is_directory=True)
    write(data, sample("linked/a.png"))
    (problem,) = problems(data)
    assert ":1: image: 'linked/a.png' resolves to" in problem
    write(data, HEADER, sample("linked/a.png"))
    assert read_manifest(data).records[0].image == (shared / "media" / "a.png").resolve()


def test_a_symlink_inside_the_folder_and_dot_dot_that_stays_inside_are_fine(shared: Path):
    data = shared / "data"
    (data / "alias.png").symlink_to(data / "img" / "in.png")
    write(data, sample("alias.png"), sample("./img/../img/in.png", "b"))
    inside = (data / "img" / "in.png").resolve()
    assert [r.image for r in read_manifest(data).records] == [inside, inside]


def test_a_data_set_reached_through_a_symlink_is_inside_itself(shared: Path) -> None:
    write(shared / "data", sample("img/in.png"))
    (shared / "via").symlink_to(shared / "data", target_is_directory=True)
    assert (
        read_manifest(shared / "via").records[0].image
        == (shared / "data" / "img" / "in.png").resolve()
    )


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([sample("img/in.png"), HEADER], ":2: fusionedge_manifest: a header belongs on the first"),
        ([{"fusionedge_manifest": 2}, sample("img/in.png")], "format version 2 is newer"),
        ([{"fusionedge_manifest": True}, sample("img/in.png")], "expected format version 1"),
        (
            [{"fusionedge_manifest": 1, "allow_outside_paths": "yes"}, sample("img/in.png")],
            ":1: allow_outside_paths: expected true or false, got 'yes'",
        ),
        (
            [{"fusionedge_manifest": 1, "allow": True}, sample("img/in.png")],
            ":1: allow: unknown header field; accepted: fusionedge_manifest, allow_outside_paths",
        ),
        ([HEADER], "the manifest has no samples"),
    ],
    ids=["not-first", "newer", "bool-version", "not-a-bool", "unknown-key", "header-only"],
)
def test_a_malformed_header_is_a_manifest_problem(
    shared: Path, lines: list[dict], expected: str
) -> None:
    data = write(shared / "data", *lines)
    assert any(expected in p for p in problems(data)), problems(data)


def test_a_header_that_says_false_keeps_paths_inside(shared: Path) -> None:
    data = shared / "data"
    write(data, {"fusionedge_manifest": 1, "allow_outside_paths": False}, sample("../media/a.png"))
    assert "outside the data set's folder" in problems(data)[0]


@pytest.mark.parametrize(
    ("make", "image", "expected"),
    [
        ("loop", "img/loop.png", ":1: image: cannot resolve 'img/loop.png': Symlink loop"),
        (None, "img/a\u0000b.png", ":1: image: expected a file path relative to the manifest"),
        (None, "img/" + "n" * 300 + ".png", ":1: image: cannot look up 'img/nnn"),
    ],
    ids=["symlink-loop", "nul", "name-too-long"],
)
def test_paths_the_file_system_cannot_look_up_are_manifest_problems(
    shared: Path, make: str | None, image: str, expected: str
) -> None:
    data = shared / "data"
    if make == "loop":
        (data / "img" / "loop.png").symlink_to(data / "img" / "loop.png")
    write(data, sample(image))
    (problem,) = problems(data)
    assert expected in problem, problem


def test_the_real_av_benchmark_opts_in_for_its_shared_media(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """benchmarks/real_av_data.py writes folds whose lines point into ../images and
    ../audio; they must read with read_manifest."""
    path = REPO / "benchmarks" / "real_av_data.py"
    spec = importlib.util.spec_from_file_location("real_av_data", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "real_av_data", module)  # dataclasses look it up
    spec.loader.exec_module(module)
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    (out / "audio").mkdir()
    recordings = []
    for i, (digit, speaker) in enumerate([(0, "ann"), (1, "bob"), (0, "cy"), (1, "ann")]):
        wav = out / "audio" / f"{digit}_{speaker}_{i}.wav"
        sf.write(str(wav), np.zeros(800, np.float32), 8000)
        recordings.append(module.Recording(wav, digit, speaker))
    labels = np.array([0, 1, 0, 1, 0, 1])
    for i in range(len(labels)):
        assert cv2.imwrite(str(out / "images" / f"{i}.png"), np.zeros((28, 28), np.uint8))
    fold = module.write_fold(recordings, labels, ["ann", "bob", "cy"], "ann", out, seed=0)
    manifest = read_manifest(fold)
    assert len(manifest.records) == 4
    assert all(not r.image.is_relative_to(fold.resolve()) for r in manifest.records)
