"""observer: one writer overwrites a key at a fixed rate; listeners time its keyspace notifications.

Value layout: ``seq:wall_ns:writer_offset_ns:run_id:payload``. Each listener subscribes to
``__keyspace@<db>__:<key>`` on the node it is pointed at (primary, replica, KeyDB peer), GETs the
key on a notification and records
  * notify latency: wall clock at notification receipt minus the writer's wall clock at send,
  * read latency: the same up to the moment the value was in hand,
then PUBLISHes ``<listener>:<seq>`` on ``<key>:ack`` at the writer's node; the writer times that as
a round trip on its own monotonic clock (no clock sync needed). One-way figures are raw wall-clock
differences; the measured offset (listener clock minus writer clock, via the reference server's
TIME) is exported beside them instead of being subtracted, so a reader can judge both.

One listener runs synchronously (redis-py pub/sub in a thread), one on the asyncio loop, by default.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from redis.backoff import NoBackoff
from redis.retry import Retry

from kvagent.clients.connect import (
    REDIS_CONNECTION_ERRORS,
    Backoff,
    ConnectError,
    ConnectionTracker,
    connect_redis,
    redis_kwargs,
)
from kvagent.clients.keyevents import notify_flags_missing, with_notify_flags
from kvagent.clients.resp import RespConnection, RespError
from kvagent.clients.sentinel import SentinelSettings, current_master
from kvagent.service.clock import ClockSample, measure_offset
from kvagent.service.config import ConfigError, RedisEndpoint, ServiceConfig
from kvagent.service.deadline import DeadlineTimer
from kvagent.service.metrics import LatencyMetric
from kvagent.service.shell import AgentBase
from kvagent.workloads.observer.seqtrack import ReadKind, SeqTracker

log = logging.getLogger("kvagent.workloads.observer.agent")
MAX_LISTENER_COPIES = 256  # one process: each listener is a connection and a reader of its own


@dataclass
class WriterConfig:
    endpoint: RedisEndpoint
    # Write to the master Sentinel names (``endpoint`` then gives credentials, TLS and db): a failover
    # moves the writer, its handshake subscription and the listeners' acks to the promoted replica.
    sentinel: SentinelSettings | None = None
    enabled: bool = True
    rate: float = 100.0
    payload_bytes: int = 64
    count: int = 0  # stop writing after this many writes; 0 = until stopped
    # After each write, keep polling the sockets (no blocking wait) for up to this long. A process that
    # sleeps in epoll between writes pays the kernel's (and a VM's) wake-up latency on every
    # notification; polling takes that out of the figures of listeners in this process, for CPU
    # time of rate x poll (1000/s x 300 us = 30 % of a core). 0 = block as usual.
    poll_after_write_us: int = 0

    def __post_init__(self) -> None:
        if self.poll_after_write_us < 0:
            raise ConfigError("poll_after_write_us must be >= 0")
        if self.rate <= 0:
            raise ConfigError("rate must be > 0 writes/s")
        if self.payload_bytes < 0:
            raise ConfigError("payload_bytes must be >= 0")
        if self.count < 0:
            raise ConfigError("count must be >= 0")


@dataclass
class ListenerConfig:
    name: str
    endpoint: RedisEndpoint
    mode: Literal["sync", "async"] = "async"
    ack: bool = True
    # this many listeners like this one (names: <name>, <name>-2, ... <name>-N): a scenario sweeps the number of
    # listeners of one node without restating its endpoint (and password)
    copies: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.copies <= MAX_LISTENER_COPIES:
            raise ConfigError(f"listener {self.name}: copies must be 1..{MAX_LISTENER_COPIES}")


@dataclass
class ObserverConfig:
    writer: WriterConfig
    # Default: one sync and one async listener on the writer's own node.
    listeners: list[ListenerConfig] | None = None
    key: str = "kvt:observer"
    configure_notifications: bool = True  # CONFIG SET notify-keyspace-events on each listener's node
    clock_interval_s: float = 10.0
    drain_s: float = 0.5  # after stop: time for in-flight notifications before listeners close
    service: ServiceConfig = field(default_factory=ServiceConfig)

    def __post_init__(self) -> None:
        if self.listeners is None:
            self.listeners = [
                ListenerConfig("sync", self.writer.endpoint, "sync"),
                ListenerConfig("async", self.writer.endpoint, "async"),
            ]
        self.listeners = [
            replace(lc, name=lc.name if i == 1 else f"{lc.name}-{i}", copies=1)
            for lc in self.listeners
            for i in range(1, lc.copies + 1)
        ]
        names = [listener.name for listener in self.listeners]
        if len(set(names)) != len(names):
            repeat = next(i for i, name in enumerate(names) if name in names[:i])
            raise ConfigError(f"listener names must be unique: listeners[{repeat}] repeats an earlier name")
        if not self.writer.enabled and not self.listeners:
            raise ConfigError("nothing to do: writer disabled and no listeners")
        if self.clock_interval_s <= 0 or self.drain_s < 0:
            raise ConfigError("clock_interval_s must be > 0 and drain_s >= 0")


CONFIG_MODEL = ObserverConfig


# How many earlier write times each value carries, so a listener whose GET already returned a newer
# version can still time the write its notification was for (see seqtrack attribution).
HISTORY = 32


@dataclass(frozen=True)
class Version:
    seq: int
    wall_ns: int
    writer_offset_ns: int
    run_id: str
    history: tuple[int, ...] = ()  # wall_ns of seq-1, seq-2, ...

    def wall_of(self, seq: int) -> int | None:
        if seq == self.seq:
            return self.wall_ns
        back = self.seq - seq - 1
        return self.history[back] if 0 <= back < len(self.history) else None


def encode_value(
    seq: int, wall_ns: int, offset_ns: int, run_id: str, payload: bytes, history: Iterable[int] = ()
) -> bytes:
    """``seq:wall_ns:offset_ns:run_id:d1,d2,..:payload``, history newest first.

    d1 = wall_ns - wall of seq-1, d_i = wall of seq-(i-1) - wall of seq-i: each gap is relative to the
    next newer write, so all but d1 are known before the write is stamped (see ValueEncoder).
    """
    deltas = []
    newer = wall_ns
    for wall in history:
        deltas.append(b"%d" % (newer - wall))
        newer = wall
    return b"%d:%d:%d:%s:%s:%s" % (seq, wall_ns, offset_ns, run_id.encode(), b",".join(deltas), payload)


class ValueEncoder:
    """The writer's values, built so that only a few bytes operations follow the timestamp.

    Encoding a value from scratch costs tens of microseconds in Python on a small CPU, which would sit
    inside every one-way figure (the stamp is taken before the SET is written). Everything but the
    newest gap is prepared after the previous write, off the measured path.
    """

    def __init__(self, run_id: str, payload: bytes, history: int = HISTORY) -> None:
        self._run_id = run_id.encode()
        self._payload = payload
        self._newest: int | None = None  # wall of the last committed write
        self._gaps: collections.deque[bytes] = collections.deque(maxlen=max(0, history - 1))
        self._tail = b""  # b",d2,d3,..." for the next value

    def encode(self, seq: int, wall_ns: int, offset_ns: int) -> bytes:
        deltas = b"" if self._newest is None else b"%d%s" % (wall_ns - self._newest, self._tail)
        return b"%d:%d:%d:%s:%s:%s" % (seq, wall_ns, offset_ns, self._run_id, deltas, self._payload)

    def commit(self, wall_ns: int) -> None:
        """The write stamped ``wall_ns`` succeeded: it becomes the newest entry of the history."""
        if self._newest is not None:
            self._gaps.appendleft(b"%d" % (wall_ns - self._newest))
        self._newest = wall_ns
        self._tail = b"".join(b"," + gap for gap in self._gaps)


def decode_value(raw: bytes | None) -> Version | None:
    if not raw:
        return None
    parts = raw.split(b":", 5)
    if len(parts) != 6:
        return None
    try:
        wall = int(parts[1])
        walls = []
        newer = wall
        for delta in parts[4].split(b",") if parts[4] else ():
            newer -= int(delta)
            walls.append(newer)
        return Version(int(parts[0]), wall, int(parts[2]), parts[3].decode(), tuple(walls))
    except (ValueError, UnicodeDecodeError):
        return None


def merge_notify_flags(current: str) -> str | None:
    """Flags to set so string keyspace events are on, or None when they already are."""
    return with_notify_flags(current, "K$")


@dataclass
class _ListenerState:
    config: ListenerConfig
    tracker: ConnectionTracker
    seq: SeqTracker = field(default_factory=SeqTracker)
    offset_ns: int | None = None  # this host's clock minus the writer's
    ready: threading.Event = field(default_factory=threading.Event)
    acks_sent: int = 0


class ObserverAgent(AgentBase):
    kind = "observer"

    def __init__(self, config: ObserverConfig) -> None:
        super().__init__()
        self.config = config
        self.run_id = uuid.uuid4().hex[:8]
        self.notify_latency = LatencyMetric(
            self.registry,
            "kvt_observer_notify_latency",
            "Writer send to keyspace notification receipt (raw wall clock)",
            ["listener"],
        )
        self.read_latency = LatencyMetric(
            self.registry,
            "kvt_observer_read_latency",
            "Writer send to value read after the notification (raw wall clock)",
            ["listener"],
        )
        self.rtt = LatencyMetric(
            self.registry, "kvt_observer_rtt", "Writer send to listener handshake receipt", ["listener"]
        )
        self.write_latency = LatencyMetric(self.registry, "kvt_observer_write_latency", "SET round trip")
        self.writer_tracker = ConnectionTracker(self.registry, f"writer:{config.writer.endpoint.label()}")
        self.listeners = [
            _ListenerState(lc, ConnectionTracker(self.registry, f"{lc.name}:{lc.endpoint.label()}"))
            for lc in (config.listeners or [])
        ]
        self.writes = 0
        self.write_errors = 0
        self.acks_received = 0
        self.acks_unmatched = 0  # handshake for a seq no longer remembered (late or foreign)
        self.clock: ClockSample | None = None
        # seq -> perf_counter_ns at send, for the round trip; bounded to the last _sent_limit writes.
        self._sent: dict[int, int] = {}
        self._sent_limit = max(1000, int(config.writer.rate * 10))
        # set once the writer's handshake subscription is live: a listener's ack PUBLISHed before it is lost (seen
        # as 299 of 300 round trips in CI, a listener in another process answering the first write)
        self._acks_subscribed = threading.Event()
        self._payload = b"x" * config.writer.payload_bytes
        self.registry.register(_ObserverCollector(self))

    # -- startup ---------------------------------------------------------------------------------
    async def check(self) -> None:
        writer = self.config.writer.endpoint
        if self.config.writer.sentinel is not None:
            try:
                writer = await self._writer_endpoint()
            except (ConnectionError, OSError) as exc:
                raise ConnectError(f"writer.sentinel: {str(exc).splitlines()[0]}") from None
        endpoints = [writer] + [s.config.endpoint for s in self.listeners]
        seen: set[tuple[str, int]] = set()
        for endpoint in endpoints:
            if (endpoint.host, endpoint.port) in seen:
                continue
            seen.add((endpoint.host, endpoint.port))
            client = await connect_redis(endpoint)
            await client.aclose()

    async def _writer_endpoint(self) -> RedisEndpoint:
        """The writer's node now: the configured one, or the master Sentinel names."""
        cfg = self.config.writer
        if cfg.sentinel is None:
            return cfg.endpoint
        return await current_master(cfg.sentinel, cfg.endpoint)

    # -- run ---------------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        listener_stop = threading.Event()
        tasks: list[asyncio.Task[None]] = [asyncio.create_task(self._clock_loop(listener_stop), name="clock")]
        threads: list[threading.Thread] = []
        for state in self.listeners:
            if state.config.mode == "sync":
                thread = threading.Thread(
                    target=self._sync_listener,
                    args=(state, listener_stop),
                    name=f"listener-{state.config.name}",
                )
                thread.daemon = True  # never block interpreter exit if a socket hangs
                thread.start()
                threads.append(thread)
            else:
                tasks.append(
                    asyncio.create_task(self._async_listener(state, listener_stop), name=state.config.name)
                )
        if self.config.writer.enabled:
            tasks.append(asyncio.create_task(self._ack_loop(listener_stop), name="acks"))
            # Subscriptions first, the listeners' and the writer's own for the acks, so the first write is already
            # observed and its acks heard (bounded wait).
            deadline = time.monotonic() + 10
            while (not all(s.ready.is_set() for s in self.listeners) or not self._acks_subscribed.is_set()) \
                    and time.monotonic() < deadline:
                if stop.is_set():
                    break
                await asyncio.sleep(0.01)
            await self._writer(stop)
        await stop.wait()
        await asyncio.sleep(self.config.drain_s)
        listener_stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for thread in threads:
            await asyncio.to_thread(thread.join, 5.0)

    async def _clock_loop(self, done: threading.Event) -> None:
        backoff = Backoff()
        conn: RespConnection | None = None
        while not done.is_set():
            try:
                if conn is None or conn.closed:
                    conn = await RespConnection.open(await self._writer_endpoint())
                self.clock = await measure_offset(conn.execute)
                backoff.reset()
                delay = self.config.clock_interval_s
            except RESP_ERRORS:
                delay = backoff.next_delay()
            await _sleep_unless(done, delay)
        if conn is not None:
            conn.close()

    async def _writer(self, stop: asyncio.Event) -> None:
        cfg = self.config.writer
        interval = 1.0 / cfg.rate
        poll_s = cfg.poll_after_write_us / 1e6
        backoff = Backoff()
        key = self.config.key.encode()
        conn: RespConnection | None = None
        seq = 0
        encoder = ValueEncoder(self.run_id, self._payload, HISTORY)
        timer = DeadlineTimer()  # uvloop's millisecond timers would bunch writes at 1,000/s
        next_t = time.monotonic()
        try:
            while not stop.is_set() and (cfg.count == 0 or seq < cfg.count):
                delay = next_t - time.monotonic()
                if delay > 0:
                    if delay > 0.05:
                        await _sleep_unless(stop, delay - 0.05)
                    await timer.sleep_until(next_t)
                    if stop.is_set():
                        break
                attempted = False  # whether this pass took a new seq (a failed connect must not rewind one)
                try:
                    if conn is None or conn.closed:
                        conn = await RespConnection.open(await self._writer_endpoint())
                    seq += 1
                    attempted = True
                    offset = self.clock.offset_ns if self.clock is not None else 0
                    # Nothing but the value's last bytes and the socket write between stamp and send.
                    wall = time.time_ns()
                    reply = conn.send(b"SET", key, encoder.encode(seq, wall, offset))
                    self._sent[seq] = wall
                    self._sent.pop(seq - self._sent_limit, None)
                    if poll_s:
                        await _poll_until(reply, time.monotonic() + poll_s)
                    await conn.wait(reply, b"SET")
                except RESP_ERRORS as exc:
                    # Retry the same seq later: a failed write must not look like a lost notification. (A
                    # write that was applied but whose reply was lost is then seen twice: a duplicate.)
                    if attempted:
                        self._sent.pop(seq, None)
                        seq -= 1
                    self.write_errors += 1
                    if cfg.sentinel is not None and conn is not None:
                        conn.close()  # e.g. READONLY from a demoted master: ask Sentinel again
                    if not self.writer_tracker.is_down:
                        log.warning("writer lost %s: %s", cfg.endpoint.label(), exc)
                    self.writer_tracker.down()
                    await _sleep_unless(stop, backoff.next_delay())
                    next_t = time.monotonic()
                    continue
                self.write_latency.record_us((time.time_ns() - wall) // 1000)
                encoder.commit(wall)
                self.writes += 1
                if self.writer_tracker.is_down:
                    log.info("writer reconnected to %s", cfg.endpoint.label())
                    self.writer_tracker.up()
                backoff.reset()
                next_t += interval
                # After a stall (GC, outage) do not burst to catch up: that would turn into coalescing.
                next_t = max(next_t, time.monotonic() - interval)
        finally:
            timer.close()
            if conn is not None:
                conn.close()
        log.info("writer done: %d writes, %d errors", self.writes, self.write_errors)

    def _on_ack(self, reply: list[Any], received_ns: int) -> None:
        # Runs inside data_received: the round trip ends at the socket read, not after queueing.
        name, _, seq_text = reply[-1].decode(errors="replace").rpartition(":")
        sent = self._sent.get(int(seq_text)) if seq_text.isdigit() else None
        if sent is None:
            self.acks_unmatched += 1
            return
        self.acks_received += 1
        self.rtt.record_us((received_ns - sent) // 1000, listener=name)

    async def _ack_loop(self, done: threading.Event) -> None:
        backoff = Backoff()
        while not done.is_set():
            conn: RespConnection | None = None
            try:
                conn = await RespConnection.open(await self._writer_endpoint(), on_push=self._on_ack)
                await conn.subscribe(f"{self.config.key}:ack")
                self._acks_subscribed.set()
                backoff.reset()
                await _wait_lost_unless(done, [conn])
            except RESP_ERRORS:
                await _sleep_unless(done, backoff.next_delay())
            finally:
                if conn is not None:
                    conn.close()

    # -- listeners ---------------------------------------------------------------------------------
    def _record(self, state: _ListenerState, raw: bytes | None, t_notif: int, t_read: int) -> int | None:
        """Account one notification's read; returns the seq to acknowledge (the attributed one), or None.

        notify latency: for the version this notification was for (even if the GET saw a newer one);
        read latency: for each version actually read, once.
        """
        version = decode_value(raw)
        if version is None:
            state.seq.on_unreadable()
            return None
        kind, attributed = state.seq.on_read(version.run_id, version.seq, HISTORY)
        name = state.config.name
        if kind not in (ReadKind.REPEAT, ReadKind.STALE):
            self.read_latency.record_us((t_read - version.wall_ns) // 1000, listener=name)
        if self.clock is not None:
            state.offset_ns = self.clock.offset_ns - version.writer_offset_ns
        wall = version.wall_of(attributed) if attributed is not None else None
        if wall is None:
            return None
        self.notify_latency.record_us((t_notif - wall) // 1000, listener=name)
        return attributed

    def _baseline(self, state: _ListenerState, raw: bytes | None) -> None:
        version = decode_value(raw)
        state.seq.baseline(None if version is None else version.run_id, 0 if version is None else version.seq)

    async def _async_listener(self, state: _ListenerState, done: threading.Event) -> None:
        """Callbacks all the way: notification -> GET sent from data_received -> record -> PUBLISH ack."""
        cfg = state.config
        key = self.config.key.encode()
        channel = f"__keyspace@{cfg.endpoint.db}__:{self.config.key}"
        ack_channel = f"{self.config.key}:ack".encode()
        backoff = Backoff()

        while not done.is_set():
            conns: list[RespConnection] = []
            try:
                reader = await RespConnection.open(cfg.endpoint)
                conns.append(reader)
                acker = await RespConnection.open(await self._writer_endpoint()) if cfg.ack else None
                if acker is not None:
                    conns.append(acker)

                def on_value(
                    t_notif: int, fut: asyncio.Future[Any], acker: RespConnection | None = acker
                ) -> None:
                    if fut.cancelled() or fut.exception() is not None:
                        return  # the connection died; the loop below notices and reconnects
                    seq = self._record(state, fut.result(), t_notif, time.time_ns())
                    if seq is not None and acker is not None and not acker.closed:
                        # The acker may die between the check and the write (its server killed): the ack is
                        # lost with it, the writer counts it unanswered, and the loop below reconnects.
                        with contextlib.suppress(ConnectionError):
                            acker.send(
                                b"PUBLISH", ack_channel, b"%s:%d" % (cfg.name.encode(), seq)
                            ).add_done_callback(_retrieve)
                            state.acks_sent += 1

                def on_push(reply: list[Any], t_notif: int, reader: RespConnection = reader) -> None:
                    state.seq.on_notification()
                    # A dead reader raises here; the loop below notices the lost connection and reconnects.
                    with contextlib.suppress(ConnectionError):
                        reader.send(b"GET", key).add_done_callback(functools.partial(on_value, t_notif))

                if self.config.configure_notifications:
                    await _ensure_notify_flags(reader, cfg.endpoint.label())
                sub = await RespConnection.open(cfg.endpoint, on_push=on_push)
                conns.append(sub)
                await sub.subscribe(channel)
                if not state.ready.is_set():
                    self._baseline(state, await reader.execute(b"GET", key))
                if state.tracker.is_down:
                    log.info("listener %s resubscribed on %s", cfg.name, cfg.endpoint.label())
                state.tracker.up()
                backoff.reset()
                state.ready.set()
                await _wait_lost_unless(done, conns)
                if not done.is_set():
                    raise ConnectionError(f"{cfg.endpoint.label()}: connection lost")
            except RESP_ERRORS as exc:
                if not state.tracker.is_down:
                    log.warning("listener %s lost %s: %s", cfg.name, cfg.endpoint.label(), exc)
                state.tracker.down()
                await _sleep_unless(done, backoff.next_delay())
            finally:
                for conn in conns:
                    conn.close()

    def _sync_listener(self, state: _ListenerState, done: threading.Event) -> None:
        cfg = state.config
        channel = f"__keyspace@{cfg.endpoint.db}__:{self.config.key}"
        ack_channel = f"{self.config.key}:ack"
        backoff = Backoff()
        while not done.is_set():
            # No redis-py retries: its pub/sub would silently reconnect and hide the outage from us.
            sub = redis.Redis(**redis_kwargs(cfg.endpoint, retry=Retry(NoBackoff(), 0)))
            reader = redis.Redis(**redis_kwargs(cfg.endpoint, retry=Retry(NoBackoff(), 0)))
            acker: redis.Redis | None = None
            pubsub = sub.pubsub()
            try:
                if cfg.ack:
                    # a thread of its own: asking Sentinel (if configured) takes a short-lived loop
                    writer_node = asyncio.run(self._writer_endpoint())
                    acker = redis.Redis(**redis_kwargs(writer_node, retry=Retry(NoBackoff(), 0)))
                if self.config.configure_notifications:
                    flags = merge_notify_flags(_flags(reader.config_get("notify-keyspace-events")))
                    if flags is not None:
                        try:
                            reader.config_set("notify-keyspace-events", flags)
                        except redis.exceptions.NoPermissionError:
                            # the deployed agent user may not reconfigure the system under test: say what to fix,
                            # then retry like any lost listener (the flags may be set by a deploy meanwhile)
                            missing = notify_flags_missing(flags)
                            raise redis.ConnectionError(f"{cfg.endpoint.label()}: {missing}") from None
                pubsub.subscribe(channel)
                if not state.ready.is_set():
                    self._baseline(state, reader.get(self.config.key))  # type: ignore[arg-type]
                if state.tracker.is_down:
                    log.info("listener %s resubscribed on %s", cfg.name, cfg.endpoint.label())
                state.tracker.up()
                backoff.reset()
                state.ready.set()
                while not done.is_set():
                    msg = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
                    if msg is None:
                        continue
                    t_notif = time.time_ns()
                    state.seq.on_notification()
                    raw = reader.get(self.config.key)
                    seq = self._record(state, raw, t_notif, time.time_ns())  # type: ignore[arg-type]
                    if seq is not None and acker is not None:
                        acker.publish(ack_channel, f"{cfg.name}:{seq}")
                        state.acks_sent += 1
            except REDIS_CONNECTION_ERRORS as exc:
                if not state.tracker.is_down:
                    log.warning("listener %s lost %s: %s", cfg.name, cfg.endpoint.label(), exc)
                state.tracker.down()
                done.wait(backoff.next_delay())
            finally:
                for closable in (pubsub, sub, reader, acker):
                    if closable is not None:
                        with contextlib.suppress(Exception):
                            closable.close()

    # -- reporting -----------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        listeners = {}
        for state in self.listeners:
            name = state.config.name
            listeners[name] = {
                **state.seq.counts(),
                "acks_sent": state.acks_sent,
                # subscribed and baselined at least once: versions written from now on are all accounted for
                "subscribed": state.ready.is_set(),
                "clock_offset_us": None if state.offset_ns is None else round(state.offset_ns / 1000, 1),
                "notify_latency": self.notify_latency.summary().get(f"listener={name}", {}),
                "read_latency": self.read_latency.summary().get(f"listener={name}", {}),
                "rtt": self.rtt.summary().get(f"listener={name}", {}),
                **state.tracker.summary(),
            }
        return {
            "run_id": self.run_id,
            "pid": os.getpid(),
            "writer": {
                "enabled": self.config.writer.enabled,
                "writes": self.writes,
                "write_errors": self.write_errors,
                "acks_received": self.acks_received,
                "acks_unmatched": self.acks_unmatched,
                "write_latency": self.write_latency.summary().get("", {}),
                # the round trip per listener that acknowledged, its own process's or another's (seed 003 runs
                # every listener in a process of its own: their round trips end here, at the writer)
                "rtt_by_listener": {
                    label.removeprefix("listener="): stats for label, stats in sorted(self.rtt.summary().items())
                },
                **self.writer_tracker.summary(),
            },
            "clock_uncertainty_us": None
            if self.clock is None
            else round(self.clock.uncertainty_ns / 1000, 1),
            "listeners": listeners,
            "rss_bytes": self.process_metrics.rss_bytes(),
        }

    def histograms(self) -> dict[str, dict[str, str]]:
        return {
            metric.name: metric.encoded()
            for metric in (self.notify_latency, self.read_latency, self.rtt, self.write_latency)
        }


class _ObserverCollector(Collector):
    """Counters read at scrape time from the agent's own state (no double bookkeeping)."""

    COUNTERS = (
        "notifications",
        "versions",
        "coalesced",
        "missed",
        "duplicates",
        "repeat_reads",
        "stale_reads",
    )

    def __init__(self, agent: ObserverAgent) -> None:
        self._agent = agent

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        agent = self._agent
        families = {
            name: CounterMetricFamily(
                f"kvt_observer_{name}", f"Listener {name.replace('_', ' ')}", labels=["listener"]
            )
            for name in self.COUNTERS
        }
        offset = GaugeMetricFamily(
            "kvt_observer_clock_offset_us",
            "Listener clock minus writer clock (via TIME)",
            labels=["listener"],
        )
        for state in agent.listeners:
            counts = state.seq.counts()
            for name in self.COUNTERS:
                families[name].add_metric([state.config.name], counts[name])
            if state.offset_ns is not None:
                offset.add_metric([state.config.name], state.offset_ns / 1000)
        yield from families.values()
        yield offset
        yield CounterMetricFamily(
            "kvt_observer_writes", "Writes acknowledged by the server", value=agent.writes
        )
        yield CounterMetricFamily("kvt_observer_write_errors", "Writes that failed", value=agent.write_errors)
        yield CounterMetricFamily(
            "kvt_observer_acks", "Handshakes received by the writer", value=agent.acks_received
        )
        if agent.clock is not None:
            yield GaugeMetricFamily(
                "kvt_observer_clock_uncertainty_us",
                "Half the best TIME round trip",
                value=agent.clock.uncertainty_ns / 1000,
            )


# Anything that means "talk to the server again later" on the lean connections.
RESP_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError, OSError, RespError)


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """Consume a fire-and-forget reply so asyncio does not log 'exception was never retrieved'."""
    if not fut.cancelled():
        fut.exception()


async def _ensure_notify_flags(conn: RespConnection, label: str) -> None:
    reply = await conn.execute(b"CONFIG", b"GET", b"notify-keyspace-events")
    flags = merge_notify_flags(_text(reply[1]) if len(reply) > 1 else "")
    if flags is not None:
        try:
            await conn.execute(b"CONFIG", b"SET", b"notify-keyspace-events", flags)
        except RespError as exc:
            if not str(exc).startswith("NOPERM"):
                raise
            raise RespError(f"{label}: {notify_flags_missing(flags)}") from None




async def _poll_until(reply: asyncio.Future[Any], deadline: float) -> None:
    """Spin the loop (each pass polls the sockets without blocking) until ``reply`` or ``deadline``.

    The server writes the keyspace notification before the SET's reply, so once the reply is in, the
    listeners of this process have their notification stamped.
    """
    while not reply.done() and time.monotonic() < deadline:
        await asyncio.sleep(0)


async def _wait_lost_unless(done: threading.Event, conns: list[RespConnection]) -> None:
    """Return when any connection is lost or ``done`` is set (polled: it is a thread event)."""
    lost = [conn.lost for conn in conns]
    while not done.is_set():
        finished, _ = await asyncio.wait(lost, timeout=0.2, return_when=asyncio.FIRST_COMPLETED)
        if finished:
            return


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _flags(reply: Any) -> str:
    """CONFIG GET notify-keyspace-events -> its value, whatever the reply's key/value types."""
    items = {_text(k): _text(v) for k, v in dict(reply).items()}
    return items.get("notify-keyspace-events", "")


async def _sleep_unless(event: asyncio.Event | threading.Event, delay: float) -> None:
    """Sleep ``delay``, waking early when ``event`` is set (short sleeps are cheaper plain)."""
    if delay <= 0.05:
        await asyncio.sleep(delay)
        return
    end = time.monotonic() + delay
    while not event.is_set():
        remaining = end - time.monotonic()
        if remaining <= 0:
            return
        await asyncio.sleep(min(remaining, 0.05))


def build(config: ObserverConfig) -> ObserverAgent:
    return ObserverAgent(config)
