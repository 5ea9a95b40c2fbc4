"""Pipeline workload (the seed's Kafka pipeline on JetStream): producer -> stream -> two routes -> store.

One agent kind, three roles (one process each, chosen by ``role:``):
  producer    publishes ``{"id", "amount", "ts_ns"}`` events at ``rate`` to the stream subject, each
              with Nats-Msg-Id so a retried publish after a reconnect is not stored twice.
  route       ``route: high`` takes amount > threshold, ``route: low`` the rest; each route has its own
              durable pull consumer (so both see every event) and is the sink: it writes what it takes
              to the store (pipelinestore: id ledger + per-second series) before acking.
  aggregator  serves the per-second series over HTTP (GET /series?seconds=N) and exports the latest
              complete second and the route audit (routed twice / distinct) as Prometheus gauges.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs

import redis.asyncio as aioredis
from nats.js.api import DeliverPolicy, RetentionPolicy
from prometheus_client import Counter, Gauge

from kvagent.clients.connect import REDIS_CONNECTION_ERRORS, Backoff, ConnectError, ConnectionTracker, connect_redis
from kvagent.clients.jetstream import (
    JETSTREAM_ERRORS,
    ConsumerSettings,
    StreamSettings,
    bind_pull,
    connect_tracked,
    consumer_pending,
    ensure_stream,
    pull_batches,
)
from kvagent.clients.targets import close_quietly
from kvagent.service.config import ConfigError, NatsEndpoint, RedisEndpoint, ServiceConfig
from kvagent.service.httpserver import HttpServer, Request, Response
from kvagent.service.metrics import LatencyMetric
from kvagent.service.pacing import Pacer, sleep_or_stop
from kvagent.service.shell import AgentBase
from kvagent.workloads.pipeline.store import Sink, audit_routes, read_series

log = logging.getLogger(__name__)

ROUTES = ["high", "low"]
NATS_ERRORS = JETSTREAM_ERRORS


def default_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class ProducerSettings:
    name: str = ""  # default hostname-pid; part of every event id
    rate: float = 500.0  # events per second
    count: int = 0  # 0 = until stopped
    amount_min: float = 0.0
    amount_max: float = 1000.0
    publish_timeout_s: float = 2.0
    exit_when_done: bool = False
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise ConfigError("producer.rate must be > 0")
        if self.count < 0:
            raise ConfigError("producer.count must be >= 0")
        if self.amount_max < self.amount_min:
            raise ConfigError("producer.amount_max must be >= producer.amount_min")
        if self.publish_timeout_s <= 0:
            raise ConfigError("producer.publish_timeout_s must be > 0")


@dataclass
class RouteSettings:
    route: Literal["high", "low"] = "high"
    threshold: float = 500.0  # high takes amount > threshold, low takes amount <= threshold
    durable: str = ""  # default pipeline-<route>
    batch: int = 100
    fetch_timeout_s: float = 1.0
    ack_wait_s: float = 30.0
    max_ack_pending: int = 2000
    pending_interval_s: float = 1.0  # how often consumer lag (num_pending) is read
    # where a durable created now starts: "all" the stream holds, or only events published from now on (a
    # scenario's per-run durable, so a run never replays the hour of earlier runs the stream keeps)
    deliver: Literal["all", "new"] = "all"
    # the server removes the durable after this long without a client (0: kept until deleted by hand)
    inactive_threshold_s: float = 0.0
    # store only this run's events (ids "<run_id>:..."), acknowledging others as foreign: a scenario's route must
    # not count an earlier run's events. Off by default: Locust's events carry its own run id (--kvt-run-id)
    only_run: bool = False

    def __post_init__(self) -> None:
        if self.batch <= 0 or self.fetch_timeout_s <= 0 or self.ack_wait_s <= 0 or self.max_ack_pending <= 0:
            raise ConfigError("route.batch, fetch_timeout_s, ack_wait_s and max_ack_pending must be > 0")
        if self.pending_interval_s <= 0:
            raise ConfigError("route.pending_interval_s must be > 0")
        if self.deliver not in ("all", "new"):
            raise ConfigError("route.deliver must be 'all' or 'new'")
        if self.inactive_threshold_s < 0:
            raise ConfigError("route.inactive_threshold_s must be >= 0")

    def consumer_extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if self.deliver == "new":
            extra["deliver_policy"] = DeliverPolicy.NEW
        if self.inactive_threshold_s:
            extra["inactive_threshold"] = self.inactive_threshold_s
        return extra

    def takes(self, amount: float) -> bool:
        return amount > self.threshold if self.route == "high" else amount <= self.threshold


@dataclass
class AggregatorSettings:
    listen_host: str = "127.0.0.1"
    listen_port: int = 9480
    window_s: int = 60  # seconds of series served by default
    poll_s: float = 1.0

    def __post_init__(self) -> None:
        if not 0 <= self.listen_port < 65536:
            raise ConfigError("aggregator.listen_port must be 0..65535")
        if self.window_s <= 0 or self.poll_s <= 0:
            raise ConfigError("aggregator.window_s and aggregator.poll_s must be > 0")


@dataclass
class PipelineConfig:
    role: Literal["producer", "route", "aggregator"]
    run_id: str = "default"
    nats: NatsEndpoint | None = None
    store: RedisEndpoint | None = None
    stream: StreamSettings = field(
        default_factory=lambda: StreamSettings(
            name="KVT_PIPELINE", subject="kvt.pipeline.events", max_age_s=3600
        )
    )
    ledger_ttl_s: int = 3600  # how long routed ids are kept for the exactly-once audit
    series_ttl_s: int = 3600  # how long per-second buckets are kept
    producer: ProducerSettings = field(default_factory=ProducerSettings)
    route: RouteSettings = field(default_factory=RouteSettings)
    aggregator: AggregatorSettings = field(default_factory=AggregatorSettings)
    service: ServiceConfig = field(default_factory=ServiceConfig)

    def __post_init__(self) -> None:
        if not self.run_id or any(c in self.run_id for c in " :{}"):
            raise ConfigError(f"run_id {self.run_id!r} must be non-empty without spaces, ':', '{{' or '}}'")
        if self.role in ("producer", "route") and self.nats is None:
            raise ConfigError(f"role {self.role} needs a 'nats' section")
        if self.role in ("route", "aggregator") and self.store is None:
            raise ConfigError(f"role {self.role} needs a 'store' section")
        if self.ledger_ttl_s <= 0 or self.series_ttl_s <= 0:
            raise ConfigError("ledger_ttl_s and series_ttl_s must be > 0")


# ---------------------------------------------------------------------------------------------- producer


class PipelineProducer(AgentBase):
    kind = "pipeline"

    def __init__(self, config: PipelineConfig) -> None:
        super().__init__()
        self.config = config
        self.settings = config.producer
        self.name = self.settings.name or default_name()
        self.tracker = ConnectionTracker(self.registry, "nats")
        self._nc: Any = None
        self._rng = random.Random(self.settings.seed)
        self.published = 0
        self.duplicate_acks = 0  # retried publishes the stream had already stored
        self.retries = 0
        self.unpublished = 0
        self.done = False
        r = self.registry
        self.m_published = Counter("kvt_pipeline_published", "Events stored by the stream", registry=r)
        self.m_publish = LatencyMetric(r, "kvt_pipeline_publish", "JetStream publish round trip (PubAck)")

    async def check(self) -> None:
        assert self.config.nats is not None
        self._nc = await connect_tracked(self.config.nats, f"pipeline-producer-{self.name}", self.tracker)
        await ensure_stream(self._nc.jetstream(), self.config.stream, RetentionPolicy.LIMITS)

    async def _publish_one(self, stop: asyncio.Event, seq: int, amount: float) -> None:
        js = self._nc.jetstream()
        msg_id = f"{self.config.run_id}:{self.name}:{seq}"
        body = json.dumps({"id": msg_id, "amount": amount, "ts_ns": time.time_ns()}).encode()
        backoff = Backoff(cap_s=2.0)
        while True:
            started = time.perf_counter_ns()
            try:
                ack = await js.publish(
                    self.config.stream.subject,
                    body,
                    timeout=self.settings.publish_timeout_s,
                    headers={"Nats-Msg-Id": msg_id},
                )
            except NATS_ERRORS:
                if stop.is_set():
                    self.unpublished += 1
                    return
                self.retries += 1
                await sleep_or_stop(stop, backoff.next_delay())
                continue
            self.m_publish.record_us((time.perf_counter_ns() - started) // 1000)
            if ack.duplicate:
                self.duplicate_acks += 1
            self.published += 1
            self.m_published.inc()
            return

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        pacer = Pacer(s.rate)
        # At most ~1 s of events in flight: a stalled server slows us down instead of growing memory.
        in_flight = asyncio.Semaphore(max(1, int(s.rate)))
        tasks: set[asyncio.Task[None]] = set()

        async def one(seq: int, amount: float) -> None:
            try:
                await self._publish_one(stop, seq, amount)
            finally:
                in_flight.release()

        seq = 0
        try:
            while not stop.is_set() and (s.count == 0 or seq < s.count):
                if await pacer.wait(stop):
                    break
                await in_flight.acquire()
                amount = round(self._rng.uniform(s.amount_min, s.amount_max), 2)
                task = asyncio.create_task(one(seq, amount))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                seq += 1
            if tasks:
                await asyncio.wait(tasks, timeout=30)
            self.done = s.count > 0 and seq >= s.count
            if self.done:
                log.info("published %d events", self.published)
            if not (self.done and s.exit_when_done):
                await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            if self._nc is not None:
                with contextlib.suppress(Exception):
                    await self._nc.close()

    def summary(self) -> dict[str, Any]:
        return {
            "role": "producer",
            "name": self.name,
            "run_id": self.config.run_id,
            "published": self.published,
            "duplicate_acks": self.duplicate_acks,
            "retries": self.retries,
            "unpublished": self.unpublished,
            "done": self.done,
            "nats": self.tracker.summary(),
            "publish_latency": self.m_publish.summary(),
        }

    def histograms(self) -> dict[str, dict[str, str]]:
        return {self.m_publish.name: self.m_publish.encoded()}


# ------------------------------------------------------------------------------------------ route + sink


class PipelineRoute(AgentBase):
    kind = "pipeline"

    def __init__(self, config: PipelineConfig) -> None:
        super().__init__()
        assert config.store is not None
        self.config = config
        self.settings = config.route
        self.route = self.settings.route
        self.consumer = ConsumerSettings(
            durable=self.settings.durable or f"pipeline-{self.route}",
            ack_wait_s=self.settings.ack_wait_s,
            max_ack_pending=self.settings.max_ack_pending,
            extra=self.settings.consumer_extra(),
        )
        # events of another run (same stream, an earlier producer) are acknowledged and counted, never stored:
        # this run's ledger holds this run's events only
        self._run_prefix = f"{config.run_id}:"
        self.nats_tracker = ConnectionTracker(self.registry, "nats")
        self.store_tracker = ConnectionTracker(self.registry, f"store:{config.store.label()}")
        self._nc: Any = None
        self._store: aioredis.Redis | None = None
        self._sink: Sink | None = None
        self.counts = {"routed": 0, "skipped": 0, "duplicates": 0, "bad": 0, "foreign": 0, "fetch_errors": 0}
        self.pending = (0, 0)
        r = self.registry
        self.m_routed = Counter(
            "kvt_pipeline_routed", "Events taken by this route and stored", ["route"], registry=r
        )
        self.m_skipped = Counter(
            "kvt_pipeline_skipped", "Events left to the other route", ["route"], registry=r
        )
        self.m_dup = Counter(
            "kvt_pipeline_redelivered", "Redelivered events already stored", ["route"], registry=r
        )
        # this route's series exist from the start at 0, so rate() and the recording rules have a series to
        # read before the first (possibly never) redelivery: Prometheus's advice on labels known in advance
        for counter in (self.m_routed, self.m_skipped, self.m_dup):
            counter.labels(self.route)
        self.g_pending = Gauge(
            "kvt_pipeline_consumer_pending", "Durable consumer lag", ["route", "kind"], registry=r
        )
        self.m_e2e = LatencyMetric(
            r, "kvt_pipeline_e2e", "Producer timestamp to stored in the sink", ["route"]
        )

    async def _connect_store(self) -> None:
        assert self.config.store is not None
        self._store = await connect_redis(self.config.store)
        self._sink = Sink(
            self._store, self.config.run_id, self.route, self.config.ledger_ttl_s, self.config.series_ttl_s
        )

    async def check(self) -> None:
        assert self.config.nats is not None
        await self._connect_store()
        self._nc = await connect_tracked(self.config.nats, f"pipeline-{self.route}", self.nats_tracker)
        await bind_pull(self._nc.jetstream(), self.config.stream, self.consumer, RetentionPolicy.LIMITS)

    async def _write(self, stop: asyncio.Event, events: list[tuple[str, float, int]]) -> list[int] | None:
        backoff = Backoff(cap_s=2.0)
        while not stop.is_set():
            try:
                if self._sink is None:
                    await self._connect_store()
                assert self._sink is not None
                result = await self._sink.write(events, int(time.time()))
                self.store_tracker.up()
                return result
            except (*REDIS_CONNECTION_ERRORS, ConnectError, aioredis.RedisError) as exc:
                log.debug("store write failed: %s", exc)
                self.store_tracker.down()
                await close_quietly(self._store)
                self._store = self._sink = None
                await sleep_or_stop(stop, backoff.next_delay())
        return None

    async def _pending_loop(self, stop: asyncio.Event) -> None:
        while not await sleep_or_stop(stop, self.settings.pending_interval_s):
            try:
                pending, ack_pending = await consumer_pending(
                    self._nc.jetstream(), self.config.stream.name, self.consumer.durable
                )
            except NATS_ERRORS:
                continue
            self.pending = (pending, ack_pending)
            self.g_pending.labels(self.route, "pending").set(pending)
            self.g_pending.labels(self.route, "ack_pending").set(ack_pending)

    def _fetch_failed(self, exc: BaseException) -> None:
        self.counts["fetch_errors"] += 1
        log.debug("fetch failed: %s", exc)

    async def run(self, stop: asyncio.Event) -> None:
        pending_task = asyncio.create_task(self._pending_loop(stop))
        try:
            async for msgs in pull_batches(
                lambda: self._nc.jetstream(),
                self.config.stream,
                self.consumer,
                RetentionPolicy.LIMITS,
                self.settings.batch,
                self.settings.fetch_timeout_s,
                stop,
                self._fetch_failed,
            ):
                await self._handle(stop, msgs)
        finally:
            pending_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pending_task
            if self._nc is not None:
                with contextlib.suppress(Exception):
                    await self._nc.close()
            await close_quietly(self._store)

    async def _handle(self, stop: asyncio.Event, msgs: list[Any]) -> None:
        mine: list[tuple[str, float, int]] = []
        stamps: list[int] = []
        now_ns = time.time_ns()
        for msg in msgs:
            try:
                body = json.loads(msg.data)
                event_id, amount, ts_ns = str(body["id"]), float(body["amount"]), int(body["ts_ns"])
            except (ValueError, KeyError, TypeError):
                self.counts["bad"] += 1
                continue
            if self.settings.only_run and not event_id.startswith(self._run_prefix):
                self.counts["foreign"] += 1
                continue
            if self.settings.takes(amount):
                mine.append((event_id, amount, max(0, (now_ns - ts_ns) // 1000)))
                stamps.append(ts_ns)
            else:
                self.counts["skipped"] += 1
                self.m_skipped.labels(self.route).inc()
        if mine:
            results = await self._write(stop, mine)
            if results is None:
                return  # stopping with the store down: leave them unacked, they will be redelivered
            stored_ns = time.time_ns()
            for ts_ns, new in zip(stamps, results, strict=True):
                if new:
                    self.counts["routed"] += 1
                    self.m_routed.labels(self.route).inc()
                    self.m_e2e.record_us(max(0, (stored_ns - ts_ns) // 1000), route=self.route)
                else:
                    self.counts["duplicates"] += 1
                    self.m_dup.labels(self.route).inc()
        for msg in msgs:
            with contextlib.suppress(Exception):
                await msg.ack()

    def summary(self) -> dict[str, Any]:
        return {
            "role": "route",
            "route": self.route,
            "threshold": self.settings.threshold,
            "run_id": self.config.run_id,
            **self.counts,
            "pending": self.pending[0],
            "ack_pending": self.pending[1],
            "nats": self.nats_tracker.summary(),
            "store": self.store_tracker.summary(),
            "e2e": self.m_e2e.summary(),
        }

    def histograms(self) -> dict[str, dict[str, str]]:
        return {self.m_e2e.name: self.m_e2e.encoded()}


# -------------------------------------------------------------------------------------------- aggregator


class PipelineAggregator(AgentBase):
    kind = "pipeline"

    def __init__(self, config: PipelineConfig) -> None:
        super().__init__()
        assert config.store is not None
        self.config = config
        self.settings = config.aggregator
        self.tracker = ConnectionTracker(self.registry, f"store:{config.store.label()}")
        self._store: aioredis.Redis | None = None
        self._server: HttpServer | None = None
        self.latest: dict[str, dict[str, Any]] = {}
        self.audit: dict[str, Any] = {}
        r = self.registry
        self.g_rate = Gauge(
            "kvt_pipeline_route_rate", "Events stored in the last complete second", ["route"], registry=r
        )
        self.g_audit = Gauge("kvt_pipeline_route_audit", "Route ledger audit", ["figure"], registry=r)
        self.m_query = LatencyMetric(r, "kvt_pipeline_series_query", "Store read for one series request")

    @property
    def port(self) -> int:
        return self._server.port if self._server else 0

    async def check(self) -> None:
        assert self.config.store is not None
        self._store = await connect_redis(self.config.store)
        self._server = HttpServer(self._handle, self.settings.listen_host, self.settings.listen_port)
        try:
            await self._server.start()
        except OSError as exc:
            where = f"{self.settings.listen_host}:{self.settings.listen_port}"
            detail = exc.strerror or exc
            raise ConfigError(f"aggregator.listen_port: cannot listen on {where} ({detail})") from None

    async def _client(self) -> aioredis.Redis:
        if self._store is None:
            assert self.config.store is not None
            self._store = await connect_redis(self.config.store)
        return self._store

    async def series(self, seconds: int) -> dict[str, Any]:
        client = await self._client()
        last = int(time.time()) - 1  # the current second is still filling
        started = time.perf_counter_ns()
        data = await read_series(client, self.config.run_id, ROUTES, last - seconds + 1, last)
        audit = await audit_routes(client, self.config.run_id, ROUTES)
        self.m_query.record_us((time.perf_counter_ns() - started) // 1000)
        return {
            "run_id": self.config.run_id,
            "first": last - seconds + 1,
            "last": last,
            "series": {route: {str(sec): v for sec, v in s.items()} for route, s in data.items()},
            "audit": audit,
        }

    async def _handle(self, request: Request) -> Response:
        if request.path != "/series":
            return Response(404, b"not found; try /series?seconds=60\n")
        try:
            seconds = int(parse_qs(request.query).get("seconds", [str(self.settings.window_s)])[0])
            if not 1 <= seconds <= 3600:
                raise ValueError
        except ValueError:
            return Response(400, b"seconds must be an integer 1..3600\n")
        try:
            body = await self.series(seconds)
        except (*REDIS_CONNECTION_ERRORS, ConnectError, aioredis.RedisError) as exc:
            self.tracker.down()
            await close_quietly(self._store)
            self._store = None
            return Response(503, f"store unavailable: {exc}\n".encode())
        self.tracker.up()
        return Response(200, json.dumps(body).encode(), "application/json")

    async def run(self, stop: asyncio.Event) -> None:
        backoff = Backoff(cap_s=2.0)
        try:
            while not stop.is_set():
                try:
                    snap = await self.series(1)
                except (*REDIS_CONNECTION_ERRORS, ConnectError, aioredis.RedisError):
                    self.tracker.down()
                    await close_quietly(self._store)
                    self._store = None
                    await sleep_or_stop(stop, backoff.next_delay())
                    continue
                self.tracker.up()
                backoff.reset()
                for route, series in snap["series"].items():
                    (point,) = series.values()
                    self.latest[route] = point
                    self.g_rate.labels(route).set(point["n"])
                self.audit = snap["audit"]
                self.g_audit.labels("routed_twice").set(self.audit["routed_twice"])
                self.g_audit.labels("distinct").set(self.audit["distinct"])
                await sleep_or_stop(stop, self.settings.poll_s)
        finally:
            if self._server is not None:
                await self._server.close()
            await close_quietly(self._store)

    def summary(self) -> dict[str, Any]:
        return {
            "role": "aggregator",
            "run_id": self.config.run_id,
            "port": self.port,
            "latest_second": self.latest,
            "audit": self.audit,
            "store": self.tracker.summary(),
            "query_latency": self.m_query.summary(),
        }

    def histograms(self) -> dict[str, dict[str, str]]:
        return {self.m_query.name: self.m_query.encoded()}


CONFIG_MODEL = PipelineConfig


def build(config: PipelineConfig) -> AgentBase:
    if config.role == "producer":
        return PipelineProducer(config)
    if config.role == "route":
        return PipelineRoute(config)
    return PipelineAggregator(config)
