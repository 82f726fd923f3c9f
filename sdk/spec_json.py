"""Strict, bounded reading of JSON-like data into frozen dataclasses (fusionedge.spec's reader).

Parsing is strict: an unknown key or a wrong type is an error that names the key, because
a silently ignored field in a deployed model is a wrong prediction nobody can explain.
The text comes from files a user may not trust (a downloaded model's ONNX metadata, a
checkpoint, a YAML config), so every way it can be wrong ends as a SpecError: malformed
JSON, nesting past MAX_DEPTH or Python's recursion limit, integers past CPython's
conversion limit, non-finite numbers; and the messages quote hostile values briefly.

fusionedge.spec builds its dataclasses with from_dict and re-exports every name here;
the training config (YAML) is built the same way.
"""

from __future__ import annotations

import dataclasses
import json
import math
import reprlib
import types
import typing
from typing import Any, Literal, TypeVar

# JSON nesting: a real spec is about 5 levels deep (metrics.val.confusion_matrix[i]).
# Deeper values under a free-form key (metrics, params) are refused before anything
# recursive (dataclasses.asdict, repr, json.dumps) can meet them.
MAX_DEPTH = 32


class SpecError(ValueError):
    """A spec (or a config built the same way) is malformed; the message names the key."""


_BRIEF = reprlib.Repr()
# Long enough for any real path or name, short enough that one line stays readable.
_BRIEF.maxlevel, _BRIEF.maxstring, _BRIEF.maxother, _BRIEF.maxlong = 3, 240, 120, 40


def brief(value: object) -> str:
    """A short repr for error messages: a hostile value (a megabyte string, a list nested
    900 deep, an integer of 10,000 digits) must not make the message itself fail or
    drown the line that names the key."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"  # repr() refuses > 4300 digits
    return _BRIEF.repr(value)


def load_json(text: str | bytes, what: str) -> Any:
    """json.loads for text from outside: malformed JSON, nesting deeper than Python's
    recursion limit (a RecursionError inside json) and integers longer than CPython
    converts (a plain ValueError) all end as SpecError naming `what`."""
    try:
        return json.loads(text)
    except RecursionError:
        raise SpecError(f"{what}: JSON nested too deeply to read") from None
    except ValueError as e:  # JSONDecodeError, the 4300-digit limit, invalid UTF-8
        raise SpecError(f"{what} must be JSON: {e}") from e


def check_json_values(value: Any, path: str) -> None:
    """Refuses non-finite numbers and nesting deeper than MAX_DEPTH anywhere in value.

    Iterative, so it cannot itself run out of stack on the input it exists to refuse.

    Raises:
        SpecError: naming the dotted key of the first offending value.
    """
    stack = [(value, path, 0)]
    while stack:
        item, where, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise SpecError(f"{where}: nested more than {MAX_DEPTH} levels deep")
        if isinstance(item, float) and not math.isfinite(item):
            raise SpecError(f"{where}: expected a finite number, got {item!r}")
        if isinstance(item, dict):
            stack.extend(
                (v, f"{where}.{k}" if where else str(k), depth + 1) for k, v in item.items()
            )
        elif isinstance(item, list | tuple):
            stack.extend((v, f"{where}[{i}]", depth + 1) for i, v in enumerate(item))


def _finite(value: int | float, path: str) -> float:
    """A JSON number as a finite float: 1e400 parses as inf and float(10**400) overflows,
    so both are refused here, naming the key."""
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise SpecError(f"{path}: expected a finite number, got {brief(value)}")
    return number


T = TypeVar("T")


def from_dict(cls: type[T], data: Any, path: str = "") -> T:
    """Builds dataclass `cls` from JSON-like data, checking keys and types on the way.

    Shared with the training config, which is built from YAML the same way.

    Raises:
        SpecError: naming the dotted key that is unknown, missing or of the wrong type.
    """
    if not isinstance(data, dict):
        raise SpecError(f"{path or cls.__name__}: expected an object, got {brief(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise SpecError(
            f"{path + '.' if path else ''}{unknown[0]}: unknown key; "
            f"accepted keys are {sorted(fields)}"
        )
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(hints[name], value, f"{path}.{name}" if path else name)
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required key is missing
        raise SpecError(f"{path or cls.__name__}: {e}") from e


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        check_json_values(value, path)
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value, path)
            except SpecError as e:
                errors.append(str(e))
        raise SpecError(
            errors[0]
            if len(errors) == 1
            else f"{path}: no accepted type fits {brief(value)} ({'; '.join(errors)})"
        )
    if origin is Literal:
        if value not in args:
            raise SpecError(f"{path}: expected one of {list(args)}, got {brief(value)}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise SpecError(f"{path}: expected a list, got {brief(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise SpecError(f"{path}: expected a list of {len(args)} values, got {brief(value)}")
        pairs = enumerate(zip(args, value, strict=True))
        return tuple(_convert(a, v, f"{path}[{i}]") for i, (a, v) in pairs)
    if origin is dict:
        if not isinstance(value, dict):
            raise SpecError(f"{path}: expected an object, got {brief(value)}")
        return {k: _convert(args[1], v, f"{path}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SpecError(f"{path}: expected a number, got {brief(value)}")
        return _finite(value, path)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(f"{path}: expected an integer, got {brief(value)}")
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise SpecError(f"{path}: expected a {tp.__name__}, got {brief(value)}")
        return value
    raise SpecError(f"{path}: unsupported field type {tp!r}")  # a bug in the dataclass
