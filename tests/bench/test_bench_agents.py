"""Agent benchmarks (`make bench`): observer latency against the bare path, our RESP client against
redis.asyncio, and each agent's RSS.

All figures come from one pytest run on this host, side by side, with the same placement (server on one
CPU, clients on another; see Placement). The observer is judged against its own path (SET -> keyspace
notification) written bare in a few lines of uvloop, measured right before and after it: the floor any
agent code can reach on this host. redis-benchmark's GET p50 and a paced GET from a minimal blocking client
are printed beside it as references. kvagent.clients.resp is measured against redis.asyncio on that same
path. Printed lines start with "BENCH" (run with -s to see them). Library-or-our-own figures that need
extra packages (aiohttp, pydantic, msgspec) come from tests/bench/compare_libraries.py."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hiredis
import pytest
import uvloop

from tests.support.agentproc import AgentProcess
from tests.support.binaries import require
from tests.support.placement import Placement
from tests.support.references import paced_get_us
from tests.support.servers import (
    NatsServer,
    RedisServer,
    build_redis_cluster,
    free_port,
    nats_server_binary,
)

pytestmark = pytest.mark.bench

RSS_LIMIT_MB = 60
OBSERVER_RATE = 1000
OBSERVER_SECONDS = 5
OBSERVER_POLL_US = 500


@pytest.fixture(scope="module")
def nats_srv(bench_dir: Path) -> Iterator[NatsServer]:
    binary = require(nats_server_binary(), "nats-server")
    server = NatsServer(binary, bench_dir / "nats")
    server.start()
    yield server
    server.stop()


def redis_benchmark_get_p50_us(port: int, placement: Placement, requests: int = 50_000) -> float:
    tool = require(shutil.which("redis-benchmark"), "redis-benchmark")
    out = subprocess.run(
        placement.client_argv(
            [tool, "-h", "127.0.0.1", "-p", str(port), "-c", "1", "-t", "get", "-n", str(requests), "--csv"]
        ),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    return float(rows[0]["p50_latency_ms"]) * 1000


class _Reader(asyncio.Protocol):
    """Hands every reply to a callback together with its arrival time (as the observer's connection does)."""

    def __init__(self, on_reply: Callable[[Any, int], None]) -> None:
        self.parser = hiredis.Reader()
        self.on_reply = on_reply
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        self.parser.feed(data)
        while (reply := self.parser.gets()) is not False:
            self.on_reply(reply, now)


async def _bare_notify_path(port: int, rate: int, seconds: float, poll: bool) -> list[int]:
    """The observer's measured path with nothing else: stamp, SET on one connection, keyspace
    notification on another, paced. No agent code.

    `poll=False` waits for the SET's reply in epoll, as the observer does by default (deployed), so the
    notification has to wake the loop; `poll=True` spins on the loop after each write, like the observer's
    poll mode, so it is read by a loop already running. On this VM the two differ by a vCPU wake-up
    (~50 us of 120: 2026-12-02), which is why each observer mode is set against the bare path of its own mode."""
    loop = asyncio.get_running_loop()
    key = b"bench:bare:poll" if poll else b"bench:bare:block"
    samples: list[int] = []
    stamp = 0
    reply: asyncio.Future[Any] = loop.create_future()
    subscribed: asyncio.Future[Any] = loop.create_future()

    def on_notification(message: Any, now: int) -> None:
        if isinstance(message, list) and message[0] == b"message":
            samples.append(now - stamp)
        elif not subscribed.done():
            subscribed.set_result(message)

    def on_write_reply(message: Any, now: int) -> None:
        if not reply.done():
            reply.set_result(message)

    _, listener = await loop.create_connection(lambda: _Reader(on_notification), "127.0.0.1", port)
    _, writer = await loop.create_connection(lambda: _Reader(on_write_reply), "127.0.0.1", port)
    assert listener.transport is not None and writer.transport is not None
    writer.transport.write(hiredis.pack_command((b"CONFIG", b"SET", b"notify-keyspace-events", b"K$")))
    await asyncio.wait_for(reply, 5)
    listener.transport.write(hiredis.pack_command((b"SUBSCRIBE", b"__keyspace@0__:" + key)))
    ack = await asyncio.wait_for(subscribed, 5)  # the confirmation: every later notification is ours
    assert ack[0] == b"subscribe", ack
    next_t = time.monotonic()
    for seq in range(int(rate * seconds)):
        delay = next_t - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        reply = loop.create_future()
        stamp = time.time_ns()
        writer.transport.write(hiredis.pack_command((b"SET", key, b"%d" % seq)))
        if poll:
            # spin on the loop, but never longer than a second per write
            give_up = time.monotonic() + 1.0
            while not reply.done():
                if time.monotonic() > give_up:
                    raise AssertionError(f"bare path: no reply to SET #{seq} within 1 s (redis-server stalled?)")
                await asyncio.sleep(0)
        else:
            try:
                await asyncio.wait_for(reply, 1.0)
            except TimeoutError:
                raise AssertionError(f"bare path: no reply to SET #{seq} within 1 s (redis-server stalled?)") from None
        next_t += 1 / rate
    listener.transport.close()
    writer.transport.close()
    return samples


def bare_notify_one_way_us(
    port: int, poll: bool, rate: int = OBSERVER_RATE, seconds: float = 3.0
) -> tuple[float, float]:
    samples = sorted(uvloop.run(_bare_notify_path(port, rate, seconds, poll)))
    return samples[len(samples) // 2] / 1000, samples[int(len(samples) * 0.99)] / 1000


CLIENT_ROUNDS = 3
CLIENT_PACED_S = 2.0
CLIENT_CLOSED_S = 1.0


class _PathRun:
    """One client's share of the client comparison: the stamp of the write in flight and what came back."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.stamp = 0
        self.waiter: asyncio.Future[None] | None = None
        self.samples: list[int] = []

    def notified(self, received_ns: int) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.samples.append(received_ns - self.stamp)
            self.waiter.set_result(None)

    async def block(
        self, write: Callable[[int], Any], rate: int, paced_s: float, closed_s: float
    ) -> tuple[list[int], float]:
        """(one-way samples at `rate`, then closed-loop round trips per second for `closed_s`).

        Every write waits for its notification (at most 1 s) before the next one, in both phases."""
        loop = asyncio.get_running_loop()

        async def one(seq: int) -> None:
            self.waiter = loop.create_future()
            self.stamp = time.time_ns()
            await write(self.stamp)
            try:
                await asyncio.wait_for(self.waiter, 1.0)
            except TimeoutError:
                raise AssertionError(f"{self.name}: no keyspace notification for write #{seq} within 1 s") from None

        self.samples = []
        next_t = time.monotonic()
        for seq in range(int(rate * paced_s)):
            delay = next_t - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await one(seq)
            next_t += 1 / rate
        paced, self.samples = self.samples, []
        ops, start = 0, time.perf_counter()
        while time.perf_counter() - start < closed_s:  # bounded in time; each pass bounded by one()
            await one(ops)
            ops += 1
        return paced, ops / (time.perf_counter() - start)


async def _compare_clients(port: int, rate: int) -> dict[str, dict[str, Any]]:
    """The observer's path (SET of a stamped value -> keyspace notification to a listener) with kvagent's
    RespConnection and with redis.asyncio (hiredis parser), in alternating blocks on one loop, same server.

    RespConnection stamps arrival in data_received (as the observer does); redis.asyncio's listener stamps
    when `pubsub.listen()` yields the message: each client's own path from socket to the listener's code."""
    import redis.asyncio as aioredis
    from kvagent.clients.resp import RespConnection
    from kvagent.service.config import RedisEndpoint

    loop = asyncio.get_running_loop()
    runs = {"resp": _PathRun("RespConnection"), "redis.asyncio": _PathRun("redis.asyncio")}
    keys = {"resp": "bench:client:resp", "redis.asyncio": "bench:client:redispy"}
    endpoint = RedisEndpoint("127.0.0.1", port)

    resp_writer = await RespConnection.open(endpoint)
    await resp_writer.execute(b"CONFIG", b"SET", b"notify-keyspace-events", b"K$")
    resp_sub = await RespConnection.open(endpoint, on_push=lambda _reply, t: runs["resp"].notified(t))
    await resp_sub.subscribe(f"__keyspace@0__:{keys['resp']}")

    client = aioredis.Redis(host="127.0.0.1", port=port, protocol=2)
    pubsub = client.pubsub()
    subscribed: asyncio.Future[None] = loop.create_future()

    async def listen() -> None:
        async for message in pubsub.listen():
            now = time.time_ns()
            if message["type"] == "message":
                runs["redis.asyncio"].notified(now)
            elif message["type"] == "subscribe" and not subscribed.done():
                subscribed.set_result(None)

    await pubsub.subscribe(f"__keyspace@0__:{keys['redis.asyncio']}")
    listener = asyncio.create_task(listen())
    await asyncio.wait_for(subscribed, 5)

    async def resp_write(stamp: int) -> None:
        await resp_writer.execute(b"SET", keys["resp"], stamp)

    async def redis_write(stamp: int) -> None:
        await client.set(keys["redis.asyncio"], stamp)

    writes = {"resp": resp_write, "redis.asyncio": redis_write}
    results: dict[str, dict[str, Any]] = {name: {"samples": [], "rounds": []} for name in runs}
    try:
        for name in runs:  # warm-up, not recorded
            await runs[name].block(writes[name], rate, 0.3, 0.0)
        for rnd in range(CLIENT_ROUNDS):
            order = list(runs) if rnd % 2 == 0 else list(runs)[::-1]
            for name in order:
                paced, ops = await runs[name].block(writes[name], rate, CLIENT_PACED_S, CLIENT_CLOSED_S)
                results[name]["samples"].extend(paced)
                results[name]["rounds"].append((_pct_us(paced, 0.5), _pct_us(paced, 0.99), ops))
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
        await pubsub.aclose()
        await client.aclose()
        resp_writer.close()
        resp_sub.close()
    return results


def _pct_us(samples_ns: list[int], q: float) -> float:
    ordered = sorted(samples_ns)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] / 1000


def _observer_run(
    redis_srv: RedisServer,
    workdir: Path,
    listeners: list[dict[str, Any]],
    name: str,
    poll_us: int = 0,
    cpus: set[int] | None = None,
) -> dict[str, Any]:
    count = OBSERVER_RATE * OBSERVER_SECONDS
    config = {
        "writer": {
            "endpoint": redis_srv.endpoint(),
            "rate": OBSERVER_RATE,
            "count": count,
            "payload_bytes": 64,
            "poll_after_write_us": poll_us,
        },
        "listeners": listeners,
        "key": f"bench:{name}",
        "drain_s": 0.3,
    }
    agent = AgentProcess("observer", config, workdir, name=name).start(cpus=cpus)
    try:
        # no polling of the agent's summary while it measures: serving it costs the agent CPU time
        time.sleep(OBSERVER_SECONDS)
        agent.wait_for(
            lambda s: (
                s["writer"]["writes"] >= count and all(lst["notifications"] >= count for lst in s["listeners"].values())
            ),
            timeout_s=OBSERVER_SECONDS * 4 + 10,
            what=f"{count} writes observed",
        )
        rss = agent.sample_rss()
        summary = agent.stop()["summary"]
    finally:
        agent.kill()
    summary["rss_bytes_measured"] = rss
    return summary


OBSERVER_VS_BARE_LIMIT = 1.2


def test_observer_one_way_latency_vs_bare_path(redis_srv: RedisServer, bench_dir: Path, placement: Placement) -> None:
    """The asyncio listener alone (the measurement path), blocking and polling, each judged against the bare path
    of its own mode.

    The bare path (the same SET -> keyspace notification in a few lines of uvloop + hiredis, no agent code) is
    measured right before and right after the observer, in this run, with the same placement, in both modes: one
    waiting in epoll between writes (as the observer does by default, deployed), one spinning on the loop after each
    write (as the observer's poll mode). The observer's one-way p50 in its default mode must stay within
    OBSERVER_VS_BARE_LIMIT of the quieter blocking bare run. Until 2026-12-02 the default observer was set against
    the polling bare path, so the ratio held a vCPU wake-up the observer's code cannot avoid (x1.74 then: observer
    121 us, polling bare 70 us, blocking bare 120 us). The poll mode's ratio, redis-benchmark's GET p50 (client and
    server busy back to back) and a paced GET are printed as references.
    """
    endpoint = redis_srv.endpoint()
    listeners = [{"name": "async", "mode": "async", "endpoint": endpoint}]
    cpus = placement.clients
    before = redis_benchmark_get_p50_us(redis_srv.port, placement)
    with placement.as_client():
        paced, paced_p99 = paced_get_us(redis_srv.port)
        bare_block_before = bare_notify_one_way_us(redis_srv.port, poll=False)
        bare_poll_before = bare_notify_one_way_us(redis_srv.port, poll=True)
    blocking = _observer_run(redis_srv, bench_dir, listeners, "obs-block", cpus=cpus)
    polling = _observer_run(redis_srv, bench_dir, listeners, "obs-poll", poll_us=OBSERVER_POLL_US, cpus=cpus)
    with placement.as_client():
        bare_poll_after = bare_notify_one_way_us(redis_srv.port, poll=True)
        bare_block_after = bare_notify_one_way_us(redis_srv.port, poll=False)
    after = redis_benchmark_get_p50_us(redis_srv.port, placement)
    ref = min(before, after)  # the quieter of the two reference runs around the measurements
    bare = min(bare_block_before[0], bare_block_after[0])  # the same for the floor the observer is judged against
    bare_poll = min(bare_poll_before[0], bare_poll_after[0])
    print(f"\nBENCH {placement.describe()}")
    print(f"BENCH redis-benchmark -c 1 -t get p50: {before:.0f} us before, {after:.0f} us after")
    print(
        f"BENCH paced GET round trip (blocking socket, {OBSERVER_RATE}/s) p50: {paced:.0f} us "
        f"(x{paced / ref:.2f}), p99 {paced_p99:.0f} us"
    )
    for label, (p50_before, p99_before), (p50_after, p99_after) in (
        ("blocking", bare_block_before, bare_block_after),
        ("polling", bare_poll_before, bare_poll_after),
    ):
        quieter = min(p50_before, p50_after)
        print(
            f"BENCH bare SET -> keyspace notification path (uvloop, {label}, no agent code, {OBSERVER_RATE}/s) "
            f"one-way p50: {p50_before:.0f} us before, {p50_after:.0f} us after (x{quieter / ref:.2f} of "
            f"redis-benchmark), p99 {p99_before:.0f} / {p99_after:.0f} us"
        )
    for label, run, floor in (("blocking", blocking, bare), (f"poll {OBSERVER_POLL_US} us", polling, bare_poll)):
        lst = run["listeners"]["async"]
        one_way = lst["notify_latency"]
        print(
            f"BENCH observer async listener, {label}, @ {OBSERVER_RATE}/s x {OBSERVER_SECONDS} s: one-way p50 "
            f"{one_way['p50_us']} us (x{one_way['p50_us'] / floor:.2f} of the bare path in its mode, "
            f"x{one_way['p50_us'] / ref:.2f} of redis-benchmark, x{one_way['p50_us'] / paced:.2f} of the paced GET), "
            f"p99 {one_way['p99_us']} us, "
            f"p99.9 {one_way['p999_us']} us; read p50 {lst['read_latency']['p50_us']} us, rtt p50 "
            f"{lst['rtt']['p50_us']} us; coalesced {lst['coalesced']} missed {lst['missed']}; "
            f"rss {run['rss_bytes_measured'] / 2**20:.1f} MB"
        )
        assert lst["missed"] == 0 and lst["duplicates"] == 0, label
        assert one_way["count"] == OBSERVER_RATE * OBSERVER_SECONDS, label
        assert run["rss_bytes_measured"] <= RSS_LIMIT_MB * 2**20, label
    # Judged: the observer as deployed (its default, blocking in epoll between writes). The poll mode is printed
    # beside it: its spin after each write competes with the listener's own reads on one loop and coalesces
    # versions (x1.66 vs x0.98 of the bare path on a quiet VM, 2026-12-01).
    p50 = blocking["listeners"]["async"]["notify_latency"]["p50_us"]
    p50_poll = polling["listeners"]["async"]["notify_latency"]["p50_us"]
    print(
        f"BENCH observer (default, blocking) / bare path (blocking) one-way p50: x{p50 / bare:.2f} (limit "
        f"x{OBSERVER_VS_BARE_LIMIT}); poll mode / bare path (polling) x{p50_poll / bare_poll:.2f}; "
        f"observer / bare path (polling) x{p50 / bare_poll:.2f}; observer / redis-benchmark GET p50: "
        f"x{p50 / ref:.2f} (references)"
    )
    assert p50 <= OBSERVER_VS_BARE_LIMIT * bare, (
        f"observer one-way p50 {p50} us > {OBSERVER_VS_BARE_LIMIT} x the blocking bare path's {bare:.0f} us "
        f"(before {bare_block_before[0]:.0f}, after {bare_block_after[0]:.0f} us)"
    )


def test_resp_connection_vs_redis_asyncio_on_the_observer_path(redis_srv: RedisServer, placement: Placement) -> None:
    """kvagent.clients.resp earns its place only if it beats redis.asyncio (hiredis) on the observer's path.

    Same process, same loop (uvloop), same server, same placement, alternating blocks (see _compare_clients):
    one-way latency of SET -> keyspace notification at the observer's rate, and closed-loop round trips/s.
    """
    import redis.utils

    with placement.as_client():
        results = uvloop.run(_compare_clients(redis_srv.port, OBSERVER_RATE))
    resp, redispy = results["resp"], results["redis.asyncio"]
    print(f"\nBENCH {placement.describe()}; redis-py hiredis parser: {redis.utils.HIREDIS_AVAILABLE}")
    for name, res in results.items():
        ops = [r[2] for r in res["rounds"]]
        print(
            f"BENCH client {name:13s} SET -> notification @ {OBSERVER_RATE}/s, "
            f"{CLIENT_ROUNDS} x {CLIENT_PACED_S:.0f} s: "
            f"one-way p50 {_pct_us(res['samples'], 0.5):.0f} us p99 {_pct_us(res['samples'], 0.99):.0f} us; "
            f"closed loop {statistics.median(ops):.0f} round trips/s (rounds "
            f"{', '.join(f'{o:.0f}' for o in ops)})"
        )
    p50_ratios = [b[0] / a[0] for a, b in zip(resp["rounds"], redispy["rounds"], strict=True)]
    p99_ratios = [b[1] / a[1] for a, b in zip(resp["rounds"], redispy["rounds"], strict=True)]
    ops_ratios = [a[2] / b[2] for a, b in zip(resp["rounds"], redispy["rounds"], strict=True)]
    p50_all = _pct_us(redispy["samples"], 0.5) / _pct_us(resp["samples"], 0.5)
    print(
        f"BENCH client redis.asyncio / RespConnection: one-way p50 x{p50_all:.2f} (rounds "
        f"{', '.join(f'x{r:.2f}' for r in p50_ratios)}), p99 rounds {', '.join(f'x{r:.2f}' for r in p99_ratios)}; "
        f"RespConnection / redis.asyncio throughput rounds {', '.join(f'x{r:.2f}' for r in ops_ratios)}"
    )
    assert all(r > 1.0 for r in p50_ratios), (
        f"RespConnection did not beat redis.asyncio's one-way p50 in every round ({p50_ratios}): "
        "kvagent/clients/resp.py no longer earns its place on the observer's path"
    )


def test_observer_sync_and_async_listeners_together(
    redis_srv: RedisServer, bench_dir: Path, placement: Placement
) -> None:
    """Informational: both listeners in one process share the GIL, so the sync one is slower."""
    endpoint = redis_srv.endpoint()
    listeners = [
        {"name": "sync", "mode": "sync", "endpoint": endpoint},
        {"name": "async", "mode": "async", "endpoint": endpoint},
    ]
    both = _observer_run(redis_srv, bench_dir, listeners, "obs-both", cpus=placement.clients)
    for name, lst in both["listeners"].items():
        print(
            f"\nBENCH observer sync+async @ {OBSERVER_RATE}/s, {name}: one-way p50 "
            f"{lst['notify_latency']['p50_us']} us p99 {lst['notify_latency']['p99_us']} us; "
            f"rtt p50 {lst['rtt']['p50_us']} us; coalesced {lst['coalesced']} missed {lst['missed']}"
        )
        assert lst["missed"] == 0 and lst["duplicates"] == 0, name
    assert both["rss_bytes_measured"] <= RSS_LIMIT_MB * 2**20


@pytest.fixture(scope="module")
def cluster_nodes(bench_dir: Path) -> Iterator[list[dict[str, Any]]]:
    binary, cli = require(shutil.which("redis-server"), "redis-server"), require(shutil.which("redis-cli"), "redis-cli")
    cluster = build_redis_cluster(binary, cli, bench_dir / "cluster")
    yield cluster.startup_nodes()
    cluster.stop()


def _kind_configs(
    redis_srv: RedisServer, nats_srv: NatsServer, cluster: list[dict[str, Any]] | None
) -> dict[str, tuple[str, dict[str, Any], float]]:
    """name -> (kind, config, seconds under load). Other engineers' kinds use their documented fields."""
    ep = redis_srv.endpoint()
    nats = {"servers": [nats_srv.url]}
    expiry = {
        "run_id": "bench",
        "ledger": ep,
        "target": {"mode": "nodes", "nodes": [ep]},
        "nats": nats,
        "stream": {"name": "EXP_bench", "subject": "kvt.expiry.bench", "duplicate_window_s": 60},
    }
    pipeline = {
        "run_id": "bench",
        "nats": nats,
        "store": ep,
        "stream": {"name": "PIPE_bench", "subject": "kvt.pipeline.bench"},
    }
    return {
        "observer": ("observer", {"writer": {"endpoint": ep, "rate": 1000}, "key": "bench:rss"}, 4.0),
        "streams": (
            "streams",
            {"redis": ep, "ingress": {"rate": 1000, "concurrency": 64}, "worker": {"consumers": 4}},
            4.0,
        ),
        "expiry-consumer": ("expiry", {**expiry, "role": "consumer", "consumer": {"name": "c0"}}, 2.0),
        "expiry-worker": ("expiry", {**expiry, "role": "worker", "worker": {"name": "w0"}}, 2.0),
        "expiry-generator": (
            "expiry",
            {**expiry, "role": "generator", "generator": {"count": 5000, "ttl_ms": 1000}},
            4.0,
        ),
        "pipeline-route": ("pipeline", {**pipeline, "role": "route", "route": {"route": "high"}}, 2.0),
        "pipeline-producer": ("pipeline", {**pipeline, "role": "producer", "producer": {"rate": 1000}}, 4.0),
        "pipeline-aggregator": (
            "pipeline",
            {
                **{k: v for k, v in pipeline.items() if k != "nats"},
                "role": "aggregator",
                "aggregator": {"listen_port": free_port()},
            },
            2.0,
        ),
        "hotkeys": (
            "hotkeys",
            {
                "target": {"mode": "cluster", "nodes": cluster or []},
                "hotkeys": {"cycles": 0, "rate": 2000},
            },
            4.0,
        ),
    }


KIND_NAMES = [
    "observer",
    "streams",
    "expiry-consumer",
    "expiry-worker",
    "expiry-generator",
    "pipeline-route",
    "pipeline-producer",
    "pipeline-aggregator",
    "hotkeys",
]


@pytest.mark.parametrize("name", KIND_NAMES)
def test_agent_rss_under_load(
    name: str, redis_srv: RedisServer, nats_srv: NatsServer, bench_dir: Path, request: pytest.FixtureRequest
) -> None:
    from kvagent.main import resolve_kind

    cluster = request.getfixturevalue("cluster_nodes") if name == "hotkeys" else None
    kind, config, seconds = _kind_configs(redis_srv, nats_srv, cluster)[name]
    resolve_kind(kind)  # an unknown or missing kind fails here (UnknownKindError), it is not skipped
    agent = AgentProcess(kind, config, bench_dir / name, name=name)
    try:
        try:
            agent.start()
        except (RuntimeError, TimeoutError) as exc:
            # a benchmark that cannot start its agent has measured nothing: that is a failure, not a skip
            pytest.fail(f"{name} did not start with the bench config: {exc}", pytrace=False)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            agent.sample_rss()
            time.sleep(0.1)
        agent.stop()  # takes a last sample
    finally:
        agent.kill()
    peak = agent.max_rss
    print(f"\nBENCH rss {name}: peak {peak / 2**20:.1f} MB over {seconds:.0f} s, limit {RSS_LIMIT_MB} MB")
    assert peak <= RSS_LIMIT_MB * 2**20, f"{name} RSS {peak / 2**20:.1f} MB > {RSS_LIMIT_MB} MB"
