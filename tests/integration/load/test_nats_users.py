"""The NATS users and the gevent <-> asyncio bridge against a real nats-server with JetStream.

What Locust counts must EQUAL what the server saw: /varz in_msgs deltas for core publish and request/reply, the
stream's own message count for JetStream, a responder's count for external request/reply, and the pipeline route
agents' routed counts for the pipeline events. Each Locust run is headless and a few seconds long.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.api import StreamInfo

from tests.support.binaries import require
from tests.support.locustrun import LocustResult, run_locust
from tests.support.servers import (
    LOOPBACK,
    ManagedProcess,
    NatsServer,
    RedisServer,
    free_port,
    make_test_ca,
    nats_server_binary,
)
from tests.support.wait import settle, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
RUN_S = 3
USERS = 20


def in_msgs(server: NatsServer) -> int:
    with urllib.request.urlopen(f"http://{LOOPBACK}:{server.monitor_port}/varz", timeout=5) as resp:
        return int(json.loads(resp.read())["in_msgs"])


def settled_in_msgs(server: NatsServer, before: int, expected: int) -> int:
    """The in_msgs delta once it reaches `expected` (or after 5 s, as it is then): nats-server adds a read buffer's
    messages to /varz a moment after processing them."""
    return settle(lambda: in_msgs(server) - before, lambda v: v >= expected, 5, 0.05)


def on_nats(url: str, fn: Callable[[Any, Any], Coroutine[Any, Any, Any]], **options: Any) -> Any:
    """fn(nc, js) on a connection of the test process's own (plain asyncio: this process is not gevent's)."""

    async def main() -> Any:
        nc = await nats.connect(url, **options)
        try:
            return await fn(nc, nc.jetstream())
        finally:
            await nc.close()

    return asyncio.run(main())


def counted(result: LocustResult, key: str) -> int:
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.failures() == 0, result.stats
    n = result.requests(key)
    assert n > 0, result.stats
    # the HdrHistograms count every request too (kvload.stats)
    assert result.hdr["requests"][key]["count"] == n
    return n


# -- the bridge under load, with a server ----------------------------------------------------------------------

DRIVER = textwrap.dedent(
    r"""
    import locust  # noqa: F401  (gevent.monkey.patch_all, as in a Locust process)
    import json, sys, time, urllib.request
    import gevent
    from kvload.natsbridge import Bridge, NatsClient

    url, monitor = sys.argv[1], sys.argv[2]
    bridge = Bridge().start()
    client = NatsClient(bridge, {"servers": [url]}).connect()
    responder = NatsClient(bridge, {"servers": [url]}).connect()
    out = {}

    async def serve(nc, _js):
        async def echo(msg):
            await msg.respond(msg.data)
        await nc.subscribe("echo", cb=echo)
        await nc.subscribe("silent")  # takes requests, never answers
        await nc.flush()
    responder.call(serve, 5)

    # 200 greenlets x 25 requests on one connection, each reply checked against its own request
    ok, wrong = [0], []
    def requester(i):
        for j in range(25):
            body = f"{i}-{j}".encode()
            reply = client.request("echo", body, 5)
            if reply.data != body:
                wrong.append((body.decode(), reply.data.decode()))
            ok[0] += 1
    t0 = time.perf_counter()
    done = gevent.joinall([gevent.spawn(requester, i) for i in range(200)], timeout=60)
    out.update(requests=ok[0], wrong=wrong[:5], finished=len(done), seconds=time.perf_counter() - t0)

    # errors arrive as exceptions in the greenlet that made the request
    errors = {}
    def no_responders(i):
        try:
            client.request(f"nobody.{i}", b"x", 2)
            errors[i] = "answered"
        except Exception as exc:
            errors[i] = type(exc).__name__
    def timeout(i):
        try:
            client.request("silent", b"x", 0.3)
            errors[i] = "answered"
        except Exception as exc:
            errors[i] = type(exc).__name__
    gs = [gevent.spawn(no_responders, i) for i in range(50)] + [gevent.spawn(timeout, i) for i in range(50, 100)]
    gevent.joinall(gs, timeout=30)
    out["no_responders"] = sorted({errors.get(i) for i in range(50)}, key=str)
    out["timeouts"] = sorted({errors.get(i) for i in range(50, 100)}, key=str)

    # fire-and-forget publishes: every one reported back once, and on the server after flush()
    def varz():
        with urllib.request.urlopen(f"http://127.0.0.1:{monitor}/varz", timeout=5) as r:
            return json.loads(r.read())["in_msgs"]
    class Sink:
        ok = 0
        failed = 0
        batches = 0
        def published(self, oks, fails):
            Sink.ok += len(oks)
            Sink.failed += len(fails)
            Sink.batches += 1
    sink = Sink()
    before = varz()
    def publisher():
        for _ in range(1000):
            client.publish_nowait("kvt.bridge", b"p" * 64, time.perf_counter_ns(), sink)
            gevent.sleep(0)
    t0 = time.perf_counter()
    gevent.joinall([gevent.spawn(publisher) for _ in range(50)], timeout=60)
    client.flush()
    out.update(published=Sink.ok, publish_failed=Sink.failed, publish_batches=Sink.batches,
               publish_seconds=time.perf_counter() - t0)
    # nats-server may answer the flush's PING before it adds the last read buffer's messages to /varz (seen
    # 43786 of 50000 on a loaded machine): sample until the count arrives or 10 s pass, then report it as is
    deadline = time.monotonic() + 10
    while (received := varz() - before) < Sink.ok and time.monotonic() < deadline:
        gevent.sleep(0.05)
    out["in_msgs"] = received
    client.close()
    responder.close()
    bridge.close()
    print(json.dumps(out))
    """
)


def test_bridge_under_load_with_a_server(tmp_path: Path, nats_server: NatsServer) -> None:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    proc = subprocess.run(
        [sys.executable, str(script), nats_server.url, str(nats_server.monitor_port)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "loadtests")},
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    print("\nBRIDGE", out)
    assert out["finished"] == 200 and out["requests"] == 5000 and out["wrong"] == [], out
    assert out["seconds"] < 60, out
    assert out["no_responders"] == ["NoRespondersError"], out
    assert out["timeouts"] == ["TimeoutError"], out
    assert out["published"] == 50_000 and out["publish_failed"] == 0, out
    assert out["publish_batches"] < 50_000, out  # outcomes come back in batches, not one wake-up each
    assert out["in_msgs"] == 50_000, out


# -- the users, counted against the server ----------------------------------------------------------------------


def test_core_publish_counts_equal_the_servers_in_msgs(tmp_path: Path, nats_server: NatsServer) -> None:
    before = in_msgs(nats_server)
    result = run_locust(
        tmp_path,
        "NatsPublishUser",
        host=nats_server.url,
        users=USERS,
        run_time_s=RUN_S,
        extra=["--kvt-payload-size", "64"],
    )
    n = counted(result, "NATS publish")
    received = settled_in_msgs(nats_server, before, n)
    print(f"\nlocust {n} publishes, server in_msgs {received}")
    assert n == received


def test_request_reply_with_the_internal_responder(tmp_path: Path, nats_server: NatsServer) -> None:
    before = in_msgs(nats_server)
    result = run_locust(tmp_path, "NatsRequestUser", host=nats_server.url, users=USERS, run_time_s=RUN_S)
    n = counted(result, "NATS request")
    received = settled_in_msgs(nats_server, before, 2 * n)
    print(f"\nlocust {n} requests, server in_msgs {received} (requests + replies)")
    assert received == 2 * n


class ExternalResponder:
    """An echo responder in the test process (its own asyncio loop on a thread), counting what it answers."""

    def __init__(self, url: str, subject: str) -> None:
        self.url, self.subject = url, subject
        self.handled = 0
        self.probes = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.nc: Any = None

    async def _start(self) -> None:
        self.nc = await nats.connect(self.url)

        async def echo(msg: Any) -> None:
            if msg.headers and msg.headers.get("Kvt-Probe"):
                self.probes += 1  # preflight's check that something answers: not part of the run
            else:
                self.handled += 1
            await msg.respond(msg.data)

        await self.nc.subscribe(self.subject, cb=echo)
        await self.nc.flush()

    def __enter__(self) -> ExternalResponder:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self.nc.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_request_reply_with_an_external_responder(tmp_path: Path, nats_server: NatsServer) -> None:
    with ExternalResponder(nats_server.url, "kvt.ext") as responder:
        result = run_locust(
            tmp_path,
            "NatsRequestUser",
            host=nats_server.url,
            users=USERS,
            run_time_s=RUN_S,
            extra=["--kvt-nats-responder", "external", "--kvt-nats-request-subject", "kvt.ext"],
        )
        n = counted(result, "NATS request")
    print(f"\nlocust {n} requests, responder answered {responder.handled} (+{responder.probes} probe)")
    assert responder.probes == 1
    assert responder.handled == n


def js_publish_counted(
    tmp_path: Path, server: NatsServer, stream: str, extra: list[str], processes: int | None = None
) -> StreamInfo:
    """A JetStreamPublishUser run into `stream`: Locust's count equals the stream's messages and the master's log
    line; returns the stream's info."""
    result = run_locust(
        tmp_path,
        "JetStreamPublishUser",
        host=server.url,
        users=USERS,
        run_time_s=RUN_S,
        processes=processes,
        extra=extra,
    )
    n = counted(result, "JS publish")
    info = on_nats(server.url, lambda _nc, js: js.stream_info(stream))
    print(f"\nlocust ({processes or 'no'} workers) {n} JS publishes, stream {info.state.messages} messages")
    assert info.state.messages == n
    assert f"JetStream stream {stream} stored {n} messages during the run" in result.stderr
    return info


