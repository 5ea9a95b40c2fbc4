"""The Grafana dashboards in dashboards/ pass a lint without Grafana or a network.

- each file is a JSON dashboard named after its uid, the uids unique across files;
- a `datasource` variable of type prometheus that every panel, target, annotation and query variable uses as
  `${datasource}` (no hard-coded datasource uid), rows' nested panels included;
- every panel with queries has a unit Grafana knows, raw rates use `$__rate_interval`, dashboard variables are
  defined and sit in regex matchers;
- every expression (Grafana's variables replaced) is valid PromQL: `promtool check rules` on a temporary rules file
  holding each one as a recording rule;
- every metric name an expression selects is exported: a recording rule of roles/prometheus, a metric of the
  repo's own exporters read from their source (the agents, the runner, the NATS collector, the Locust master:
  tests/support/metric_names.py EXPORTERS), or a Debian exporter's metric listed in dashboards/external-metrics.txt
  (the lab test checks those against Prometheus).

Each checker is first shown a planted problem, so a checker that finds nothing cannot pass.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.binaries import require
from tests.support.dashboards import (
    DASHBOARDS,
    Query,
    dashboard_files,
    load,
    panels,
    queries,
    to_promql,
    variable_query,
    variables,
)
from tests.support.metric_names import EXPORTERS, exported_series, families_in_source, promql_metric_names

ROOT = Path(__file__).resolve().parents[3]
RULES = ROOT / "roles" / "prometheus" / "files" / "rules" / "kvtestbed.rules.yml"
AGENTS = EXPORTERS["agents"]
RUNNER = EXPORTERS["runner"]
EXTERNAL = DASHBOARDS / "external-metrics.txt"

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Grafana unit ids the dashboards may use (a typo such as "byte" would show raw numbers)
UNITS = {"none", "short", "percent", "percentunit", "bytes", "decbytes", "Bps", "binBps", "pps", "s", "ms", "µs",
         "ops", "eps", "cps", "reqps", "celsius", "bool_yes_no", "dateTimeAsIso"}  # fmt: skip
# functions over a raw counter whose range should follow the scrape interval (Grafana's $__rate_interval)
_RATE_FUNCTION = re.compile(r"\b(?:rate|irate|increase|delta|idelta|deriv)\s*\(")


def _uses_datasource(holder: dict[str, Any]) -> bool:
    return holder.get("datasource") == DATASOURCE


def _rate_problems(expr: str) -> list[str]:
    problems = []
    for match in _RATE_FUNCTION.finditer(expr):
        start = expr.find("[", match.end())
        end = expr.find("]", start)
        if start < 0 or end < 0 or expr[start + 1 : end] != "$__rate_interval":
            problems.append(f"{match.group(0).rstrip('(')} without [$__rate_interval]")
    return problems


def lint(board: dict[str, Any], name: str) -> list[str]:
    """Problems of one dashboard, one line each."""
    problems: list[str] = []
    uid = board.get("uid")
    if not isinstance(uid, str) or not re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", uid):
        problems.append(f"{name}: uid {uid!r} is not 1-40 letters, digits, - or _")
    if not isinstance(board.get("schemaVersion"), int) or board["schemaVersion"] < 36:
        problems.append(f"{name}: schemaVersion {board.get('schemaVersion')!r} is older than Grafana 10's")
    defined = variables(board)
    ds = defined.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        problems.append(f"{name}: no templating variable 'datasource' of type datasource, query prometheus")
    for var_name, variable in defined.items():
        if variable.get("type") != "query":
            continue
        if not _uses_datasource(variable):
            problems.append(f"{name} variable {var_name!r}: datasource is not ${{datasource}}")
        if not re.fullmatch(r"label_values\(.+,\s*\w+\s*\)", variable_query(variable), re.DOTALL):
            problems.append(f"{name} variable {var_name!r}: query is not label_values(selector, label)")
    for annotation in (board.get("annotations") or {}).get("list") or []:
        if not annotation.get("builtIn") and not _uses_datasource(annotation):
            problems.append(f"{name} annotation {annotation.get('name')!r}: datasource is not ${{datasource}}")
    ids = [p.get("id") for p in panels(board)]
    if len(ids) != len(set(ids)):
        problems.append(f"{name}: panel ids repeat: {sorted(i for i in set(ids) if ids.count(i) > 1)}")
    for panel in panels(board):
        where = f"{name} panel {panel.get('title')!r}"
        if panel.get("type") == "row":
            continue
        if not _uses_datasource(panel):
            problems.append(f"{where}: datasource is not ${{datasource}}")
        targets = panel.get("targets") or []
        if not targets:
            problems.append(f"{where}: no queries")
        for target in targets:
            if not _uses_datasource(target):
                problems.append(f"{where} target {target.get('refId')}: datasource is not ${{datasource}}")
            problems += [f"{where} target {target.get('refId')}: {p}" for p in _rate_problems(target.get("expr", ""))]
        unit = ((panel.get("fieldConfig") or {}).get("defaults") or {}).get("unit")
        if unit not in UNITS:
            problems.append(f"{where}: unit {unit!r} is not one of {sorted(UNITS)}")
    for query in queries(board, name):
        if "__name__" in query.expr:
            problems.append(f"{query.where}: selects by __name__ (name the metric)")
        try:
            to_promql(query.expr, set(defined))
        except ValueError as exc:
            problems.append(f"{query.where}: {exc}")
    return problems


def _boards() -> list[tuple[str, dict[str, Any]]]:
    return [(path.name, load(path)) for path in dashboard_files()]


def _promql(boards: Iterable[tuple[str, dict[str, Any]]]) -> list[Query]:
    out = []
    for name, board in boards:
        defined = set(variables(board))
        out += [Query(q.where, to_promql(q.expr, defined)) for q in queries(board, name)]
    return out


# -- structure -------------------------------------------------------------------------------------------------
PLANTED: dict[str, Any] = {
    "uid": "planted",
    "schemaVersion": 38,
    "templating": {
        "list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus"},
            {"name": "host", "type": "query", "datasource": DATASOURCE, "query": "label_values(up, host)"},
        ]
    },
    "annotations": {"list": [{"name": "faults", "datasource": DATASOURCE, "expr": "kvt_fault_active > 0"}]},
    "panels": [
        {
            "id": 1,
            "type": "timeseries",
            "title": "good",
            "datasource": DATASOURCE,
            "fieldConfig": {"defaults": {"unit": "ops"}},
            "targets": [
                {"refId": "A", "datasource": DATASOURCE, "expr": 'rate(x_total{host=~"$host"}[$__rate_interval])'}
            ],
        },
        {
            "id": 2,
            "type": "row",
            "title": "collapsed",
            "collapsed": True,
            "panels": [
                {
                    "id": 3,
                    "type": "stat",
                    "title": "nested",
                    "datasource": DATASOURCE,
                    "fieldConfig": {"defaults": {"unit": "short"}},
                    "targets": [{"refId": "A", "datasource": DATASOURCE, "expr": "up"}],
                }
            ],
        },
    ],
}


def test_the_lint_passes_a_clean_dashboard_and_finds_planted_problems() -> None:
    assert lint(PLANTED, "planted.json") == []
    bad = copy.deepcopy(PLANTED)
    bad["uid"] = "has space"
    bad["templating"]["list"][0]["query"] = "loki"
    bad["annotations"]["list"][0]["datasource"] = {"type": "prometheus", "uid": "P1809F7CD0C75ACF3"}
    good, row = bad["panels"]
    good["targets"][0]["expr"] = 'rate(x_total{host="$host"}[5m]) + y{h=~"$hots"}'
    nested = row["panels"][0]
    nested["datasource"] = {"type": "prometheus", "uid": "abc"}
    del nested["fieldConfig"]["defaults"]["unit"]
    nested["id"] = 1
    assert lint(bad, "bad.json") == [
        "bad.json: uid 'has space' is not 1-40 letters, digits, - or _",
        "bad.json: no templating variable 'datasource' of type datasource, query prometheus",
        "bad.json annotation 'faults': datasource is not ${datasource}",
        "bad.json: panel ids repeat: [1]",
        "bad.json panel 'good' target A: rate without [$__rate_interval]",
        "bad.json panel 'nested': datasource is not ${datasource}",
        f"bad.json panel 'nested': unit None is not one of {sorted(UNITS)}",
        "bad.json panel 'good' target A: variable $host outside a regex matcher (write label=~\"$host\")",
    ]
    bad["panels"][0]["targets"][0]["expr"] = 'y{h=~"$hots"}'
    assert lint(bad, "bad.json")[-1] == (
        "bad.json panel 'good' target A: variable $hots is not defined in the dashboard's templating"
    )


def test_there_are_dashboards() -> None:
    names = {path.name for path in dashboard_files()}
    assert {"kvtestbed-hosts.json", "kvtestbed-engines.json", "kvtestbed-workloads.json", "kvtestbed-run.json"} <= (
        names
    ), names


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.name)
def test_each_dashboard_passes_the_lint(path: Path) -> None:
    board = load(path)  # invalid JSON fails here, naming the line
    assert lint(board, path.name) == []
    assert path.name == f"{board['uid']}.json", "name each file after its dashboard's uid"
    assert any(p.get("type") != "row" for p in panels(board)), f"{path.name}: no panels"


def test_uids_are_unique_across_dashboards() -> None:
    uids = [board["uid"] for _name, board in _boards()]
    assert len(uids) == len(set(uids)), uids


def test_the_run_timeline_marks_faults() -> None:
    board = load(DASHBOARDS / "kvtestbed-run.json")
    exprs = [a.get("expr") for a in board["annotations"]["list"]]
    assert "changes(kvt_fault_active[1m]) > 0" in exprs, exprs
    timelines = [t["expr"] for p in panels(board) if p["type"] == "state-timeline" for t in p["targets"]]
    assert any(e.startswith("kvt_fault_active{") for e in timelines), timelines


# -- PromQL ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool") or (Path("/usr/bin/promtool").exists() and "/usr/bin/promtool") or None
    return require(found, "promtool", "apt-get install prometheus: Debian's package ships promtool")


def promtool_problems(promtool: str, exprs: list[Query], folder: Path) -> str:
    """'' when promtool accepts every expression, else its report and, for each rule it names, where the expression
    sits in the dashboards."""
    records = {f"dashboard_query_{i}": q for i, q in enumerate(exprs)}
    rules = [{"record": record, "expr": q.expr} for record, q in records.items()]
    path = folder / "dashboards.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}, sort_keys=False))
    proc = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=120)
    if proc.returncode == 0:
        return ""
    report = proc.stdout + proc.stderr
    failed = [f"{record}: {q.where}: {q.expr}" for record, q in records.items() if f'"{record}"' in report]
    return "\n".join([report, *failed])


def test_promtool_reports_a_broken_expression(promtool: str, tmp_path: Path) -> None:
    good = Query("planted good", 'sum by (host) (rate(x_total{host=~".*"}[1m]))')
    assert promtool_problems(promtool, [good], tmp_path) == ""
    broken = Query("planted broken", "sum by (host) (rate(x_total[1m])")
    report = promtool_problems(promtool, [good, broken], tmp_path)
    assert report and "planted broken" in report, report


def test_every_expression_is_valid_promql(promtool: str, tmp_path: Path) -> None:
    exprs = _promql(_boards())
    assert len(exprs) >= 50, len(exprs)  # the dashboards' queries were found
    assert promtool_problems(promtool, exprs, tmp_path) == ""


# -- metric names ----------------------------------------------------------------------------------------------
def external_metrics(path: Path = EXTERNAL) -> list[str]:
    lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line]


def known_metrics() -> set[str]:
    records = {rule["record"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]}
    agents = exported_series(families_in_source(AGENTS).values())
    runner = exported_series(families_in_source(RUNNER).values())
    assert len(agents) >= 80 and "kvt_observer_rtt_seconds_bucket" in agents, sorted(agents)  # the scan works
    assert "kvt_fault_active" in runner and "kvt_writer_ops" in runner, sorted(runner)
    own = exported_series(f for root in EXPORTERS.values() for f in families_in_source(root).values())
    assert "jetstream_consumer_num_pending" in own and "gnatsd_varz_in_msgs" in own  # the NATS collector's
    return records | set(own) | set(external_metrics())


def unknown_metrics(exprs: Iterable[Query], known: set[str]) -> list[str]:
    return [f"{q.where}: {name}" for q in exprs for name in sorted(promql_metric_names(q.expr) - known)]


def test_metric_names_are_read_from_expressions() -> None:
    expr = (
        'redis_master_repl_offset{job="redis", host=~".*"} - on (job, instance) group_right '
        'redis_connected_slave_offset_bytes{job="redis"} > bool 1e3 or topk(10, sum by (cmd) '
        '(rate(redis_commands_total{cmd!="ping"}[1m] offset 5m))) and ignoring (le) '
        'instance:kvt_expiry_lag_seconds:histogram_quantile{quantile=~"0.5|0.99"} unless vector(0) * Inf'
    )
    assert promql_metric_names(expr) == {
        "redis_master_repl_offset",
        "redis_connected_slave_offset_bytes",
        "redis_commands_total",
        "instance:kvt_expiry_lag_seconds:histogram_quantile",
    }


def test_an_unknown_metric_is_reported() -> None:
    known = known_metrics()
    planted = [
        Query("planted typo", 'rate(kvt_observer_writez_total{agent=~".*"}[1m])'),
        Query("planted unscanned suffix", "kvt_observer_rtt_seconds_total"),
        Query("planted good", "instance:kvt_observer_writes:rate1m + rate(kvt_streams_reclaimed_total[1m]) + up"),
    ]
    assert unknown_metrics(planted, known) == [
        "planted typo: kvt_observer_writez_total",
        "planted unscanned suffix: kvt_observer_rtt_seconds_total",
    ]


def test_every_metric_a_dashboard_names_is_exported() -> None:
    assert unknown_metrics(_promql(_boards()), known_metrics()) == []


def test_the_external_list_names_exporters_metrics_the_dashboards_use() -> None:
    listed = external_metrics()
    assert len(listed) == len(set(listed)), "a name is listed twice"
    # the agents', the runner's and the rules' names are checked against their source: none may hide here
    assert [n for n in listed if not re.fullmatch(r"(node|redis)_[a-zA-Z0-9_]+|up", n)] == []
    used = {name for q in _promql(_boards()) for name in promql_metric_names(q.expr)}
    assert sorted(set(listed) - used) == [], "listed in external-metrics.txt but no dashboard uses it"
