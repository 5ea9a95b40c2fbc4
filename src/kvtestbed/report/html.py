"""report.html: one run on one self-contained page (docs/results.md lists its sections).

Every time plot shares the run's clock (seconds since t0), shades the warm-up grey and every fault as a band from
injection to heal, so a latency spike or a gap in throughput can be read against what caused it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from kvtestbed.report.dashboards import dashboards_section
from kvtestbed.report.data import (
    RESULTS,
    ClientSeries,
    accounting_rows,
    client_series,
    consumer_figures,
    loss_figures,
    primary_spans,
)
from kvtestbed.report.page import Page, esc, table
from kvtestbed.results.store import RunDir
from kvtestbed.results.summary import CLIENT_FIELDS, LATENCY_PERCENTILES, flatten_figures

FAULT_COLOURS = {
    "kill": "#cf222e",
    "stop": "#bc4c00",
    "pause": "#9a6700",
    "partition": "#8250df",
    "shape": "#0969da",
    "netem": "#0969da",
    "reboot": "#cf222e",
    "clock": "#1b7c83",
}
RESULT_COLOURS = {"ok": "#1a7f37", "fail": "#cf222e", "unknown": "#bc4c00"}
MIN_BAND_S = 0.5  # a kill heals "at once": its band still has to be visible


def _run_end(summary: Mapping[str, Any], series: list[ClientSeries], faults: list[dict[str, Any]]) -> float:
    ends = [float((summary.get("run") or {}).get("duration_s") or 0.0)]
    ends += [s.times[-1] + s.bin_s for s in series if s.times]
    ends += [float(f.get("t_heal") or f.get("t_inject") or 0.0) for f in faults]
    return max(ends)


def add_context(fig: go.Figure, summary: Mapping[str, Any], faults: list[dict[str, Any]], end_t: float) -> None:
    """The warm-up (grey) and every fault (coloured by kind, labelled) as bands behind a time plot."""
    warmup = (summary.get("phases") or {}).get("warmup")
    if warmup and warmup[1] > warmup[0]:
        fig.add_vrect(x0=warmup[0], x1=warmup[1], fillcolor="#888", opacity=0.12, line_width=0, layer="below")
    for fault in faults:
        t_from = float(fault["t_inject"])
        t_to = float(fault["t_heal"]) if fault.get("t_heal") is not None else end_t
        fig.add_vrect(
            x0=t_from,
            x1=max(t_to, t_from + MIN_BAND_S),
            fillcolor=FAULT_COLOURS.get(str(fault.get("kind")), "#6e7781"),
            opacity=0.18,
            line_width=0,
            layer="below",
            annotation_text=f"{fault.get('kind')} {fault.get('target')}",
            annotation_position="top left",
            annotation_font_size=10,
        )
    fig.update_xaxes(title_text="s since start", range=[0, end_t])


def latency_plot(series: list[ClientSeries]) -> go.Figure:
    fig = go.Figure()
    for s in series:
        label = f" ({s.bin_s:g} s bins)" if s.bin_s != 1 else ""
        fig.add_scatter(x=s.times, y=s.p50_ms, name=f"{s.name} p50{label}", mode="lines", connectgaps=False)
        fig.add_scatter(x=s.times, y=s.p99_ms, name=f"{s.name} p99", mode="lines", line={"dash": "dot"})
    fig.update_yaxes(type="log", title_text="latency ms (from intended start)")
    fig.update_layout(title_text="Latency over time, per second (ok ops)")
    return fig


def throughput_plot(s: ClientSeries) -> go.Figure:
    fig = go.Figure()
    for result in RESULTS:
        fig.add_scatter(x=s.times, y=s.rates[result], name=result, mode="lines", line={"color": RESULT_COLOURS[result]})
    fig.update_yaxes(title_text="ops/s")
    fig.update_layout(title_text=f"Throughput of {s.name}: ok / fail / unknown per second")
    return fig


def cdf_plot(series: list[ClientSeries]) -> go.Figure:
    fig = go.Figure()
    for s in series:
        fig.add_scatter(x=s.cdf_ms, y=s.cdf_fraction, name=s.name, mode="lines", line={"shape": "hv"})
    fig.update_xaxes(type="log", title_text="latency ms (from intended start)")
    fig.update_yaxes(title_text="fraction of ok ops at or below", range=[0, 1.02])
    fig.update_layout(title_text="Latency CDF (ok ops)")
    return fig


def failover_plot(summary: Mapping[str, Any], timeline: list[dict[str, Any]], end_t: float) -> go.Figure | None:
    spans = primary_spans(timeline, summary.get("inventory") or {}, end_t)
    if not spans:
        return None
    fig = go.Figure()
    for span in spans:
        fig.add_scatter(
            x=[span.t_from, span.t_to],
            y=[span.group, span.group],
            mode="lines+text",
            line={"width": 18},
            text=[span.primary, ""],
            textposition="top right",
            name=f"{span.group}: {span.primary}",
            hovertemplate=f"{esc(span.primary)} primary of {esc(span.group)}<br>%{{x:.2f}} s<extra></extra>",
        )
    switches = [e for e in timeline if e.get("event") == "+switch-master"]
    if switches:
        fig.add_scatter(
            x=[float(e["t"]) for e in switches],
            y=[(e.get("detail") or {}).get("master") for e in switches],
            mode="markers",
            marker={"symbol": "diamond", "size": 12, "color": "#000"},
            name="+switch-master (servers)",
        )
    for client, entry in (summary.get("clients") or {}).items():
        seen = _client_failover_times(summary, entry)
        if seen:
            fig.add_scatter(
                x=seen,
                y=[f"client {client}"] * len(seen),
                mode="markers",
                marker={"symbol": "x", "size": 12},
                name=f"{client}: first ok on the new primary",
            )
    fig.update_yaxes(title_text="group", type="category")
    fig.update_layout(title_text="Who was primary when", showlegend=True)
    return fig


def _client_failover_times(summary: Mapping[str, Any], entry: Mapping[str, Any]) -> list[float]:
    """The client's failover end on the run's clock: its first fault's injection + failover_s."""
    faults = summary.get("faults") or []
    if entry.get("failover_s") is None or not faults:
        return []
    return [float(faults[0]["t_inject"]) + float(entry["failover_s"])]


