"""After a run: every panel query of the repo's dashboards run against the testbed's Prometheus over the run's
window, the answers kept in the run folder (`prometheus/<dashboard uid>.json`), so the report draws the dashboards
without Grafana and a test can see which panels have data.

The window is the run's start - 10 s to its end + 10 s (never past now), at a step equal to Prometheus's own
scrape interval (read from /api/v1/status/config; 5 s when it does not say), more coarsely only when a long run would
give a series more than MAX_POINTS points. Grafana's variables are replaced as Grafana would with every variable
set to "All" (kvtestbed.monitoring.dashboards).

The capture is a bonus, never a reason to fail a run: no Prometheus in the inventory, one that does not answer,
or anything going wrong while capturing becomes one line in the run's output and in summary.json `monitoring`.
Each query has a timeout and the whole capture a deadline; queries past it are recorded as not queried.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kvtestbed.monitoring.dashboards import (
    Dashboard,
    DashboardError,
    dashboard_files,
    duration,
    interval_values,
    load_dashboard,
    parse_duration,
    rate_interval_s,
    substitute,
)

DEFAULT_GROUP = "monitoring"  # the prometheus role's prometheus_group
DEFAULT_PORT = 9090  # the prometheus role's prometheus_port
DEFAULT_SCRAPE_S = 5.0  # the lab's prometheus_scrape_interval, when Prometheus does not tell
MARGIN_S = 10.0  # before the run's start and after its end
MAX_POINTS = 1500  # per series, as the report's own time series (a 2 h run at 5 s)
REACH_TIMEOUT_S = 5.0  # is anybody there
QUERY_TIMEOUT_S = 15.0  # one query
TOTAL_TIMEOUT_S = 120.0  # the whole capture
CAPTURE_DIR = "prometheus"  # in the run folder
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")  # a uid that can name a file


class CaptureError(Exception):
    """A capture that cannot be read or made: one line."""


class PrometheusError(CaptureError):
    """Prometheus answered with an error, or not at all (`unreachable`)."""

    def __init__(self, message: str, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


@dataclass(frozen=True)
class Window:
    start: float  # unix seconds
    end: float
    step_s: float
    scrape_s: float

    @property
    def intervals(self) -> dict[str, str]:
        return interval_values(self.step_s, self.scrape_s, self.end - self.start)


class Prometheus:
    """Prometheus's HTTP API (GET, JSON), each call with its own timeout."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def get(self, path: str, params: Mapping[str, Any] | None = None, timeout_s: float = QUERY_TIMEOUT_S) -> Any:
        """The `data` of a successful answer; PrometheusError (one line) otherwise."""
        url = f"{self.url}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        try:
            with urllib.request.urlopen(url, timeout=max(timeout_s, 0.1)) as answer:
                body = answer.read()
        except urllib.error.HTTPError as exc:
            body = exc.read()  # Prometheus explains a bad query in a JSON body with a 4xx status
            if not body:
                raise PrometheusError(f"{path}: HTTP {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            raise PrometheusError(f"{self.url}: {_reason(exc.reason)}", unreachable=True) from None
        except TimeoutError:
            raise PrometheusError(f"{self.url}: no answer within {timeout_s:g} s", unreachable=True) from None
        except OSError as exc:
            raise PrometheusError(f"{self.url}: {_reason(exc)}", unreachable=True) from None
        try:
            answer_json = json.loads(body)
        except ValueError:
            raise PrometheusError(f"{path}: the answer is not JSON (is {self.url} a Prometheus?)") from None
        if not isinstance(answer_json, dict) or answer_json.get("status") != "success":
            error = answer_json.get("error") if isinstance(answer_json, dict) else None
            raise PrometheusError(f"{answer_json.get('errorType', 'error')}: {error}" if error else f"{path}: failed")
        return answer_json.get("data")


def _reason(reason: Any) -> str:
    if isinstance(reason, TimeoutError):
        return "no answer (timed out)"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return str(reason)


# -- where Prometheus is ----------------------------------------------------------------------------------------


def prometheus_url(inventory: Any) -> tuple[str | None, str]:
    """(the URL of the inventory's Prometheus, "") or (None, why there is none). The group is the inventory's
    `prometheus_group` (default monitoring), the first host of it, at its ansible_host and `prometheus_port`."""
    hosts = list(inventory.hosts.values())
    group = next((str(h.vars["prometheus_group"]) for h in hosts if h.vars.get("prometheus_group")), DEFAULT_GROUP)
    members = inventory.groups.get(group) or []
    if not members:
        return None, f"no Prometheus in the inventory (no host in group '{group}')"
    host = inventory.hosts[members[0]]
    port = host.vars.get("prometheus_port") or DEFAULT_PORT
    address = host.address if ":" not in host.address or host.address.startswith("[") else f"[{host.address}]"
    return f"http://{address}:{port}", ""


def scrape_interval_s(prometheus: Prometheus, timeout_s: float) -> float:
    """Prometheus's global scrape interval from its running config; DEFAULT_SCRAPE_S when it cannot say."""
    try:
        config = yaml.safe_load((prometheus.get("/api/v1/status/config", timeout_s=timeout_s) or {}).get("yaml", ""))
        seconds = parse_duration(str(((config or {}).get("global") or {}).get("scrape_interval", "")))
    except (PrometheusError, yaml.YAMLError, AttributeError):
        return DEFAULT_SCRAPE_S
    return seconds if seconds else DEFAULT_SCRAPE_S


def query_window(start_unix: float, end_unix: float, scrape_s: float, now: float) -> Window:
    start = start_unix - MARGIN_S
    end = max(min(end_unix + MARGIN_S, now), start + scrape_s)
    coarse = (end - start) / MAX_POINTS  # a long run: whole seconds, at most MAX_POINTS points a series
    return Window(start, end, scrape_s if coarse <= scrape_s else float(math.ceil(coarse)), scrape_s)


# -- the capture ------------------------------------------------------------------------------------------------


class Budget:
    """The whole capture's time, and whether Prometheus is still there: once it stops answering (or the time is
    up), the remaining queries are recorded as not run instead of each waiting out its own timeout."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.gone: str | None = None

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def why_not(self) -> str | None:
        if self.gone is not None:
            return f"not queried: Prometheus stopped answering ({self.gone})"
        if self.left() <= 0:
            return f"not queried: the capture's {self.seconds:g} s were used up"
        return None


def capture_dashboard(prometheus: Prometheus, dashboard: Dashboard, window: Window, budget: Budget) -> dict[str, Any]:
    """Every panel's targets as range queries; the answers (or the error) kept per target."""
    intervals = window.intervals
    panels = []
    for panel in dashboard.panels:
        targets = []
        for target in panel.targets:
            query = substitute(target.expr, intervals, dashboard.all_values)
            entry: dict[str, Any] = {"refId": target.ref_id, "expr": target.expr, "query": query,
                                     "legendFormat": target.legend, "status": "success", "error": None,
                                     "resultType": None, "result": []}  # fmt: skip
            skipped = budget.why_not()
            if skipped:
                entry.update(status="skipped", error=skipped)
            else:
                params = {"query": query, "start": window.start, "end": window.end, "step": window.step_s}
                try:
                    data = prometheus.get("/api/v1/query_range", params, timeout_s=min(QUERY_TIMEOUT_S, budget.left()))
                    entry.update(resultType=(data or {}).get("resultType"), result=(data or {}).get("result") or [])
                except PrometheusError as exc:
                    entry.update(status="error", error=str(exc))
                    if exc.unreachable:
                        budget.gone = str(exc)
            targets.append(entry)
        panels.append({"title": panel.title, "type": panel.type, "unit": panel.unit, "row": panel.row,
                       "targets": targets})  # fmt: skip
    return {
        "dashboard": {"uid": dashboard.uid, "title": dashboard.title, "file": dashboard.file},
        "prometheus": prometheus.url,
        "start": window.start,
        "end": window.end,
        "step_s": window.step_s,
        "scrape_interval_s": window.scrape_s,
        "rate_interval": duration(rate_interval_s(window.step_s, window.scrape_s)),
        "panels": panels,
    }


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, separators=(",", ":")) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # a reader never sees half a file


