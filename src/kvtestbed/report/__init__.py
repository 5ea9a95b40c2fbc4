"""Reading a run: report.html for one run, the comparison page (and a terminal table) for several.
docs/results.md describes both."""

from kvtestbed.report.compare import Comparison, compare, format_table, write_compare_html
from kvtestbed.report.html import write_report
from kvtestbed.report.main import ReportError, main_report

__all__ = ["Comparison", "ReportError", "compare", "format_table", "main_report", "write_compare_html", "write_report"]