def test_jetstream_publish_counts_equal_the_streams_messages(tmp_path: Path, nats_server: NatsServer) -> None:
    extra = ["--kvt-js-stream", "LOADTEST", "--kvt-js-subject", "kvt.lt.js", "--kvt-js-storage", "memory"]
    info = js_publish_counted(tmp_path, nats_server, "LOADTEST", extra)
    assert str(getattr(info.config.storage, "value", info.config.storage)) == "memory" and info.config.subjects == [
        "kvt.lt.js"
    ]


def test_two_worker_processes_and_a_master(tmp_path: Path, nats_server: NatsServer) -> None:
    # each worker has its own bridge and connection; the master only checks the target and counts the stream
    js_publish_counted(tmp_path, nats_server, "KVT_LOAD", ["--kvt-js-storage", "memory"], processes=2)


def test_pipeline_events_drive_the_pipeline_route_agents(
    tmp_path: Path, nats_server: NatsServer, redis_server: RedisServer, agents: Callable[..., Any]
) -> None:
    # Locust first: its preflight creates KVT_PIPELINE as the agents would; the routes then bind to it
    started_ns = time.time_ns()
    result = run_locust(
        tmp_path / "locust",
        "PipelineEventUser",
        host=nats_server.url,
        users=5,
        run_time_s=RUN_S,
        extra=["--kvt-pipeline-high-share", "0.3", "--kvt-pipeline-threshold", "500"],
    )
    n = counted(result, "JS pipeline event")

    async def first_and_info(_nc: Any, js: Any) -> tuple[Any, Any]:
        return await js.get_msg("KVT_PIPELINE", 1), await js.stream_info("KVT_PIPELINE")

    first, info = on_nats(nats_server.url, first_and_info)
    assert info.state.messages == n
    assert info.config.duplicate_window == 120 and info.config.max_age == 3600
    body = json.loads(first.data)
    assert sorted(body) == ["amount", "id", "ts_ns"]
    assert re.fullmatch(r"default:locust-.+-\d+-\d+:0", body["id"]), body
    assert first.headers["Nats-Msg-Id"] == body["id"]
    assert started_ns < body["ts_ns"] < time.time_ns() and 0 <= body["amount"] <= 1000

    cfg = {"run_id": "locust", "nats": {"servers": [nats_server.url]}, "store": redis_server.endpoint()}
    routes = {
        r: agents("pipeline", {**cfg, "role": "route", "route": {"route": r, "threshold": 500}}, name=f"route-{r}")
        for r in ("high", "low")
    }

    def routed() -> dict[str, dict[str, Any]] | None:
        s = {r: a.summary() for r, a in routes.items()}
        return s if s["high"]["routed"] + s["low"]["routed"] >= n else None

    s = wait_until(routed, 60, 0.25, "every Locust event routed")
    high, low = s["high"], s["low"]
    print(f"\nlocust {n} events; routed high {high['routed']} low {low['routed']}")
    assert high["routed"] + low["routed"] == n
    assert high["bad"] == low["bad"] == 0 and high["duplicates"] == low["duplicates"] == 0
    assert high["routed"] == low["skipped"] and low["routed"] == high["skipped"]
    assert 0.15 < high["routed"] / n < 0.45  # --kvt-pipeline-high-share 0.3, loosely