def _file_name(dashboard: Dashboard, taken: set[str]) -> str:
    name = dashboard.uid if _SAFE_NAME.match(dashboard.uid) else Path(dashboard.file).stem
    base, n = name, 1
    while name in taken:  # two files with one uid: each keeps its answers
        n += 1
        name = f"{base}-{n}"
    taken.add(name)
    return name


def capture(url: str, run_path: Path, start_unix: float, end_unix: float, dashboards: Iterable[Path],
            total_timeout_s: float = TOTAL_TIMEOUT_S, now: float | None = None) -> dict[str, Any]:  # fmt: skip
    """Query every dashboard's panels over the run's window into run_path/prometheus/<uid>.json; what summary.json
    `monitoring` says about it. PrometheusError(unreachable) when Prometheus does not answer at all."""
    began = time.monotonic()
    budget = Budget(total_timeout_s)
    prometheus = Prometheus(url)
    prometheus.get("/api/v1/status/buildinfo", timeout_s=REACH_TIMEOUT_S)
    window = query_window(start_unix, end_unix, scrape_interval_s(prometheus, REACH_TIMEOUT_S),
                          time.time() if now is None else now)  # fmt: skip
    out = run_path / CAPTURE_DIR
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"status": "captured", "prometheus": url, "scrape_interval_s": window.scrape_s,
                               "step_s": window.step_s, "window_unix": [window.start, window.end],
                               "dashboards": {}, "problems": []}  # fmt: skip
    taken: set[str] = set()
    for path in dashboards:
        try:
            dashboard = load_dashboard(path)
        except DashboardError as exc:
            summary["problems"].append(str(exc))
            continue
        captured = capture_dashboard(prometheus, dashboard, window, budget)
        name = _file_name(dashboard, taken)
        _write_json(out / f"{name}.json", captured)
        summary["dashboards"][name] = {
            "title": dashboard.title,
            "file": f"{CAPTURE_DIR}/{name}.json",
            "panels": len(captured["panels"]),
            "without_data": sum(1 for p in captured["panels"] if not panel_has_data(p)),
            "errors": sum(1 for p in captured["panels"] for t in p["targets"] if t["status"] != "success"),
        }
    summary["capture_s"] = round(time.monotonic() - began, 3)
    return summary


