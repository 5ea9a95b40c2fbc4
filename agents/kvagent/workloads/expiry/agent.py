"""Expiry workload: keys with TTL -> `expired` keyspace events -> dedup -> JetStream WorkQueue -> workers.

One agent kind, three roles (one process each, chosen by ``role:``):
  generator  sets ``count`` keys with TTL (+ jitter) at ``rate`` (or with ``delay_ms`` between keys),
             records every deadline in the ledger, then audits the ledger until every key is processed
             or its deadline + ``grace_ms`` has passed (lost), and publishes the audit.
  consumer   subscribes to `expired` on every node the target names (fixed nodes, Sentinel's master,
             every Cluster master; re-resolved every ``target.refresh_s``), deduplicates within the
             window (``dedup: store`` = SET NX PX in the ledger store, ``dedup: jetstream`` =
             Nats-Msg-Id + the stream's duplicate window) and publishes the survivors to the stream.
  worker     shares one durable pull consumer on the WorkQueue stream with the other workers and
             counts each key it processes in the ledger (HINCRBY), so a key processed twice shows.

The key name carries its deadline (``PREFIX:RUN:DEADLINE_MS:I``) so consumers measure expiry lag
without a lookup; deadlines are wall-clock milliseconds of the generator host (skew caveat in docs).
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

import nats.errors
import nats.js.errors
import redis.asyncio as aioredis
from nats.js.api import RetentionPolicy
from prometheus_client import Counter, Gauge
from redis.asyncio.cluster import RedisCluster

from kvagent.clients.connect import REDIS_CONNECTION_ERRORS, Backoff, ConnectError, ConnectionTracker, connect_redis
from kvagent.clients.jetstream import (
    ConsumerSettings,
    StreamSettings,
    bind_pull,
    connect_tracked,
    ensure_stream,
    pull_batches,
)
from kvagent.clients.keyevents import ExpiredEventSource, KeyEvent
from kvagent.clients.targets import TargetSettings, close_quietly, cluster_client, make_resolver
from kvagent.service.config import ConfigError, NatsEndpoint, RedisEndpoint, ServiceConfig
from kvagent.service.metrics import LatencyMetric
from kvagent.service.pacing import Pacer, sleep_or_stop
from kvagent.service.shell import AgentBase
from kvagent.workloads.expiry.dedup import StoreDedup
from kvagent.workloads.expiry.ledger import Audit, Ledger

log = logging.getLogger(__name__)

NATS_ERRORS: tuple[type[BaseException], ...] = (nats.errors.Error, OSError, TimeoutError)


def default_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class GeneratorSettings:
    count: int = 10_000
    rate: float = 0.0  # keys per second; 0 = as fast as the server takes them
    delay_ms: float = 0.0  # alternative to rate: pause between keys
    ttl_ms: int = 5_000
    ttl_jitter_ms: int = 0  # each TTL is ttl_ms + uniform(0, ttl_jitter_ms)
    value_size: int = 16
    batch: int = 100  # keys per pipeline round trip
    # Long-lived volatile keys set before the run: the active expire cycle samples them too, so
    # expiry lag grows with this population (see docs).
    background_keys: int = 0
    background_ttl_s: int = 3_600
    grace_ms: int = 30_000  # after deadline + grace an unprocessed key counts as lost
    audit_interval_s: float = 2.0
    exit_when_done: bool = False  # return (exit 0) after the final audit instead of idling
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.count <= 0:
            raise ConfigError("generator.count must be > 0")
        if self.rate < 0 or self.delay_ms < 0:
            raise ConfigError("generator.rate and generator.delay_ms must be >= 0")
        if self.rate > 0 and self.delay_ms > 0:
            raise ConfigError("generator: set either rate or delay_ms, not both")
        if self.ttl_ms <= 0 or self.ttl_jitter_ms < 0:
            raise ConfigError("generator.ttl_ms must be > 0 and generator.ttl_jitter_ms >= 0")
        if self.batch <= 0 or self.value_size < 0 or self.background_keys < 0 or self.background_ttl_s <= 0:
            raise ConfigError(
                "generator.batch and background_ttl_s must be > 0; value_size, background_keys >= 0"
            )
        if self.grace_ms < 0 or self.audit_interval_s <= 0:
            raise ConfigError("generator.grace_ms must be >= 0 and generator.audit_interval_s > 0")

    @property
    def keys_per_s(self) -> float:
        if self.delay_ms > 0:
            return 1000.0 / self.delay_ms
        return self.rate


@dataclass
class ExpiryConsumerSettings:
    name: str = ""  # default: hostname-pid
    dedup: Literal["store", "jetstream"] = "store"
    configure_notifications: bool = True  # CONFIG SET notify-keyspace-events (merging) on (re)connect
    publish_timeout_s: float = 2.0
    queue_size: int = 10_000  # events held between the subscriptions and the publisher
    batch: int = 256

    def __post_init__(self) -> None:
        if self.publish_timeout_s <= 0 or self.queue_size <= 0 or self.batch <= 0:
            raise ConfigError("consumer.publish_timeout_s, queue_size and batch must be > 0")


@dataclass
class WorkerSettings:
    name: str = ""  # default: hostname-pid
    durable: str = "expiry-workers"
    batch: int = 1  # messages per fetch: 1 spreads work evenly across workers, more buys throughput
    fetch_timeout_s: float = 1.0
    work_ms: float = 0.0  # simulated processing time per message
    ack_wait_s: float = 30.0
    max_ack_pending: int = 1000

    def __post_init__(self) -> None:
        if self.batch <= 0 or self.fetch_timeout_s <= 0 or self.ack_wait_s <= 0 or self.max_ack_pending <= 0:
            raise ConfigError("worker.batch, fetch_timeout_s, ack_wait_s and max_ack_pending must be > 0")
        if self.work_ms < 0:
            raise ConfigError("worker.work_ms must be >= 0")


@dataclass
class ExpiryConfig:
    role: Literal["generator", "consumer", "worker"]
    ledger: RedisEndpoint
    run_id: str = "default"
    key_prefix: str = "kvt:exp"
    target: TargetSettings | None = None
    nats: NatsEndpoint | None = None
    stream: StreamSettings = field(
        default_factory=lambda: StreamSettings(name="KVT_EXPIRY", subject="kvt.expiry")
    )
    generator: GeneratorSettings = field(default_factory=GeneratorSettings)
    consumer: ExpiryConsumerSettings = field(default_factory=ExpiryConsumerSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    service: ServiceConfig = field(default_factory=ServiceConfig)

    def __post_init__(self) -> None:
        if not self.run_id or any(c in self.run_id for c in " :{}"):
            raise ConfigError(f"run_id {self.run_id!r} must be non-empty without spaces, ':', '{{' or '}}'")
        if not self.key_prefix or "{" in self.key_prefix or "}" in self.key_prefix:
            raise ConfigError(
                "key_prefix must be non-empty and without braces (keys spread over cluster slots)"
            )
        if self.role in ("generator", "consumer") and self.target is None:
            raise ConfigError(f"role {self.role} needs a 'target' section")
        if self.role in ("consumer", "worker") and self.nats is None:
            raise ConfigError(f"role {self.role} needs a 'nats' section")


def key_base(config: ExpiryConfig) -> str:
    return f"{config.key_prefix}:{config.run_id}:"


def make_key(base: str, deadline_ms: int, index: int) -> str:
    return f"{base}{deadline_ms}:{index}"


def parse_deadline(key: str, base: str) -> int | None:
    """The deadline encoded in one of this run's keys; None for any other key."""
    if not key.startswith(base):
        return None
    deadline, sep, index = key[len(base) :].partition(":")
    if not sep or not deadline.isdigit() or not index.isdigit():
        return None
    return int(deadline)


