"""kvload's workload users headless against real redis-server, nats-server (JetStream) and real agents.

What Locust counts must equal what the agents count: the streams agent's workers answer every request of
StreamsDirectUser, StreamsWorkerUser answers every request of the streams agent's ingress, an observer listener sees
every write of ObserverWriteUser, and the expiry agents' ledger audit (kvagent's own Ledger.audit) counts every key
of ExpiryKeysUser as generated and processed once, none lost.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.expiry_agents import agents_audit, start_expiry_agents
from tests.support.locustrun import run_locust
from tests.support.servers import NatsServer, RedisServer, free_port
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration


def url(server: RedisServer) -> str:
    return f"redis://{server.host}:{server.port}"


def test_streams_direct_requests_are_answered_by_the_agents_workers(
    tmp_path: Path, redis_server: RedisServer, agents: Any
) -> None:
    agent = agents(
        "streams", {"redis": redis_server.endpoint(), "ingress": {"enabled": False}, "worker": {"consumers": 2}}
    )
    result = run_locust(tmp_path / "locust", "StreamsDirectUser", host=url(redis_server), users=5, run_time_s=4)
    assert result.returncode == 0, result.stderr[-2000:]
    requests = result.requests("XADD streams")
    summary = agent.wait_for(lambda s: s["processed"] >= requests, 10, "every request processed")
    with redis_server.client() as c:
        in_stream = c.xlen("kvt:streams:req")
        leftovers = c.keys("kvt:streams:resp:locust-*")
    print(
        f"\nSTREAMS-DIRECT requests {requests}, agent processed {summary['processed']}, p50 {_p50(result, 'XADD')} us"
    )
    assert requests >= 100 and result.failures() == 0
    # Locust's users finish the request in hand when the run ends (--stop-timeout), so nothing is left half-counted
    assert summary["processed"] == requests == in_stream
    assert summary["worker_errors"] == 0 and summary["malformed"] == 0
    assert not leftovers  # each user deleted its response stream at stop


def test_streams_worker_user_answers_the_agents_ingress(tmp_path: Path, redis_server: RedisServer, agents: Any) -> None:
    n = 300
    # The ingress waits long enough for Locust to start (no retry, so no request is sent twice) and its own
    # workers are off: only Locust answers.
    agent = agents(
        "streams",
        {
            "redis": redis_server.endpoint(),
            "ingress": {
                "mode": "direct",
                "rate": 150,
                "requests": n,
                "timeout_s": 30,
                "retries": 0,
                "concurrency": 400,
            },
            "worker": {"enabled": False},
        },
    )
    result = run_locust(tmp_path / "locust", "StreamsWorkerUser", host=url(redis_server), users=2, run_time_s=6)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = agent.wait_for(lambda s: s["completed"] + s["lost"] >= n, 10, "every request answered")
    print(f"\nSTREAMS-WORKER answered {result.requests('XREADGROUP streams')}, agent completed {summary['completed']}")
    assert summary["completed"] == n and summary["lost"] == 0 and summary["late_responses"] == 0
    assert result.requests("XREADGROUP streams") == n and result.failures() == 0


def test_observer_listener_counts_every_locust_write(tmp_path: Path, redis_server: RedisServer, agents: Any) -> None:
    agent = agents(
        "observer",
        {
            "key": "kvt:observer:locust",
            "writer": {"endpoint": redis_server.endpoint(), "enabled": False},
            "listeners": [{"name": "async", "mode": "async", "endpoint": redis_server.endpoint(), "ack": False}],
        },
    )
    channel = "__keyspace@0__:kvt:observer:locust"
    with redis_server.client() as c:
        wait_until(lambda: c.pubsub_numsub(channel)[0][1] >= 1, 10, 0.05, "listener subscribed")
    result = run_locust(
        tmp_path / "locust",
        "ObserverWriteUser",
        host=url(redis_server),
        users=1,
        run_time_s=3,
        extra=["--kvt-observer-keys", "kvt:observer:locust", "--kvt-rate", "constant:rate=300,for=3"],
    )
    assert result.returncode == 0, result.stderr[-2000:]
    writes = result.requests("SET observer")

    def caught_up(s: dict[str, Any]) -> bool:
        return s["listeners"]["async"]["notifications"] >= writes

    listener = agent.wait_for(caught_up, 10, "listener caught up")["listeners"]["async"]
    print(
        f"\nOBSERVER writes {writes}, notifications {listener['notifications']}, missed {listener['missed']}, "
        f"one-way p50 {listener['notify_latency'].get('p50_us')} us"
    )
    assert writes >= 300 and result.failures() == 0
    assert listener["notifications"] == writes and listener["missed"] == 0 and listener["duplicates"] == 0
    assert listener["unreadable"] == 0  # every value parsed in the observer's format
    assert listener["notify_latency"]["count"] == writes  # a one-way latency for every Locust write


def test_expiry_keys_are_audited_by_the_agents_ledger(
    tmp_path: Path, server_factory: Any, nats_server: NatsServer
) -> None:
    n, grace_ms, run_id = 300, 10_000, "locust-users"
    target = server_factory("redis", extra=("--hz", "100"))
    ledger = server_factory("redis")
    procs = start_expiry_agents(tmp_path / "agents", run_id, target, ledger, nats_server)
    port = free_port()
    try:
        result = run_locust(
            tmp_path / "locust",
            "ExpiryKeysUser",
            host=url(target),
            users=4,
            processes=2,  # two worker processes share the N tickets; the master audits and ends the run
            run_time_s=40,  # an upper bound: the run ends itself after its final audit
            extra=[
                *("--kvt-expiry-keys", str(n), "--kvt-expiry-ttl-ms", "500", "--kvt-expiry-delay-ms", "2"),
                *("--kvt-expiry-run-id", run_id, "--kvt-expiry-ledger", url(ledger)),
                *("--kvt-expiry-grace-ms", str(grace_ms)),
                # a port of its own: Locust's default 5557 may be another run's master (its workers would join it)
                *("--master-bind-host", "127.0.0.1", "--master-bind-port", str(port), "--master-port", str(port)),
            ],
        )
        assert result.returncode == 0, result.stderr[-2000:]
        audit = wait_until(
            lambda: (a := agents_audit(ledger, run_id, grace_ms))["complete"] and a, 30, 0.5, "agents' audit complete"
        )
        summaries = [p.summary() for p in procs]
    finally:
        for p in procs:
            p.kill()
    final = _final_audit(result.stderr)
    print(
        f"\nEXPIRY locust {result.requests('SET expiry')} keys; agents' audit {_brief(audit)}; locust's {_brief(final)}"
    )
    assert result.requests("SET expiry") == n and result.failures() == 0
    assert audit["generated"] == n and audit["processed_keys"] == n
    assert audit["lost"] == 0 and audit["processed_twice"] == 0 and audit["unknown_processed"] == 0
    # Locust's own audit of its run (what the Workload tab shows) agrees with the agents' code
    for figure in ("generated", "processed_keys", "lost", "processed_twice", "unknown_processed", "pending"):
        assert final[figure] == audit[figure], figure
    assert final["per_worker"] == audit["per_worker"]
    # both consumers saw every key; the store dedup let one copy of each through
    consumers = [s for s in summaries if s["role"] == "consumer"]
    assert [c["received"] for c in consumers] == [n, n]
    assert sum(c["published"] for c in consumers) == n and sum(c["suppressed"] for c in consumers) == n
    with target.client() as c:
        assert c.dbsize() == 0  # every key expired


def test_bad_input_is_one_line_before_any_load(tmp_path: Path, server_factory: Any) -> None:
    server = server_factory("redis", password="right-password")
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password\n")
    right = tmp_path / "password"
    right.write_text("right-password\n")
    host = url(server)
    cases = [
        ("ExpiryKeysUser", host, ["--kvt-expiry-keys", "0"], "--kvt-expiry-keys 0: must be"),
        ("ExpiryKeysUser", host, ["--kvt-expiry-run-id", "a:b"], "--kvt-expiry-run-id: the expiry agents' run_id"),
        ("ExpiryKeysUser", host, ["--kvt-expiry-ledger", "http://x"], "--kvt-expiry-ledger: use redis://"),
        ("ExpiryKeysUser", host, ["--kvt-expiry-ledger", "redis://127.0.0.1:1"], "127.0.0.1:1: unreachable"),
        ("ExpiryKeysUser", host, ["--kvt-rate", "constant:rate=10,for=1"], "--kvt-expiry-delay-ms 10: set it to 0"),
        ("ExpiryKeysUser", host, ["--kvt-agents", "ftp://x"], "--kvt-agents: give agent HTTP base URLs"),
        ("ExpiryKeysUser", "http://127.0.0.1:1", [], "--host: use redis://host:port"),
        ("StreamsDirectUser", host, ["--kvt-streams-timeout-ms", "0"], "--kvt-streams-timeout-ms 0: must be >= 1"),
        ("ObserverWriteUser", host, [], "authentication failed"),  # no password file for a protected server
        ("StreamsWorkerUser", host, ["--kvt-password-file", str(wrong)], "authentication failed"),
    ]
    for user, target, extra, expected in cases:
        if "--kvt-password-file" not in extra and user.startswith("Expiry"):
            extra = [*extra, "--kvt-password-file", str(right)]
        result = run_locust(tmp_path / "bad", user, host=target, users=1, run_time_s=5, extra=extra)
        assert expected in result.refusal(), (user, extra, result.stderr[-1000:])
        assert "right-password" not in result.stderr and "not-the-password" not in result.stderr  # never a secret
    with server.client() as c:
        assert c.dbsize() == 0  # nothing was sent


def _final_audit(stderr: str) -> dict[str, Any]:
    marker = "expiry audit (final): "
    lines = [line for line in stderr.splitlines() if marker in line]
    assert len(lines) == 1, stderr[-2000:]
    return json.loads(lines[0].split(marker, 1)[1])


def _brief(audit: dict[str, Any]) -> str:
    return json.dumps({k: audit.get(k) for k in ("generated", "processed_keys", "lost", "processed_twice", "pending")})


def _p50(result: Any, request_type: str) -> Any:
    for key, value in result.hdr.get("requests", {}).items():
        if key.startswith(request_type):
            return value.get("p50_us")
    return None
