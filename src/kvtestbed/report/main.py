"""`kvtestbed report RUN [RUN...]`: one run → its report.html (re)written; several → the comparison page."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from kvtestbed.report.compare import compare, write_compare_html
from kvtestbed.report.html import write_report
from kvtestbed.results.store import RunDir, RunDirError


class ReportError(ValueError):
    """A path that is not a run folder, or a run folder whose files are broken: one line naming it."""


def default_compare_path(paths: list[Path], now: datetime) -> Path:
    """compare-<YYYYmmdd-HHMMSS>.html beside the first run (in results/, where the runs are)."""
    return paths[0].resolve().parent / f"compare-{now.strftime('%Y%m%d-%H%M%S')}.html"


def main_report(paths: list[Path], out: Path | None = None) -> Path:
    """Write the report of one run (to out, default RUN/report.html) or the comparison page of several (to out,
    default results/compare-<now>.html); the path written. ReportError before anything is written when a path is
    not a run folder."""
    if not paths:
        raise ReportError("no run folder given: kvtestbed report RESULTS/RUN [RUN...]")
    try:
        runs = [RunDir.open(path) for path in paths]
        for run in runs:
            run.summary()  # every summary parses and matches the schema before a page is written
        if len(runs) == 1:
            return write_report(runs[0], out)
        return write_compare_html(compare(paths), out or default_compare_path(paths, datetime.now()))
    except RunDirError as e:
        raise ReportError(str(e)) from None
