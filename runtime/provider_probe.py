"""Whether an ONNX Runtime execution provider really starts, and why not in ONNX
Runtime's own words: a one-node model opened on [provider, CPU] and run.

get_available_providers() lists CUDA wherever onnxruntime-gpu is installed; only a
session tells whether it starts (providers.py). The reason for a fallback is logged from
C++ straight to file descriptor 2 and, by the Python layer, printed to stdout, so both
are captured here. `fusionedge doctor` (doctor.py) reads the result.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

from fusionedge.runtime.providers import CPU

# y = x + x on a float[1]: opset 13, IR version 8, no producer. Built once with
# onnx.helper (tests/runtime/test_doctor.py rebuilds and compares it); kept as bytes so
# the runtime needs no onnx package to try a provider.
PROBE_MODEL = base64.b64decode(
    "CAg6OQoOCgF4CgF4EgF5IgNBZGQSBXByb2JlWg8KAXgSCgoICAESBAoCCAFiDwoBeRIKCggIARIECgIIAUIECgAQDQ=="
)
ANSI = re.compile(r"\x1b\[[0-9;]*m")
LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d \S+ \[[EWIV]:onnxruntime:[^\]]*\] ")


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """The lines written to file descriptor 2 inside the block. ONNX Runtime logs why a
    provider failed from C++ straight to the descriptor, past sys.stderr."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield lines
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines.extend(tmp.read().decode(errors="replace").splitlines())


def ort_messages(lines: list[str]) -> list[str]:
    """ONNX Runtime's log lines without colours, time stamps, source locations and the
    advice that follows "Please"; a library path shortened to its file name."""
    out = []
    for line in lines:
        text = LOG_PREFIX.sub("", ANSI.sub("", line)).strip()
        # onnxruntime's Python layer prints "EP Error <source>:<line> <signature>) <text>".
        text = re.sub(r"^EP Error \S+:\d+ .*?\) (?=[A-Z])", "", text)
        text = text.split("FAIL : ", 1)[-1].split(" Please ", 1)[0]
        text = re.sub(r"library /\S*/(lib\w+\.so)", r"library \1", text)
        if text:
            out.append(text)
    return out


def try_provider(provider: str) -> dict[str, Any]:
    """Opens the one-node model on [provider, CPU] and runs it: whether the provider is
    among the session's, and what ONNX Runtime said when it was not."""
    import warnings

    import numpy as np
    import onnxruntime as ort

    from fusionedge.runtime.sessions import load_errors, session_options

    requested = [CPU] if provider == CPU else [provider, CPU]
    active: list[str] = []
    error = None
    printed = io.StringIO()  # where onnxruntime's Python layer prints an "EP Error"
    with (
        captured_stderr() as log,
        contextlib.redirect_stdout(printed),
        warnings.catch_warnings(record=True) as warned,
    ):
        warnings.simplefilter("always")
        try:
            session = ort.InferenceSession(PROBE_MODEL, session_options(threads=1), requested)
            active = session.get_providers()
            y = session.run(None, {"x": np.ones(1, np.float32)})[0]
            error = None if float(y[0]) == 2.0 else f"1 + 1 gave {y[0]}"
        except load_errors() as e:
            error = str(e)
    shown = [line for line in printed.getvalue().splitlines() if line.startswith("EP Error")]
    messages = ort_messages(log + shown) + [str(w.message) for w in warned]
    started = provider in active and error is None
    return {
        "requested": requested,
        "active": active,
        "started": started,
        "error": error,
        "messages": messages,
    }