def _now_ms() -> int:
    return int(time.time() * 1000)


class _LedgerAgent(AgentBase):
    """Holds the ledger connection (every role writes to it) and its outage tracker."""

    kind = "expiry"

    def __init__(self, config: ExpiryConfig) -> None:
        super().__init__()
        self.config = config
        self.role = config.role
        self.ledger_tracker = ConnectionTracker(self.registry, f"ledger:{config.ledger.label()}")
        self._ledger: Ledger | None = None
        self._ledger_backoff = Backoff(cap_s=2.0)

    async def _connect_ledger(self) -> Ledger:
        client = await connect_redis(self.config.ledger, decode_responses=True)
        self._ledger = Ledger(client, self.config.run_id)
        return self._ledger

    async def ledger_call(self, stop: asyncio.Event, fn: Any, *args: Any) -> Any:
        """Run a ledger operation, retrying through outages until it succeeds or stop is set."""
        while True:
            try:
                if self._ledger is None:
                    await self._connect_ledger()
                assert self._ledger is not None
                result = await fn(self._ledger, *args)
                self.ledger_tracker.up()
                self._ledger_backoff.reset()
                return result
            except (*REDIS_CONNECTION_ERRORS, ConnectError):
                self.ledger_tracker.down()
                if self._ledger is not None:
                    await close_quietly(self._ledger.client)
                    self._ledger = None
                if await sleep_or_stop(stop, self._ledger_backoff.next_delay()):
                    raise asyncio.CancelledError from None

    async def close_ledger(self) -> None:
        if self._ledger is not None:
            await close_quietly(self._ledger.client)
            self._ledger = None


