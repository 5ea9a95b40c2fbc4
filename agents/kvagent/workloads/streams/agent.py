"""streams: request/response over Redis Streams with a consumer group, retries and a circuit breaker.

ingress: XADD {id, reply, t, attempt, payload} to the request stream (MAXLEN ~), then wait for a
response with that correlation id on its own response stream; on timeout or error it retries with
exponential backoff (the same id, so whichever copy is answered first completes the request)
behind a circuit breaker. Driven over HTTP (POST /request, for Locust) or directly at a set rate.

workers: XREADGROUP from the group, process, XADD the response + XACK in one round trip, and
periodically XAUTOCLAIM entries idle longer than claim_idle_ms (their consumer died) and process
them too. A request is "lost" only when every attempt timed out or failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import redis
import redis.asyncio as aioredis
from prometheus_client import Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from kvagent.clients.connect import (
    REDIS_CONNECTION_ERRORS,
    Backoff,
    ConnectError,
    ConnectionTracker,
    connect_redis,
    redis_kwargs,
)
from kvagent.clients.sentinel import SentinelSettings, sentinel_manager
from kvagent.service.breaker import BreakerState, CircuitBreaker, Permit
from kvagent.service.config import ConfigError, RedisEndpoint, ServiceConfig
from kvagent.service.httpserver import HttpServer, Request, Response
from kvagent.service.metrics import LatencyMetric
from kvagent.service.shell import AgentBase

log = logging.getLogger("kvagent.workloads.streams.agent")


@dataclass
class StreamNames:
    request_stream: str = "kvt:streams:req"
    response_prefix: str = "kvt:streams:resp:"
    group: str = "kvt-workers"
    maxlen: int = 100_000  # MAXLEN ~ on the request stream
    response_maxlen: int = 10_000

    def __post_init__(self) -> None:
        if self.maxlen < 1 or self.response_maxlen < 1:
            raise ConfigError("maxlen and response_maxlen must be >= 1")


@dataclass
class BreakerConfig:
    failure_threshold: int = 5
    reset_timeout_s: float = 2.0

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.reset_timeout_s <= 0:
            raise ConfigError("failure_threshold must be >= 1 and reset_timeout_s > 0")


@dataclass
class IngressConfig:
    enabled: bool = True
    mode: Literal["http", "direct"] = "direct"
    http_host: str = "127.0.0.1"
    http_port: int = 8480
    rate: float = 100.0  # direct mode: requests/s
    requests: int = 0  # direct mode: stop issuing after this many; 0 = until stopped
    concurrency: int = 64
    timeout_s: float = 2.0  # per attempt
    retries: int = 3
    backoff_base_s: float = 0.05
    backoff_cap_s: float = 1.0
    payload_bytes: int = 64
    breaker: BreakerConfig = field(default_factory=BreakerConfig)

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise ConfigError("rate must be > 0 requests/s")
        if self.requests < 0 or self.retries < 0 or self.payload_bytes < 0:
            raise ConfigError("requests, retries and payload_bytes must be >= 0")
        if self.concurrency < 1 or self.timeout_s <= 0:
            raise ConfigError("concurrency must be >= 1 and timeout_s > 0")
        if not 0 < self.backoff_base_s <= self.backoff_cap_s:
            raise ConfigError("need 0 < backoff_base_s <= backoff_cap_s")
        if not 0 <= self.http_port < 65536:
            raise ConfigError("http_port must be 0..65535")


@dataclass
class WorkerConfig:
    enabled: bool = True
    consumers: int = 2
    batch: int = 16
    block_ms: int = 500
    process_ms: float = 0.0  # simulated work per request
    claim_idle_ms: int = 2000
    claim_interval_s: float = 0.5

    def __post_init__(self) -> None:
        if self.consumers < 1 or self.batch < 1 or self.block_ms < 1:
            raise ConfigError("consumers, batch and block_ms must be >= 1")
        if self.process_ms < 0 or self.claim_idle_ms < 1 or self.claim_interval_s <= 0:
            raise ConfigError("process_ms must be >= 0, claim_idle_ms >= 1, claim_interval_s > 0")


@dataclass
class StreamsConfig:
    # With ``sentinel`` set, ``redis`` gives the credentials, TLS and db; the master's address comes from
    # the Sentinels.
    redis: RedisEndpoint
    sentinel: SentinelSettings | None = None
    streams: StreamNames = field(default_factory=StreamNames)
    ingress: IngressConfig = field(default_factory=IngressConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)

    def __post_init__(self) -> None:
        if not self.ingress.enabled and not self.worker.enabled:
            raise ConfigError("nothing to do: ingress and worker both disabled")

    def label(self) -> str:
        return self.redis.label() if self.sentinel is None else f"sentinel/{self.sentinel.master_name}"


CONFIG_MODEL = StreamsConfig


@dataclass
class Outcome:
    status: Literal["ok", "lost", "rejected"]
    correlation_id: str
    attempts: int
    rtt_us: int = 0
    worker: str = ""


def _client(config: StreamsConfig) -> aioredis.Redis:
    # Our loops retry with backoff and count outages: redis-py's own silent retries would hide them.
    kwargs = redis_kwargs(config.redis, retry=Retry(NoBackoff(), 0))
    if config.sentinel is None:
        return aioredis.Redis(**kwargs)
    for address_key in ("host", "port"):
        del kwargs[address_key]
    # redis-py's SentinelConnectionPool: each new connection asks the Sentinels for the master, and a
    # connection to a master that became a replica is dropped on its first READONLY reply.
    manager = sentinel_manager(config.sentinel.sentinels)
    return manager.master_for(config.sentinel.master_name, redis_class=aioredis.Redis, **kwargs)


class StreamsAgent(AgentBase):
    kind = "streams"

    def __init__(self, config: StreamsConfig) -> None:
        super().__init__()
        self.config = config
        self.instance = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.response_stream = f"{config.streams.response_prefix}{self.instance}"
        self.rtt = LatencyMetric(self.registry, "kvt_streams_request_rtt", "Request round trip incl. retries")
        self.tracker = ConnectionTracker(self.registry, f"redis:{config.label()}")
        self.breaker_gauge = Gauge(
            "kvt_streams_breaker_state",
            "Circuit breaker: 0 closed, 1 open, 2 half-open",
            registry=self.registry,
        )
        self.breaker = CircuitBreaker(
            config.ingress.breaker.failure_threshold,
            config.ingress.breaker.reset_timeout_s,
            on_change=self._breaker_changed,
        )
        self.pending_gauge = Gauge(
            "kvt_streams_pending_entries", "XPENDING count of the group", registry=self.registry
        )
        self.length_gauge = Gauge(
            "kvt_streams_request_stream_length", "XLEN of the request stream", registry=self.registry
        )
        # Ingress counters.
        self.c: dict[str, int] = dict.fromkeys(
            (
                "requests",
                "completed",
                "timed_out",
                "send_errors",
                "retries",
                "lost",
                "rejected",
                "late_responses",
                "processed",
                "reclaimed",
                "reclaimed_deleted",
                "worker_errors",
                "malformed",
            ),
            0,
        )
        self._pending: dict[str, asyncio.Future[dict[bytes, bytes]]] = {}
        self._in_flight = 0
        self.pending_entries = 0
        self._seq = 0
        self._payload = b"x" * config.ingress.payload_bytes
        self._issued_all = asyncio.Event()
        self.registry.register(_StreamsCollector(self))

    def _breaker_changed(self, state: BreakerState) -> None:
        self.breaker_gauge.set(int(state))
        log.info("circuit breaker %s", state.name.lower())

    # -- startup -------------------------------------------------------------------------------------
    async def check(self) -> None:
        if self.config.sentinel is None:
            client = await connect_redis(self.config.redis)
        else:
            client = _client(self.config)
            try:
                await client.ping()
            except (TimeoutError, redis.RedisError, OSError) as exc:
                await client.aclose()
                detail = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
                raise ConnectError(f"redis {self.config.label()}: no master to reach ({detail})") from None
        try:
            await self._ensure_group(client, "$")
        finally:
            await client.aclose()

    async def _ensure_group(self, client: aioredis.Redis, start_id: str) -> None:
        try:
            await client.xgroup_create(
                self.config.streams.request_stream, self.config.streams.group, start_id, mkstream=True
            )
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    # -- run -------------------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        client = _client(self.config)
        tasks: list[asyncio.Task[Any]] = []
        http: HttpServer | None = None
        worker_stop = asyncio.Event()
        try:
            if self.config.worker.enabled:
                for i in range(self.config.worker.consumers):
                    name = f"{self.instance}-{i}"
                    tasks.append(asyncio.create_task(self._consumer(client, name, worker_stop), name=name))
                tasks.append(asyncio.create_task(self._claimer(client, worker_stop), name="claimer"))
            ingress_tasks: list[asyncio.Task[Any]] = []
            if self.config.ingress.enabled:
                ingress_tasks.append(
                    asyncio.create_task(self._response_reader(client, worker_stop), name="responses")
                )
                if self.config.ingress.mode == "direct":
                    ingress_tasks.append(
                        asyncio.create_task(self._direct_driver(client, stop), name="driver")
                    )
                else:
                    http = HttpServer(
                        lambda req: self._http_request(client, req),
                        self.config.ingress.http_host,
                        self.config.ingress.http_port,
                    )
                    try:
                        await http.start()
                    except OSError as exc:
                        raise ConfigError(
                            f"ingress.http_port: cannot listen on {self.config.ingress.http_host}:"
                            f"{self.config.ingress.http_port} ({exc.strerror or exc})"
                        ) from None
                    log.info("ingress http on %s:%d", self.config.ingress.http_host, http.port)
            await stop.wait()
            if http is not None:
                await http.close()
            # Let in-flight requests finish (bounded by their own retry budget) before workers stop.
            budget = self._request_budget_s()
            deadline = time.monotonic() + budget
            while self._in_flight and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            worker_stop.set()
            for task in ingress_tasks:
                task.cancel()
            await asyncio.gather(*tasks, *ingress_tasks, return_exceptions=True)
        finally:
            if self.config.ingress.enabled:
                with contextlib.suppress(*REDIS_CONNECTION_ERRORS, redis.RedisError):
                    await client.delete(self.response_stream)
            await client.aclose()

    def _request_budget_s(self) -> float:
        ing = self.config.ingress
        return ing.timeout_s * (ing.retries + 1) + ing.backoff_cap_s * ing.retries + 1.0

    # -- ingress ---------------------------------------------------------------------------------------
    def request(self, client: aioredis.Redis, payload: bytes | None = None) -> Coroutine[Any, Any, Outcome]:
        """Count the request now and return the exchange to await.

        Counting happens before the coroutine first runs, so a status snapshot taken between the driver's
        create_task and the task's first step never shows the driver done with a request missing
        (CI once saw issued_all with requests 99 of 100 and nothing in flight).
        """
        self._seq += 1
        corr = f"{self.instance}-{self._seq}"
        self.c["requests"] += 1
        self._in_flight += 1
        return self._exchange(client, corr, payload)

    async def _exchange(self, client: aioredis.Redis, corr: str, payload: bytes | None) -> Outcome:
        ing = self.config.ingress
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[dict[bytes, bytes]] = loop.create_future()
        self._pending[corr] = fut
        backoff = Backoff(ing.backoff_base_s, ing.backoff_cap_s)
        started = time.perf_counter_ns()
        attempts = 0
        # The permit of the latest attempt sent: its outcome is what the breaker hears about.
        permit: Permit | None = None
        try:
            for attempt in range(ing.retries + 1):
                if attempt:
                    self.c["retries"] += 1
                    await asyncio.sleep(backoff.next_delay())
                if fut.done():
                    break
                allowed = self.breaker.allow()
                if allowed is None:
                    if attempt == 0:
                        self.c["rejected"] += 1
                        return Outcome("rejected", corr, 0)
                    continue
                permit = allowed
                attempts += 1
                try:
                    await client.xadd(
                        self.config.streams.request_stream,
                        {
                            "id": corr,
                            "reply": self.response_stream,
                            "t": str(time.time_ns()),
                            "attempt": str(attempt),
                            "payload": payload if payload is not None else self._payload,
                        },
                        maxlen=self.config.streams.maxlen,
                        approximate=True,
                    )
                    self.tracker.up()
                except REDIS_CONNECTION_ERRORS:
                    self.c["send_errors"] += 1
                    self.tracker.down()
                    self.breaker.record_failure(permit)
                    continue
                except redis.RedisError:
                    self.c["send_errors"] += 1
                    self.breaker.record_failure(permit)
                    continue
                try:
                    await asyncio.wait_for(asyncio.shield(fut), ing.timeout_s)
                except TimeoutError:
                    self.c["timed_out"] += 1
                    self.breaker.record_failure(permit)
                    continue
                break
            if fut.done() and not fut.cancelled():
                response = fut.result()
                rtt_us = (time.perf_counter_ns() - started) // 1000
                self.rtt.record_us(rtt_us)
                self.c["completed"] += 1
                if permit is not None:
                    self.breaker.record_success(permit)
                return Outcome("ok", corr, attempts, rtt_us, response.get(b"worker", b"").decode())
            self.c["lost"] += 1
            return Outcome("lost", corr, attempts)
        finally:
            # a request cancelled mid-flight never reports its outcome: give a probe's slot back
            if permit is not None:
                self.breaker.release(permit)
            self._pending.pop(corr, None)
            if not fut.done():
                fut.cancel()
            self._in_flight -= 1

    async def _response_reader(self, client: aioredis.Redis, done: asyncio.Event) -> None:
        backoff = Backoff()
        # This stream is named after this instance, so everything in it is ours: read from the start.
        last_id: Any = "0-0"
        while not done.is_set():
            try:
                reply = await client.xread({self.response_stream: last_id}, count=256, block=500)
                self.tracker.up()
                backoff.reset()
            except REDIS_CONNECTION_ERRORS:
                self.tracker.down()
                await asyncio.sleep(backoff.next_delay())
                continue
            for _stream, entries in reply or []:
                for entry_id, fields in entries:
                    last_id = entry_id
                    corr = fields.get(b"id", b"").decode()
                    fut = self._pending.get(corr)
                    if fut is None or fut.done():
                        self.c["late_responses"] += 1  # answered twice (retry + reclaim) or after giving up
                    else:
                        fut.set_result(fields)

    async def _direct_driver(self, client: aioredis.Redis, stop: asyncio.Event) -> None:
        ing = self.config.ingress
        interval = 1.0 / ing.rate
        limit = asyncio.Semaphore(ing.concurrency)
        running: set[asyncio.Task[Outcome]] = set()
        issued = 0
        next_t = time.monotonic()
        while not stop.is_set() and (ing.requests == 0 or issued < ing.requests):
            delay = next_t - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await limit.acquire()
            issued += 1
            task = asyncio.create_task(self.request(client))
            running.add(task)
            task.add_done_callback(lambda t: (running.discard(t), limit.release()))
            next_t = max(next_t + interval, time.monotonic() - interval)
        self._issued_all.set()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
        log.info(
            "direct driver done: %s", json.dumps({k: self.c[k] for k in ("requests", "completed", "lost")})
        )

    async def _http_request(self, client: aioredis.Redis, req: Request) -> Response:
        if req.path == "/healthz":
            return Response(200, b'{"status": "ok"}', "application/json")
        if req.path != "/request":
            return Response(404, b"not found\n")
        if req.method not in ("POST", "GET"):
            return Response(405, b"method not allowed\n")
        if self._in_flight >= self.config.ingress.concurrency:
            self.c["rejected"] += 1
            return Response(503, b'{"status": "busy"}', "application/json")
        outcome = await self.request(client, req.body or None)
        body = json.dumps(outcome.__dict__).encode()
        status = {"ok": 200, "lost": 504, "rejected": 503}[outcome.status]
        return Response(status, body, "application/json")

    # -- workers -----------------------------------------------------------------------------------------
    async def _consumer(self, client: aioredis.Redis, name: str, done: asyncio.Event) -> None:
        wk = self.config.worker
        names = self.config.streams
        backoff = Backoff()
        while not done.is_set():
            try:
                reply = await client.xreadgroup(
                    names.group, name, {names.request_stream: ">"}, count=wk.batch, block=wk.block_ms
                )
                self.tracker.up()
                backoff.reset()
            except REDIS_CONNECTION_ERRORS:
                self.tracker.down()
                await asyncio.sleep(backoff.next_delay())
                continue
            except redis.ResponseError as exc:
                if "NOGROUP" in str(exc):
                    # The server lost the group (restart without persistence): recreate it, reading from 0
                    # so requests added before it existed again are still served.
                    with contextlib.suppress(redis.RedisError, *REDIS_CONNECTION_ERRORS):
                        await self._ensure_group(client, "0")
                    continue
                self.c["worker_errors"] += 1
                await asyncio.sleep(backoff.next_delay())
                continue
            for _stream, entries in reply or []:
                await self._handle(client, name, entries, reclaimed=False)

    async def _handle(
        self,
        client: aioredis.Redis,
        consumer: str,
        entries: list[tuple[bytes, dict[bytes, bytes]]],
        reclaimed: bool,
    ) -> None:
        names = self.config.streams
        for entry_id, fields in entries:
            if fields is None:
                continue  # deleted (trimmed) entry still in the PEL: nothing to answer
            if self.config.worker.process_ms:
                await asyncio.sleep(self.config.worker.process_ms / 1000)
            reply_to = fields.get(b"reply")
            try:
                pipe = client.pipeline(transaction=False)
                if reply_to and b"id" in fields:
                    pipe.xadd(
                        reply_to,
                        {"id": fields[b"id"], "worker": consumer, "t": fields.get(b"t", b"0")},
                        maxlen=names.response_maxlen,
                        approximate=True,
                    )
                else:
                    self.c["malformed"] += 1
                pipe.xack(names.request_stream, names.group, entry_id)
                await pipe.execute()
            except REDIS_CONNECTION_ERRORS:
                # Unacknowledged: it stays in our PEL and is reclaimed (by us or a peer) after claim_idle_ms.
                self.tracker.down()
                return
            except redis.RedisError:
                self.c["worker_errors"] += 1
                continue
            self.c["processed"] += 1
            if reclaimed:
                self.c["reclaimed"] += 1

    async def _claimer(self, client: aioredis.Redis, done: asyncio.Event) -> None:
        wk = self.config.worker
        names = self.config.streams
        name = f"{self.instance}-claimer"
        while not done.is_set():
            await asyncio.sleep(wk.claim_interval_s)
            try:
                cursor: Any = "0-0"
                for _ in range(10):  # bounded sweep per interval
                    reply = await client.xautoclaim(
                        names.request_stream, names.group, name, wk.claim_idle_ms, start_id=cursor, count=100
                    )
                    cursor, entries = reply[0], reply[1]
                    deleted = reply[2] if len(reply) > 2 else []
                    self.c["reclaimed_deleted"] += len(deleted)
                    if entries:
                        log.info("reclaimed %d idle entries", len(entries))
                        await self._handle(client, name, entries, reclaimed=True)
                    if cursor in (b"0-0", "0-0"):
                        break
                summary = await client.xpending(names.request_stream, names.group)
                self.pending_entries = int(summary.get("pending", 0))
                self.pending_gauge.set(self.pending_entries)
                self.length_gauge.set(await client.xlen(names.request_stream))
            except REDIS_CONNECTION_ERRORS:
                self.tracker.down()
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    self.c["worker_errors"] += 1

    # -- reporting ---------------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            # the scenario runner's agents check waits for a direct driver to finish; HTTP ingress has no end
            "ingress": self.config.ingress.mode if self.config.ingress.enabled else "off",
            **self.c,
            "in_flight": self._in_flight,
            "issued_all": self._issued_all.is_set(),
            "breaker_state": self.breaker.state.name.lower(),
            "breaker_opened": self.breaker.opened,
            "pending_entries": self.pending_entries,
            "request_rtt": self.rtt.summary().get("", {}),
            **self.tracker.summary(),
            "rss_bytes": self.process_metrics.rss_bytes(),
        }

    def histograms(self) -> dict[str, dict[str, str]]:
        return {self.rtt.name: self.rtt.encoded()}


class _StreamsCollector(Collector):
    def __init__(self, agent: StreamsAgent) -> None:
        self._agent = agent

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        for name, value in self._agent.c.items():
            yield CounterMetricFamily(f"kvt_streams_{name}", f"streams {name.replace('_', ' ')}", value=value)
        yield GaugeMetricFamily(
            "kvt_streams_in_flight", "Requests waiting for a response", value=self._agent._in_flight
        )


def build(config: StreamsConfig) -> StreamsAgent:
    return StreamsAgent(config)
