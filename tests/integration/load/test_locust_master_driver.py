"""kvtestbed.load.master drives a deployed Locust master (scenario `load.from: hosts`): a real master with its web UI
and login, two real workers and a real redis-server with an ACL user, all on loopback, runs of a few seconds.

What the driver reports must be what the server did: every request Locust counts is a command the server counted,
the HdrHistograms cover every success, both workers took part, and the run ended by itself. Bad input (a wrong
password, a master without workers, a master already running) is one line before any load.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from kvtestbed.load.master import MasterEndpoint, MasterError, ready_workers, run_on_master, swarm_form
from kvtestbed.load.runner import LoadSpec, available_user_classes
from tests.support.locustrun import LOCUSTFILE, commandstats, locust_binary, start_locust
from tests.support.servers import LOOPBACK, RedisServer, free_port
from tests.support.wait import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

WEB_USER = "admin"
WEB_PASSWORD = "Lq4-locust-driver-secret-51d2"
ACL_PASSWORD = "kvt-acl-driver-3"
# GET and SET allowed: every request succeeds, so Locust's count must equal the server's
ACL_USER = ("--user", "kvtload", "on", f">{ACL_PASSWORD}", "~kvt:load:*", "+get", "+set", "+ping")
USERS = 4
RUN_S = 4


def start_master(tmp_path: Path, processes: list, workers: int) -> tuple[MasterEndpoint, int]:
    """A master with the login (no autostart: the driver starts the run) and `workers` workers, all connected."""
    web_password = tmp_path / "locust-web-password"
    web_password.write_text(WEB_PASSWORD + "\n")
    web_port, master_port = free_port(), free_port()
    processes.append(start_locust(tmp_path / "master", web_port, [
        *("--master", "--master-bind-host", LOOPBACK, "--master-bind-port", str(master_port)),
        *("--kvt-web-password-file", str(web_password), "--kvt-web-user", WEB_USER),
        *("--stop-timeout", "3", "--class-picker"),
    ]))  # fmt: skip
    for i in range(workers):
        log = open(tmp_path / f"worker-{i}.log", "wb")  # noqa: SIM115 - the worker writes it until teardown
        processes.append(subprocess.Popen(
            [str(locust_binary()), "-f", str(LOCUSTFILE), "--worker", "--master-host", LOOPBACK,
             "--master-port", str(master_port)],
            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
            env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path)},
        ))  # fmt: skip
    endpoint = MasterEndpoint("lg-1", f"http://{LOOPBACK}:{web_port}", WEB_USER, web_password, workers_expected=workers)
    if workers:
        assert ready_workers(endpoint) == workers  # the driver's own wait: idle, every worker connected
    return endpoint, master_port


def spec_for(server: RedisServer, tmp_path: Path) -> LoadSpec:
    password = tmp_path / "acl-password"
    password.write_text(ACL_PASSWORD + "\n")
    return LoadSpec(user_classes=["KvGetSetUser"], target=f"redis://kvtload@{LOOPBACK}:{server.port}", users=USERS,
                    run_time_s=RUN_S, options={"keys": "1000", "connections": "2"},
                    password_file=str(password))  # fmt: skip


def test_a_run_on_the_masters_workers_counts_what_the_server_counts(
    tmp_path: Path, server_factory: Callable[..., RedisServer], processes: list
) -> None:
    server = server_factory("redis", extra=ACL_USER)
    endpoint, _ = start_master(tmp_path, processes, workers=2)
    before = commandstats(server)

    result = run_on_master(spec_for(server, tmp_path), endpoint, tmp_path / "out", available_user_classes())

    after = commandstats(server)
    assert result.returncode == 0, result.message
    assert result.workers == 2
    counted = {row["name"]: row for row in result.stats}
    requests_by_method = {row["method"]: int(row["num_requests"]) for row in result.stats}
    assert sum(int(row["num_failures"]) for row in result.stats) == 0, counted
    # every request Locust counted reached the server, and nothing else did (the preflight PINGs aside)
    assert requests_by_method.get("GET", 0) == after["get calls"] - before["get calls"] > 0, (requests_by_method,
                                                                                              before, after)
    assert requests_by_method.get("SET", 0) == after["set calls"] - before["set calls"] > 0
    # the master's merged histograms hold every success of both workers
    hdr_total = sum(int(summary["count"]) for summary in result.hdr["requests"].values())
    assert hdr_total == sum(requests_by_method.values()), (result.hdr["requests"], requests_by_method)
    # the run ended by itself after its run time; its files are in the results folder
    for name in ("load.json", "stats.json", "hdr.json", "workload.json"):
        assert (tmp_path / "out" / name).is_file(), name
    assert ready_workers(endpoint) == 2  # idle again, both workers back: the next run may start

    # a second run at once: Locust's /swarm answers before the run starts, and its table is cached for 2 s, so a
    # driver that trusted the first "stopped" it read would report the first run's table as the second's
    before = commandstats(server)
    again = run_on_master(spec_for(server, tmp_path), endpoint, tmp_path / "out2", available_user_classes())
    after = commandstats(server)
    assert again.returncode == 0, again.message
    second = {row["method"]: int(row["num_requests"]) for row in again.stats}
    assert second.get("GET", 0) == after["get calls"] - before["get calls"] > 0, (second, before, after)
    assert sum(int(s["count"]) for s in again.hdr["requests"].values()) == sum(second.values())


def test_the_form_carries_kvloads_options_as_parsed_option_names() -> None:
    spec = LoadSpec(user_classes=["KvGetUser", "KvSetUser"], target="redis://x:6379", users=8, run_time_s=20,
                    options={"keys": "10", "get-ratio": "0.5"}, password_file="/etc/kvtestbed/locust/secrets/p")
    form = swarm_form(spec, 20)
    assert ("user_classes", "KvGetUser") in form and ("user_classes", "KvSetUser") in form
    assert ("run_time", "20s") in form and ("user_count", "8") in form
    assert ("kvt_get_ratio", "0.5") in form and ("kvt_password_file", "/etc/kvtestbed/locust/secrets/p") in form


def test_bad_input_is_one_line_before_any_load(
    tmp_path: Path, server_factory: Callable[..., RedisServer], processes: list
) -> None:
    server = server_factory("redis", extra=ACL_USER)
    endpoint, _ = start_master(tmp_path, processes, workers=0)
    before = commandstats(server)

    # no worker connected
    with pytest.raises(MasterError, match=r"^Locust master on lg-1 has no worker connected: .*locust_workers"):
        run_on_master(spec_for(server, tmp_path), endpoint, tmp_path / "out", available_user_classes(), wait_s=1)
    # fewer workers than the inventory gives: named, after the wait
    short = MasterEndpoint("lg-1", endpoint.url, WEB_USER, endpoint.password_file, workers_expected=2)
    with pytest.raises(MasterError, match=r"^Locust master on lg-1 has no worker connected"):
        ready_workers(short, wait_s=1)
    # a wrong password: refused, and the message does not carry either password
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    with pytest.raises(MasterError, match="login as admin was refused") as refused:
        ready_workers(MasterEndpoint("lg-1", endpoint.url, WEB_USER, wrong))
    assert "not-the-password" not in str(refused.value) and WEB_PASSWORD not in str(refused.value)
    assert "\n" not in str(refused.value)
    # a master that does not answer
    with pytest.raises(MasterError, match=r"does not answer.*kvtestbed deploy"):
        ready_workers(MasterEndpoint("lg-9", f"http://{LOOPBACK}:{free_port()}", WEB_USER, wrong))
    assert commandstats(server) == before  # nothing reached the server


def test_a_stop_ends_the_run_early_and_keeps_its_figures(
    tmp_path: Path, server_factory: Callable[..., RedisServer], processes: list
) -> None:
    server = server_factory("redis", extra=ACL_USER)
    endpoint, _ = start_master(tmp_path, processes, workers=1)
    spec = spec_for(server, tmp_path)
    spec.run_time_s = 600  # far past the test's timeout: only the stop can end it in time
    stop = threading.Event()
    result_box: list = []
    thread = threading.Thread(target=lambda: result_box.append(
        run_on_master(spec, endpoint, tmp_path / "out", available_user_classes(), stop=stop)))  # fmt: skip
    thread.start()
    wait_until(lambda: commandstats(server)["get calls"] > 100, 30, 0.1, "load reaching the server")
    stop.set()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the stop did not end the run"
    (result,) = result_box
    assert result.returncode == 0, result.message
    assert sum(int(row["num_requests"]) for row in result.stats) > 100

