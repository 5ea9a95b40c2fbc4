"""A run's results folder: its layout, summary.json (schema v1) and the flat figures every SLO and comparison
reads. docs/results.md describes the folder and every field."""

from kvtestbed.results.store import RunDir, RunDirError, find_runs
from kvtestbed.results.summary import complete_summary, evaluate_slos, flatten_figures

__all__ = ["RunDir", "RunDirError", "complete_summary", "evaluate_slos", "find_runs", "flatten_figures"]
