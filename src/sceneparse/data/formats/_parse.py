"""Typed field access for parsed JSON / XML / text: every wrong type becomes a
:class:`~sceneparse.errors.FormatError` naming the file, the record and the field."""
from __future__ import annotations

import math
from typing import Any, NoReturn

from ...errors import FormatError, Problem


def fail(file: str | None, record: str | None, field: str | None, message: str, value: Any = None) -> NoReturn:
    raise FormatError([Problem(file, record, field, message, value)])


def _absent(file: str, record: str, key: str, default: Any) -> Any:
    """What a getter returns for a missing ``key``: ``default``, or a :class:`FormatError` naming the
    field when there is none (``default=...``: the field is required)."""
    if default is ...:
        fail(file, record, key, "missing required field")
    return default


def get_int(obj: dict, key: str, file: str, record: str, *, default: Any = ..., ) -> int:
    """``obj[key]`` as an int (JSON ints, or floats with an integral value such as ``3.0``)."""
    if key not in obj:
        return _absent(file, record, key, default)
    v = obj[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        fail(file, record, key, f"expected an integer, got {type(v).__name__}", v)
    if isinstance(v, float):
        if not v.is_integer():
            fail(file, record, key, "expected an integer", v)
        v = int(v)
    return v


def get_number(obj: dict, key: str, file: str, record: str, *, default: Any = ...) -> float:
    if key not in obj:
        return _absent(file, record, key, default)
    v = obj[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        fail(file, record, key, f"expected a number, got {type(v).__name__}", v)
    return float(v)


def get_str(obj: dict, key: str, file: str, record: str, *, default: Any = ...) -> str:
    if key not in obj:
        return _absent(file, record, key, default)
    v = obj[key]
    if not isinstance(v, str):
        fail(file, record, key, f"expected a string, got {type(v).__name__}", v)
    return v


def get_list(obj: dict, key: str, file: str, record: str, *, default: Any = ...) -> list:
    if key not in obj:
        return _absent(file, record, key, default)
    v = obj[key]
    if not isinstance(v, list):
        fail(file, record, key, f"expected a list, got {type(v).__name__}", v)
    return v


def numbers(v: Any, file: str, record: str, field: str, *, length: int | None = None) -> list:
    """Check that ``v`` is a flat list of numbers (optionally of a given length); returns it.
    ``math.fsum`` does the element type check in C (it raises ``TypeError`` on strings, lists, None)."""
    if not isinstance(v, list):
        fail(file, record, field, f"expected a list of numbers, got {type(v).__name__}", v)
    if length is not None and len(v) != length:
        fail(file, record, field, f"expected {length} numbers, got {len(v)}", v)
    try:
        math.fsum(v)
    except OverflowError:  # huge but numeric; validation flags the values
        pass
    except (TypeError, ValueError):
        fail(file, record, field, "expected a list of numbers", v)
    return v
