"""The import contract of docs/ARCHITECTURE.md ("Layers and imports"), in fresh interpreters.

`sdk` (fusionedge) and `runtime` never import torch; importing the package, the CLI and the
data-set modules loads neither cv2 nor sounddevice, which only capture and decoding need.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "cv2", "sounddevice")


def loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-I", "-c", probe], capture_output=True, text=True, check=True
    )
    return set(filter(None, out.stdout.strip().split(",")))


@pytest.mark.parametrize(
    "module",
    [
        "fusionedge",
        "fusionedge.cli",
        "fusionedge.cli.commands",
        "fusionedge.card",
        "fusionedge.contract",
        "fusionedge.jsonio",
        "fusionedge.timing",
        "fusionedge.spec",
        "fusionedge.manifest",
        "fusionedge.tokenizer",
        "fusionedge.metrics",
        "fusionedge.demo",
        "fusionedge.runtime",
        "fusionedge.errors",
        "fusionedge.audio_prep",
        "fusionedge.media_files",
        "fusionedge.spec_json",
        "fusionedge.disk_array",
    ],
)
def test_light_modules_load_no_heavy_dependency(module):
    assert loaded_after(f"import {module}") == set()


@pytest.mark.parametrize(
    "module",
    [
        "fusionedge.preprocess",
        "fusionedge.image_prep",
        "fusionedge.arrays",
        "fusionedge.decoded",
        "fusionedge.evaluation",
        "fusionedge.corrupt",
        "fusionedge.robustness",
        "fusionedge.robustness_plot",
        "fusionedge.cli.compare",
        "fusionedge.cli.quickstart",
        "fusionedge.cli.benchmark",
        "fusionedge.demo.avdigits",
        "fusionedge.demo.cards",
        "fusionedge.demo.speech",
    ],
)
def test_numpy_side_never_loads_torch(module):
    assert "torch" not in loaded_after(f"import {module}")


def test_cli_help_loads_nothing_heavy():
    code = (
        "import contextlib, io\nfrom fusionedge.cli import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['--help'])"
    )
    assert loaded_after(code) == set()


def test_media_error_is_caught_from_the_runtime_without_loading_opencv():
    """An application catches what preprocessing raises by the runtime's name, before
    any image has loaded OpenCV."""
    code = (
        "from fusionedge.runtime import MediaError\n"
        "import sys\n"
        "assert 'cv2' not in sys.modules\n"
        "from fusionedge.preprocess import MediaError as raised\n"
        "assert raised is MediaError"
    )
    subprocess.run([sys.executable, "-I", "-c", code], check=True)