def bars(title: str, values: Mapping[str, Mapping[str, float]], y_title: str) -> go.Figure:
    """Grouped bars: one trace per series name, x = the categories."""
    fig = go.Figure()
    for name, by_category in values.items():
        fig.add_bar(x=list(by_category), y=list(by_category.values()), name=name)
    fig.update_layout(title_text=title, barmode="group")
    fig.update_yaxes(title_text=y_title)
    return fig


# -- the page's sections ----------------------------------------------------------------------------------------


def _header(page: Page, run: RunDir, summary: Mapping[str, Any]) -> None:
    meta = summary["run"]
    status = str(meta.get("status"))
    page.add(
        f"<h1>{esc(meta.get('scenario'))}</h1><p class='muted'>{esc(meta.get('id') or run.id)}</p>"
        f"<p><span class='status {esc(status)}'>{esc(status)}</span> "
        f"started {esc(meta.get('started'))}, ended {esc(meta.get('ended'))}, "
        f"{esc(meta.get('duration_s'))} s; repeat {esc(meta.get('repeat', 0))}</p>"
    )
    if meta.get("description"):
        page.add(f"<p>{esc(meta['description'])}</p>")
    extras = [("tags", ", ".join(meta.get("tags") or [])), ("overrides", meta.get("overrides") or "")]
    extras.append(("error", meta.get("error") or ""))
    page.add("".join(f"<p><b>{k}</b>: {esc(v)}</p>" for k, v in extras if v))
    hosts = (summary.get("inventory") or {}).get("hosts") or {}
    if hosts:
        rows = [
            (name, h.get("address"), h.get("profile"), h.get("arch"), ", ".join(h.get("groups") or []))
            for name, h in hosts.items()
        ]
        page.add(table(["host", "address", "profile", "arch", "groups"], rows, numeric_from=99))
    engines = summary.get("engines") or {}
    if engines:
        rows = [(g, e.get("engine"), e.get("version"), e.get("topology")) for g, e in engines.items()]
        page.add(table(["group", "engine", "version", "topology"], rows, numeric_from=99))


def _slo_section(page: Page, summary: Mapping[str, Any]) -> None:
    page.heading("SLOs", "slo")
    slos = summary.get("slo") or []
    if not slos:
        page.note("The scenario sets no SLO.")
        return
    rows = [
        (
            s["figure"],
            s.get("worst") or "",
            s["op"],
            s["threshold"],
            s["value"] if s["value"] is not None else "not measured",
            ("pass", "ok") if s["ok"] else ("FAIL", "fail"),
        )
        for s in slos
    ]
    page.add(table(["figure", "worst client's figure", "op", "threshold", "value", "result"], rows, numeric_from=3))


