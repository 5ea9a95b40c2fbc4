"""The Locust master's /metrics (kvload.prometheus): a real master with its web UI and login, one real worker and a
real redis-server, all on loopback, runs of a few seconds.

What Prometheus scrapes must be what Locust shows and what the server did: the request and failure counts per request
name equal Locust's own /stats/requests and the server's INFO commandstats, the errors its error table, the
HdrHistogram's count the successes. The page takes the web UI's user and password as basic auth (Prometheus's way)
or the web UI's session, answers anything else with 401 and never shows the password; without a login configured it
is as open as the rest of the web UI (a local runner, whose own figures it serves). Debian's Prometheus scrapes it
with a password file, and every expression of dashboards/kvtestbed-locust.json returns data over the run.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from tests.support.binaries import require
from tests.support.dashboards import DASHBOARDS, load, queries, to_promql, variables
from tests.support.locustrun import LOCUSTFILE, commandstats, locust_binary, start_locust
from tests.support.servers import LOOPBACK, ManagedProcess, RedisServer, free_port
from tests.support.wait import settle, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

USERS = 4
RUN_S = 6  # two worker reports (every 3 s) while the run is on
WEB_USER = "scraper"
WEB_PASSWORD = "Lq4-locust-metrics-secret-8c1e"
ACL_PASSWORD = "kvt-acl-metrics-2"
# GET allowed, SET not: every SET is a failure (NOPERM) that Locust counts and the server counts as rejected, so the
# failure and error figures are compared too, not only successes
ACL_USER = ("--user", "kvtload", "on", f">{ACL_PASSWORD}", "~kvt:load:*", "+get", "+ping")
SMALL = ["--kvt-keys", "1000", "--kvt-connections", "2"]
# what Prometheus 2.42 sends
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape by (name, sorted labels); also checks the text is Prometheus's format."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, metric: str, /, **labels: str) -> float | None:
    return samples.get((metric, tuple(sorted(labels.items()))))


def num(samples: Samples, metric: str, /, **labels: str) -> float:
    """A sample that must be there."""
    found = value(samples, metric, **labels)
    assert found is not None, (metric, labels, sorted({n for n, _l in samples}))
    return found


def by_request(samples: Samples, metric: str) -> dict[tuple[str, str], float]:
    return {
        (dict(labels)["method"], dict(labels)["name"]): v for (n, labels), v in samples.items() if n == metric
    }  # fmt: skip


def start_run(
    tmp_path: Path,
    server: RedisServer,
    processes: list[ManagedProcess | subprocess.Popen[bytes]],
    run: list[str],
) -> tuple[str, ManagedProcess]:
    """A master (web UI with login, the ACL user's password file) and one worker against `server`; `run` says how the
    run starts and ends. The master's base URL and process."""
    web_password = tmp_path / "web-password"
    web_password.write_text(WEB_PASSWORD + "\n")
    acl_password = tmp_path / "acl-password"
    acl_password.write_text(ACL_PASSWORD + "\n")
    web_port, master_port = free_port(), free_port()
    master = start_locust(
        tmp_path / "master",
        web_port,
        [
            *("--master", "--master-bind-host", LOOPBACK, "--master-bind-port", str(master_port)),
            *("--kvt-web-password-file", str(web_password)),
            *("--kvt-web-user", WEB_USER, "--host", f"redis://kvtload@{LOOPBACK}:{server.port}"),
            *("--kvt-password-file", str(acl_password), *SMALL, "--stop-timeout", "5"),
            # the run starts once the worker is there; the master and its web UI stay up after it
            *("--autostart", "-u", str(USERS), "-r", str(USERS), "--expect-workers", "1", *run),
            "KvGetSetUser",
        ],
    )
    processes.append(master)
    with open(tmp_path / "worker.log", "wb") as worker_log:  # the worker writes to its own copy of the file
        processes.append(
            subprocess.Popen(
                [
                    str(locust_binary()),
                    "-f",
                    str(LOCUSTFILE),
                    "--worker",
                    "--master-host",
                    LOOPBACK,
                    "--master-port",
                    str(master_port),
                ],
                cwd=tmp_path,
                stdout=worker_log,
                stderr=subprocess.STDOUT,
                env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path)},
            )  # fmt: skip
        )
    return f"http://{LOOPBACK}:{web_port}", master