# --------------------------------------------------------------------------------------------- generator


class ExpiryGenerator(_LedgerAgent):
    def __init__(self, config: ExpiryConfig) -> None:
        super().__init__(config)
        assert config.target is not None
        self.settings = config.generator
        self.target = config.target
        self.resolver = make_resolver(config.target)
        self.tracker = ConnectionTracker(self.registry, "target")
        self._backoff = Backoff(cap_s=2.0)
        self._rng = random.Random(self.settings.seed)
        self._writer: aioredis.Redis | RedisCluster | None = None
        self.generated = 0
        self.skipped = 0  # keys whose deadline passed while the target was unreachable
        self.background_set = 0
        self.audit: Audit | None = None
        self.done = False
        r = self.registry
        self.m_generated = Counter("kvt_expiry_generated", "Keys set with a TTL", registry=r)
        self.m_skipped = Counter(
            "kvt_expiry_generate_skipped", "Keys never set (target down past deadline)", registry=r
        )
        self.m_set_latency = LatencyMetric(
            r, "kvt_expiry_set_batch", "Round trip of one SET PX pipeline batch"
        )
        self.g_audit = Gauge("kvt_expiry_audit", "Latest ledger audit figures", ["figure"], registry=r)

    async def _connect_writer(self) -> aioredis.Redis | RedisCluster:
        if self.target.mode == "cluster":
            client = cluster_client(self.target)
            try:
                await client.initialize()
            except Exception as exc:  # noqa: BLE001 - redis-py raises several kinds here
                await close_quietly(client)
                raise ConnectError(f"redis cluster {self.target.nodes[0].label()}: {exc}") from None
            return client
        nodes = await self.resolver.resolve()
        return await connect_redis(nodes[0])

    async def check(self) -> None:
        await self._connect_ledger()
        try:
            self._writer = await self._connect_writer()
        except ConnectionError as exc:  # every Sentinel unreachable
            raise ConnectError(f"target: {exc}") from None

    async def _write(
        self, stop: asyncio.Event, items: list[tuple[str, int]], payload: bytes
    ) -> list[tuple[str, int]]:
        """SET each key with PX = deadline - now; retry through outages. Returns the keys set."""
        while not stop.is_set():
            now = _now_ms()
            live = [(k, d) for k, d in items if d - now > 0]
            self.skipped += len(items) - len(live)
            self.m_skipped.inc(len(items) - len(live))
            if not live:
                return []
            try:
                if self._writer is None:
                    self._writer = await self._connect_writer()
                started = time.perf_counter_ns()
                pipe = self._writer.pipeline(transaction=False)
                for key, deadline in live:
                    pipe.set(key, payload, px=deadline - now)
                await pipe.execute()
                self.m_set_latency.record_us((time.perf_counter_ns() - started) // 1000)
                self.tracker.up()
                self._backoff.reset()
                return live
            except (*REDIS_CONNECTION_ERRORS, ConnectError, aioredis.RedisError) as exc:
                log.debug("write failed: %s", exc)
                self.tracker.down()
                await close_quietly(self._writer)
                self._writer = None
                await sleep_or_stop(stop, self._backoff.next_delay())
        return []

    async def _background(self, stop: asyncio.Event, payload: bytes) -> None:
        s = self.settings
        base = f"{self.config.key_prefix}:{self.config.run_id}:bg:"
        for start in range(0, s.background_keys, s.batch):
            n = min(s.batch, s.background_keys - start)
            now = _now_ms()
            items = [
                (f"{base}{start + i}", now + s.background_ttl_s * 1000 + self._rng.randint(0, 60_000))
                for i in range(n)
            ]
            done = await self._write(stop, items, payload)
            self.background_set += len(done)
            if stop.is_set():
                return

    async def _generate(self, stop: asyncio.Event, payload: bytes) -> None:
        s = self.settings
        base = key_base(self.config)
        pacer = Pacer(s.keys_per_s)
        step = s.batch if s.keys_per_s <= 0 else max(1, min(s.batch, int(s.keys_per_s / 100) or 1))
        index = 0
        while index < s.count and not stop.is_set():
            n = min(step, s.count - index)
            if await pacer.wait(stop, n):
                return
            now = _now_ms()
            items = []
            for i in range(index, index + n):
                deadline = now + s.ttl_ms + (self._rng.randint(0, s.ttl_jitter_ms) if s.ttl_jitter_ms else 0)
                items.append((make_key(base, deadline, i), deadline))
            index += n
            done = await self._write(stop, items, payload)
            if done:
                # The deadline is recorded only once the key exists: a key the target never took is
                # "skipped", not "lost".
                await self.ledger_call(stop, Ledger.record_deadlines, done)
                self.generated += len(done)
                self.m_generated.inc(len(done))

    async def _publish_audit(self, stop: asyncio.Event) -> Audit:
        counters = {
            "generated": self.generated,
            "skipped": self.skipped,
            "background": self.background_set,
            "disconnections": self.tracker.disconnections,
            "disconnected_s": round(self.tracker.disconnected_seconds(), 3),
        }

        async def publish(ledger: Ledger) -> Audit:
            await ledger.publish_counters(ledger.generator, "", counters)
            audit = await ledger.audit(_now_ms(), self.settings.grace_ms)
            await ledger.store_audit(audit)
            return audit

        audit: Audit = await self.ledger_call(stop, publish)
        self.audit = audit
        for figure in (
            "generated",
            "processed_keys",
            "processed_twice",
            "lost",
            "pending",
            "unknown_processed",
        ):
            self.g_audit.labels(figure).set(getattr(audit, figure))
        for figure in ("cv", "max_min"):
            value = audit.evenness.get(figure)
            if value is not None:
                self.g_audit.labels(f"worker_{figure}").set(value)
        return audit

    async def run(self, stop: asyncio.Event) -> None:
        payload = b"x" * self.settings.value_size
        try:
            await self._background(stop, payload)
            await self._generate(stop, payload)
            log.info("generated %d keys (%d skipped); auditing", self.generated, self.skipped)
            while not stop.is_set():
                audit = await self._publish_audit(stop)
                past_grace = _now_ms() > audit.last_deadline_ms + self.settings.grace_ms
                if audit.complete or past_grace or self.generated == 0:
                    self.done = True
                    log.info("final audit: %s", json.dumps(audit.as_dict(), sort_keys=True))
                    break
                await sleep_or_stop(stop, self.settings.audit_interval_s)
            if not self.settings.exit_when_done:
                await stop.wait()
        except asyncio.CancelledError:
            if not stop.is_set():
                raise
        finally:
            await close_quietly(self._writer)
            await self.close_ledger()

    def summary(self) -> dict[str, Any]:
        return {
            "role": "generator",
            "run_id": self.config.run_id,
            "generated": self.generated,
            "skipped": self.skipped,
            "background_keys": self.background_set,
            "done": self.done,
            "audit": self.audit.as_dict() if self.audit else None,
            "target": self.tracker.summary(),
            "ledger": self.ledger_tracker.summary(),
            "set_batch_latency": self.m_set_latency.summary(),
        }

    def histograms(self) -> dict[str, dict[str, str]]:
        return {self.m_set_latency.name: self.m_set_latency.encoded()}


# ---------------------------------------------------------------------------------------------- consumer


class ExpiryConsumer(_LedgerAgent):
    def __init__(self, config: ExpiryConfig) -> None:
        super().__init__(config)
        assert config.target is not None and config.nats is not None
        self.settings = config.consumer
        self.name = self.settings.name or default_name()
        self.base = key_base(config)
        self.resolver = make_resolver(config.target)
        self.nats_tracker = ConnectionTracker(self.registry, "nats")
        self._nc: Any = None
        self._queue: asyncio.Queue[KeyEvent] = asyncio.Queue(maxsize=self.settings.queue_size)
        self.source = ExpiredEventSource(
            self.resolver,
            self._queue.put,
            self.registry,
            self.settings.configure_notifications,
            config.target.refresh_s,
        )
        self.counts: dict[str, int] = {
            "received": 0,  # events for this run's keys, from all nodes
            "foreign": 0,  # events for other keys (other runs, background keys, the ledger's own)
            "published": 0,
            "suppressed": 0,  # duplicates dropped by the dedup store or by JetStream
            "early": 0,  # events received before the recorded deadline (clock skew)
            "unpublished": 0,  # dropped at stop while NATS was unreachable
        }
        self.per_node: dict[str, int] = {}
        r = self.registry
        self.m_received = Counter(
            "kvt_expiry_events_received", "expired events for this run", ["node"], registry=r
        )
        self.m_suppressed = Counter(
            "kvt_expiry_duplicates_suppressed", "Duplicate events dropped", registry=r
        )
        self.m_published = Counter("kvt_expiry_published", "Events published to the work queue", registry=r)
        self.m_lag = LatencyMetric(r, "kvt_expiry_lag", "Expiry lag: event receipt minus the key's deadline")
        self.m_publish = LatencyMetric(r, "kvt_expiry_publish", "JetStream publish round trip of one batch")

    async def check(self) -> None:
        assert self.config.nats is not None
        await self._connect_ledger()
        try:
            nodes = await self.resolver.resolve()
        except ConnectionError as exc:
            raise ConnectError(f"target: {exc}") from None
        for node in nodes:
            client = await connect_redis(node)
            await client.aclose()
        self._nc = await connect_tracked(self.config.nats, f"expiry-consumer-{self.name}", self.nats_tracker)
        await ensure_stream(self._nc.jetstream(), self.config.stream, RetentionPolicy.WORK_QUEUE)

    async def run(self, stop: asyncio.Event) -> None:
        tasks = [
            asyncio.create_task(self.source.run(stop), name="expiry-sources"),
            asyncio.create_task(self._flush_loop(stop), name="expiry-flush"),
        ]
        try:
            await self._drain(stop)
        except asyncio.CancelledError:
            if not stop.is_set():
                raise
        finally:
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(task, 5.0)
            with contextlib.suppress(Exception):
                await self._flush_counters()
            if self._nc is not None:
                with contextlib.suppress(Exception):
                    await self._nc.close()
            await self.close_ledger()

    async def _next_batch(self, stop: asyncio.Event) -> list[KeyEvent]:
        try:
            first = await asyncio.wait_for(self._queue.get(), timeout=0.5)
        except TimeoutError:
            return []
        batch = [first]
        while len(batch) < self.settings.batch and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return batch

    async def _drain(self, stop: asyncio.Event) -> None:
        dedup_store = self.settings.dedup == "store"
        while not stop.is_set():
            events = await self._next_batch(stop)
            mine: list[tuple[KeyEvent, int]] = []
            for ev in events:
                deadline = parse_deadline(ev.key, self.base)
                if deadline is None:
                    self.counts["foreign"] += 1
                    continue
                mine.append((ev, deadline))
                self.per_node[ev.node] = self.per_node.get(ev.node, 0) + 1
                self.m_received.labels(ev.node).inc()
                lag_ms = ev.recv_time_ms - deadline
                if lag_ms < 0:
                    self.counts["early"] += 1
                self.m_lag.record_us(max(0, int(lag_ms * 1000)))
            if not mine:
                continue
            self.counts["received"] += len(mine)
            if dedup_store:
                claims = await self.ledger_call(
                    stop, _claim, self.name, self.config.stream, [e.key for e, _ in mine]
                )
                winners = [m for m, won in zip(mine, claims, strict=True) if won]
                self._suppressed(len(mine) - len(winners))
            else:
                winners = mine
            await self._publish(stop, winners, dedup_store)

    def _suppressed(self, n: int) -> None:
        self.counts["suppressed"] += n
        self.m_suppressed.inc(n)

    async def _publish(
        self, stop: asyncio.Event, items: list[tuple[KeyEvent, int]], dedup_store: bool
    ) -> None:
        js = self._nc.jetstream()
        subject = self.config.stream.subject
        backoff = Backoff(cap_s=2.0)
        todo = items
        while todo:
            started = time.perf_counter_ns()
            coros = []
            for ev, deadline in todo:
                body = {"key": ev.key, "deadline_ms": deadline, "recv_ms": ev.recv_time_ms, "node": ev.node}
                # store mode: the id only makes this consumer's own retries idempotent;
                # jetstream mode: the id is the key, so every consumer's copy collapses into one.
                msg_id = (
                    f"{self.config.run_id}:{ev.key}:{self.name}"
                    if dedup_store
                    else f"{self.config.run_id}:{ev.key}"
                )
                coros.append(
                    js.publish(
                        subject,
                        json.dumps(body).encode(),
                        timeout=self.settings.publish_timeout_s,
                        headers={"Nats-Msg-Id": msg_id},
                    )
                )
            results = await asyncio.gather(*coros, return_exceptions=True)
            failed = []
            for item, res in zip(todo, results, strict=True):
                if isinstance(res, BaseException):
                    if isinstance(res, asyncio.CancelledError):
                        raise res
                    failed.append(item)
                elif res.duplicate:
                    self._suppressed(1)
                else:
                    self.counts["published"] += 1
                    self.m_published.inc()
            self.m_publish.record_us((time.perf_counter_ns() - started) // 1000)
            todo = failed
            if todo:
                if stop.is_set():
                    self.counts["unpublished"] += len(todo)
                    return
                await sleep_or_stop(stop, backoff.next_delay())

    def _counter_snapshot(self) -> dict[str, float]:
        conns = self.source.connection_summary()
        return {
            **self.counts,
            "nodes": len(self.source.subscriptions),
            "node_changes": self.source.node_changes,
            "redis_disconnections": sum(c["disconnections"] for c in conns.values()),
            "redis_disconnected_s": round(sum(c["disconnected_seconds"] for c in conns.values()), 3),
            "nats_disconnections": self.nats_tracker.disconnections,
        }

    async def _flush_counters(self) -> None:
        if self._ledger is not None:
            await self._ledger.publish_counters(
                self._ledger.consumers, f"{self.name}:", self._counter_snapshot()
            )

    async def _flush_loop(self, stop: asyncio.Event) -> None:
        while not await sleep_or_stop(stop, 1.0):
            with contextlib.suppress(asyncio.CancelledError):
                await self.ledger_call(stop, _publish_consumer, self.name, self._counter_snapshot())

    def summary(self) -> dict[str, Any]:
        return {
            "role": "consumer",
            "name": self.name,
            "run_id": self.config.run_id,
            "dedup": self.settings.dedup,
            **self.counts,
            "per_node": dict(self.per_node),
            "node_changes": self.source.node_changes,
            "subscriptions": self.source.connection_summary(),
            "nats": self.nats_tracker.summary(),
            "ledger": self.ledger_tracker.summary(),
            "lag": self.m_lag.summary(),
            "publish_latency": self.m_publish.summary(),
        }

    def histograms(self) -> dict[str, dict[str, str]]:
        return {self.m_lag.name: self.m_lag.encoded(), self.m_publish.name: self.m_publish.encoded()}


async def _claim(ledger: Ledger, owner: str, stream: StreamSettings, keys: list[str]) -> list[bool]:
    window_ms = int(stream.duplicate_window_s * 1000)
    return await StoreDedup(ledger.client, ledger.ns, owner, window_ms).claim(keys)


async def _publish_consumer(ledger: Ledger, name: str, counters: dict[str, float]) -> None:
    await ledger.publish_counters(ledger.consumers, f"{name}:", counters)


# ------------------------------------------------------------------------------------------------ worker


class ExpiryWorker(_LedgerAgent):
    def __init__(self, config: ExpiryConfig) -> None:
        super().__init__(config)
        self.settings = config.worker
        self.name = self.settings.name or default_name()
        self.nats_tracker = ConnectionTracker(self.registry, "nats")
        self._nc: Any = None
        self.consumer = ConsumerSettings(
            durable=self.settings.durable,
            ack_wait_s=self.settings.ack_wait_s,
            max_ack_pending=self.settings.max_ack_pending,
        )
        self.processed = 0
        self.twice = 0  # keys this worker found already processed (HINCRBY result > 1)
        self.bad_messages = 0
        self.fetch_errors = 0
        r = self.registry
        self.m_processed = Counter("kvt_expiry_processed", "Keys processed by this worker", registry=r)
        self.m_twice = Counter(
            "kvt_expiry_processed_twice", "Keys processed again (at-least-once)", registry=r
        )
        self.m_lag = LatencyMetric(r, "kvt_expiry_process_lag", "Processing time minus the key's deadline")
        self.m_queue = LatencyMetric(
            r, "kvt_expiry_queue_time", "Processing time minus the consumer's receipt"
        )

    async def check(self) -> None:
        assert self.config.nats is not None
        await self._connect_ledger()
        self._nc = await connect_tracked(self.config.nats, f"expiry-worker-{self.name}", self.nats_tracker)
        await bind_pull(self._nc.jetstream(), self.config.stream, self.consumer, RetentionPolicy.WORK_QUEUE)

    def _fetch_failed(self, exc: BaseException) -> None:
        self.fetch_errors += 1
        log.debug("fetch failed: %s", exc)

    async def run(self, stop: asyncio.Event) -> None:
        try:
            async for msgs in pull_batches(
                lambda: self._nc.jetstream(),
                self.config.stream,
                self.consumer,
                RetentionPolicy.WORK_QUEUE,
                self.settings.batch,
                self.settings.fetch_timeout_s,
                stop,
                self._fetch_failed,
            ):
                await self._process(stop, msgs)
        except asyncio.CancelledError:
            if not stop.is_set():
                raise
        finally:
            if self._nc is not None:
                with contextlib.suppress(Exception):
                    await self._nc.close()
            await self.close_ledger()

    async def _process(self, stop: asyncio.Event, msgs: list[Any]) -> None:
        good: list[tuple[Any, dict[str, Any]]] = []
        for msg in msgs:
            try:
                body = json.loads(msg.data)
                str(body["key"]), float(body["deadline_ms"])
                good.append((msg, body))
            except (ValueError, KeyError, TypeError):
                self.bad_messages += 1
                with contextlib.suppress(Exception):
                    await msg.term()  # never redeliver garbage
        keys = [str(body["key"]) for _msg, body in good]
        if self.settings.work_ms > 0:
            await asyncio.sleep(self.settings.work_ms * len(keys) / 1000.0)
        # Not acked until the ledger has it: a ledger outage means redelivery, never a silent loss.
        counts = await self.ledger_call(stop, Ledger.record_processed, keys, self.name)
        now = time.time() * 1000.0
        for (_msg, body), count in zip(good, counts, strict=True):
            self.m_lag.record_us(max(0, int((now - float(body["deadline_ms"])) * 1000)))
            self.m_queue.record_us(max(0, int((now - float(body.get("recv_ms", now))) * 1000)))
            if count > 1:
                self.twice += 1
                self.m_twice.inc()
        for msg, _body in good:
            with contextlib.suppress(Exception):
                await msg.ack()
        self.processed += len(keys)
        self.m_processed.inc(len(keys))

    def summary(self) -> dict[str, Any]:
        return {
            "role": "worker",
            "name": self.name,
            "run_id": self.config.run_id,
            "processed": self.processed,
            "processed_twice": self.twice,
            "bad_messages": self.bad_messages,
            "fetch_errors": self.fetch_errors,
            "nats": self.nats_tracker.summary(),
            "ledger": self.ledger_tracker.summary(),
            "process_lag": self.m_lag.summary(),
            "queue_time": self.m_queue.summary(),
        }

    def histograms(self) -> dict[str, dict[str, str]]:
        return {self.m_lag.name: self.m_lag.encoded(), self.m_queue.name: self.m_queue.encoded()}


CONFIG_MODEL = ExpiryConfig


def build(config: ExpiryConfig) -> AgentBase:
    if config.role == "generator":
        return ExpiryGenerator(config)
    if config.role == "consumer":
        return ExpiryConsumer(config)
    return ExpiryWorker(config)
