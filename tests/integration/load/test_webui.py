"""The web UI as seed 000's page, driven by a real browser: headless Chromium (Debian's) over the DevTools protocol.

A Locust master with its web UI and login on loopback, redis-server (target and ledger), nats-server with JetStream
and the expiry agents (2 consumers, 2 workers). The browser logs in, fills the start form with the workload's
parameters (number of keys, TTL, delay between keys), starts the run, opens the Workload tab and reads its figures
until the final audit is there (generated = the number of keys, lost 0), and sees the run stop by itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import (
    DevTools,
    chromium,
    click_start,
    click_tab,
    end_group,
    fetch_json,
    login,
    run_stopped,
    table_rows,
)
from tests.support.expiry_agents import agents_audit, lossless_run_cells, start_expiry_agents
from tests.support.locustrun import LOCUSTFILE, locust_binary
from tests.support.servers import LOOPBACK, NatsServer, free_port, wait_port
from tests.support.wait import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

KEYS, TTL_MS, DELAY_MS, USERS = 200, 500, 5, 4
RUN_ID = "webui"
PASSWORD = "kvt-ui-test-password"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[DevTools]:
    with chromium(tmp_path) as tools:
        yield tools


def test_seed_000_runs_from_the_form_and_the_workload_tab_shows_the_audit(
    tmp_path: Path, server_factory: Any, nats_server: NatsServer, browser: DevTools
) -> None:
    target = server_factory("redis", extra=("--hz", "100"))
    ledger = server_factory("redis")
    procs = start_expiry_agents(tmp_path / "agents", RUN_ID, target, ledger, nats_server)
    password_file = tmp_path / "web-password"
    password_file.write_text(PASSWORD + "\n")
    web_port = free_port()
    log_path = tmp_path / "locust.log"
    # Defaults on the command line differ from what the form sets: the figures prove the form's values were used.
    argv = [
        str(locust_binary()),
        *("-f", str(LOCUSTFILE), "--host", f"redis://{LOOPBACK}:{target.port}"),
        *("--web-host", LOOPBACK, "--web-port", str(web_port), "--kvt-web-password-file", str(password_file)),
        *("--kvt-agents", ",".join(f"http://{LOOPBACK}:{p.port}" for p in procs)),
        *("--kvt-expiry-ledger", f"redis://{LOOPBACK}:{ledger.port}", "--kvt-expiry-run-id", RUN_ID),
        *("--kvt-expiry-keys", "5000", "--kvt-expiry-ttl-ms", "60000", "--kvt-expiry-grace-ms", "10000"),
        *("--stop-timeout", "5", "ExpiryKeysUser"),
    ]
    with open(log_path, "wb") as log:
        locust = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path)},
            start_new_session=True,
        )
    try:
        wait_port(web_port, 30)
        tools = browser
        login(tools, f"http://{LOOPBACK}:{web_port}", "admin", PASSWORD, "input[name=kvtExpiryKeys]")
        for name, value in (("userCount", USERS), ("spawnRate", USERS), ("kvtExpiryTtlMs", TTL_MS)):
            tools.set_input(name, str(value))
        # a value that cannot run is answered in the form with one line naming the option; nothing starts
        tools.set_input("kvtExpiryKeys", "many")
        click_start(tools)
        wait_until(lambda: "--kvt-expiry-keys: must be a whole number" in tools.text(), 10, 0.1, "the form's message")
        tools.set_input("kvtExpiryDelayMs", "-1")
        tools.set_input("kvtExpiryKeys", str(KEYS))
        click_start(tools)
        wait_until(lambda: "--kvt-expiry-delay-ms -1: must be >= 0" in tools.text(), 10, 0.1, "the form's message")
        with ledger.client() as c, target.client() as t:
            assert not c.exists(f"kvt:ledger:{{{RUN_ID}}}:deadlines") and t.dbsize() == 0  # no run started
        tools.set_input("kvtExpiryDelayMs", str(DELAY_MS))
        click_start(tools)

        wait_until(lambda: click_tab(tools, "workload"), 20, 0.2, "the Workload tab")

        def final_figures() -> dict[tuple[str, str], list[str]] | None:
            rows = table_rows(tools)
            phase = rows.get(("expiry run", "phase"), [""] * 3)[2]
            return rows if phase == "final" and ("ledger audit", "generated") in rows else None

        rows = wait_until(final_figures, 60, 0.5, "the final audit in the Workload tab")
        if os.environ.get("KVTESTBED_WEBUI_SCREENSHOT"):  # for a person checking the page: a PNG of the tab
            tools.call("Emulation.setDeviceMetricsOverride", width=1400, height=2400, deviceScaleFactor=1, mobile=False)
            shot = tools.call("Page.captureScreenshot", format="png")["data"]
            Path(os.environ["KVTESTBED_WEBUI_SCREENSHOT"]).write_bytes(__import__("base64").b64decode(shot))
        # the run stopped by itself after its final audit: Locust's own state says so, then its header
        # bounded generously: Locust stops its users (--stop-timeout 5) and the page polls its state every 2 s; in
        # CI, beside the lab queue, 15 s was once not enough and 60 s for the header once too (state not recorded
        # then: a failure now names Locust's state and its log's end)
        def locust_state() -> str:
            return str(fetch_json(tools, "/stats/requests").get("state", ""))

        try:
            wait_until(lambda: locust_state() == "stopped", 60, 0.5, "Locust's state stopped")
            wait_until(lambda: run_stopped(tools), 30, 0.25, "the header showing STOPPED")
        except AssertionError as exc:
            tail = log_path.read_text(errors="replace").splitlines()[-15:]
            raise AssertionError(f"{exc}; state {locust_state()!r}; locust log ends:\n" + "\n".join(tail)) from None
        stats = fetch_json(tools, "/stats/requests")

        def hdr_tab() -> dict[tuple[str, str], list[str]] | None:
            click_tab(tools, "latency (hdr", prefix=True)
            rows = {(r[0], ""): r for r in table_rows(tools).values()}
            return rows if ("SET expiry", "") in rows else None

        hdr_rows = wait_until(hdr_tab, 10, 0.2, "the HDR tab's SET expiry row")
        locust_figures = fetch_json(tools, "/workload")
        ledger_audit = agents_audit(ledger, RUN_ID, 10_000)
        summaries = {p.name: p.summary() for p in procs}
    finally:
        end_group(locust)
        for p in procs:
            p.kill()

    cell = {key: r[2] for key, r in rows.items()}
    print("\nWEBUI", json.dumps({f"{s}: {f}": v for (s, f), v in cell.items() if s in ("expiry run", "ledger audit")}))
    # the form's values reached the run (the command line said 5000 keys and a 60 s TTL)
    expected = lossless_run_cells(KEYS, TTL_MS)
    assert {key: cell.get(key) for key in expected} == expected
    assert cell[("expiry run", "keys set")] == str(KEYS)
    assert cell[("ledger audit", "complete")] == "yes"
    assert cell[("duplicates", "after dedup (extra processings)")] == "0"
    # both consumers got every key's event; dedup caught the second copy of each: KEYS duplicates before dedup
    assert cell[("duplicates", "before dedup (caught + after)")] == str(KEYS)
    assert [cell[(f"consumer c{i}", "events received")] for i in range(2)] == [str(KEYS)] * 2
    shares = [int(cell[(f"worker w{i}", "processed")]) for i in range(2)]
    assert sum(shares) == KEYS
    # the tab's figures are the agents' own and the ledger's
    assert sum(summaries[f"w{i}"]["processed"] for i in range(2)) == KEYS
    assert ledger_audit["generated"] == KEYS and ledger_audit["lost"] == 0 and ledger_audit["processed_twice"] == 0
    assert stats["state"] == "stopped"
    assert locust_figures["expiry"]["audit"]["generated"] == KEYS and locust_figures["expiry"]["phase"] == "final"
    # the HDR tab: every SET counted, percentiles in whole µs
    hdr_set = hdr_rows[("SET expiry", "")]
    assert hdr_set[1] == str(KEYS) and all(cell.isdigit() for cell in hdr_set[2:7]), hdr_set
    assert "Traceback" not in log_path.read_text(errors="replace")