def test_metrics_agree_with_locusts_table_and_the_server(
    tmp_path: Path,
    server_factory: Callable[..., RedisServer],
    processes: list[ManagedProcess | subprocess.Popen[bytes]],
) -> None:
    server = server_factory("redis", extra=ACL_USER)
    before = commandstats(server)
    base, master = start_run(tmp_path, server, processes, ["-t", f"{RUN_S}s"])

    def scrape(auth: tuple[str, str] | None = (WEB_USER, WEB_PASSWORD)) -> requests.Response:
        return requests.get(f"{base}/metrics", auth=auth, allow_redirects=False, timeout=10)

    def samples() -> Samples:
        response = scrape()
        assert response.status_code == 200, response.status_code
        # no Accept header: the classic text format, which every Prometheus reads
        assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8", response.headers
        return parse(response.text)

    # while the run is on: its users, its worker, requests coming in
    def running() -> Samples | None:
        s = samples()
        live = (
            value(s, "locust_running") == 2
            and value(s, "locust_state", state="running") == 1
            and value(s, "locust_users") == USERS
            and value(s, "locust_workers_count") == 1
            and (value(s, "locust_requests_num_requests", method="", name="Aggregated") or 0) > 0
        )
        return s if live else None

    during = wait_until(running, 30, 0.2, "/metrics showing the run with its users, worker and requests")
    worker_ids = [dict(labels)["id"] for (n, labels), v in during.items() if n == "locust_worker_detail" and v == USERS]
    assert len(worker_ids) == 1, during

    # after the run: Locust says stopped once its worker has stopped its users, so the server's counts are final;
    # the worker's last figures reach the master with its next report (every 3 s, also after a stop)
    wait_until(lambda: value(samples(), "locust_state", state="stopped") == 1, 30, 0.2, "the run's end")
    executed = {k: v - before[k] for k, v in commandstats(server).items()}

    def final(s: Samples) -> bool:
        return (
            by_request(s, "locust_requests_num_requests").get(("GET", "kv")) == executed["get calls"]
            and by_request(s, "locust_requests_num_failures").get(("SET", "kv")) == executed["set rejected_calls"]
        )

    after = settle(samples, final, 15, 0.5)
    requests_ = by_request(after, "locust_requests_num_requests")
    failures = by_request(after, "locust_requests_num_failures")
    print(f"\n/metrics requests {requests_} failures {failures}; server {executed}")
    # what the server did: GETs it ran, SETs it rejected (the ACL user may not SET)
    assert requests_[("GET", "kv")] == executed["get calls"] > 100
    assert failures[("GET", "kv")] == 0
    assert requests_[("SET", "kv")] == failures[("SET", "kv")] == executed["set rejected_calls"] > 0
    assert executed["set calls"] == 0
    assert requests_[("", "Aggregated")] == requests_[("GET", "kv")] + requests_[("SET", "kv")]
    assert failures[("", "Aggregated")] == failures[("SET", "kv")]
    assert value(after, "locust_requests_fail_ratio") == pytest.approx(
        failures[("SET", "kv")] / requests_[("", "Aggregated")]
    )

    # ... and what Locust's own table says (the web UI's session; Locust caches the JSON for up to 2 s)
    session = requests.Session()
    login = session.post(f"{base}/kvt-login", data={"username": WEB_USER, "password": WEB_PASSWORD},
                         allow_redirects=False, timeout=10)  # fmt: skip
    assert login.status_code == 302 and login.headers["Location"] == "/", login.headers
    scraped = {key: (n, failures[key]) for key, n in requests_.items()}

    def table() -> dict[str, Any]:
        response: dict[str, Any] = session.get(f"{base}/stats/requests", timeout=10).json()
        return response

    def rows(t: dict[str, Any]) -> dict[tuple[str, str], tuple[int, int]]:
        return {(r["method"] or "", r["name"]): (r["num_requests"], r["num_failures"]) for r in t["stats"]}

    locust_table = settle(table, lambda t: rows(t) == scraped, 10, 0.5)
    assert rows(locust_table) == scraped
    # the error table: one row per message, the same occurrences as Locust's, every SET failure in it
    errors = {(n, labels): v for (n, labels), v in after.items() if n == "locust_errors"}
    expected_errors = {
        ("locust_errors", tuple(sorted({"method": e["method"], "name": e["name"], "error": e["error"]}.items()))):
            float(e["occurrences"])
        for e in locust_table["errors"]
    }  # fmt: skip
    assert errors == expected_errors and sum(errors.values()) == failures[("SET", "kv")], errors
    assert all("NOPERM" in dict(labels)["error"] for _n, labels in errors)
    # kvload's HdrHistograms (merged from the worker's reports) hold every success, in whole µs
    assert by_request(after, "kvt_locust_hdr_requests") == {("GET", "kv"): requests_[("GET", "kv")]}
    quantiles = [
        num(after, "kvt_locust_hdr_latency_seconds", method="GET", name="kv", quantile=q)
        for q in ("0.5", "0.9", "0.99", "0.999", "0.9999")
    ]
    assert quantiles[0] > 0 and quantiles == sorted(quantiles), quantiles
    assert quantiles[-1] <= num(after, "kvt_locust_hdr_latency_max_seconds", method="GET", name="kv") < 1
    # Locust's own figures, in ms
    assert 0 < num(after, "locust_requests_avg_response_time", method="GET", name="kv") < 1000
    assert num(after, "locust_users") == 0 and num(after, "locust_running") == 0
    # (no check of locust_workers_count here: Locust drops a worker from its list from its stop until it is ready
    # again, --stop-timeout later)
    assert sum(v for (n, _l), v in after.items() if n == "locust_state") == 1

    # the login: basic auth (Prometheus) or the web UI's session; anything else is 401, never a redirect
    for auth in (None, (WEB_USER, "wrong"), ("admin", WEB_PASSWORD), (WEB_USER, WEB_PASSWORD + "x"), (WEB_USER, "")):
        refused = scrape(auth)
        assert refused.status_code == 401, (auth, refused.status_code)
        assert refused.headers["WWW-Authenticate"].startswith("Basic "), refused.headers
        assert "locust_" not in refused.text
    in_session = session.get(f"{base}/metrics", allow_redirects=False, timeout=10)
    assert in_session.status_code == 200 and "locust_requests_num_requests" in in_session.text
    # Prometheus asks for OpenMetrics first: the same figures in that format
    om = requests.get(f"{base}/metrics", auth=(WEB_USER, WEB_PASSWORD), headers={"Accept": PROMETHEUS_ACCEPT},
                      allow_redirects=False, timeout=10)  # fmt: skip
    assert om.status_code == 200 and om.headers["Content-Type"].startswith("application/openmetrics-text"), om.headers
    om_samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in openmetrics_families(om.text)
        for sample in family.samples
    }
    assert by_request(om_samples, "locust_requests_num_requests") == requests_
    body = scrape().text
    master.stop()
    log = (tmp_path / "master" / "locust.log").read_text(errors="replace")
    assert "/metrics: refused basic auth" in log  # the wrong passwords were noted (once a minute at most) ...
    for text in (body, log, (tmp_path / "worker.log").read_text(errors="replace")):
        assert WEB_PASSWORD not in text and ACL_PASSWORD not in text  # ... and no password anywhere
        assert "Traceback" not in text


