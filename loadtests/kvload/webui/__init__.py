"""The web UI as seed 000's page: a "Workload" tab beside Locust's own, and the workload's parameters in the form.

    locust -f loadtests/locustfile.py --host redis://127.0.0.1:6379 ExpiryKeysUser \\
        --kvt-agents http://127.0.0.1:9401,http://127.0.0.1:9402 --kvt-expiry-ledger redis://127.0.0.1:6390

The start form: every workload option added with include_in_web_ui=True (kvload.users.workloads: for expiry the
number of keys, the delay between keys, the TTL, the duplicate window, the run id) shows under "Custom
parameters", and --kvt-agents (the agents' HTTP base URLs) with them. A POST of the form with a value that cannot
run is answered with one line naming the option, before Locust starts anything.

The tab: Locust 2.4x's React UI renders an extended tab as a table (template_args "extended_tabs" and
"extended_tables") whose rows come with each /stats/requests poll ("extended_stats", added here in an after_request
hook, as Locust's examples/extend_web_ui.py does). Rows: Locust's state and request counts with HDR p50/p99, the
expiry run (phase, keys requested and set, the ledger audit of this run's keys: generated, consumed, pending, lost,
duplicates before and after dedup, per-worker distribution and evenness, expiry lag), then every agent's own
counters from its /hdr, "this run" being the difference from the start of the run. The same figures as JSON:
GET /workload. Both sit behind the UI's login (auth_required_if_enabled; /stats/requests already does).

Locust polls /stats/requests only while a run is spawning or running: an expiry run therefore ends (kvload.users.
workloads.ExpiryRun) only after its final audit, so the poll that reports the stop carries the final figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import Any

import gevent.lock
from flask import Response, jsonify, request
from locust import events
from locust.env import Environment
from locust.runners import WorkerRunner

from kvload.plugin import PreflightError, fail
from kvload.stats import recorder
from kvload.users.workloads.common import one_line
from kvload.users.workloads.expiry import ExpiryKeysUser, ExpirySettings
from kvload.webui.figures import AgentReading, agent_urls, collect, read_agents, row

logger = logging.getLogger(__name__)

TAB_KEY = "workload"
COLUMNS = [
    {"key": "section", "title": "Section"},
    {"key": "figure", "title": "Figure"},
    {"key": "run", "title": "This run"},
    {"key": "total", "title": "Since agent start"},
    {"key": "source", "title": "Source"},
]
# The merged HdrHistograms (kvload.stats, the same figures as /hdr) as a tab of their own, in µs
HDR_KEY = "hdr"
HDR_COLUMNS = [
    {"key": "request", "title": "Request"},
    {"key": "count", "title": "Count"},
    {"key": "p50_us", "title": "p50 µs"},
    {"key": "p90_us", "title": "p90 µs"},
    {"key": "p99_us", "title": "p99 µs"},
    {"key": "p99.9_us", "title": "p99.9 µs"},
    {"key": "max_us", "title": "max µs"},
    {"key": "lag_p99_us", "title": "send lag p99 µs"},
]


def hdr_rows(environment: Environment) -> list[dict[str, Any]]:
    rec = recorder(environment)
    rec.flush()
    body = rec.store.as_json()
    lag = body.get("send_lag") or {}
    rows = []
    for name, h in [*(body.get("requests") or {}).items(), ("Aggregated", body.get("aggregated") or {})]:
        if h.get("count"):
            rows.append({"request": name, **h, "lag_p99_us": (lag.get(name) or {}).get("p99_us", "")})
    return rows


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument(
        "--kvt-agents",
        default="",
        help="the agents' HTTP base URLs for the Workload tab, comma-separated (e.g. http://10.0.0.2:9400)",
    )


class WorkloadTab:
    """The tab's state on the master: the agents' readings at the run's start, and one cached reading of everything."""

    def __init__(self, environment: Environment) -> None:
        self.environment = environment
        self.baseline: dict[str, AgentReading] = {}
        self._cache: tuple[float, dict[str, Any]] | None = None
        self._lock = gevent.lock.Semaphore()

    def urls(self) -> list[str]:
        try:
            return agent_urls(getattr(self.environment.parsed_options, "kvt_agents", "") or "")
        except PreflightError:
            return []  # checked at start and in the form; a bad value is shown, never raised here

    def on_test_start(self) -> None:
        self._cache = None
        self.baseline = {r.url: r for r in read_agents(self.urls()) if r.ok}

    def figures(self) -> dict[str, Any]:
        with self._lock:
            if self._cache is None or time.monotonic() - self._cache[0] >= 1.0:
                try:
                    body = collect(self.environment, self.urls(), self.baseline)
                except Exception as exc:  # noqa: BLE001 - the tab rides on Locust's own poll: it must never break it
                    logger.exception("Workload tab: reading the figures failed")
                    body = {
                        "at": time.time(),
                        "error": one_line(exc),
                        "rows": [row("Workload tab", "error", one_line(exc))],
                    }
                self._cache = (time.monotonic(), body)
            return self._cache[1]