# the client table's counting columns: summary.py's client fields, the latency ones shown apart
CLIENT_COLUMNS = tuple(f for f in CLIENT_FIELDS if not f.startswith("latency_us."))


def _clients_section(page: Page, summary: Mapping[str, Any]) -> None:
    page.heading("Clients: accounting", "clients")
    clients = summary.get("clients") or {}
    if not clients:
        page.note("No client of the runner's own ran (no accounting).")
        return
    headers = ["client", "strategy", "target", *CLIENT_COLUMNS, "unavailable from–to", "failover to"]
    headers += [f"{p} µs" for p in LATENCY_PERCENTILES]
    rows = []
    for name, c in clients.items():
        window = c.get("unavailability_window")
        latency = c.get("latency_us") or {}
        rows.append(
            (
                name,
                c.get("strategy", ""),
                c.get("target", ""),
                *(c.get(k) for k in CLIENT_COLUMNS),
                f"{window[0]:.2f}–{window[1]:.2f}" if window else "-",
                c.get("failover_to") or "-",
                *(latency.get(p) for p in LATENCY_PERCENTILES),
            )
        )
    page.add(f"<div class='wide'>{table(headers, rows, numeric_from=3)}</div>")
    samples = [(n, ", ".join(c.get("lost_sample") or [])) for n, c in clients.items() if c.get("lost_sample")]
    if samples:
        page.add("<p><b>Lost acknowledged writes, sample keys</b></p>" + table(["client", "keys"], samples, 99))


def _faults_section(page: Page, faults: list[dict[str, Any]]) -> None:
    page.heading("Faults", "faults")
    if not faults:
        page.note("No fault was injected.")
        return
    rows = [
        (
            f.get("id"),
            f.get("kind"),
            f.get("target"),
            ", ".join(f.get("hosts") or []),
            f.get("t_inject"),
            f.get("t_heal") if f.get("t_heal") is not None else "never",
            ("yes", "ok") if f.get("healed") else ("NO", "fail"),
            ("yes", "ok") if f.get("verified") else ("no", "fail"),
            f.get("deadman") or "",
            f.get("error") or "",
        )
        for f in faults
    ]
    headers = ["id", "kind", "target", "hosts", "injected s", "healed s", "healed", "verified", "dead-man", "error"]
    page.add(table(headers, rows, numeric_from=4))


def _failover_section(page: Page, summary: Mapping[str, Any], timeline: list[dict[str, Any]], end_t: float) -> None:
    page.heading("Failover timeline", "failover")
    fig = failover_plot(summary, timeline, end_t)
    if fig is None:
        page.note("The timeline records no primary and no role change.")
    else:
        add_context(fig, summary, summary.get("faults") or [], end_t)
        page.figure(fig, height_px=260)
    faults = summary.get("faults") or []
    fault_t = float(faults[0]["t_inject"]) if faults else None
    rows: list[tuple[Any, ...]] = [
        (
            f"servers: {s.get('source')}",
            s.get("t"),
            s["t"] - fault_t if fault_t is not None and s.get("t") is not None else None,
            s.get("from") or "",
            s.get("to") or "",
        )
        for s in summary.get("servers_failover") or []
    ]
    for name, c in (summary.get("clients") or {}).items():
        at = _client_failover_times(summary, c)
        who = f"client {name} ({c.get('strategy', '')}): first ok on the new primary"
        rows.append((who, at[0] if at else None, c.get("failover_s"), "", c.get("failover_to") or ""))
    if rows:
        headers = ["who saw the switch", "at s (run clock)", "s after the first fault", "from", "to"]
        page.add(table(headers, rows, numeric_from=1))


def _loss_section(page: Page, summary: Mapping[str, Any], figures: Mapping[str, float]) -> None:
    page.heading("Lost and duplicated", "lost")
    clients = summary.get("clients") or {}
    counts = {
        field: {name: float(c.get(field) or 0) for name, c in clients.items()}
        for field in ("lost", "unexpected", "unknown_applied", "unknown")
    }
    load = loss_figures(figures)
    # the conflicts check has a section of its own (_conflicts_section)
    accounting = accounting_rows({k: v for k, v in (summary.get("accounting") or {}).items() if k != "conflicts"})
    if clients:
        page.figure(bars("Acknowledged writes lost, unexpected values, unknown ops", counts, "ops"))
    if accounting:
        page.note("The agents check: each workload's own end-to-end accounting, read once the agents drained.")
        page.add(table(["workload (summary.json accounting.*)", "lost", "duplicated", "counted"], accounting,
                       numeric_from=1))  # fmt: skip
    if load:
        page.add(table(["load figure", "count"], sorted(load.items())))
    if not clients and not load and not accounting:
        page.note("Nothing in this run counts lost or duplicated events.")


