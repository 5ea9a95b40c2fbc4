"""Metric names on both sides of a scrape: the series Python code exports through prometheus_client (read from the
source, nothing imported or run) and the metric names a PromQL expression selects.

The monitoring tests use both so that a recording rule or a dashboard can only name what something exports.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")

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


def _strings(node: ast.expr | None) -> tuple[str, ...]:
    if isinstance(node, (ast.List, ast.Tuple)):
        return tuple(e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str))
    return ()


def _names(node: ast.expr | None, constants: set[str]) -> tuple[set[str], bool]:
    """The names a constructor's name argument can take, and whether they are guessed."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}, False
    # a name built in a loop (f"kvt_streams_{name}") takes its tail from the module's identifier-like constants:
    # more names than the code really makes, never fewer
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
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
        for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
            func = call.func.id if isinstance(call.func, ast.Name) else getattr(call.func, "attr", "")
            if func not in _CONSTRUCTORS:
                continue
            kind, name_at, name_kw, labels_at, labels_kw = _CONSTRUCTORS[func]
            labels = _strings(_arg(call, labels_at, labels_kw))
            names, is_guess = _names(_arg(call, name_at, name_kw), constants)
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
