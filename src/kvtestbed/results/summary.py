"""The flat figures of a summary and the SLOs evaluated on them.

`figures` is what every SLO and every comparison reads: dotted names for every number of the nested summary
(clients.<client>.<field>, clients.<client>.latency_us.p99, load.<name>, faults.count, run.duration_s). An SLO
may say clients.*.<field>: every client must meet it, and its value is the worst client's (named in `worst`).
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

Direction = Literal["lower", "higher"]

# the numeric fields of a client entry, as figure suffixes (docs/results.md)
LATENCY_PERCENTILES = ("p50", "p90", "p99", "p99.9", "max")
CLIENT_FIELDS = (
    "attempted",
    "ok",
    "fail",
    "unknown",
    "lost",
    "unexpected",
    "unknown_applied",
    "unavailability_s",
    "failover_s",
    "ops_per_s",
    *(f"latency_us.{p}" for p in LATENCY_PERCENTILES),
)
RUN_FIGURES = ("faults.count", "run.duration_s")
# sections whose figure names are free-form (what the agents, Locust and the engines' tools report)
FREE_SECTIONS = ("load", "accounting", "benchmarks")

SLO_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
    "==": operator.eq,
}

# What "better" means for a figure, by the words in its name: the first rule that matches decides. Counts of
# trouble, times and latencies: lower; throughput and successes: higher. Anything else has no direction (shown,
# never coloured).
_DIRECTION_RULES: tuple[tuple[re.Pattern[str], Direction | None], ...] = (
    (re.compile(r"^(run|faults)\."), None),  # how long a run lasted or how many faults it had is no score
    (re.compile(r"latency|lost|unavailab|fail|unknown|unexpected|dup|error|timeout"), "lower"),
    (re.compile(r"(^|\.)(ok|throughput|rate)($|\.)|per_s$"), "higher"),
    (re.compile(r"_ms$|_us$|_s$"), "lower"),
)


def figure_direction(figure: str) -> Direction | None:
    """'lower' or 'higher' is better for this figure, or None when neither is (counts of attempts, durations)."""
    for pattern, direction in _DIRECTION_RULES:
        if pattern.search(figure):
            return direction
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _flatten(prefix: str, value: Any, out: dict[str, float]) -> None:
    if _is_number(value):
        out[prefix] = value
    elif isinstance(value, Mapping):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}", inner, out)
    # lists (windows, samples), strings and nulls are not figures


def flatten_figures(summary: Mapping[str, Any]) -> dict[str, float]:
    """The flat figures of a nested summary: every number under clients, load and accounting by its dotted path, the
    number of faults and the run's duration. A null (no failover seen, say) is absent, not zero."""
    figures: dict[str, float] = {}
    for client, entry in (summary.get("clients") or {}).items():
        _flatten(f"clients.{client}", entry, figures)
    _flatten("load", summary.get("load") or {}, figures)
    _flatten("accounting", summary.get("accounting") or {}, figures)
    # the engines' tools: benchmarks.<name>.<test>.<rps|p50_us|...> (their settings and command stay in the summary)
    for bench, entry in (summary.get("benchmarks") or {}).items():
        _flatten(f"benchmarks.{bench}", (entry or {}).get("tests") or {}, figures)
    figures["faults.count"] = len(summary.get("faults") or [])
    duration = (summary.get("run") or {}).get("duration_s")
    if _is_number(duration):
        figures["run.duration_s"] = duration
    return figures


def _wildcard(figure: str) -> re.Pattern[str]:
    return re.compile("^" + r"[^.]+".join(re.escape(part) for part in figure.split("*")) + "$")


def _worst(op: str, threshold: float, matches: dict[str, float]) -> tuple[str, float]:
    """The match that meets the SLO least: the highest for an upper bound, the lowest for a lower bound, the
    first that differs for ==."""
    names = sorted(matches)
    if op in ("<=", "<"):
        name = max(names, key=lambda n: matches[n])
    elif op in (">=", ">"):
        name = min(names, key=lambda n: matches[n])
    else:
        name = next((n for n in names if matches[n] != threshold), names[0])
    return name, matches[name]


def evaluate_slos(slos: Iterable[Mapping[str, Any]], figures: Mapping[str, float]) -> list[dict[str, Any]]:
    """Each SLO {figure, op, threshold} with its value and ok. A wildcard figure (clients.*.lost) covers every
    matching figure; its value is the worst one, named in `worst`. A figure the run did not produce has value
    null and is not ok: an SLO nothing measured has not been met."""
    results = []
    for slo in slos:
        figure, op, threshold = str(slo["figure"]), str(slo["op"]), float(slo["threshold"])
        if op not in SLO_OPS:
            raise ValueError(f"SLO on {figure}: unknown operator {op!r} (use one of {' '.join(SLO_OPS)})")
        entry: dict[str, Any] = {"figure": figure, "op": op, "threshold": threshold, "value": None, "ok": False}
        if "*" in figure:
            pattern = _wildcard(figure)
            matches = {name: value for name, value in figures.items() if pattern.match(name)}
            entry["worst"] = None
            if matches:
                entry["worst"], entry["value"] = _worst(op, threshold, matches)
                entry["ok"] = all(SLO_OPS[op](value, threshold) for value in matches.values())
        elif figure in figures:
            entry["value"] = figures[figure]
            entry["ok"] = SLO_OPS[op](figures[figure], threshold)
        results.append(entry)
    return results


def slo_figure_problem(figure: str, clients: Iterable[str]) -> str | None:
    """Why an SLO's figure can never exist in a run with these clients (one line), or None if it can. For the
    scenario file's check before anything starts; load.* names are free-form and always accepted."""
    known_clients = set(clients)
    parts = figure.split(".", 2)
    if figure in RUN_FIGURES or (parts[0] in FREE_SECTIONS and len(parts) > 1 and parts[1]):
        return None
    if parts[0] == "clients" and len(parts) == 3:
        client, field = parts[1], parts[2]
        if client != "*" and client not in known_clients:
            return f"SLO on {figure}: no client named {client!r} (clients: {', '.join(sorted(known_clients)) or '-'})"
        if field not in CLIENT_FIELDS:
            return f"SLO on {figure}: unknown client figure {field!r} (one of: {', '.join(CLIENT_FIELDS)})"
        return None
    return f"SLO on {figure}: unknown figure (use clients.<client|*>.<field>, load.<name>, {', '.join(RUN_FIGURES)})"


def complete_summary(summary: dict[str, Any], slos: Iterable[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """summary with `figures` and `slo` filled in; a run that passed but misses an SLO becomes slo-violated."""
    summary["figures"] = flatten_figures(summary)
    summary["slo"] = evaluate_slos(slos, summary["figures"])
    run = summary.setdefault("run", {})
    if run.get("status") == "passed" and not all(entry["ok"] for entry in summary["slo"]):
        run["status"] = "slo-violated"
    return summary
