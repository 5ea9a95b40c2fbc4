"""Metric names on both sides of a scrape: the series Python code exports through prometheus_client (read from the
source, nothing imported or run) and the metric names a PromQL expression selects.

The monitoring tests use both so that a recording rule or a dashboard can only name what something exports.
`EXPORTERS` lists the repo's own exporters: the agents, the scenario runner, the NATS collector (roles/exporters
runs it on the NATS hosts) and the Locust master's /metrics.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")

_ROOT = Path(__file__).resolve().parents[2]
# the repo's own exporters: where each declares its metrics (families_in_source reads them)
EXPORTERS = {
    "agents": _ROOT / "agents" / "kvagent",
    "runner": _ROOT / "src" / "kvtestbed" / "monitoring",
    "nats": _ROOT / "agents" / "kvagent" / "exporters",
    "locust": _ROOT / "loadtests" / "kvload",
}

# the series prometheus_client exposes for each kind of family, as suffixes of the family's name
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("_count", "_sum"),
    "info": ("_info",),
}

# constructor -> (kind, index and keyword of the name argument, index and keyword of the label names)
_CONSTRUCTORS = {
    "Counter": ("counter", 0, "name", 2, "labelnames"),
    "Gauge": ("gauge", 0, "name", 2, "labelnames"),
    "Enum": ("gauge", 0, "name", 2, "labelnames"),
    "Histogram": ("histogram", 0, "name", 2, "labelnames"),
    "Summary": ("summary", 0, "name", 2, "labelnames"),
    "Info": ("info", 0, "name", 2, "labelnames"),
    "CounterMetricFamily": ("counter", 0, "name", 2, "labels"),
    "GaugeMetricFamily": ("gauge", 0, "name", 2, "labels"),
    "HistogramMetricFamily": ("histogram", 0, "name", 2, "labels"),
    "SummaryMetricFamily": ("summary", 0, "name", 2, "labels"),
    "InfoMetricFamily": ("info", 0, "name", 2, "labels"),
    # kvagent.service.metrics.LatencyMetric(registry, name, doc, labelnames): a histogram <name>_seconds and a
    # counter <name>_clamped (handled below)
    "LatencyMetric": ("histogram", 1, "name", 3, "labelnames"),
}


@dataclass(frozen=True)
class Family:
    name: str  # as prometheus_client names the family: no _total, _bucket, _count, _sum
    kind: str  # a key of SUFFIXES
    labels: tuple[str, ...]
    source: str  # file that declares it, for messages

    @property
    def histogram(self) -> bool:
        return self.kind == "histogram"

    @property
    def series(self) -> tuple[str, ...]:
        return tuple(self.name + suffix for suffix in SUFFIXES[self.kind])


def _arg(call: ast.Call, index: int, keyword: str) -> ast.expr | None:
    for kw in call.keywords:
        if kw.arg == keyword:
            return kw.value
    return call.args[index] if len(call.args) > index else None


# a module-level constant: a string, or a tuple/list of them or of such tuples (tables of rows); None for anything
# else (a lambda in a row)
Literal = str | tuple[Any, ...] | None


def _literal(node: ast.expr, tables: dict[str, Literal]) -> Literal:
    if isinstance(node, ast.Constant):
        return node.value if isinstance(node.value, str) else None
    if isinstance(node, ast.Name):
        return tables.get(node.id)
    if isinstance(node, (ast.Tuple, ast.List)):
        items: list[Any] = []
        for element in node.elts:
            if isinstance(element, ast.Starred):  # (*SERVER_LABELS, "account")
                spread = _literal(element.value, tables)
                items += list(spread) if isinstance(spread, tuple) else [None]
            else:
                items.append(_literal(element, tables))
        return tuple(items)
    return None


def _tables(tree: ast.Module) -> dict[str, Literal]:
    """The module's top-level NAME = <tuple or list of strings, or of rows> (label lists, tables of metrics)."""
    tables: dict[str, Literal] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            target, value = stmt.targets[0].id, stmt.value
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
            target, value = stmt.target.id, stmt.value
        else:
            continue
        if isinstance(value, (ast.Tuple, ast.List)):
            tables[target] = _literal(value, tables)
    return tables


def _strings(node: ast.expr | None, tables: dict[str, Literal] | None = None) -> tuple[str, ...]:
    value = _literal(node, tables or {}) if node is not None else None
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, tuple) else ()


def _loop_bindings(loop: ast.For, tables: dict[str, Literal]) -> dict[str, set[str]]:
    """`for a, b, _ in TABLE:` over a module-level table of rows: each loop variable's string values."""
    rows = _literal(loop.iter, tables)
    if not isinstance(rows, tuple):
        return {}
    targets = loop.target.elts if isinstance(loop.target, ast.Tuple) else [loop.target]
    bound: dict[str, set[str]] = {}
    for index, target in enumerate(targets):
        if not isinstance(target, ast.Name):
            continue
        values = {
            (row[index] if isinstance(row, tuple) else row)
            for row in rows
            if isinstance(row, str) or (isinstance(row, tuple) and index < len(row))
        }
        if values and all(isinstance(v, str) for v in values):
            bound[target.id] = values  # type: ignore[assignment]
    return bound


