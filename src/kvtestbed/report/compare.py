"""Runs side by side, as `esrally compare` does for two and asv compare for many: every figure of every run, the
first column the baseline, each other column's difference and difference in % with a direction-aware verdict
(lower is better for latencies, losses, unavailability and failover; higher for throughput and successes).

Runs of one scenario with the same overrides are repeats: they make one column showing each figure's median and
its spread (min–max) (Rally #118: one run says little). Columns whose overrides differ in exactly one numeric path
are a sweep: the comparison page also draws every key figure against that value, the scalability curve.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from kvtestbed.report.page import Page, esc, fmt_number
from kvtestbed.results.store import RunDir
from kvtestbed.results.summary import Direction, figure_direction, flatten_figures

# the client figures that get a chart of their own (the table has every figure)
KEY_FIELDS = ("latency_us.p50", "latency_us.p99", "ops_per_s", "lost", "unavailability_s", "failover_s")


@dataclass(frozen=True)
class RunRef:
    id: str
    path: Path
    scenario: str
    status: str
    overrides: dict[str, Any]
    figures: dict[str, float]


@dataclass
class Column:
    """One run, or the repeats of one scenario with the same overrides."""

    label: str
    runs: list[RunRef]

    @property
    def overrides(self) -> dict[str, Any]:
        return self.runs[0].overrides

    def values(self, figure: str) -> list[float]:
        return [r.figures[figure] for r in self.runs if figure in r.figures]


@dataclass(frozen=True)
class Cell:
    median: float | None
    low: float | None
    high: float | None
    n: int
    diff: float | None = None  # against the baseline's median; None in the baseline column
    diff_pct: float | None = None
    verdict: str | None = None  # "better" | "worse" | "same" | None (no direction, or nothing to compare)


@dataclass(frozen=True)
class FigureRow:
    figure: str
    direction: Direction | None
    cells: list[Cell]


@dataclass(frozen=True)
class Sweep:
    path: str
    values: list[float]  # one per column


@dataclass
class Comparison:
    columns: list[Column]
    rows: list[FigureRow]
    sweep: Sweep | None = None
    notes: list[str] = field(default_factory=list)


def _load(path: Path) -> RunRef:
    run = RunDir.open(path)
    summary = run.summary()
    meta = summary["run"]
    return RunRef(
        id=str(meta.get("id") or run.id),
        path=run.path,
        scenario=str(meta.get("scenario")),
        status=str(meta.get("status")),
        overrides=dict(meta.get("overrides") or {}),
        figures=dict(summary.get("figures") or flatten_figures(summary)),
    )


def _group(runs: list[RunRef]) -> list[Column]:
    """Columns in the order their first run was given; repeats (same scenario and overrides) share one."""
    columns: dict[str, Column] = {}
    for run in runs:
        key = json.dumps([run.scenario, run.overrides], sort_keys=True, default=str)
        if key in columns:
            columns[key].runs.append(run)
        else:
            columns[key] = Column(label=run.id, runs=[run])
    for column in columns.values():
        if len(column.runs) > 1:
            column.label = f"{column.runs[0].scenario} ×{len(column.runs)}"
    return list(columns.values())


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def find_sweep(columns: list[Column]) -> Sweep | None:
    """The one override path whose numeric value differs between the columns (everything else equal, one scenario
    throughout), or None."""
    if len(columns) < 2 or len({c.runs[0].scenario for c in columns}) != 1:
        return None
    paths = set().union(*(c.overrides for c in columns))
    differing = [p for p in sorted(paths) if len({json.dumps(c.overrides.get(p), default=str) for c in columns}) > 1]
    if len(differing) != 1:
        return None
    values = [c.overrides.get(differing[0]) for c in columns]
    if not all(_is_number(v) for v in values):
        return None
    return Sweep(differing[0], [float(v) for v in values])


def _verdict(direction: Direction | None, diff: float) -> str | None:
    if direction is None:
        return None
    if diff == 0:
        return "same"
    return "better" if (diff < 0) == (direction == "lower") else "worse"


def _cell(values: list[float], baseline: Cell | None, direction: Direction | None) -> Cell:
    if not values:
        return Cell(None, None, None, 0)
    median = float(statistics.median(values))
    low, high = float(min(values)), float(max(values))
    if baseline is None or baseline.median is None:
        return Cell(median, low, high, len(values))
    diff = median - baseline.median
    pct = diff / abs(baseline.median) * 100 if baseline.median != 0 else None
    return Cell(median, low, high, len(values), diff, pct, _verdict(direction, diff))


def compare(run_dirs: Sequence[Path]) -> Comparison:
    """Every figure of every run side by side; the first run's column is the baseline. RunDirError (one line)
    for a folder that is not a run."""
    runs = [_load(Path(p)) for p in run_dirs]
    columns = _group(runs)
    sweep = find_sweep(columns)
    if sweep:
        for column, value in zip(columns, sweep.values, strict=True):
            column.label = f"{sweep.path}={fmt_number(value)}" + (
                f" ×{len(column.runs)}" if len(column.runs) > 1 else ""
            )
    names: dict[str, None] = {}  # figures in the order they first appear: clients, then load, then the run's
    for run in runs:
        names.update(dict.fromkeys(run.figures))
    rows = []
    for figure in names:
        direction = figure_direction(figure)
        baseline = _cell(columns[0].values(figure), None, direction)
        cells = [baseline] + [_cell(c.values(figure), baseline, direction) for c in columns[1:]]
        rows.append(FigureRow(figure, direction, cells))
    notes = []
    if len(columns) == 1 and len(runs) > 1:
        notes.append(f"{len(runs)} repeats of one scenario with the same overrides: median [min–max] per figure")
    return Comparison(columns, rows, sweep, notes)


# -- plain text -------------------------------------------------------------------------------------------------


def _value_text(cell: Cell) -> str:
    if cell.median is None:
        return "-"
    text = fmt_number(cell.median)
    if cell.n > 1 and cell.low != cell.high:  # repeats that agree need no range
        text += f" [{fmt_number(cell.low)}–{fmt_number(cell.high)}]"
    return text


def _diff_text(cell: Cell) -> str:
    if cell.diff is None:
        return ""
    sign = "+" if cell.diff > 0 else ""
    pct = f"{sign}{cell.diff_pct:.1f}%" if cell.diff_pct is not None else f"{sign}{fmt_number(cell.diff)}"
    return f"{pct} {cell.verdict}" if cell.verdict and cell.verdict != "same" else pct


def format_table(comparison: Comparison) -> str:
    """The comparison for a terminal: a legend of the columns (A = baseline), then one line per figure with each
    column's value (median [min–max] for repeats) and, after the baseline, the difference in % and its verdict."""
    letters = [chr(ord("A") + i) if i < 26 else f"C{i}" for i in range(len(comparison.columns))]
    lines = [
        f"{letter} = {column.label}"
        + (" (baseline)" if i == 0 else "")
        + (
            f": {', '.join(r.id for r in column.runs)}"
            if len(column.runs) > 1 or column.label != column.runs[0].id
            else ""
        )
        for i, (letter, column) in enumerate(zip(letters, comparison.columns, strict=True))
    ]
    lines += comparison.notes
    header = ["figure", letters[0]]
    for letter in letters[1:]:
        header += [letter, f"{letter} vs A"]
    table = [header]
    for row in comparison.rows:
        line = [row.figure, _value_text(row.cells[0])]
        for cell in row.cells[1:]:
            line += [_value_text(cell), _diff_text(cell)]
        table.append(line)
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines.append("")
    for n, r in enumerate(table):
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
            ).rstrip()
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n"