def test_without_a_login_a_local_runner_serves_it_open(
    tmp_path: Path,
    server_factory: Callable[..., RedisServer],
    processes: list[ManagedProcess | subprocess.Popen[bytes]],
) -> None:
    server = server_factory("redis")
    web_port = free_port()
    host = f"redis://{LOOPBACK}:{server.port}"
    processes.append(start_locust(tmp_path, web_port, ["--host", host, *SMALL, "--stop-timeout", "5", "KvGetSetUser"]))
    base = f"http://{LOOPBACK}:{web_port}"

    def samples() -> Samples:
        response = requests.get(f"{base}/metrics", allow_redirects=False, timeout=10)
        assert response.status_code == 200, response.status_code
        return parse(response.text)

    idle = samples()
    assert value(idle, "locust_state", state="ready") == 1 and value(idle, "locust_running") == 0
    assert value(idle, "locust_users") == 0 and value(idle, "locust_workers_count") == 0
    # no request yet: only the Aggregated row, at 0; no sliding window for the current percentiles (NaN)
    assert by_request(idle, "locust_requests_num_requests") == {("", "Aggregated"): 0}
    assert math.isnan(num(idle, "locust_requests_current_response_time_percentile_95"))
    assert by_request(idle, "kvt_locust_hdr_requests") == {}

    # a run from the start form (its JSON endpoint): one process records, flushes and is scraped
    before = commandstats(server)
    swarm = requests.post(f"{base}/swarm", data={"user_count": USERS, "spawn_rate": USERS, "host": host,
                                                 "run_time": "3s"}, timeout=10)  # fmt: skip
    assert swarm.json()["success"], swarm.text
    wait_until(lambda: value(samples(), "locust_state", state="stopped") == 1, 30, 0.2, "the run's end")
    executed = {k: v - before[k] for k, v in commandstats(server).items()}
    after = samples()  # a local runner's figures are its own: final at once
    counted = by_request(after, "locust_requests_num_requests")
    assert {"get": counted[("GET", "kv")], "set": counted[("SET", "kv")]} == {
        "get": executed["get calls"],
        "set": executed["set calls"],
    }
    assert executed["get calls"] > 100 and executed["set calls"] > 10
    assert by_request(after, "kvt_locust_hdr_requests") == {("GET", "kv"): counted[("GET", "kv")],
                                                            ("SET", "kv"): counted[("SET", "kv")]}  # fmt: skip


