"""The repo's Grafana dashboards (dashboards/*.json) as panels and queries, and Grafana's variables replaced the way
Grafana replaces them for one time range, so the report can run each panel's queries against a run's Prometheus.

Only what a query needs is read: each panel's title, type, unit, the row it sits under, and its targets' `expr`,
`legendFormat` and `refId`. Rows' nested panels (a collapsed row keeps them inside) count like any other; rows
themselves, text panels and hidden targets have nothing to query.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# panel types that show no query's data
NO_QUERY_TYPES = frozenset({"row", "text", "news", "dashlist", "annolist"})
# Grafana's own floor for $__rate_interval when the datasource sets no scrape interval
RATE_INTERVAL_FLOOR_S = 15.0

# ${name}, ${name:format}, $name and [[name]]: the spellings Grafana accepts for a variable
_VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)(?::[^\]]*)?\]\]")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_DURATION_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 31536000.0}


class DashboardError(ValueError):
    """A dashboard file that cannot be read: one line naming it."""


@dataclass(frozen=True)
class Target:
    ref_id: str
    expr: str  # as the dashboard writes it, with Grafana's variables
    legend: str  # legendFormat ("" when the dashboard sets none)


@dataclass(frozen=True)
class Panel:
    title: str
    type: str
    unit: str
    row: str  # the title of the row it sits under, "" above the first row
    targets: tuple[Target, ...]


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    file: str
    all_values: dict[str, str]  # dashboard variable -> the value that means "all" (its allValue, else .*)
    panels: tuple[Panel, ...]


def dashboard_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.json"))


def _unit(panel: dict[str, Any]) -> str:
    return str(((panel.get("fieldConfig") or {}).get("defaults") or {}).get("unit") or "")


def _targets(panel: dict[str, Any]) -> tuple[Target, ...]:
    found = []
    for index, target in enumerate(panel.get("targets") or []):
        if not isinstance(target, dict) or target.get("hide") or not str(target.get("expr") or "").strip():
            continue
        found.append(Target(str(target.get("refId") or chr(ord("A") + index % 26)), str(target["expr"]),
                            str(target.get("legendFormat") or "")))  # fmt: skip
    return tuple(found)


def _walk(items: list[Any], row: str, out: list[Panel]) -> str:
    """Append every queryable panel of `items` (rows' nested panels included) in the dashboard's order; the row
    title in force after them (a row that is not collapsed heads the panels that follow it)."""
    for item in items:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "row":
            row = str(item.get("title") or "")
            _walk(item.get("panels") or [], row, out)
            continue
        targets = _targets(item)
        if item.get("type") not in NO_QUERY_TYPES and targets:
            out.append(Panel(str(item.get("title") or "(untitled)"), str(item.get("type") or "timeseries"),
                             _unit(item), row, targets))  # fmt: skip
        _walk(item.get("panels") or [], row, out)
    return row


def parse_dashboard(board: Any, file: str) -> Dashboard:
    if not isinstance(board, dict):
        raise DashboardError(f"{file}: not a JSON object (a Grafana dashboard)")
    panels: list[Panel] = []
    _walk(board.get("panels") or [], "", panels)
    all_values = {}
    for variable in (board.get("templating") or {}).get("list") or []:
        if isinstance(variable, dict) and variable.get("name"):
            all_values[str(variable["name"])] = str(variable.get("allValue") or ".*")
    uid = str(board.get("uid") or Path(file).stem)
    return Dashboard(uid, str(board.get("title") or uid), file, all_values, tuple(panels))


def load_dashboard(path: Path) -> Dashboard:
    try:
        board = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DashboardError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise DashboardError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    return parse_dashboard(board, path.name)


# -- Grafana's variables ----------------------------------------------------------------------------------------


def parse_duration(text: str) -> float | None:
    """Seconds of a Prometheus duration ("5s", "1m30s", "250ms"); None when it is not one."""
    text = str(text).strip()
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _DURATION_S[u] for n, u in parts)


def duration(seconds: float) -> str:
    """A duration PromQL accepts (whole units only): whole seconds as "20s", anything finer in milliseconds."""
    ms = max(1, round(seconds * 1000))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def rate_interval_s(step_s: float, scrape_s: float) -> float:
    """Grafana's $__rate_interval: max($__interval + scrape interval, 4 x scrape interval), never under 15 s (with
    the step at the scrape interval: max(4 x step, 15 s)), so a rate always spans several samples."""
    return max(step_s + scrape_s, 4 * scrape_s, RATE_INTERVAL_FLOOR_S)


def interval_values(step_s: float, scrape_s: float, range_s: float) -> dict[str, str]:
    """Grafana's built-in interval variables for a query at step_s over range_s."""
    return {
        "__interval": duration(step_s),
        "__interval_ms": str(max(1, round(step_s * 1000))),
        "__rate_interval": duration(rate_interval_s(step_s, scrape_s)),
        "__range": duration(range_s),
        "__range_s": str(max(1, round(range_s))),
        "__range_ms": str(max(1, round(range_s * 1000))),
    }


def substitute(expr: str, intervals: dict[str, str], all_values: dict[str, str] | None = None) -> str:
    """expr as Grafana sends it with every variable set to "All": interval variables from `intervals`, a dashboard
    variable its allValue (.* when it sets none: the dashboards only use variables in regex matchers, where .* is
    all), and a name Grafana would not know likewise .* (the query then says what is wrong)."""
    known = all_values or {}

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name in intervals:
            return intervals[name]
        return known.get(name, ".*")

    return _VARIABLE.sub(replace, expr)
