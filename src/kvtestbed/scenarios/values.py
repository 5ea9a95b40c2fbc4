"""Typed reading of one raw YAML value at a known field path: every failure is a FieldError naming the path."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from kvtestbed.scenarios.errors import FieldError

FieldPath = tuple[str | int, ...]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")  # no dots: names appear inside dotted figure names
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def describe(value: Any) -> str:
    return repr(value) if isinstance(value, str) else f"{value!r} ({type(value).__name__})"


def check_keys(raw: Mapping[Any, Any], allowed: Mapping[str, Any], path: FieldPath) -> None:
    """Unknown keys are an error: a misspelt field must not be ignored."""
    for key in raw:
        if key not in allowed:
            raise FieldError((*path, str(key)), f"unknown field (known: {', '.join(allowed)})")


def mapping(value: Any, path: FieldPath) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise FieldError(path, f"give a mapping, not {describe(value)}")
    return value


def sequence(value: Any, path: FieldPath) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise FieldError(path, f"give a list, not {describe(value)}")
    return value


def text(value: Any, path: FieldPath, *, required: bool = True) -> str:
    if value is None or (value == "" and not required):
        if required:
            raise FieldError(path, "required")
        return ""
    if not isinstance(value, str) or not value.strip():
        raise FieldError(path, f"give a non-empty string, not {describe(value)}")
    return value.strip()


def name(value: Any, path: FieldPath) -> str:
    result = text(value, path)
    if not _NAME.match(result):
        raise FieldError(path, f"{result!r}: use letters, digits, '-' and '_' only (it names files and figures)")
    return result


def choice(value: Any, path: FieldPath, options: tuple[str, ...], what: str) -> str:
    result = text(value, path)
    if result not in options:
        raise FieldError(path, f"unknown {what} {result!r} ({', '.join(options)})")
    return result


def number(value: Any, path: FieldPath) -> float:
    # bool is an int in Python; `rate: yes` is a mistake, not 1
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FieldError(path, f"give a number, not {describe(value)}")
    if not math.isfinite(value):
        raise FieldError(path, f"{value} is not a finite number")
    return float(value)


def integer(value: Any, path: FieldPath, *, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldError(path, f"give a whole number, not {describe(value)}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise FieldError(path, f"{value} is out of range: must be {bound}")
    return value


def seconds(value: Any, path: FieldPath) -> float:
    """30, 2.5, "30s", "2m", "1m30s", "500ms" -> seconds."""
    if isinstance(value, str):
        compact = value.replace(" ", "")
        try:
            return number(float(compact), path)
        except ValueError:
            pass
        parts = _DURATION_PART.findall(compact)
        if parts and "".join(n + u for n, u in parts) == compact:
            return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
        raise FieldError(path, f"{value!r} is not a duration: give seconds (30) or a string such as 30s, 2m, 1m30s")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FieldError(path, f"give a duration (30, \"30s\", \"2m\"), not {describe(value)}")
    return number(value, path)
