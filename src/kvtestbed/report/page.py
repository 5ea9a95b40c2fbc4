"""The HTML shell both pages share: plotly.js inlined once in <head> (so the file opens with no network), every
figure a div that draws itself with it, a little CSS, and escaping for everything that came from a run."""

from __future__ import annotations

import html
import itertools
from collections.abc import Iterable, Sequence
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

PLOT_CONFIG = {"displaylogo": False, "responsive": True}
PLOT_HEIGHT_PX = 340

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { margin-bottom: .2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
th { background: #f4f4f4; }
.status { display: inline-block; padding: .1em .6em; border-radius: .3em; color: #fff; font-weight: bold; }
.passed, .ok, .better { background: #1a7f37; color: #fff; }
.slo-violated, .failed, .fail, .worse { background: #cf222e; color: #fff; }
.interrupted { background: #9a6700; color: #fff; }
.muted { color: #777; } .note { color: #555; font-style: italic; }
.wide { overflow-x: auto; }
.plot { margin: .5em 0 1em 0; }
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def fmt_number(value: float | int | None) -> str:
    """Readable in a table: integers with thousands separators, other numbers with 3-4 significant digits."""
    if value is None:
        return "-"
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.1f}"
    return f"{value:.3g}"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], numeric_from: int = 1) -> str:
    """An HTML table; cells may be (text, css class) pairs; columns from numeric_from on are right-aligned."""
    out = ["<table><thead><tr>", *(f"<th>{esc(h)}</th>" for h in headers), "</tr></thead><tbody>"]
    for row in rows:
        out.append("<tr>")
        for i, cell in enumerate(row):
            text, css = cell if isinstance(cell, tuple) else (cell, "")
            classes = " ".join(c for c in (css, "num" if i >= numeric_from else "") if c)
            shown = fmt_number(text) if isinstance(text, int | float) and not isinstance(text, bool) else esc(text)
            out.append(f'<td class="{classes}">{shown}</td>' if classes else f"<td>{shown}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


class Page:
    """Sections of HTML and figures, rendered into one self-contained document."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.parts: list[str] = []
        self._ids = itertools.count(1)

    def add(self, html_text: str) -> None:
        self.parts.append(html_text)

    def heading(self, text: str, anchor: str) -> None:
        self.parts.append(f'<h2 id="{esc(anchor)}">{esc(text)}</h2>')

    def note(self, text: str) -> None:
        self.parts.append(f'<p class="note">{esc(text)}</p>')

    def figure(self, fig: go.Figure, height_px: int = PLOT_HEIGHT_PX) -> None:
        fig.update_layout(template="plotly_white", height=height_px, margin={"l": 60, "r": 20, "t": 40, "b": 45})
        div = pio.to_html(
            fig,
            include_plotlyjs=False,  # the page's <head> has it, once
            full_html=False,
            div_id=f"plot-{next(self._ids)}",
            config=PLOT_CONFIG,
            default_height=f"{height_px}px",
            validate=False,  # the figures are built here; validating every point doubles the time for nothing
        )
        self.parts.append(f'<div class="plot">{div}</div>')

    def render(self) -> str:
        return (
            "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{esc(self.title)}</title><style>{CSS}</style>"
            f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body>\n"
            + "\n".join(self.parts)
            + "\n</body></html>\n"
        )