# -- the comparison page ----------------------------------------------------------------------------------------


def _key_figures(comparison: Comparison) -> dict[str, list[str]]:
    """field -> the clients that have it, for the KEY_FIELDS present in any run."""
    out: dict[str, list[str]] = {}
    for field_name in KEY_FIELDS:
        clients = [
            row.figure.removeprefix("clients.").removesuffix(f".{field_name}")
            for row in comparison.rows
            if row.figure.startswith("clients.")
            and row.figure.endswith(f".{field_name}")
            and row.figure.count(".") == 2 + field_name.count(".")
        ]
        if clients:
            out[field_name] = clients
    return out


def _row(comparison: Comparison, figure: str) -> FigureRow | None:
    return next((r for r in comparison.rows if r.figure == figure), None)


def _error_bars(cells: list[Cell]) -> dict[str, Any] | None:
    if all(c.n <= 1 for c in cells):
        return None
    return {
        "type": "data",
        "symmetric": False,
        "array": [(c.high - c.median) if c.median is not None else 0 for c in cells],
        "arrayminus": [(c.median - c.low) if c.median is not None else 0 for c in cells],
    }


def _bar_chart(comparison: Comparison, field_name: str, clients: list[str]) -> go.Figure:
    fig = go.Figure()
    for i, column in enumerate(comparison.columns):
        cells = [_row(comparison, f"clients.{c}.{field_name}") for c in clients]
        shown = [row.cells[i] if row else Cell(None, None, None, 0) for row in cells]
        fig.add_bar(x=clients, y=[c.median for c in shown], name=column.label, error_y=_error_bars(shown))
    direction = figure_direction(f"clients.x.{field_name}")
    hint = {"lower": " (lower is better)", "higher": " (higher is better)"}.get(direction or "", "")
    fig.update_layout(title_text=f"{field_name}{hint}", barmode="group")
    return fig