class _Calls(ast.NodeVisitor):
    """Every call with the loop variables bound around it (for-loops over module-level tables)."""

    def __init__(self, tables: dict[str, Literal]) -> None:
        self.tables = tables
        self.scopes: list[dict[str, set[str]]] = []
        self.found: list[tuple[ast.Call, dict[str, set[str]]]] = []

    def visit_For(self, node: ast.For) -> None:
        self.visit(node.iter)
        self.scopes.append(_loop_bindings(node, self.tables))
        for stmt in node.body:
            self.visit(stmt)
        self.scopes.pop()
        for stmt in node.orelse:
            self.visit(stmt)

    def visit_Call(self, node: ast.Call) -> None:
        bound: dict[str, set[str]] = {}
        for scope in self.scopes:  # the innermost loop wins
            bound.update(scope)
        self.found.append((node, bound))
        self.generic_visit(node)


def _names(
    node: ast.expr | None, constants: set[str], bound: dict[str, set[str]] | None = None
) -> tuple[set[str], bool]:
    """The names a constructor's name argument can take, and whether they are guessed."""
    bound = bound or {}
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}, False
    if isinstance(node, ast.Name) and node.id in bound:
        return set(bound[node.id]), False
    if isinstance(node, ast.JoinedStr) and node.values:
        # f"jetstream_stream_{suffix}" inside `for suffix, ... in STREAM_GAUGES:`: exactly the table's names
        exact = {""}
        for part in node.values:
            if isinstance(part, ast.Constant) and isinstance(part.value, str):
                exact = {e + part.value for e in exact}
            elif isinstance(part, ast.FormattedValue) and isinstance(part.value, ast.Name) and part.value.id in bound:
                exact = {e + v for e in exact for v in bound[part.value.id]}
            else:
                exact = set()
                break
        if exact:
            return exact, False
        # a name built from something else (f"kvt_streams_{name}" over a class attribute) takes its tail from the
        # module's identifier-like constants: more names than the code really makes, never fewer
        if isinstance(node.values[0], ast.Constant):
            return {f"{node.values[0].value}{c}" for c in constants}, True
    return set(), False


def families_in_source(root: Path) -> dict[str, Family]:
    """Every metric family the .py files under `root` declare, by family name."""
    found: dict[str, Family] = {}
    guessed: dict[str, Family] = {}
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        constants = {
            n.value
            for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and re.fullmatch(r"[a-z][a-z0-9_]*", n.value)
        }
        tables = _tables(tree)
        calls = _Calls(tables)
        calls.visit(tree)
        for call, bound in calls.found:
            func = call.func.id if isinstance(call.func, ast.Name) else getattr(call.func, "attr", "")
            if func not in _CONSTRUCTORS:
                continue
            kind, name_at, name_kw, labels_at, labels_kw = _CONSTRUCTORS[func]
            labels = _strings(_arg(call, labels_at, labels_kw), tables)
            names, is_guess = _names(_arg(call, name_at, name_kw), constants, bound)
            for name in names:
                if not METRIC_NAME.fullmatch(name):
                    continue  # not a metric (collections.Counter("text"), say)
                declared = [(name + "_seconds", kind), (name + "_clamped", "counter")]
                if func != "LatencyMetric":
                    # prometheus_client drops a counter's own _total and adds it back on exposition
                    declared = [(name.removesuffix("_total") if kind == "counter" else name, kind)]
                for family, family_kind in declared:
                    (guessed if is_guess else found)[family] = Family(family, family_kind, labels, str(path))
    # a name spelled out wins over a guess of the same name (a gauge is no counter because a loop could make one)
    return {**guessed, **found}


def exporters_families() -> dict[str, Family]:
    """Every family the repo's own exporters (EXPORTERS) declare."""
    out: dict[str, Family] = {}
    for root in EXPORTERS.values():
        out.update(families_in_source(root))
    return out


def exported_series(families: Iterable[Family]) -> dict[str, Family]:
    """Series name (what a PromQL selector names) -> its family."""
    return {series: family for family in families for series in family.series}


# -- PromQL ------------------------------------------------------------------------------------------------------
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_OFFSET = re.compile(r"\boffset\s+-?\w+")
# a whole identifier (not the tail of a number like 1e3, nor part of a longer name) that is not a function call
_IDENTIFIER = re.compile(r"(?<![\w.:])([A-Za-z_:][A-Za-z0-9_:]*)(?![A-Za-z0-9_:])(?!\s*\()")
_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
             "inf", "nan"}  # fmt: skip


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a (valid) PromQL expression selects. Label values, label names, durations, functions
    and keywords are not metric names; a selector by `{__name__=...}` alone is not seen (the dashboards' lint
    forbids it)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _GROUPING.sub("", text)
    text = _OFFSET.sub("", text)
    return {m for m in _IDENTIFIER.findall(text) if m.lower() not in _KEYWORDS}
