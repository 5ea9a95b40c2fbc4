"""What every kvtestbed locustfile gets: the common options, the checks before load, the recorder, /hdr, /metrics, the
profile.

Imported by kvload.locustfile (and so by master and workers alike). Bad input stops the process with one line on
stderr and exit status 2 before any user starts: an unknown profile, a negative figure, a target that does not
answer, a wrong password. User classes add their own check as a classmethod `preflight(environment)` raising
PreflightError; it runs on the master (or the local runner), never on workers, so a target is probed once.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import gevent
from flask import Response, jsonify
from locust import events
from locust.env import Environment
from locust.runners import LocalRunner, MasterRunner, WorkerRunner

from kvload.profiles import ProfileError, RateProfile, parse
from kvload.prometheus import add_metrics_route
from kvload.stats import recorder


class PreflightError(Exception):
    """Input or target that cannot run; the message is one line naming what to fix (never a secret)."""


@events.init_command_line_parser.add_listener
def _common_options(parser: Any) -> None:
    # argparse answers a value it cannot convert (--kvt-keys abc) with a usage block and the error: one line instead,
    # as for every other bad input (exit 2 either way)
    parser.error = lambda message: fail(message)
    group = parser  # Locust's include_in_web_ui works on the parser only, not on argument groups
    group.add_argument(
        "--kvt-rate",
        default="",
        help="open-loop rate profile, e.g. constant:rate=5000,for=60 (empty: closed loop, Locust's own pacing)",
    )
    group.add_argument(
        "--kvt-password-file",
        default="",
        help="file holding the target's password (ACL user in the URL); never pass a password on a command line",
        include_in_web_ui=False,
    )
    group.add_argument(
        "--kvt-tls-ca", default="", help="CA file for rediss:// and tls:// targets", include_in_web_ui=False
    )
    group.add_argument(
        "--kvt-hdr-out",
        default="",
        help="write the run's merged HdrHistogram summary (the /hdr JSON) to this file when Locust quits",
        include_in_web_ui=False,
    )


def fail(message: str) -> None:
    """One line, exit 2: the contract for bad input everywhere in kvtestbed."""
    print(f"kvload: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def run_profile(environment: Environment) -> RateProfile | None:
    """The parsed --kvt-rate of this run (None: closed loop); parsed once per spec and process."""
    spec = (getattr(environment.parsed_options, "kvt_rate", "") or "").strip()
    if not spec:
        return None
    cached: RateProfile | None = getattr(environment, "kvt_profile", None)
    if cached is None or cached.spec != spec:
        cached = parse(spec)
        environment.kvt_profile = cached  # type: ignore[attr-defined]
    return cached


def run_t0_ns(environment: Environment) -> int:
    """When this process's part of the run started (perf_counter ns); profiles count from it."""
    t0: int | None = getattr(environment, "kvt_t0_ns", None)
    if t0 is None:
        t0 = environment.kvt_t0_ns = time.perf_counter_ns()  # type: ignore[attr-defined]
    return t0


def read_secret(path: str) -> str | None:
    """The password from --kvt-password-file (first line), or None when no file was given."""
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline().rstrip("\r\n")
    except OSError as exc:
        raise PreflightError(f"--kvt-password-file {path}: cannot read it ({exc.strerror})") from None


def check(environment: Environment) -> None:
    """Options and targets, before any load. Raises PreflightError."""
    try:
        run_profile(environment)
    except ProfileError as exc:
        raise PreflightError(f"--kvt-rate: {exc}") from None
    options = environment.parsed_options
    named = list(getattr(options, "user_classes", None) or [])
    if not named and len(environment.user_classes) > 1 and not getattr(options, "class_picker", False):
        # every class at once would send key-value, NATS and HTTP requests to one --host: never what anyone means
        raise PreflightError("name the user class(es) to run at the end of the command line (kvtestbed load list)")
    if options is not None and getattr(options, "num_users", None) is not None and options.num_users < 0:
        raise PreflightError(f"--users {options.num_users}: must be >= 0")
    for user_class in environment.user_classes:
        pre = getattr(user_class, "preflight", None)
        if pre is not None:
            pre(environment)


@events.init.add_listener
def _on_init(environment: Environment, **_: Any) -> None:
    recorder(environment)
    runner = environment.runner
    if not isinstance(runner, WorkerRunner):
        headless = bool(getattr(environment.parsed_options, "headless", False))
        autostart = bool(getattr(environment.parsed_options, "autostart", False))
        if headless or autostart:
            try:
                check(environment)
            except PreflightError as exc:
                fail(str(exc))
    if environment.web_ui is not None:
        _add_routes(environment)


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_: Any) -> None:
    environment.kvt_t0_ns = time.perf_counter_ns()  # type: ignore[attr-defined]
    runner = environment.runner
    if not isinstance(runner, MasterRunner | LocalRunner):
        return
    if environment.web_ui is not None and not getattr(environment.parsed_options, "headless", False):
        # a run started from the form: its options were checked by nobody yet
        try:
            check(environment)
        except PreflightError as exc:
            environment.kvt_last_error = str(exc)  # type: ignore[attr-defined]
            gevent.spawn_later(0, runner.stop)
            return
    profile = run_profile(environment)
    if profile is not None:
        # the profile's end ends the run, in the UI (stop) and headless (quit, so --html/--csv are written)
        def stop_at_end() -> None:
            gevent.sleep(profile.duration_s)
            if getattr(environment.parsed_options, "headless", False):
                runner.quit()
            else:
                runner.stop()

        environment.kvt_profile_stopper = gevent.spawn(stop_at_end)  # type: ignore[attr-defined]


@events.test_stop.add_listener
def _on_test_stop(environment: Environment, **_: Any) -> None:
    stopper = getattr(environment, "kvt_profile_stopper", None)
    if stopper is not None and stopper is not gevent.getcurrent():
        stopper.kill(block=False)


@events.quitting.add_listener
def _on_quitting(environment: Environment, **_: Any) -> None:
    out = getattr(environment.parsed_options, "kvt_hdr_out", "")
    if not out or isinstance(environment.runner, WorkerRunner):
        return
    rec = recorder(environment)
    rec.flush()
    body = rec.store.as_json()
    body["error"] = getattr(environment, "kvt_last_error", None)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(body, f, indent=1)


def _add_routes(environment: Environment) -> None:
    app = environment.web_ui.app  # type: ignore[union-attr]
    auth = environment.web_ui.auth_required_if_enabled  # type: ignore[union-attr]

    @app.route("/hdr")
    @auth
    def hdr() -> Response:
        rec = recorder(environment)
        if not isinstance(environment.runner, WorkerRunner):
            rec.flush()
        body = rec.store.as_json()
        body["error"] = getattr(environment, "kvt_last_error", None)
        return jsonify(body)

    # Prometheus's scrape: Locust's figures and the HdrHistograms, behind the same login (basic auth)
    add_metrics_route(environment)
