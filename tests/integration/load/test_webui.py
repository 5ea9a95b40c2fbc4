"""The web UI as seed 000's page, driven by a real browser: headless Chromium (Debian's) over the DevTools protocol.

A Locust master with its web UI and login on loopback, redis-server (target and ledger), nats-server with JetStream
and the expiry agents (2 consumers, 2 workers). The browser logs in, fills the start form with the workload's
parameters (number of keys, TTL, delay between keys), starts the run, opens the Workload tab and reads its figures
until the final audit is there (generated = the number of keys, lost 0), and sees the run stop by itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from kvagent.workloads.expiry.ledger import Ledger

from tests.support.agentproc import AgentProcess
from tests.support.browser import DevTools, chromium, end_group
from tests.support.locustrun import LOCUSTFILE, locust_binary
from tests.support.servers import LOOPBACK, NatsServer, RedisServer, free_port, wait_port
from tests.support.wait import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

KEYS, TTL_MS, DELAY_MS, USERS = 200, 500, 5, 4
RUN_ID = "webui"
PASSWORD = "kvt-ui-test-password"

@pytest.fixture
def browser(tmp_path: Path) -> Iterator[DevTools]:
    with chromium(tmp_path) as tools:
        yield tools


def expiry_agents(tmp_path: Path, target: RedisServer, ledger: RedisServer, nats: NatsServer) -> list[AgentProcess]:
    cfg = {
        "run_id": RUN_ID,
        "ledger": ledger.endpoint(),
        "target": {"mode": "nodes", "nodes": [target.endpoint()]},
        "nats": {"servers": [nats.url]},
        "stream": {"name": "EXP_WEBUI", "subject": "kvt.expiry.webui", "duplicate_window_s": 60},
    }
    procs = [
        AgentProcess("expiry", {**cfg, "role": "consumer", "consumer": {"name": f"c{i}"}}, tmp_path, name=f"c{i}")
        for i in range(2)
    ] + [
        AgentProcess("expiry", {**cfg, "role": "worker", "worker": {"name": f"w{i}"}}, tmp_path, name=f"w{i}")
        for i in range(2)
    ]
    for p in procs:
        p.start(wait=False)
    for p in procs:
        p.wait_healthy()
    for p in procs[:2]:
        wait_until(lambda p=p: p.summary()["subscriptions"], 10, what=f"{p.name} subscribed")
    return procs


def table(tools: DevTools) -> dict[tuple[str, str], list[str]]:
    """The Workload tab's table: (section, figure) -> the row's cells."""
    rows = tools.js("[...document.querySelectorAll('table tbody tr')].map(tr => [...tr.cells].map(td => td.innerText))")
    return {(r[0], r[1]): r for r in rows or [] if len(r) >= 3}


def test_seed_000_runs_from_the_form_and_the_workload_tab_shows_the_audit(
    tmp_path: Path, server_factory: Any, nats_server: NatsServer, browser: DevTools
) -> None:
    target = server_factory("redis", extra=("--hz", "100"))
    ledger = server_factory("redis")
    procs = expiry_agents(tmp_path / "agents", target, ledger, nats_server)
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
        tools.call("Page.navigate", url=f"http://{LOOPBACK}:{web_port}/")
        wait_until(lambda: tools.js("!!document.querySelector('input[name=password]')"), 20, 0.1, "login page")
        tools.set_input("username", "admin")
        tools.set_input("password", PASSWORD)
        tools.js("document.querySelector('button[type=submit]').click()")
        wait_until(lambda: tools.js("!!document.querySelector('input[name=kvtExpiryKeys]')"), 20, 0.1, "start form")

        start = "[...document.querySelectorAll('button[type=submit]')].find(b => /start/i.test(b.innerText)).click()"
        for name, value in (("userCount", USERS), ("spawnRate", USERS), ("kvtExpiryTtlMs", TTL_MS)):
            tools.set_input(name, str(value))
        # a value that cannot run is answered in the form with one line naming the option; nothing starts
        tools.set_input("kvtExpiryKeys", "many")
        tools.js(start)
        wait_until(lambda: "--kvt-expiry-keys: must be a whole number" in tools.text(), 10, 0.1, "the form's message")
        tools.set_input("kvtExpiryDelayMs", "-1")
        tools.set_input("kvtExpiryKeys", str(KEYS))
        tools.js(start)
        wait_until(lambda: "--kvt-expiry-delay-ms -1: must be >= 0" in tools.text(), 10, 0.1, "the form's message")
        with ledger.client() as c, target.client() as t:
            assert not c.exists(f"kvt:ledger:{{{RUN_ID}}}:deadlines") and t.dbsize() == 0  # no run started
        tools.set_input("kvtExpiryDelayMs", str(DELAY_MS))
        tools.js(start)

        def workload_tab() -> bool:
            return bool(
                tools.js(
                    "(() => { const t = [...document.querySelectorAll('[role=tab]')]"
                    ".find(t => t.innerText.trim().toLowerCase() === 'workload');"
                    " if (t) t.click(); return !!t; })()"
                )
            )

        wait_until(workload_tab, 20, 0.2, "the Workload tab")

        def final_figures() -> dict[tuple[str, str], list[str]] | None:
            rows = table(tools)
            phase = rows.get(("expiry run", "phase"), [""] * 3)[2]
            return rows if phase == "final" and ("ledger audit", "generated") in rows else None

        rows = wait_until(final_figures, 60, 0.5, "the final audit in the Workload tab")
        if os.environ.get("KVTESTBED_WEBUI_SCREENSHOT"):  # for a person checking the page: a PNG of the tab
            tools.call("Emulation.setDeviceMetricsOverride", width=1400, height=2400, deviceScaleFactor=1, mobile=False)
            shot = tools.call("Page.captureScreenshot", format="png")["data"]
            Path(os.environ["KVTESTBED_WEBUI_SCREENSHOT"]).write_bytes(__import__("base64").b64decode(shot))
        # the run stopped by itself after its final audit: Locust's own status says so
        header = "(document.querySelector('header') || document.body).innerText"
        wait_until(lambda: "STOPPED" in str(tools.js(header)).upper(), 15, 0.25, "the run stopped by itself")
        stats = json.loads(tools.js("fetch('/stats/requests').then(r => r.text())"))

        def hdr_tab() -> dict[tuple[str, str], list[str]] | None:
            tools.js(
                "(() => { const t = [...document.querySelectorAll('[role=tab]')]"
                ".find(t => t.innerText.trim().toLowerCase().startsWith('latency (hdr')); if (t) t.click(); })()"
            )
            rows = {(r[0], ""): r for r in (table(tools) or {}).values()}
            return rows if ("SET expiry", "") in rows else None

        hdr_rows = wait_until(hdr_tab, 10, 0.2, "the HDR tab's SET expiry row")
        locust_figures = json.loads(tools.js("fetch('/workload').then(r => r.text())"))
        ledger_audit = _agents_audit(ledger)
        summaries = {p.name: p.summary() for p in procs}
    finally:
        end_group(locust)
        for p in procs:
            p.kill()

    cell = {key: r[2] for key, r in rows.items()}
    print("\nWEBUI", json.dumps({f"{s}: {f}": v for (s, f), v in cell.items() if s in ("expiry run", "ledger audit")}))
    # the form's values reached the run (the command line said 5000 keys and a 60 s TTL)
    assert cell[("expiry run", "keys requested")] == str(KEYS)
    assert cell[("expiry run", "TTL ms")] == str(TTL_MS)
    assert cell[("expiry run", "keys set")] == str(KEYS)
    assert cell[("ledger audit", "generated")] == str(KEYS)
    assert cell[("ledger audit", "consumed (processed keys)")] == str(KEYS)
    assert cell[("ledger audit", "lost")] == "0"
    assert cell[("ledger audit", "processed twice (keys)")] == "0"
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


def _agents_audit(ledger: RedisServer) -> dict[str, Any]:
    async def audit() -> dict[str, Any]:
        client = aioredis.Redis(host=ledger.host, port=ledger.port, decode_responses=True)
        try:
            return (await Ledger(client, RUN_ID).audit(int(time.time() * 1000), 10_000)).as_dict()
        finally:
            await client.aclose()

    return asyncio.run(audit())