CONFLICT_ROWS = (
    ("keys", "keys written by more than one writer"),
    ("diverged", "nodes still disagree after the settle"),
    ("newest_won", "final write is the newest acknowledged one (or overlaps it)"),
    ("concurrent_won", "… of which it only overlaps the last one"),
    ("older_won", "final write is older than an acknowledged write sent after it completed"),
    ("lost", "acknowledged writes newer than the final one: lost"),
    ("lost_gap_s", "the newest lost write was sent this long after the final one completed (s, largest)"),
    ("unknown_final", "final value from an unknown or failed op, no op, or missing"),
    ("unexpected_final", "… of which a failed op's"),
)


def _conflicts_section(page: Page, summary: Mapping[str, Any]) -> None:
    """The conflicts check (summary.accounting.conflicts): which of the writes of a shared key is final."""
    conflicts = (summary.get("accounting") or {}).get("conflicts")
    if not conflicts:
        return
    page.heading("Conflicting writes", "conflicts")
    sets = "; ".join(f"{', '.join(c.get('writers') or [])} on {c.get('group')} ({c.get('key_prefix')}*), read on "
                     f"{', '.join(c.get('nodes') or [])}: {'converged' if c.get('converged') else 'DIVERGED'} after "
                     f"{c.get('settle_s')} s" for c in conflicts.get("sets") or [])  # fmt: skip
    page.note("Keys written by several writers, read on every node after the heal; the final write is the one whose "
              f"value the nodes hold, newest or older by the writers' own clock (real-time order). {sets}")
    rows = [(f"accounting.conflicts.{name}", what, conflicts.get(name)) for name, what in CONFLICT_ROWS]
    page.add(table(["figure", "what", "keys / writes / s"], rows, numeric_from=2))
    won, lost_of = conflicts.get("won") or {}, conflicts.get("lost_of") or {}
    if won:
        page.add(table(["writer", "final writes (won)", "its acknowledged writes lost"],
                       [(w, won.get(w), lost_of.get(w)) for w in sorted(set(won) | set(lost_of))]))  # fmt: skip
    for label, key in (("older write won", "older_won_sample"), ("diverged", "diverged_sample")):
        if conflicts.get(key):
            page.add(f"<p><b>{esc(label)}, sample keys</b>: {esc(', '.join(conflicts[key]))}</p>")


def _consumer_section(page: Page, figures: Mapping[str, float]) -> None:
    by_metric = consumer_figures(figures)
    if not by_metric:
        return
    page.heading("Per-consumer distribution", "consumers")
    for metric, values in sorted(by_metric.items()):
        if metric.split(".")[-1].startswith("per_") or ".per_" in metric:
            title = f"accounting.{metric}"
        else:
            title = f"load.consumer.*.{metric}" if metric else "load.consumer.*"
        page.figure(bars(title, {metric or "value": values}, metric or "value"))


LATENCY_LEAVES = ("count", "p50_us", "p90_us", "p99_us", "p999_us", "p99.9_us", "max_us")


