"""Strict JSON for everything fusionedge writes for others to read (CLI output, live
lines, the web view): a non-finite float is written as null, never as the NaN or
Infinity that json.dumps writes by default and JSON parsers refuse."""

from __future__ import annotations

import json
import math
from typing import Any


def dumps(obj: Any, **kwargs: Any) -> str:
    """json.dumps of obj with non-finite floats as null (an undefined figure has no value);
    allow_nan=False catches any that hide elsewhere (numpy floats, for one)."""
    return json.dumps(_finite(obj), allow_nan=False, **kwargs)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj
