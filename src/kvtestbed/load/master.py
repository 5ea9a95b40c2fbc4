"""Drive the Locust master the locust role deployed on a loadgen host: the same LoadSpec, the load from its workers.

One machine runs out of CPU for load long before a rack of servers does; users then point the scenario at the
master on their hosts (scenario `load.from: hosts`). The master is driven through its own web API, as the web UI does
it: log in (kvload.webauth's form, the password read from the controller's secrets/), POST /swarm with the user
classes, counts, run time and kvload's options (Locust copies form fields into its parsed options and hands them to
every worker with the spawn message), see the run begin (kvload's /hdr `since` changes) and end (kvload's live
/metrics), then keep Locust's table, kvload's merged HdrHistograms (/hdr) and its Workload tab (/workload). The
result has the shape of kvtestbed.load.runner's, so the scenario runner's figures are the same whichever machine
generated the load.

When is a run's table complete? A worker sends its statistics every 3 s, and none when it stops; after a stop it
announces itself ready again only `--stop-timeout` (the role's locust_stop_timeout, 10 s) later, reporting all the
while. So the run is over when the master says stopped and every worker that started the run is back; Locust's
/stats/requests is cached (2 s or more), so the final table is taken once its total equals the live count.
"""

from __future__ import annotations

import http.cookiejar
import json
import math
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from kvtestbed.inventory import Host, Inventory
from kvtestbed.load.runner import LoadInputError, LoadResult, LoadSpec, check

LOGIN_PATH = "/kvt-login"  # kvload.webauth.LOGIN_PATH (kvload is not imported here: it patches with gevent)
# the locust role's defaults (roles/locust/defaults/main.yml), for an inventory that does not set them
DEFAULT_WEB_PORT = 8089
DEFAULT_WEB_USER = "admin"
DEFAULT_CONFIG_DIR = "/etc/kvtestbed/locust"
WEB_PASSWORD_FILE = "locust-web-password"
POLL_S = 1.0
# how long the master may take from accepting a run (/swarm) to its start (test_start)
START_WAIT_S = 30.0
# how long a run waits for the master to be idle with all its workers (a worker is away --stop-timeout after a run)
WORKERS_WAIT_S = 30.0
# after the run time: the users' stop (--stop-timeout) and the workers' return, then give up on the table
GRACE_S = 120.0


@dataclass(frozen=True)
class MasterEndpoint:
    """Where the master's web UI answers and how to log in; the password is read from the file at login."""

    host: str  # the inventory host running it (for messages)
    url: str  # http://address:port
    user: str
    password_file: Path
    workers_expected: int = 0  # the inventory's locust_workers summed over its hosts; 0 = at least one


class MasterError(RuntimeError):
    """The master cannot be driven: one line naming the master and what to do."""


class _Session:
    """A logged-in web session (kvload.webauth's cookie), JSON in and out."""

    def __init__(self, endpoint: MasterEndpoint, timeout_s: float = 10.0) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), _NoRedirect())

    def _open(self, path: str, form: list[tuple[str, str]] | None = None) -> tuple[int, dict[str, str], bytes]:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        request = urllib.request.Request(self.endpoint.url + path, data=data)
        try:
            with self.opener.open(request, timeout=self.timeout_s) as answer:
                return answer.status, dict(answer.headers), answer.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers or {}), exc.read()
        except (OSError, urllib.error.URLError) as exc:
            reason = getattr(exc, "reason", exc)
            raise MasterError(f"Locust master on {self.endpoint.host} ({self.endpoint.url}) does not answer: {reason}"
                              " (is kvtestbed-locust-master running? kvtestbed deploy)") from None  # fmt: skip

    def login(self) -> None:
        try:
            password = self.endpoint.password_file.read_text(encoding="utf-8").strip()
        except OSError:
            raise MasterError(f"{self.endpoint.password_file}: the Locust web password is missing "
                              "(kvtestbed deploy writes it)") from None  # fmt: skip
        status, headers, _ = self._open(LOGIN_PATH, [("username", self.endpoint.user), ("password", password)])
        # webauth answers a good login with a redirect to the UI, a refused one with a redirect back to the form
        location = headers.get("Location", "")
        if status != 302 or urllib.parse.urlsplit(location).path not in ("/", ""):
            raise MasterError(
                f"Locust master on {self.endpoint.host}: the login as {self.endpoint.user} was refused "
                f"(the password in {self.endpoint.password_file} is not the master's: redeploy)"
            )

    def get(self, path: str) -> dict[str, Any]:
        status, _, body = self._open(path)
        return self._json(path, status, body)

    def text(self, path: str) -> str:
        status, _, body = self._open(path)
        if status != 200:
            raise MasterError(f"Locust master on {self.endpoint.host}: {path} answered HTTP {status}")
        return body.decode("utf-8", "replace")

    def live(self) -> tuple[str, int, float]:
        """(state, workers connected, requests counted) as the master has them now: from kvload's /metrics, which
        reads the runner on each request, where /stats/requests is cached for 2 s or more (Locust doubles the cache
        time when the page takes longer than that to build)."""
        state, workers, requests = "", 0, 0.0
        for family in text_string_to_metric_families(self.text("/metrics")):
            for sample in family.samples:
                if sample.name == "locust_state" and sample.value == 1:
                    state = sample.labels.get("state", "")
                elif sample.name == "locust_workers_count":
                    workers = int(sample.value)
                elif sample.name == "locust_requests_num_requests" and sample.labels.get("name") == "Aggregated":
                    requests = sample.value
        return state, workers, requests

    def post(self, path: str, form: list[tuple[str, str]]) -> dict[str, Any]:
        status, _, body = self._open(path, form)
        return self._json(path, status, body)

    def _json(self, path: str, status: int, body: bytes) -> dict[str, Any]:
        if status != 200:
            raise MasterError(f"Locust master on {self.endpoint.host}: {path} answered HTTP {status}")
        try:
            value = json.loads(body)
        except ValueError:
            raise MasterError(f"Locust master on {self.endpoint.host}: {path} did not answer JSON") from None
        if not isinstance(value, dict):
            raise MasterError(f"Locust master on {self.endpoint.host}: {path} did not answer a JSON object")
        return value


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Keep the login's 302 (its Location tells success from refusal) instead of following it."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def swarm_form(spec: LoadSpec, run_time_s: float) -> list[tuple[str, str]]:
    """The /swarm form for a spec: Locust's own fields, then kvload's options under their parsed-option names
    (--kvt-keys -> kvt_keys), as the web UI's form sends them."""
    form = [
        ("user_count", str(spec.users)),
        ("spawn_rate", f"{spec.spawn_rate or spec.users:g}"),
        ("host", spec.target),
        # a little past a rate profile's end: the profile stops the run itself (kvload.plugin)
        ("run_time", f"{int(run_time_s + (5 if spec.rate else 0))}s"),
    ]
    form += [("user_classes", name) for name in spec.user_classes]
    options = dict(spec.options)
    if spec.rate:
        options["rate"] = spec.rate
    if spec.password_file:
        options["password-file"] = spec.password_file
    if spec.tls_ca:
        options["tls-ca"] = spec.tls_ca
    form += [("kvt_" + key.replace("-", "_"), value) for key, value in options.items()]
    return form


def ready_workers(endpoint: MasterEndpoint, wait_s: float = WORKERS_WAIT_S) -> int:
    """Log in and check the master can take a run now: idle, with its workers. Its worker count; MasterError if not."""
    session = _Session(endpoint)
    session.login()
    return _idle_workers(endpoint, session, wait_s)


def _idle_workers(endpoint: MasterEndpoint, session: _Session, wait_s: float) -> int:
    """The master idle with every expected worker (or at least one when the inventory says no number), waiting up
    to wait_s: after a run a worker is away for --stop-timeout (10 s) before it says ready again."""
    deadline = time.monotonic() + wait_s
    while True:
        state, workers, _ = session.live()
        busy = state in ("spawning", "running", "cleanup", "stopping")
        enough = workers >= max(1, endpoint.workers_expected)
        if (not busy and enough) or time.monotonic() >= deadline:
            break
        time.sleep(POLL_S)  # a remote state to poll: nothing local to wait on
    if busy:
        raise MasterError(f"Locust master on {endpoint.host} is running a test already ({state}): stop it in its "
                          f"web UI ({endpoint.url}) first")  # fmt: skip
    if workers < 1:
        raise MasterError(f"Locust master on {endpoint.host} has no worker connected: give a loadgen host "
                          "locust_workers and deploy")  # fmt: skip
    if workers < endpoint.workers_expected:
        raise MasterError(f"Locust master on {endpoint.host} has {workers} of the inventory's "
                          f"{endpoint.workers_expected} workers connected after {wait_s:g} s: check "
                          "kvtestbed-locust-worker@* on the loadgen hosts")  # fmt: skip
    return workers


def run_on_master(
    spec: LoadSpec,
    endpoint: MasterEndpoint,
    out_dir: Path,
    known: dict[str, str],
    stop: threading.Event | None = None,
    wait_s: float = WORKERS_WAIT_S,
) -> LoadResult:
    """One run on the master's workers, until its own end (or `stop`), its table and histograms into out_dir."""
    run_time_s = check(spec, known)
    if spec.processes != 1:
        raise LoadInputError("load.processes: the master's workers are the hosts' (locust_workers); leave it out")
    out_dir.mkdir(parents=True, exist_ok=True)
    session = _Session(endpoint)
    session.login()
    workers = _idle_workers(endpoint, session, wait_s)
    # Locust's /swarm answers before the run has started (runner.start runs in a greenlet of its own), so a poll
    # right after it can still see the last run's "stopped" and its table. kvload resets its histograms at each
    # run's test_start and stamps /hdr's `since` with that moment: the run has begun when `since` changes (a value
    # read on the master, so no clock is compared across hosts).
    since_before = session.get("/hdr").get("since")
    (out_dir / "load.json").write_text(json.dumps(
        {**spec.__dict__, "from": endpoint.host, "master": endpoint.url, "workers": workers, "started": time.time()},
        indent=1) + "\n")  # fmt: skip
    answer = session.post("/swarm", swarm_form(spec, run_time_s))
    if not answer.get("success"):
        return LoadResult(2, out_dir, [], {}, f"kvload: the master refused the run: {answer.get('message', answer)}")

    started_by = time.monotonic() + START_WAIT_S
    while session.get("/hdr").get("since") == since_before:
        if time.monotonic() > started_by:
            session.post("/stop", [])
            never = f"kvload: the master on {endpoint.host} accepted the run but did not start it in {START_WAIT_S:g} s"
            return _finish(session, out_dir, _final_table(session), workers, 2, never)
        time.sleep(POLL_S / 4)  # a remote state to poll: nothing local to wait on

    deadline = time.monotonic() + run_time_s + GRACE_S
    stopped_by_us = False
    while time.monotonic() < deadline:
        state, connected, _ = session.live()
        if state == "stopped" and connected >= workers:
            break
        if stop is not None and stop.is_set() and not stopped_by_us:
            session.post("/stop", [])
            stopped_by_us = True
        time.sleep(POLL_S)  # polling a remote HTTP API: there is nothing local to wait on
    else:
        session.post("/stop", [])
        late = f"kvload: the run on {endpoint.host} did not end within its run time + {GRACE_S:g} s; stopped"
        return _finish(session, out_dir, _final_table(session), workers, 1, late)
    return _finish(session, out_dir, _final_table(session), workers, 0, "")


def _final_table(session: _Session) -> dict[str, Any]:
    """Locust's table once its cache has caught up with the run's end: its total equals the live count."""
    deadline = time.monotonic() + START_WAIT_S
    while True:
        table = session.get("/stats/requests")
        total = next((row.get("num_requests") for row in table.get("stats", []) if row.get("name") == "Aggregated"), 0)
        if (table.get("state") == "stopped" and total == session.live()[2]) or time.monotonic() > deadline:
            return table
        time.sleep(POLL_S)  # Locust's cached page: nothing local to wait on


def _finish(
    session: _Session, out_dir: Path, table: dict[str, Any], workers: int, code: int, message: str
) -> LoadResult:
    hdr = session.get("/hdr")
    # the Workload tab's figures (kvload.webui: an expiry run's ledger audit, the agents' counters), as it showed them
    workload = session.get("/workload")
    (out_dir / "workload.json").write_text(json.dumps(workload, indent=1) + "\n")
    rows = [row for row in workload.get("rows", []) if isinstance(row, dict)]
    # per request name, as headless Locust's --json-file lists them (its total row left out)
    stats = [row for row in table.get("stats", []) if isinstance(row, dict) and row.get("name") != "Aggregated"]
    (out_dir / "stats.json").write_text(json.dumps(table, indent=1) + "\n")
    (out_dir / "hdr.json").write_text(json.dumps(hdr, indent=1) + "\n")
    error = hdr.get("error")
    if error and not message:
        code, message = 2, f"kvload: {error}"
    failures = sum(int(row.get("num_failures", 0)) for row in stats)
    if code == 0 and failures:
        code = 1  # as headless Locust exits with 1 when a request failed
    return LoadResult(
        code, out_dir, stats, hdr, message or (f"{failures} failed requests" if failures else ""), workers, rows
    )


def _master_host(inventory: Inventory) -> Host:
    """The one host with locust_role: master; LoadInputError when there is none or more than one."""
    masters = [host for host in inventory.all_hosts() if host.vars.get("locust_role") == "master"]
    if len(masters) != 1:
        found = ", ".join(sorted(h.name for h in masters)) or "none"
        raise LoadInputError(
            f"load.from hosts needs one host with locust_role: master in the inventory (found {found})"
        )
    return masters[0]


def master_of(inventory: Inventory, secrets_dir: Path) -> MasterEndpoint:
    """The inventory's Locust master (the host with locust_role: master), as the locust role deployed it."""
    host = _master_host(inventory)
    port = host.vars.get("locust_web_port", DEFAULT_WEB_PORT)
    address = host.vars.get("locust_web_host")
    if not isinstance(address, str) or not address or "{{" in address:
        address = host.address
    expected = sum(_count(h.vars.get("locust_workers")) for h in inventory.all_hosts())
    return MasterEndpoint(host=host.name, url=f"http://{address}:{port}",
                          user=str(host.vars.get("locust_web_user") or DEFAULT_WEB_USER),
                          password_file=secrets_dir / WEB_PASSWORD_FILE, workers_expected=expected)  # fmt: skip


def _count(value: Any) -> int:
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        return 0


def on_the_hosts(spec: LoadSpec, inventory: Inventory, secrets_dir: Path) -> LoadSpec:
    """The spec with every secrets file named by its copy on the loadgen hosts: the locust role copies the files of
    locust_password_files to <locust_config_dir>/secrets/ on the master and every worker (the master hands the
    run's options, paths included, to its workers)."""
    master = _master_host(inventory)
    copied = master.vars.get("locust_password_files") or []
    config_dir = str(master.vars.get("locust_config_dir") or DEFAULT_CONFIG_DIR)

    def remote(path: str, what: str) -> str:
        if not path or Path(path).parent != secrets_dir:
            return path
        name = Path(path).name
        if name not in copied:
            raise LoadInputError(f"load: {what} {name} is not on the loadgen hosts: add it to locust_password_files "
                                 f"(host {master.name}) and deploy")  # fmt: skip
        return f"{config_dir}/secrets/{name}"

    options = {key: remote(value, f"option {key}:") if key.endswith("-file") else value
               for key, value in spec.options.items()}  # fmt: skip
    return replace(spec, password_file=remote(spec.password_file, "the password file"), options=options)


def workload_figures(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The Workload tab's numeric cells of this run as figures, `workload.<section>.<figure>` in lower case with
    `_` for anything but letters and digits ("ledger audit" / "processed twice (keys)" ->
    workload.ledger_audit.processed_twice_keys), so an SLO can name them; text cells are left out."""
    figures: dict[str, float] = {}
    for row in rows:
        try:
            value = float(str(row.get("run", "")).replace(",", ""))
        except ValueError:
            continue
        if not math.isfinite(value):
            continue
        figures[f"workload.{_slug(row.get('section'))}.{_slug(row.get('figure'))}"] = value
    return figures


def _slug(text: Any) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(text or "").lower()).strip("_")