def latency_groups(load: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """summary.load's latency figures by what they measure: `agents.observer-1.listeners.pi-3-async.notify_latency`
    or `locust.GET_kv` -> {p50_us: .., p99_us: .., count: ..}; only groups that have a p50."""
    groups: dict[str, dict[str, float]] = {}
    for name, value in load.items():
        prefix, _, leaf = str(name).rpartition(".")
        if prefix and leaf in LATENCY_LEAVES and isinstance(value, int | float):
            groups.setdefault(prefix, {})[leaf] = float(value)
    return {k: v for k, v in sorted(groups.items()) if "p50_us" in v}


def _load_section(page: Page, summary: Mapping[str, Any]) -> None:
    """The agents' and Locust's latency figures (summary.load), one row per histogram."""
    groups = latency_groups(summary.get("load") or {})
    if not groups:
        return
    page.heading("Agents and load: latency", "load")
    headers = ["histogram (summary.json load.*)", "count", "p50 µs", "p99 µs", "p99.9 µs", "max µs"]
    rows = [
        (name, g.get("count"), g.get("p50_us"), g.get("p99_us"), g.get("p999_us", g.get("p99.9_us")), g.get("max_us"))
        for name, g in groups.items()
    ]
    page.add(f"<div class='wide'>{table(headers, rows, numeric_from=1)}</div>")


def _benchmarks_section(page: Page, summary: Mapping[str, Any]) -> None:
    """The engines' own tools (summary.benchmarks): an independent reference beside our figures."""
    benchmarks = summary.get("benchmarks") or {}
    if not benchmarks:
        return
    page.heading("Engine tools (baseline)", "benchmarks")
    page.note("Each engine's own benchmark tool against the instance named, run from the host named, one after "
              "another from the measured phase's start; its command line is in summary.json.")  # fmt: skip
    headers = ["name", "tool", "from → target", "clients × pipeline", "test", "requests/s", "p50 µs", "p99 µs",
               "max µs"]  # fmt: skip
    rows = []
    per_test: dict[str, dict[str, float]] = {}
    for name, entry in sorted(benchmarks.items()):
        settings = entry.get("settings") or {}
        for test, values in (entry.get("tests") or {}).items():
            rows.append((name, f"{entry.get('tool')} {entry.get('version') or ''}".strip(),
                         f"{entry.get('tool_host')} → {entry.get('target_host') or entry.get('target')}",
                         f"{settings.get('clients')} × {settings.get('pipeline')}", test, values.get("rps"),
                         values.get("p50_us"), values.get("p99_us"), values.get("max_us")))  # fmt: skip
            per_test.setdefault(test, {})[name] = float(values.get("rps") or 0.0)
    page.add(f"<div class='wide'>{table(headers, rows, numeric_from=5)}</div>")
    page.figure(bars("Requests per second by engine tool run", per_test, "requests/s"))


def _files_section(page: Page, run: RunDir) -> None:
    page.heading("Files", "files")
    links = [run.scenario_path, run.summary_path, run.faults_path, run.timeline_path]
    links += sorted(run.ops_dir.glob("*.jsonl")) if run.ops_dir.is_dir() else []
    shown = [p for p in links if p.exists()]
    if run.raw_dir.is_dir():
        shown += sorted(p for p in run.raw_dir.rglob("*") if p.is_file())[:50]
    items = "".join(
        f"<li><a href='{esc(p.relative_to(run.path).as_posix())}'>{esc(p.relative_to(run.path))}</a></li>"
        for p in shown
    )
    page.add(f"<ul>{items}</ul>")


def render_report(run: RunDir) -> str:
    summary = run.summary()
    faults = summary.get("faults") or run.faults()
    timeline = run.timeline()
    figures = summary.get("figures") or flatten_figures(summary)
    duration = float(summary["run"].get("duration_s") or 0.0)
    series = [client_series(name, run.ops(name), duration) for name in run.clients()]
    series = [s for s in series if s.ops]
    end_t = _run_end(summary, series, faults)

    page = Page(f"kvtestbed: {summary['run'].get('scenario')} {run.id}")
    _header(page, run, summary)
    _slo_section(page, summary)
    _clients_section(page, summary)
    _faults_section(page, faults)

    page.heading("Latency over time", "latency")
    if series:
        fig = latency_plot(series)
        add_context(fig, summary, faults, end_t)
        page.figure(fig, height_px=400)
    else:
        page.note("No op log (ops/*.jsonl) in this run.")
    page.heading("Throughput over time", "throughput")
    for s in series:
        fig = throughput_plot(s)
        add_context(fig, summary, faults, end_t)
        page.figure(fig, height_px=280)
    page.heading("Latency CDF", "cdf")
    if series:
        page.figure(cdf_plot(series))
    _failover_section(page, summary, timeline, end_t)
    _loss_section(page, summary, figures)
    _conflicts_section(page, summary)
    _consumer_section(page, figures)
    _load_section(page, summary)
    _benchmarks_section(page, summary)
    dashboards_section(page, run.path, summary, lambda fig: add_context(fig, summary, faults, end_t))
    _files_section(page, run)
    return page.render()


def write_report(run_dir: Path | RunDir, out: Path | None = None) -> Path:
    """Write the run's report (run_dir/report.html unless out says otherwise); RunDirError for a folder that is
    not a run."""
    run = run_dir if isinstance(run_dir, RunDir) else RunDir.open(run_dir)
    target = out or run.report_path
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(render_report(run), encoding="utf-8")
    tmp.replace(target)  # a browser reloading the page never reads half of it
    return target
