"""streams against real servers: HTTP round trips, no loss when a worker dies, resume after a restart."""

from __future__ import annotations

import json
import urllib.request
from collections import Counter
from typing import Any

import pytest

from tests.support.servers import free_port, wait_port

pytestmark = pytest.mark.integration

STREAMS = {"request_stream": "t:req", "response_prefix": "t:resp:", "group": "g"}


def _cfg(server: Any, ingress: dict[str, Any], worker: dict[str, Any]) -> dict[str, Any]:
    return {"redis": server.endpoint(), "streams": STREAMS, "ingress": ingress, "worker": worker}


def test_http_ingress_round_trip(kv_server, agents) -> None:
    port = free_port()
    agent = agents(
        "streams", _cfg(kv_server, {"mode": "http", "http_port": port, "timeout_s": 2.0}, {"consumers": 2})
    )
    # the agent is ready once its metrics answer; its ingress listener may open a moment later (a loaded CI
    # machine refused the first request)
    wait_port(port, timeout_s=30)
    answered_by: Counter[str] = Counter()
    for _ in range(50):
        req = urllib.request.Request(f"http://127.0.0.1:{port}/request", data=b"hello", method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200
            body = json.loads(resp.read())
        assert body["status"] == "ok" and body["attempts"] == 1 and body["rtt_us"] > 0
        answered_by[body["worker"]] += 1
    summary = agent.stop()["summary"]
    assert summary["completed"] == 50 and summary["lost"] == 0 and summary["timed_out"] == 0
    assert summary["processed"] == 50 and summary["request_rtt"]["count"] == 50
    # `consumers: 2` means exactly the group members <instance>-0 and <instance>-1, and both served: Redis
    # hands each new entry to the consumer that has been blocked longest, so sequential requests alternate.
    instance = summary["instance"]
    assert set(answered_by) == {f"{instance}-0", f"{instance}-1"}, answered_by
    assert min(answered_by.values()) >= 10 and sum(answered_by.values()) == 50, answered_by
    with kv_server.client() as c:
        members = {m["name"].decode(): int(m["pending"]) for m in c.xinfo_consumers("t:req", "g")}
        pending = sum(int(g["pending"]) for g in c.xinfo_groups("t:req"))
    # The claimer joins the group too once its first XAUTOCLAIM ran (that creates it); nothing is left pending.
    members.pop(f"{instance}-claimer", None)
    assert members == {f"{instance}-0": 0, f"{instance}-1": 0}, members
    assert pending == 0


def test_no_request_lost_when_a_worker_is_killed(redis_server, agents) -> None:
    total = 600
    worker = {"consumers": 2, "process_ms": 20, "batch": 8, "claim_idle_ms": 500, "claim_interval_s": 0.2}
    off = {"enabled": False}
    victim = agents("streams", _cfg(redis_server, off, worker), name="victim")
    survivor = agents("streams", _cfg(redis_server, off, worker), name="survivor")
    ingress = agents(
        "streams",
        _cfg(
            redis_server,
            # The breaker is not under test here: a threshold this high keeps it closed.
            {
                "rate": 150,
                "requests": total,
                "timeout_s": 1.5,
                "retries": 5,
                "breaker": {"failure_threshold": 1000},
            },
            {"enabled": False},
        ),
        name="ingress",
    )
    ingress.wait_for(lambda s: s["completed"] >= 150, timeout_s=20, what="150 requests completed")
    victim_pid = victim.proc.pid
    victim.kill()  # SIGKILL mid-run: whatever it had read but not acknowledged stays in its PEL
    with redis_server.client() as c:
        consumers = c.xinfo_consumers("t:req", "g")
    orphaned = sum(int(x["pending"]) for x in consumers if f"-{victim_pid}-" in x["name"].decode())
    done = ingress.wait_for(
        lambda s: s["issued_all"] and s["in_flight"] == 0, timeout_s=40, what="every request finished"
    )
    assert done["completed"] == total, done
    assert done["lost"] == 0 and done["rejected"] == 0, done
    survived = survivor.wait_for(lambda s: s["reclaimed"] >= orphaned, timeout_s=10, what="orphans reclaimed")
    ingress_summary = ingress.stop()["summary"]
    survivor_summary = survivor.stop()["summary"]
    assert orphaned > 0, "the victim held no pending entries when killed; the reclaim path went untested"
    assert survived["reclaimed"] >= orphaned
    assert ingress_summary["lost"] == 0 and ingress_summary["completed"] == total
    assert survivor_summary["pending_entries"] == 0


def test_resumes_after_server_restart(redis_server, agents) -> None:
    agent = agents(
        "streams",
        _cfg(
            redis_server,
            {
                "rate": 100,
                "timeout_s": 0.5,
                "retries": 6,
                "backoff_cap_s": 0.5,
                "breaker": {"failure_threshold": 3, "reset_timeout_s": 0.5},
            },
            {"consumers": 2, "claim_idle_ms": 1000},
        ),
    )
    before = agent.wait_for(lambda s: s["completed"] >= 50, timeout_s=15, what="50 requests completed")
    redis_server.restart(down_s=0.5)  # SIGKILL; no persistence: streams and the group are gone
    after = agent.wait_for(
        lambda s: s["disconnections"] >= 1 and s["completed"] >= before["completed"] + 100,
        timeout_s=25,
        what="requests completing again after the restart",
    )
    summary = agent.stop()["summary"]
    assert after["disconnected_seconds"] > 0
    assert summary["completed"] >= after["completed"]
    assert summary["breaker_state"] in ("closed", "half_open")


def test_follows_the_master_sentinel_names(sentinel_set, agents) -> None:
    """SIGKILL of the primary: with `sentinel` set, ingress and workers reconnect to the promoted replica
    and requests complete again, none lost when the retry budget outlasts the failover."""
    group = sentinel_set()
    replica = group.replica
    config = _cfg(
        group.primary,
        {
            "rate": 100,
            "requests": 2000,
            # a retry budget (~14 s on average, full jitter) well beyond the ~2 s failover, even under load
            "timeout_s": 0.5,
            "retries": 16,
            "backoff_base_s": 0.25,
            "backoff_cap_s": 2.0,
            "breaker": {"failure_threshold": 1000},
        },
        {"consumers": 2, "claim_idle_ms": 1000},
    )
    config["sentinel"] = {"master_name": "kvt", "sentinels": [group.sentinel.endpoint()]}
    agent = agents("streams", config)
    before = agent.wait_for(lambda s: s["completed"] >= 100, timeout_s=20, what="100 requests completed")
    promoted_s = group.kill_primary()
    after = agent.wait_for(
        lambda s: s["completed"] >= before["completed"] + 300,
        timeout_s=30,
        what="requests completing on the promoted replica",
    )
    summary = agent.stop()["summary"]
    with replica.client() as c:
        assert c.info("replication")["role"] == "master"
        assert c.xinfo_groups("t:req")[0]["name"] == b"g"  # the workers read from the new master
    assert after["disconnections"] >= 1 and after["disconnected_seconds"] > 0
    # Requests sent to the dead primary (or written there and never replicated) were re-sent with the same
    # id to the promoted replica: none lost.
    assert summary["in_flight"] == 0 and summary["lost"] == 0 and summary["rejected"] == 0, summary
    assert summary["completed"] == summary["requests"], summary
    print(
        "STREAMS-SENTINEL",
        json.dumps({"promotion_s": round(promoted_s, 2), **{k: summary[k] for k in ("requests", "completed", "lost")}}),
    )
