"""Agent benchmarks (`make bench`): observer latency against redis-benchmark, and each agent's RSS.

All figures come from one pytest run on this host, side by side: redis-benchmark's own GET p50 is
measured against the same server right before and after the observer runs, with the same placement
(server on one CPU, clients on another; see Placement). Two more references frame the observer: a
paced GET from a minimal blocking client, and the observer's own path (SET -> keyspace notification)
written bare in a few lines of uvloop, which is the floor any agent code can reach on this host.
Printed lines start with "BENCH" (run with -s to see them).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hiredis
import pytest
import uvloop

from tests.support.agentproc import AgentProcess  # noqa: E402
from tests.support.servers import (  # noqa: E402
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


class Placement:
    """Where the latency benchmark's processes run: the server on one CPU, every client on another.

    That is the deployed shape (server and clients on different hosts), and it gives the reference and
    the observer the same two cross-CPU hops per operation. Left to the scheduler, on a 2-vCPU VM the
    reference alone swings from ~20 us (client and server happen to share a vCPU) to ~850 us (they do
    not, and each vCPU halts between requests), so a ratio against it would be a coin toss.
    KVTESTBED_BENCH_PLACEMENT=none turns pinning off.
    """

    def __init__(self) -> None:
        cpus = sorted(os.sched_getaffinity(0))
        wanted = os.environ.get("KVTESTBED_BENCH_PLACEMENT", "split")
        self.split = wanted == "split" and len(cpus) >= 2 and shutil.which("taskset") is not None
        self.server: set[int] | None = {cpus[0]} if self.split else None
        self.clients: set[int] | None = {cpus[1]} if self.split else None

    def describe(self) -> str:
        if not self.split:
            return "placement: left to the scheduler"
        return f"placement: server on CPU {min(self.server or ())}, clients on CPU {min(self.clients or ())}"

    def server_argv(self, argv: list[str]) -> list[str]:
        return ["taskset", "-c", str(min(self.server))] + argv if self.server else argv

    def client_argv(self, argv: list[str]) -> list[str]:
        return ["taskset", "-c", str(min(self.clients))] + argv if self.clients else argv

    @contextlib.contextmanager
    def as_client(self) -> Iterator[None]:
        """Run this thread on the clients' CPU for the block (for in-process references)."""
        before = os.sched_getaffinity(0)
        if self.clients:
            os.sched_setaffinity(0, self.clients)
        try:
            yield
        finally:
            os.sched_setaffinity(0, before)


@pytest.fixture(scope="module")
def placement() -> Placement:
    return Placement()


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench")


@pytest.fixture(scope="module")
def redis_srv(bench_dir: Path, placement: Placement) -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(binary, bench_dir / "redis")
    server.argv = placement.server_argv(server.argv)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def nats_srv(bench_dir: Path) -> Iterator[NatsServer]:
    binary = nats_server_binary()
    if binary is None:
        pytest.skip("nats-server is not installed")
    server = NatsServer(binary, bench_dir / "nats")
    server.start()
    yield server
    server.stop()


def redis_benchmark_get_p50_us(port: int, placement: Placement, requests: int = 50_000) -> float:
    tool = shutil.which("redis-benchmark")
    if tool is None:
        pytest.skip("redis-benchmark is not installed")
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


