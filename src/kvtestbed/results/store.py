"""One run's folder, results/<YYYYmmdd-HHMMSS>-<scenario>/: where each file lives, how it is written, how it is read.

Appends (faults, timeline) are one JSON line each, flushed at once, so a runner killed mid-run leaves every line
written so far readable. summary.json is written last and atomically (a temporary file renamed over it): a reader
never sees half a summary, and a folder without summary.json is not a (finished) run.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema

from kvtestbed.results.schema import SUMMARY_SCHEMA

# names that become file or folder names: no separators, no leading dot
SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
MAX_SUFFIX = 999  # bound on "-2", "-3", ... when several runs start in the same second


class RunDirError(ValueError):
    """A folder or file that is not what a run folder holds: the message is one line naming it."""


def _check_name(name: str, what: str) -> str:
    if not SAFE_NAME.match(name):
        raise RunDirError(f"{what} {name!r}: use letters, digits, '.', '_' and '-' only (it names a file)")
    return name


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Every line of a JSON-lines file as a dict; an absent file has none. A last line cut short by a killed
    writer is skipped (it never completed); a bad line anywhere else is an error naming file and line."""
    if not path.exists():
        return
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                if not line.endswith("\n"):  # only the last line can lack one: cut short, never completed
                    return
                raise RunDirError(f"{path}:{number}: not a JSON object: {line.strip()[:60]!r}") from None
            if not isinstance(record, dict):
                raise RunDirError(f"{path}:{number}: not a JSON object: {line.strip()[:60]!r}")
            yield record


def _append_line(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps(record, separators=(",", ":")) + "\n")
        out.flush()
        os.fsync(out.fileno())  # the line survives the runner being killed right after


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def validate_summary(summary: dict[str, Any], where: str = "summary.json") -> None:
    """RunDirError with the first schema violation (its JSON path and jsonschema's message) as one line."""
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(SUMMARY_SCHEMA).iter_errors(summary))
    if error is not None:
        at = "/".join(str(part) for part in error.absolute_path) or "(top)"
        raise RunDirError(f"{where}: {at}: {error.message.splitlines()[0][:200]}")


@dataclass(frozen=True)
class RunDir:
    """A run's folder. create() makes a new one; open() takes an existing one (it must have summary.json)."""

    path: Path

    # -- the layout ------------------------------------------------------------------------------------------

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def scenario_path(self) -> Path:
        return self.path / "scenario.yml"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    @property
    def ops_dir(self) -> Path:
        return self.path / "ops"

    @property
    def faults_path(self) -> Path:
        return self.path / "faults.jsonl"

    @property
    def timeline_path(self) -> Path:
        return self.path / "timeline.jsonl"

    @property
    def raw_dir(self) -> Path:
        return self.path / "raw"

    @property
    def agents_raw_dir(self) -> Path:
        return self.raw_dir / "agents"

    @property
    def servers_raw_dir(self) -> Path:
        return self.raw_dir / "servers"

    @property
    def report_path(self) -> Path:
        return self.path / "report.html"

    def ops_path(self, client: str) -> Path:
        return self.ops_dir / f"{_check_name(client, 'client name')}.jsonl"

    # -- making and opening ----------------------------------------------------------------------------------

    @classmethod
    def create(cls, results_root: Path, scenario_name: str, started: datetime) -> RunDir:
        """A new, empty run folder <started as YYYYmmdd-HHMMSS>-<scenario_name> (with ops/ and raw/); when that
        name is taken (two runs in one second, repeats), -2, -3, ... is added. mkdir is the claim, so two runners
        racing for one name still get one folder each."""
        _check_name(scenario_name, "scenario name")
        results_root.mkdir(parents=True, exist_ok=True)
        base = f"{started.strftime('%Y%m%d-%H%M%S')}-{scenario_name}"
        for n in range(1, MAX_SUFFIX + 1):
            path = results_root / (base if n == 1 else f"{base}-{n}")
            try:
                path.mkdir()
            except FileExistsError:
                continue
            run = cls(path)
            run.ops_dir.mkdir()
            run.raw_dir.mkdir()
            return run
        raise RunDirError(f"{results_root}: {MAX_SUFFIX} folders named {base}[-N] already: clean up results/")

    @classmethod
    def open(cls, path: Path) -> RunDir:
        """An existing run folder; RunDirError (one line) when path is not one."""
        if not path.is_dir():
            raise RunDirError(f"{path}: no such folder")
        if not (path / "summary.json").is_file():
            raise RunDirError(f"{path}: no summary.json: not a kvtestbed run folder")
        return cls(path)

    # -- writing ---------------------------------------------------------------------------------------------

    def write_scenario(self, text: str) -> None:
        _atomic_write(self.scenario_path, text)

    def append_fault(self, record: dict[str, Any]) -> None:
        _append_line(self.faults_path, record)

    def append_timeline(self, event: dict[str, Any]) -> None:
        _append_line(self.timeline_path, event)

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Validate against schema v1 (RunDirError naming the first bad field), then write atomically."""
        validate_summary(summary, str(self.summary_path))
        _atomic_write(self.summary_path, json.dumps(summary, indent=2, sort_keys=False) + "\n")

    # -- reading ---------------------------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """summary.json, parsed and checked against the schema (RunDirError naming the file otherwise)."""
        try:
            summary = json.loads(self.summary_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RunDirError(f"{self.path}: no summary.json: not a kvtestbed run folder") from None
        except json.JSONDecodeError as e:
            raise RunDirError(f"{self.summary_path}: not valid JSON (line {e.lineno}: {e.msg})") from None
        if not isinstance(summary, dict):
            raise RunDirError(f"{self.summary_path}: not a JSON object")
        validate_summary(summary, str(self.summary_path))
        return summary

    def clients(self) -> list[str]:
        """The clients that have an op log, by name."""
        return sorted(p.stem for p in self.ops_dir.glob("*.jsonl")) if self.ops_dir.is_dir() else []

    def ops(self, client: str) -> Iterator[dict[str, Any]]:
        """ops/<client>.jsonl line by line (a generator: op logs can hold millions of lines)."""
        return _read_jsonl(self.ops_path(client))

    def faults(self) -> list[dict[str, Any]]:
        return list(_read_jsonl(self.faults_path))

    def timeline(self) -> list[dict[str, Any]]:
        return sorted(_read_jsonl(self.timeline_path), key=lambda e: float(e.get("t", 0.0)))


def find_runs(results_root: Path) -> list[RunDir]:
    """Every finished run (a folder with summary.json) directly under results_root, oldest first (the names
    start with the start time)."""
    if not results_root.is_dir():
        return []
    return [RunDir(p) for p in sorted(results_root.iterdir()) if p.is_dir() and (p / "summary.json").is_file()]