def install(environment: Environment) -> WorkloadTab:
    web_ui = environment.web_ui
    assert web_ui is not None
    tab = WorkloadTab(environment)
    environment.kvt_workload_tab = tab  # type: ignore[attr-defined]
    web_ui.template_args["extended_tabs"] = [
        {"title": "Workload", "key": TAB_KEY},
        {"title": "Latency (HDR, µs)", "key": HDR_KEY},
    ]
    web_ui.template_args["extended_tables"] = [
        {"key": TAB_KEY, "structure": COLUMNS},
        {"key": HDR_KEY, "structure": HDR_COLUMNS},
    ]
    app = web_ui.app
    auth = web_ui.auth_required_if_enabled

    @app.route("/workload")
    @auth
    def workload() -> Response:
        return jsonify(tab.figures())

    @app.after_request
    def add_workload_rows(response: Response) -> Response:
        # /stats/requests is behind the login already: an unauthenticated poll gets a redirect, not JSON
        if not request.path.endswith("/stats/requests") or response.status_code != 200 or not response.is_json:
            return response
        body = response.get_json(silent=True)
        if not isinstance(body, dict):
            return response
        extended = [e for e in body.get("extended_stats") or [] if e.get("key") not in (TAB_KEY, HDR_KEY)]
        extended.append({"key": TAB_KEY, "data": tab.figures()["rows"]})
        extended.append({"key": HDR_KEY, "data": hdr_rows(environment)})
        body["extended_stats"] = extended
        response.set_data(json.dumps(body))
        return response

    @app.before_request
    def check_form() -> Response | None:
        if request.method != "POST" or not request.path.endswith("/swarm") or not _logged_in(environment):
            return None
        message = form_error(environment, request.form)
        if message is None:
            return None
        return jsonify({"success": False, "message": message, "host": environment.host})

    return tab


def _logged_in(environment: Environment) -> bool:
    """Validate a form only for a user the route itself would let in (its own check answers everyone else)."""
    web_ui = environment.web_ui
    if web_ui is None or not getattr(web_ui, "web_login", False):
        return True
    from flask_login import current_user  # only with a login; flask_login ships with Locust

    return bool(getattr(current_user, "is_authenticated", False))


def form_error(environment: Environment, form: Any) -> str | None:
    """One line naming the first workload option of the start form that cannot run, or None.

    Values are converted as Locust's /swarm converts them (the type of the current value), so a value Locust would
    choke on (a 500 and "An unknown error occurred") gets a message instead. Values are never echoed back.
    """
    options = environment.parsed_options
    if options is None:
        return None
    candidate = argparse.Namespace(**vars(options))
    for key, value in form.items():
        if not key.startswith("kvt_") or not hasattr(candidate, key):
            continue
        current = getattr(candidate, key)
        option = "--" + key.replace("_", "-")
        if isinstance(current, bool):
            setattr(candidate, key, value == "true")
        elif isinstance(current, int):
            try:
                setattr(candidate, key, int(value))
            except ValueError:
                return f"{option}: must be a whole number"
        elif isinstance(current, float):
            try:
                setattr(candidate, key, float(value))
            except ValueError:
                return f"{option}: must be a number"
        else:
            setattr(candidate, key, value)
    try:
        agent_urls(getattr(candidate, "kvt_agents", "") or "")
        classes = form.getlist("user_classes") if hasattr(form, "getlist") else []
        chosen = classes or [c.__name__ for c in environment.user_classes or []]
        if ExpiryKeysUser.__name__ in chosen:
            host = str(form.get("host") or environment.host or "")
            ExpirySettings.from_options(candidate, host)
    except PreflightError as exc:
        return str(exc)
    return None


@events.init.add_listener
def _on_init(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner):
        return
    try:
        agent_urls(getattr(environment.parsed_options, "kvt_agents", "") or "")
    except PreflightError as exc:
        fail(str(exc))
    if environment.web_ui is not None:
        install(environment)


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_: Any) -> None:
    tab: WorkloadTab | None = getattr(environment, "kvt_workload_tab", None)
    if tab is not None and not isinstance(environment.runner, WorkerRunner):
        tab.on_test_start()