def _one_line(summary: Mapping[str, Any]) -> str:
    boards = summary.get("dashboards") or {}
    panels = sum(b["panels"] for b in boards.values())
    empty = sum(b["without_data"] for b in boards.values())
    errors = sum(b["errors"] for b in boards.values())
    line = (f"monitoring: {len(boards)} dashboards, {panels} panels ({empty} without data"
            f"{f', {errors} queries failed or not run' if errors else ''}) captured from {summary['prometheus']} "
            f"in {summary['capture_s']:g} s into {CAPTURE_DIR}/")  # fmt: skip
    problems = summary.get("problems") or []
    return line + (f"; {len(problems)} dashboard files unreadable: {problems[0]}" if problems else "")


def capture_run(
    inventory: Any,
    run_path: Path,
    start_unix: float,
    end_unix: float | None = None,
    dashboards_dir: Path | None = None,
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The runner's call after its heal and checks: capture when the inventory has a Prometheus, and say in one
    line what happened. Never raises: summary.json `monitoring` records why there is no capture."""
    tell = say or (lambda line: None)
    url, why = prometheus_url(inventory)
    if url is None:
        tell(f"monitoring: {why}: the report has no dashboards")
        return {"status": "none", "prometheus": f"none: {why}"}
    try:
        if dashboards_dir is None:
            from kvtestbed.project import project_root

            dashboards_dir = project_root() / "dashboards"
        summary = capture(url, run_path, start_unix, time.time() if end_unix is None else end_unix,
                          dashboard_files(dashboards_dir))  # fmt: skip
    except PrometheusError as exc:
        state = "unreachable" if exc.unreachable else "error"
        tell(f"monitoring: Prometheus {state}: {exc}: the report has no dashboards")
        return {"status": state, "prometheus": f"{state}: {exc}"}
    except Exception as exc:  # the capture is a bonus: whatever breaks in it must not fail the run it follows
        tell(f"monitoring: capture failed: {type(exc).__name__}: {exc}")
        return {"status": "error", "prometheus": f"error: {type(exc).__name__}: {exc}"}
    tell(_one_line(summary))
    return summary


# -- reading a capture back -------------------------------------------------------------------------------------


def load_captures(run_path: Path) -> list[dict[str, Any]]:
    """The run's captured dashboards (prometheus/*.json), by file name; [] when the run has none."""
    folder = run_path / CAPTURE_DIR
    captures = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CaptureError(f"{path}: not a readable capture ({exc})") from None
        if not isinstance(value, dict) or not isinstance(value.get("panels"), list):
            raise CaptureError(f"{path}: not a dashboard capture (no panels)")
        if not isinstance(value.get("dashboard"), dict) or not all(
            isinstance(value.get(key), int | float) for key in ("start", "end", "step_s")
        ):
            raise CaptureError(f"{path}: not a dashboard capture (dashboard, start, end, step_s)")
        value["capture_file"] = f"{CAPTURE_DIR}/{path.name}"  # where it was read from, for links
        captures.append(value)
    return captures


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def series_has_data(series: Mapping[str, Any]) -> bool:
    """A series has data when it has a point that can be drawn (NaN, from 0/0, cannot)."""
    points = series.get("values") or ([series["value"]] if series.get("value") else [])
    return any(len(point) == 2 and _finite(point[1]) for point in points)


def panel_has_data(panel: Mapping[str, Any]) -> bool:
    return any(series_has_data(s) for t in panel.get("targets") or [] for s in t.get("result") or [])


def panel_name(panel: Mapping[str, Any]) -> str:
    """A panel's name within its dashboard, "<panel title> (<row>)": two panels of one dashboard may share a title
    (the engines' Ops/s stat and plot), never also a row."""
    return f"{panel.get('title', '?')} ({panel['row']})" if panel.get("row") else str(panel.get("title", "?"))


def panel_label(capture: Mapping[str, Any], panel: Mapping[str, Any]) -> str:
    """A panel's name in messages: "<dashboard title>: <panel title> (<row>)"."""
    return f"{(capture.get('dashboard') or {}).get('title', '?')}: {panel_name(panel)}"


def panels_without_data(run_dir: Path) -> list[str]:
    """Every captured panel whose every query returned nothing drawable (panel_label each), in the dashboards'
    order. CaptureError when the run has no capture at all: "no panel without data" must not pass for a run whose
    Prometheus was never asked (summary.json `monitoring.prometheus` says why)."""
    captures = load_captures(run_dir)
    if not captures:
        why = ""
        with contextlib.suppress(OSError, ValueError, AttributeError):
            why = str((json.loads((run_dir / "summary.json").read_text()).get("monitoring") or {}).get("prometheus"))
        raise CaptureError(f"{run_dir}: no {CAPTURE_DIR}/ capture" + (f" (monitoring.prometheus: {why})" * bool(why)))
    return [panel_label(c, p) for c in captures for p in c["panels"] if not panel_has_data(p)]