# -- credentials and TLS ----------------------------------------------------------------------------------------


@pytest.fixture
def auth_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(
        require(nats_server_binary(), "nats-server"), tmp_path / "auth", users={"kvt": "nats-secret-41"}
    )
    server.start()
    yield server
    server.stop()


def test_user_in_the_url_and_the_password_from_a_file(tmp_path: Path, auth_server: NatsServer) -> None:
    secret = tmp_path / "password"
    secret.write_text("nats-secret-41\n")
    host = f"nats://kvt@{LOOPBACK}:{auth_server.port}"
    result = run_locust(
        tmp_path / "ok",
        "NatsPublishUser",
        host=host,
        users=5,
        run_time_s=2,
        extra=["--kvt-password-file", str(secret)],
    )
    counted(result, "NATS publish")

    secret.write_text("not-the-password-77\n")
    before = in_msgs(auth_server)
    result = run_locust(
        tmp_path / "bad", "NatsPublishUser", host=host, users=5, extra=["--kvt-password-file", str(secret)]
    )
    assert result.refusal() == f"kvload: target {host}: authorization failed (check --kvt-password-file)"
    assert "not-the-password-77" not in result.stderr
    assert in_msgs(auth_server) == before


def test_tls_with_the_testbed_ca(tmp_path: Path) -> None:
    ca = make_test_ca(tmp_path / "ca", "testbed")
    server = NatsServer(require(nats_server_binary(), "nats-server"), tmp_path / "tls", tls=ca)
    server.start()
    try:
        host = f"tls://{LOOPBACK}:{server.port}"
        result = run_locust(
            tmp_path / "ok",
            "NatsRequestUser",
            host=host,
            users=5,
            run_time_s=2,
            extra=["--kvt-tls-ca", str(ca.ca_cert)],
        )
        counted(result, "NATS request")
        other = make_test_ca(tmp_path / "other", "other")
        result = run_locust(
            tmp_path / "bad", "NatsRequestUser", host=host, users=1, extra=["--kvt-tls-ca", str(other.ca_cert)]
        )
        line = result.refusal()
        assert line.startswith(f"kvload: target {host}: TLS failed (") and "check --kvt-tls-ca" in line, line
    finally:
        server.stop()