def paced_get_us(port: int, rate: int = OBSERVER_RATE, seconds: float = 3.0) -> tuple[float, float]:
    """GET round trips from a minimal blocking client at the observer's pace (sleeping between requests).

    redis-benchmark keeps client and server busy back to back; at 1,000 requests/s both sleep between
    requests and each request pays their wake-ups. This reference shows that cost without any agent code.
    """
    request = b"*2\r\n$3\r\nGET\r\n$13\r\nbench:missing\r\n"
    samples: list[int] = []
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        next_t = time.monotonic()
        for _ in range(int(rate * seconds)):
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            start = time.perf_counter_ns()
            sock.sendall(request)
            reply = sock.recv(64)
            samples.append(time.perf_counter_ns() - start)
            assert reply == b"$-1\r\n", reply
            next_t += 1 / rate
    samples.sort()
    return samples[len(samples) // 2] / 1000, samples[int(len(samples) * 0.99)] / 1000


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


async def _bare_notify_path(port: int, rate: int, seconds: float) -> list[int]:
    """The observer's measured path with nothing else: stamp, SET on one connection, keyspace
    notification on another, paced and polling like the observer in poll mode. No agent code."""
    loop = asyncio.get_running_loop()
    key = b"bench:bare"
    samples: list[int] = []
    stamp = 0
    reply: asyncio.Future[Any] = loop.create_future()

    def on_notification(message: Any, now: int) -> None:
        if isinstance(message, list) and message[0] == b"message":
            samples.append(now - stamp)

    def on_write_reply(message: Any, now: int) -> None:
        if not reply.done():
            reply.set_result(message)

    _, listener = await loop.create_connection(lambda: _Reader(on_notification), "127.0.0.1", port)
    _, writer = await loop.create_connection(lambda: _Reader(on_write_reply), "127.0.0.1", port)
    assert listener.transport is not None and writer.transport is not None
    writer.transport.write(hiredis.pack_command((b"CONFIG", b"SET", b"notify-keyspace-events", b"K$")))
    await asyncio.wait_for(reply, 5)
    listener.transport.write(hiredis.pack_command((b"SUBSCRIBE", b"__keyspace@0__:" + key)))
    await asyncio.sleep(0.2)
    next_t = time.monotonic()
    for seq in range(int(rate * seconds)):
        delay = next_t - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        reply = loop.create_future()
        stamp = time.time_ns()
        writer.transport.write(hiredis.pack_command((b"SET", key, b"%d" % seq)))
        while not reply.done():
            await asyncio.sleep(0)
        next_t += 1 / rate
    listener.transport.close()
    writer.transport.close()
    return samples


def bare_notify_one_way_us(port: int, rate: int = OBSERVER_RATE, seconds: float = 3.0) -> tuple[float, float]:
    samples = sorted(uvloop.run(_bare_notify_path(port, rate, seconds)))
    return samples[len(samples) // 2] / 1000, samples[int(len(samples) * 0.99)] / 1000


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
                s["writer"]["writes"] >= count
                and all(lst["notifications"] >= count for lst in s["listeners"].values())
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


def test_observer_one_way_latency_vs_redis_benchmark(
    redis_srv: RedisServer, bench_dir: Path, placement: Placement
) -> None:
    """The asyncio listener alone (the measurement path), blocking and polling, between two references.

    redis-benchmark keeps client and server busy back to back; the observer writes every 1 ms and, by
    default, sleeps in epoll in between, so each notification also pays a wake-up (large in a VM).
    poll_after_write_us takes the observer's own wake-up out; the target is checked on that mode and
    the blocking figure is printed beside it.
    """
    endpoint = redis_srv.endpoint()
    listeners = [{"name": "async", "mode": "async", "endpoint": endpoint}]
    cpus = placement.clients
    before = redis_benchmark_get_p50_us(redis_srv.port, placement)
    with placement.as_client():
        paced, paced_p99 = paced_get_us(redis_srv.port)
        bare, bare_p99 = bare_notify_one_way_us(redis_srv.port)
    blocking = _observer_run(redis_srv, bench_dir, listeners, "obs-block", cpus=cpus)
    polling = _observer_run(redis_srv, bench_dir, listeners, "obs-poll", poll_us=OBSERVER_POLL_US, cpus=cpus)
    after = redis_benchmark_get_p50_us(redis_srv.port, placement)
    ref = min(before, after)  # the quieter of the two reference runs around the measurements
    print(f"\nBENCH {placement.describe()}")
    print(f"BENCH redis-benchmark -c 1 -t get p50: {before:.0f} us before, {after:.0f} us after")
    print(
        f"BENCH paced GET round trip (blocking socket, {OBSERVER_RATE}/s) p50: {paced:.0f} us "
        f"(x{paced / ref:.2f}), p99 {paced_p99:.0f} us"
    )
    print(
        f"BENCH bare SET -> keyspace notification path (uvloop, polling, no agent code, {OBSERVER_RATE}/s) "
        f"one-way p50: {bare:.0f} us (x{bare / ref:.2f}), p99 {bare_p99:.0f} us"
    )
    for label, run in (("blocking", blocking), (f"poll {OBSERVER_POLL_US} us", polling)):
        lst = run["listeners"]["async"]
        one_way = lst["notify_latency"]
        print(
            f"BENCH observer async listener, {label}, @ {OBSERVER_RATE}/s x {OBSERVER_SECONDS} s: one-way p50 "
            f"{one_way['p50_us']} us (x{one_way['p50_us'] / ref:.2f} of redis-benchmark, "
            f"x{one_way['p50_us'] / paced:.2f} of the paced GET, x{one_way['p50_us'] / bare:.2f} of the bare path), "
            f"p99 {one_way['p99_us']} us, "
            f"p99.9 {one_way['p999_us']} us; read p50 {lst['read_latency']['p50_us']} us, rtt p50 "
            f"{lst['rtt']['p50_us']} us; coalesced {lst['coalesced']} missed {lst['missed']}; "
            f"rss {run['rss_bytes_measured'] / 2**20:.1f} MB"
        )
        assert lst["missed"] == 0 and lst["duplicates"] == 0, label
        assert one_way["count"] == OBSERVER_RATE * OBSERVER_SECONDS, label
        assert run["rss_bytes_measured"] <= RSS_LIMIT_MB * 2**20, label
    one_way = polling["listeners"]["async"]["notify_latency"]
    p50, p99 = one_way["p50_us"], one_way["p99_us"]
    assert p50 <= 2 * ref, f"one-way p50 {p50} us > 2 x redis-benchmark GET p50 {ref:.0f} us"
    assert p99 < 1000, f"one-way p99 {p99} us >= 1 ms"


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
    binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if binary is None or cli is None:
        pytest.skip("redis-server/redis-cli are not installed")
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
    from kvagent.main import UnknownKindError, resolve_kind

    cluster = request.getfixturevalue("cluster_nodes") if name == "hotkeys" else None
    kind, config, seconds = _kind_configs(redis_srv, nats_srv, cluster)[name]
    try:
        resolve_kind(kind)
    except UnknownKindError as exc:
        pytest.skip(f"{name}: {exc}")
    agent = AgentProcess(kind, config, bench_dir / name, name=name)
    try:
        try:
            agent.start()
        except (RuntimeError, TimeoutError) as exc:
            pytest.skip(f"{name} did not start with the bench config: {str(exc).splitlines()[0]}")
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