# -- a real Prometheus ---------------------------------------------------------------------------------------------
RATE = 2000  # requests/s in the open-loop run: the send-lag panel has figures too
BOARD = DASHBOARDS / "kvtestbed-locust.json"


def prometheus_binary() -> str:
    found = shutil.which("prometheus") or (Path("/usr/bin/prometheus").exists() and "/usr/bin/prometheus") or None
    return require(found, "prometheus", "apt-get install prometheus (Debian's package)")


def prometheus_api(url: str, path: str, **params: str | float) -> list[dict[str, Any]]:
    response = requests.get(f"{url}/api/v1/{path}", params=params, timeout=10)
    assert response.status_code == 200, (params, response.text[:500])
    return list(response.json()["data"]["result"])


def test_prometheus_scrapes_it_with_basic_auth_and_every_locust_panel_has_data(
    tmp_path: Path,
    server_factory: Callable[..., RedisServer],
    processes: list[ManagedProcess | subprocess.Popen[bytes]],
) -> None:
    prometheus_bin = prometheus_binary()
    server = server_factory("redis", extra=ACL_USER)
    started = time.time()
    before = commandstats(server)
    base, _master = start_run(tmp_path, server, processes, ["--kvt-rate", f"constant:rate={RATE},for={RUN_S}"])
    # the job the prometheus role writes: job locust, the master's web port, /metrics, basic auth from a file
    scrape_password = tmp_path / "scrape-password"
    scrape_password.write_text(WEB_PASSWORD + "\n")
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "locust", "metrics_path": "/metrics",
             "basic_auth": {"username": WEB_USER, "password_file": str(scrape_password)},
             "static_configs": [{"targets": [base.removeprefix("http://")], "labels": {"host": "loadgen-1"}}]},
        ],
    }  # fmt: skip
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    prometheus = ManagedProcess(
        "prometheus",
        [prometheus_bin, f"--config.file={tmp_path / 'prometheus.yml'}", f"--web.listen-address={LOOPBACK}:{port}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}", "--log.level=warn"],
        tmp_path / "prometheus", port,
    )  # fmt: skip
    prometheus.start()
    processes.append(prometheus)
    url = f"http://{LOOPBACK}:{port}"

    def scraped() -> Samples:
        return parse(requests.get(f"{base}/metrics", auth=(WEB_USER, WEB_PASSWORD), timeout=10).text)

    # the profile ends the run; then the worker's last report, then one more scrape
    wait_until(lambda: value(scraped(), "locust_state", state="stopped") == 1, 40, 0.2, "the run's end")
    executed = {k: v - before[k] for k, v in commandstats(server).items()}
    final = settle(
        scraped,
        lambda s: value(s, "locust_requests_num_requests", method="GET", name="kv") == executed["get calls"],
        15,
    )
    gets = num(final, "locust_requests_num_requests", method="GET", name="kv")
    assert gets == executed["get calls"] > RATE  # what the server ran, open loop at RATE/s for RUN_S s

    def in_prometheus() -> float | None:
        found = prometheus_api(url, "query", query='locust_requests_num_requests{job="locust",method="GET",name="kv"}')
        return float(found[0]["value"][1]) if found else None

    assert settle(in_prometheus, lambda v: v == gets, 10, 0.5) == gets
    # every scrape of the run got in with the password file (never a 401: up would be 0)
    window = f"{math.ceil(time.time() - started)}s"
    ups = prometheus_api(url, "query", query=f'min_over_time(up{{job="locust"}}[{window}])')
    assert [u["value"][1] for u in ups] == ["1"], ups

    # each panel's expressions, over the run, return data (the fault annotation needs the runner: not here)
    board = load(BOARD)
    defined = set(variables(board))
    end = time.time()
    checked = [q for q in queries(board, BOARD.name) if "annotation" not in q.where]
    assert len(checked) >= 25, checked  # the dashboard's queries were found
    empty = [
        q.where
        for q in checked
        if not prometheus_api(url, "query_range", query=to_promql(q.expr, defined), start=started, end=end, step=1)
    ]
    assert empty == []
