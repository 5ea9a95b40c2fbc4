"""Pipeline agents against real nats-server (JetStream) and redis-server, one subprocess per agent."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.support.agentproc import RSS_LIMIT_BYTES, AgentProcess, run_bad_config
from tests.support.servers import LOOPBACK, NatsServer, RedisServer, free_port
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration


def start_pipeline(
    tmp_path: Path, run_id: str, store: RedisServer, nats: NatsServer, producer: dict[str, Any]
) -> tuple[list[AgentProcess], int]:
    cfg = {
        "run_id": run_id,
        "nats": {"servers": [nats.url]},
        "store": store.endpoint(),
        "stream": {"name": f"PIPE_{run_id}", "subject": f"kvt.pipeline.{run_id}"},
    }
    agg_port = free_port()
    routes = [
        AgentProcess(
            "pipeline", {**cfg, "role": "route", "route": {"route": r, "threshold": 500}}, tmp_path, name=f"route-{r}"
        )
        for r in ("high", "low")
    ]
    agg = AgentProcess(
        "pipeline",
        {
            **{k: v for k, v in cfg.items() if k != "nats"},
            "role": "aggregator",
            "aggregator": {"listen_port": agg_port},
        },
        tmp_path,
        name="aggregator",
    )
    for agent in [*routes, agg]:
        agent.start(wait=False)
    for agent in [*routes, agg]:
        agent.wait_healthy()
    prod = AgentProcess("pipeline", {**cfg, "role": "producer", "producer": producer}, tmp_path, name="producer")
    prod.start(wait=False)
    prod.wait_healthy()
    return [*routes, agg, prod], agg_port


def series(port: int, seconds: int = 60) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/series?seconds={seconds}", timeout=5) as resp:
        return json.loads(resp.read())


def finish(agents: list[AgentProcess]) -> dict[str, dict[str, Any]]:
    dumps = {}
    for agent in agents:
        dumps[agent.name] = agent.stop()["summary"]
        assert agent.max_rss <= RSS_LIMIT_BYTES, f"{agent.name} RSS {agent.max_rss / 2**20:.1f} MB"
    return dumps


def test_every_event_routed_to_exactly_one_route(
    tmp_path: Path, redis_server: RedisServer, nats_server: NatsServer
) -> None:
    count = 5000
    agents, agg_port = start_pipeline(
        tmp_path, "once", redis_server, nats_server, {"rate": 1000, "count": count, "name": "p", "seed": 3}
    )
    try:

        def done() -> dict[str, Any] | None:
            for agent in agents:
                agent.sample_rss()
            body = series(agg_port)
            return body if body["audit"]["distinct"] >= count else None

        wait_until(done, 60, 0.5, "all events routed")

        def settled() -> bool:
            """Both routes have seen every event and JetStream holds none unacked for them: nothing is left that
            could be redelivered and routed twice after the audit below."""
            routes = [a.summary() for a in agents[:2]]
            return all(r["routed"] + r["skipped"] >= count and r["pending"] == 0 and r["ack_pending"] == 0
                       for r in routes)  # fmt: skip

        wait_until(settled, 30, 0.2, "every event acked by both routes")
        # every event was stored before this second ended; the series serves complete seconds only
        settled_at = int(time.time())
        body = wait_until(lambda: (b := series(agg_port))["last"] >= settled_at and b, 10, 0.1,
                          "a series whose last complete second is the one every event was acked in")  # fmt: skip
        dumps = finish(agents)
    finally:
        for agent in agents:
            agent.kill()

    audit = body["audit"]
    assert audit["routed_twice"] == 0
    assert audit["distinct"] == count
    assert audit["per_route"]["high"] + audit["per_route"]["low"] == count
    high, low = dumps["route-high"], dumps["route-low"]
    # Each route saw every event and took exactly the others' leftovers.
    assert high["routed"] + high["skipped"] >= count and low["routed"] + low["skipped"] >= count
    assert high["routed"] == low["skipped"] and low["routed"] == high["skipped"]
    assert dumps["producer"]["published"] == count
    # The per-second series adds up to the routed totals.
    per_route_series = {r: sum(p["n"] for p in s.values()) for r, s in body["series"].items()}
    assert per_route_series == audit["per_route"]
    figures = {
        "per_route": audit["per_route"],
        "e2e_high_p50_ms": high["e2e"]["route=high"]["p50_us"] / 1000,
        "e2e_high_p99_ms": high["e2e"]["route=high"]["p99_us"] / 1000,
        "e2e_low_p50_ms": low["e2e"]["route=low"]["p50_us"] / 1000,
        "e2e_low_p99_ms": low["e2e"]["route=low"]["p99_us"] / 1000,
        "pending_at_end": {"high": high["pending"], "low": low["pending"]},
        "rss_mb": {a.name: round(a.max_rss / 2**20, 1) for a in agents},
    }
    print("PIPELINE-FIGURES", json.dumps(figures))


def test_pipeline_resumes_after_restarts(tmp_path: Path, redis_server: RedisServer, nats_server: NatsServer) -> None:
    count = 6000
    agents, agg_port = start_pipeline(
        tmp_path, "resume", redis_server, nats_server, {"rate": 1000, "count": count, "name": "p"}
    )
    try:

        def published() -> int:
            return int(agents[-1].summary().get("published", 0))

        # each restart mid-run (6,000 events at 1,000/s): after some events went through, before the producer ends
        wait_until(lambda: published() >= 1000, 30, 0.05, "1,000 events published before the NATS restart")
        nats_server.restart(down_s=0.5)  # the stream is on disk: it survives
        after_nats = published()
        wait_until(lambda: published() >= after_nats + 500, 30, 0.05, "publishing again after the NATS restart")
        redis_server.restart(down_s=0.5)  # no persistence: ledger and series so far are gone
        wait_until(lambda: all(a.proc and a.proc.poll() is None for a in agents), 5, what="agents alive")
        dumps_live = wait_until(lambda: (s := agents[-1].summary())["done"] and s, 60, 0.5, "producer done")
        # Everything still in the stream after the store restart gets routed again into the empty store.
        body = wait_until(
            lambda: (
                (b := series(agg_port))["audit"]["distinct"] > 0
                and all(a.summary().get("pending", 0) == 0 for a in agents[:2])
                and b
            ),
            60,
            0.5,
            "routes drained",
        )
        with redis_server.client(socket_timeout=2, decode_responses=True) as c:
            ids = c.sunion([f"kvt:pipe:{{resume}}:ids:{r}" for r in ("high", "low")])
        dumps = finish(agents)
    finally:
        for agent in agents:
            agent.kill()
    assert dumps_live["published"] == count
    assert dumps["producer"]["nats"]["disconnections"] >= 1
    for route in ("route-high", "route-low"):
        assert dumps[route]["nats"]["disconnections"] >= 1
        assert dumps[route]["store"]["disconnections"] >= 1
    assert body["audit"]["routed_twice"] == 0
    # The last 1.5 s of events, produced well after both restarts, are all in the (fresh) ledger.
    seqs = {int(i.rsplit(":", 1)[1]) for i in ids}
    assert set(range(count - 1500, count)) <= seqs
    print("PIPELINE-RESUME", json.dumps(body["audit"]))


def test_a_second_run_on_the_same_stream_counts_only_its_own_events(
    tmp_path: Path, redis_server: RedisServer, nats_server: NatsServer
) -> None:
    """A stream keeps an hour of events: run b's routes must not store run a's. With a durable of their own that
    starts at new events (what the scenarios configure) they never see them; a durable that starts at all sees run
    a's events and, with only_run, acknowledges them as foreign without storing any."""
    stream = {"name": "PIPE_SHARED", "subject": "kvt.pipeline.shared"}
    base = {"nats": {"servers": [nats_server.url]}, "store": redis_server.endpoint(), "stream": stream}

    def agent(name: str, run_id: str, role: str, **extra: Any) -> AgentProcess:
        return AgentProcess("pipeline", {**base, "run_id": run_id, "role": role, **extra}, tmp_path, name=name)

    first = agent("producer-a", "a", "producer", producer={"rate": 1000, "count": 300, "name": "p"})
    first.start()
    wait_until(lambda: first.summary()["done"], 30, 0.2, "run a published")
    first.stop()
    new_route = agent("route-new", "b", "route", route={"route": "high", "threshold": -1, "durable": "high-b-new",
                                                        "deliver": "new", "inactive_threshold_s": 60,
                                                        "only_run": True})
    all_route = agent("route-all", "b", "route", route={"route": "low", "threshold": 2000, "durable": "low-b-all",
                                                        "only_run": True})
    agents = [new_route, all_route]
    try:
        for a in agents:
            a.start()
        producer = agent("producer-b", "b", "producer", producer={"rate": 1000, "count": 200, "name": "p"})
        agents.append(producer)
        producer.start()
        wait_until(lambda: all(a.summary().get("routed") == 200 for a in agents[:2]), 30, 0.2, "run b routed")
        dumps = {a.name: a.stop()["summary"] for a in agents}
    finally:
        for a in agents:
            a.kill()
    assert (dumps["route-new"]["routed"], dumps["route-new"]["foreign"]) == (200, 0)
    assert (dumps["route-all"]["routed"], dumps["route-all"]["foreign"]) == (200, 300)
    with redis_server.client(socket_timeout=2, decode_responses=True) as c:
        assert c.scard("kvt:pipe:{b}:ids:high") == 200 and c.scard("kvt:pipe:{b}:ids:low") == 200
        assert not c.exists("kvt:pipe:{a}:ids:high", "kvt:pipe:{a}:ids:low")


def test_bad_input_exits_2(tmp_path: Path, redis_server: RedisServer, nats_server: NatsServer) -> None:
    good = {
        "run_id": "bad",
        "nats": {"servers": [nats_server.url]},
        "store": redis_server.endpoint(),
        "service": {"metrics_port": 0},
    }
    cases = {
        "negative rate": {**good, "role": "producer", "producer": {"rate": -1}},
        "unknown route": {**good, "role": "route", "route": {"route": "medium"}},
        "unknown key": {**good, "role": "route", "extra": True},
        "unreachable nats": {**good, "role": "producer", "nats": {"servers": ["nats://127.0.0.1:1"]}},
        "unreachable store": {**good, "role": "aggregator", "store": {"host": "127.0.0.1", "port": 1}},
    }
    for what, config in cases.items():
        code, err = run_bad_config("pipeline", config, tmp_path)
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, f"{what}: exit {code}: {err}"