# -- bad input: one line, exit 2, before any load ---------------------------------------------------------------


def test_an_unreachable_target_is_one_line(tmp_path: Path) -> None:
    port = free_port()
    result = run_locust(tmp_path, "NatsPublishUser", host=f"nats://{LOOPBACK}:{port}", users=1)
    assert result.refusal() == f"kvload: target nats://{LOOPBACK}:{port}: cannot connect (Connection refused)"


def test_jetstream_not_enabled_is_one_line(tmp_path: Path) -> None:
    port = free_port()
    server = ManagedProcess(
        "nats-nojs", [require(nats_server_binary(), "nats-server"), "-a", LOOPBACK, "-p", str(port)], tmp_path, port
    )
    server.start()
    try:
        result = run_locust(tmp_path, "JetStreamPublishUser", host=f"nats://{LOOPBACK}:{port}", users=1)
    finally:
        server.stop()
    assert result.refusal() == f"kvload: target nats://{LOOPBACK}:{port}: JetStream is not enabled on the server"


@pytest.mark.parametrize(
    ("user_class", "extra", "message"),
    [
        ("NatsPublishUser", ["--kvt-payload-size", "-1"], "--kvt-payload-size -1: must be >= 0"),
        ("NatsPublishUser", ["--kvt-payload-size", "2000000"], "--kvt-payload-size 2000000: above the server's"),
        ("NatsRequestUser", ["--kvt-nats-timeout-ms", "soon"], "--kvt-nats-timeout-ms soon: not a number"),
        (
            "NatsRequestUser",
            ["--kvt-nats-responder", "external", "--kvt-nats-request-subject", "nobody.here"],
            "--kvt-nats-responder external: nothing answers requests on nobody.here",
        ),
        ("JetStreamPublishUser", ["--kvt-js-replicas", "9"], "--kvt-js-replicas 9: must be <= 5"),
        ("JetStreamPublishUser", ["--kvt-js-storage", "tape"], "--kvt-js-storage tape: must be file or memory"),
        ("PipelineEventUser", ["--kvt-pipeline-high-share", "2"], "--kvt-pipeline-high-share 2: must be <= 1"),
    ],
)
def test_bad_options_are_one_line_naming_the_option(
    tmp_path: Path, nats_server: NatsServer, user_class: str, extra: list[str], message: str
) -> None:
    result = run_locust(tmp_path, user_class, host=nats_server.url, users=1, extra=extra)
    assert result.refusal().startswith(f"kvload: {message}")


def test_a_password_in_the_url_is_refused_without_echoing_it(tmp_path: Path, nats_server: NatsServer) -> None:
    result = run_locust(
        tmp_path, "NatsPublishUser", host=f"nats://kvt:s3cr3t-in-url@{LOOPBACK}:{nats_server.port}", users=1
    )
    assert result.refusal() == "kvload: --host: put no password in the URL; give it in --kvt-password-file"
    assert "s3cr3t-in-url" not in result.stderr
