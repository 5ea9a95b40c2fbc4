"""The repo's Grafana dashboards (dashboards/*.json) as queries a test can run without Grafana.

Every PromQL expression a dashboard holds (panel targets, rows' nested panels included; annotations; the selectors
of its `label_values(...)` variables) with where it sits, and `to_promql` turning Grafana's variables into plain
PromQL: a dashboard variable becomes `.*` (it may only sit in a regex matcher, `label=~"$host"`, where `.*` is
"all"), `$__rate_interval` and its kin a fixed range.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "dashboards"

# Grafana's interval variables: a range that Prometheus accepts stands in for them
INTERVALS = {"__rate_interval": "1m", "__interval": "1m", "__range": "1m"}
_VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)(?::[^\]]*)?\]\]")
_REGEX_MATCHER_VALUE = re.compile(r'[\w]+\s*[=!]~\s*"((?:[^"\\]|\\.)*)"')
_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*(\w+)\s*\)\s*$", re.DOTALL)


@dataclass(frozen=True)
class Query:
    where: str  # "<file> panel 'Title' target A", for messages
    expr: str  # as written, with Grafana's variables


def dashboard_files(folder: Path = DASHBOARDS) -> list[Path]:
    return sorted(folder.glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    board = json.loads(path.read_text())
    if not isinstance(board, dict):
        raise ValueError(f"{path.name}: not a JSON object")
    return board


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows and the panels of collapsed rows (kept inside the row) included."""
    for panel in board.get("panels") or []:
        yield panel
        yield from panel.get("panels") or []


def variables(board: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v.get("name", ""): v for v in (board.get("templating") or {}).get("list") or []}


def variable_query(variable: dict[str, Any]) -> str:
    query = variable.get("query")
    return str(query.get("query", "") if isinstance(query, dict) else query or "")


def queries(board: dict[str, Any], name: str) -> list[Query]:
    found: list[Query] = []
    for panel in panels(board):
        for target in panel.get("targets") or []:
            if "expr" in target:
                found.append(Query(f"{name} panel {panel.get('title')!r} target {target.get('refId')}", target["expr"]))
    for annotation in (board.get("annotations") or {}).get("list") or []:
        for holder in (annotation, annotation.get("target") or {}):
            if "expr" in holder:
                found.append(Query(f"{name} annotation {annotation.get('name')!r}", holder["expr"]))
    for variable in variables(board).values():
        if variable.get("type") == "query":
            query = variable_query(variable)
            match = _LABEL_VALUES.match(query)
            # label_values(selector, label) is Grafana's; the selector is PromQL (anything else is reported as is)
            found.append(Query(f"{name} variable {variable.get('name')!r}", match.group(1) if match else query))
    return found


def to_promql(expr: str, defined: set[str]) -> str:
    """`expr` with Grafana's variables replaced; ValueError (one line) for a variable the dashboard does not define or
    one outside a regex matcher's value."""
    inside_regex = [m.span(1) for m in _REGEX_MATCHER_VALUE.finditer(expr)]

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name in INTERVALS:
            return INTERVALS[name]
        if name not in defined:
            raise ValueError(f"variable ${name} is not defined in the dashboard's templating")
        if not any(start <= match.start() and match.end() <= end for start, end in inside_regex):
            raise ValueError(f'variable ${name} outside a regex matcher (write label=~"${name}")')
        return ".*"

    return _VARIABLE.sub(replace, expr)
