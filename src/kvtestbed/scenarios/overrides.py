"""`--set key=value` on any field of a scenario by dotted path (`duration=2m`, `faults.0.for=20`,
`writers.1.strategy=quorum`, `agents.0.config.writer.rate=200`), and sweeps: `sweep: {<path>: [values]}` makes one
scenario per combination. Paths are checked against schema.SCENARIO_FIELDS, so a misspelt path is an error, never
a new key nobody reads. Values are YAML scalars (or YAML flow lists/mappings: `tags=[a, b]`)."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator
from typing import Any

import yaml

from kvtestbed.scenarios import schema
from kvtestbed.scenarios.errors import ScenarioError, field_path


class PathError(ValueError):
    """A path that does not name a field; the message says which part is wrong."""


def parse_assignment(assignment: str) -> tuple[str, Any]:
    """'faults.0.for=20' -> ('faults.0.for', 20). Raises PathError."""
    key, eq, raw_value = assignment.partition("=")
    key = key.strip()
    if not eq or not key:
        raise PathError(f"{assignment!r}: write key=value, e.g. duration=2m or faults.0.for=20")
    if not raw_value.strip():
        return key, ""
    try:
        return key, yaml.safe_load(raw_value)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or "not a YAML value"
        raise PathError(f"value {raw_value!r}: {problem}") from None


def set_path(document: dict[str, Any], key: str, value: Any) -> None:
    """Set document[key] in place, key a dotted path with list indices. Raises PathError naming the bad part."""
    parts = key.split(".")
    if any(not part for part in parts):
        raise PathError(f"{key!r} has an empty part")
    node: Any = schema.SCENARIO_FIELDS
    container: Any = document
    walked: list[str | int] = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if node is schema.SWEEP:
            _set_sweep(container, ".".join(parts[i:]), value)
            return
        if isinstance(container, list):
            index = _index(container, part, walked)
            if last:
                container[index] = value
                return
            walked.append(index)
            container = container[index]
            node = node[0] if isinstance(node, list) else node
            continue
        if not isinstance(container, dict):
            raise PathError(f"{field_path(tuple(walked))} is a single value, not a mapping: set it whole")
        if node is not schema.FREE:
            if isinstance(node, list) or node is schema.SCALAR:
                raise PathError(f"{field_path(tuple(walked))} is not a mapping: set it whole")
            if part not in node:
                where = f"{field_path(tuple(walked))} has" if walked else "a scenario has"
                raise PathError(f"unknown field {part!r}: {where} {', '.join(node)}")
        if last:
            container[part] = value
            return
        child = schema.FREE if node is schema.FREE else node[part]
        if container.get(part) is None:
            if isinstance(child, list):
                raise PathError(f"{field_path((*walked, part))} has no entries: set the whole list")
            container[part] = {}
        walked.append(part)
        container = container[part]
        node = child


def _index(container: list[Any], part: str, walked: list[str | int]) -> int:
    where = field_path(tuple(walked))
    if not part.isdigit():
        raise PathError(f"{where} is a list: give an index ({where.split('[')[0]}.0), not {part!r}")
    index = int(part)
    if index >= len(container):
        span = f"0-{len(container) - 1}" if container else "none"
        raise PathError(f"{where} has {len(container)} entries (indices {span}), no {index}")
    return index


def _set_sweep(container: dict[str, Any], key: str, values: Any) -> None:
    _check_sweep_key(key)
    container[key] = values


def _check_sweep_key(key: str) -> None:
    if key == "sweep" or key.startswith("sweep."):
        raise PathError(f"sweep {key!r}: a sweep cannot sweep the sweep")
    # the path must name a field: try it on an empty scenario shape (list indices are checked per point)
    head = key.split(".")[0]
    if head not in schema.SCENARIO_FIELDS:
        raise PathError(f"unknown field {head!r}: a scenario has {', '.join(schema.SCENARIO_FIELDS)}")


def apply_overrides(raw: dict[str, Any], assignments: list[str] | tuple[str, ...],
                    source: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A copy of raw with every `key=value` applied, and {key: value} of what was applied, in order."""
    document = copy.deepcopy(raw)
    applied: dict[str, Any] = {}
    for assignment in assignments:
        try:
            key, value = parse_assignment(assignment)
            set_path(document, key, value)
        except PathError as exc:
            label = assignment.partition("=")[0].strip() or assignment
            raise ScenarioError(source, f"--set {label}", str(exc)) from None
        applied[key] = value
    return document, applied


def sweep_points(document: dict[str, Any], sweep: Any, applied: dict[str, Any],
                 source: str) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(document with the point's values set, {path: value}) for each combination; one point without a sweep."""
    if sweep is None or sweep == {}:
        yield copy.deepcopy(document), {}
        return
    if not isinstance(sweep, dict):
        raise ScenarioError(source, "sweep", "give a mapping {<dotted path>: [values]}, "
                                             "e.g. {writers.0.rate: [100, 200]}")
    axes: list[tuple[str, list[Any]]] = []
    total = 1
    for key, values in sweep.items():
        key = str(key)
        try:
            _check_sweep_key(key)
        except PathError as exc:
            raise ScenarioError(source, f"sweep.{key}", str(exc)) from None
        if key in applied:
            raise ScenarioError(source, f"sweep.{key}", f"also given by --set {key}: drop one "
                                                         f"(or --set 'sweep.{key}=[...]' to sweep other values)")
        if not isinstance(values, list) or not values:
            raise ScenarioError(source, f"sweep.{key}", "give a non-empty list of values")
        axes.append((key, values))
        total *= len(values)
    if total > schema.MAX_SWEEP_POINTS:
        raise ScenarioError(source, "sweep", f"{total} combinations, more than {schema.MAX_SWEEP_POINTS}: sweep fewer")
    for combination in itertools.product(*(values for _, values in axes)):
        point = {key: value for (key, _), value in zip(axes, combination, strict=True)}
        point_document = copy.deepcopy(document)
        for key, value in point.items():
            try:
                set_path(point_document, key, copy.deepcopy(value))
            except PathError as exc:
                raise ScenarioError(source, f"sweep.{key}", str(exc)) from None
        yield point_document, point