def _sweep_chart(comparison: Comparison, field_name: str, clients: list[str]) -> go.Figure:
    sweep = comparison.sweep
    assert sweep is not None
    order = sorted(range(len(comparison.columns)), key=lambda i: sweep.values[i])
    fig = go.Figure()
    for client in clients:
        row = _row(comparison, f"clients.{client}.{field_name}")
        if row is None:
            continue
        cells = [row.cells[i] for i in order]
        fig.add_scatter(
            x=[sweep.values[i] for i in order],
            y=[c.median for c in cells],
            name=client,
            mode="lines+markers",
            error_y=_error_bars(cells),
        )
    fig.update_xaxes(title_text=sweep.path)
    fig.update_layout(title_text=f"{field_name} against {sweep.path}")
    return fig


def _table_html(comparison: Comparison, out_dir: Path) -> str:
    head = ["<table><thead><tr><th>figure</th>"]
    for i, column in enumerate(comparison.columns):
        head.append(f"<th>{esc(column.label)}{' (baseline)' if i == 0 else ''}</th>")
        if i:
            head.append("<th>diff</th>")
    head.append("</tr></thead><tbody>")
    body = []
    for row in comparison.rows:
        cells = [f"<td>{esc(row.figure)}</td>", f"<td class='num'>{esc(_value_text(row.cells[0]))}</td>"]
        for cell in row.cells[1:]:
            css = cell.verdict if cell.verdict in ("better", "worse") else ""
            cells.append(f"<td class='num'>{esc(_value_text(cell))}</td>")
            cells.append(f"<td class='num {css}'>{esc(_diff_text(cell))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    runs = []
    for column in comparison.columns:
        for run in column.runs:
            report = run.path / "report.html"
            link = os.path.relpath(report, out_dir) if report.exists() else None
            name = f"<a href='{esc(link)}'>{esc(run.id)}</a>" if link else esc(run.id)
            overrides = ", ".join(f"{k}={v}" for k, v in run.overrides.items())
            runs.append(
                f"<tr><td>{esc(column.label)}</td><td>{name}</td><td>{esc(run.scenario)}</td>"
                f"<td><span class='status {esc(run.status)}'>{esc(run.status)}</span></td>"
                f"<td>{esc(overrides)}</td></tr>"
            )
    legend = (
        "<table><thead><tr><th>column</th><th>run</th><th>scenario</th><th>status</th><th>overrides</th></tr>"
        "</thead><tbody>" + "".join(runs) + "</tbody></table>"
    )
    return legend + "".join(head) + "".join(body) + "</tbody></table>"


def write_compare_html(comparison: Comparison, out: Path) -> Path:
    """The comparison page: the runs, the table (diffs coloured by direction), a bar chart per key figure and,
    for a sweep, each key figure against the swept value."""
    page = Page("kvtestbed: comparison of " + ", ".join(c.label for c in comparison.columns))
    page.add(f"<h1>Comparison of {sum(len(c.runs) for c in comparison.columns)} runs</h1>")
    for note in comparison.notes:
        page.note(note)
    page.heading("Figures", "figures")
    page.add(_table_html(comparison, out.parent.resolve()))
    key = _key_figures(comparison)
    if comparison.sweep:
        page.heading(f"Scalability: against {comparison.sweep.path}", "sweep")
        for field_name, clients in key.items():
            page.figure(_sweep_chart(comparison, field_name, clients))
    page.heading("Key figures", "charts")
    if not key:
        page.note("No client figures to chart.")
    for field_name, clients in key.items():
        page.figure(_bar_chart(comparison, field_name, clients))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(page.render(), encoding="utf-8")
    tmp.replace(out)
    return out
