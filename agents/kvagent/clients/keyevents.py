"""Subscribe to `expired` keyspace events on a changing set of nodes, reconnecting forever.

One task per node (events are node-local); a supervisor asks the resolver every ``refresh_s`` which
nodes own keys now (Sentinel's master, a Cluster's masters) and starts or stops node tasks to match.
Pub/sub is at-most-once: while a node task is disconnected its events are gone, and the ledger audit
counts them as lost; nothing here tries to guess them back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import redis
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from kvagent.clients.connect import REDIS_CONNECTION_ERRORS, Backoff, ConnectionTracker, connect_redis
from kvagent.clients.targets import Resolver
from kvagent.service.config import RedisEndpoint
from kvagent.service.pacing import sleep_or_stop

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeyEvent:
    node: str  # host:port of the node that published it
    key: str
    recv_time_ms: float  # wall clock at receipt, comparable with deadlines written by the generator


EventSink = Callable[[KeyEvent], Awaitable[None]]


# the event classes Redis's "A" stands for (notify-keyspace-events: A is an alias of g$lshzxetd)
_ALIASED_BY_A = set("g$lshzxetd")


def with_notify_flags(current: str, needed: str) -> str | None:
    """The notify-keyspace-events value that adds `needed` (e.g. "K$" for the observer's keyspace events of
    strings, "Ex" for expired keyevents) to `current`, keeping its other flags; None when nothing is missing."""
    missing = "".join(f for f in needed if f not in current and not (f in _ALIASED_BY_A and "A" in current))
    return current + missing if missing else None


def notify_flags_missing(flags: str) -> str:
    """One line naming the fix when a server lacks the flags and the agent user may not CONFIG SET them (the
    deployed agents' ACL user may not: roles/kvstore sets the flags)."""
    return (f"notify-keyspace-events must include {flags!r} and this user may not CONFIG SET it: set "
            "notify_keyspace_events in the deployment's kvstore settings, or configure_notifications: false once "
            "the server has them")


def wants_expired(flags: str) -> str | None:
    """The notify-keyspace-events value to set so `expired` keyevents are published, or None if set."""
    return with_notify_flags(flags, "Ex")


class NodeSubscription:
    """Keeps one SUBSCRIBE to ``__keyevent@<db>__:expired`` on one node alive."""

    def __init__(
        self,
        endpoint: RedisEndpoint,
        sink: EventSink,
        tracker: ConnectionTracker,
        configure: bool,
        stop: asyncio.Event,
    ) -> None:
        self.endpoint = endpoint
        self.label = endpoint.label()
        self._sink = sink
        self._tracker = tracker
        self._configure = configure
        self._stop = stop
        self._backoff = Backoff(base_s=0.05, cap_s=2.0)
        self.received = 0
        self.subscribed = asyncio.Event()

    async def _ensure_notifications(self, client: aioredis.Redis) -> None:
        # A restarted server forgets CONFIG SET: re-apply on every (re)connect, merging existing flags.
        current = await client.config_get("notify-keyspace-events")
        flags = current.get("notify-keyspace-events", "")
        flags = flags.decode() if isinstance(flags, bytes) else flags
        wanted = wants_expired(flags)
        if wanted is not None:
            try:
                await client.config_set("notify-keyspace-events", wanted)
            except redis.exceptions.NoPermissionError:
                # deployed agents may not reconfigure the system under test (roles/kvstore sets the flags)
                raise RuntimeError(notify_flags_missing(wanted)) from None

    async def run(self) -> None:
        channel = f"__keyevent@{self.endpoint.db}__:expired"
        while not self._stop.is_set():
            client: aioredis.Redis | None = None
            try:
                # health_check_interval makes redis-py PING an idle subscription, so a silently dead
                # peer is noticed instead of looking like "no keys expired".
                client = await connect_redis(self.endpoint, socket_timeout=None, health_check_interval=5)
                if self._configure:
                    await self._ensure_notifications(client)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(channel)
                self._tracker.up()
                self._backoff.reset()
                self.subscribed.set()
                await self._pump(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure means: reconnect, never crash
                if not isinstance(exc, REDIS_CONNECTION_ERRORS):
                    log.warning("subscription to %s failed: %s", self.label, exc)
                self._tracker.down()
                self.subscribed.clear()
            finally:
                if client is not None:
                    with contextlib.suppress(Exception):
                        await client.aclose(close_connection_pool=True)
            if not self._stop.is_set():
                await sleep_or_stop(self._stop, self._backoff.next_delay())

    async def _pump(self, pubsub: aioredis.client.PubSub) -> None:
        while not self._stop.is_set():
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if msg is None or msg.get("type") != "message":
                continue
            data = msg["data"]
            key = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
            self.received += 1
            await self._sink(KeyEvent(self.label, key, time.time() * 1000.0))


class ExpiredEventSource:
    """Follows the resolver's node set, one NodeSubscription task per node."""

    def __init__(
        self,
        resolver: Resolver,
        sink: EventSink,
        registry: CollectorRegistry,
        configure: bool,
        refresh_s: float,
    ) -> None:
        self._resolver = resolver
        self._sink = sink
        self._registry = registry
        self._configure = configure
        self._refresh_s = refresh_s
        self._trackers: dict[str, ConnectionTracker] = {}
        self._tasks: dict[str, tuple[NodeSubscription, asyncio.Task[None]]] = {}
        self.node_changes = 0
        self.resolve_failures = 0
        self._applied_once = False

    def tracker(self, label: str) -> ConnectionTracker:
        if label not in self._trackers:
            self._trackers[label] = ConnectionTracker(self._registry, f"redis:{label}")
        return self._trackers[label]

    @property
    def subscriptions(self) -> dict[str, NodeSubscription]:
        return {label: sub for label, (sub, _task) in self._tasks.items()}

    def all_subscribed(self) -> bool:
        return bool(self._tasks) and all(sub.subscribed.is_set() for sub, _ in self._tasks.values())

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    nodes = await self._resolver.resolve()
                except REDIS_CONNECTION_ERRORS as exc:
                    # Keep the current subscriptions: they reconnect by themselves if the node returns.
                    self.resolve_failures += 1
                    log.debug("resolve failed: %s", exc)
                else:
                    self._apply(nodes, stop)
                await sleep_or_stop(stop, self._refresh_s)
        finally:
            for _sub, task in self._tasks.values():
                task.cancel()
            for _sub, task in self._tasks.values():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def _apply(self, nodes: list[RedisEndpoint], stop: asyncio.Event) -> None:
        wanted = {n.label(): n for n in nodes}
        for label in list(self._tasks):
            if label not in wanted:
                # A demoted master publishes no `expired` for our keys any more.
                _sub, task = self._tasks.pop(label)
                task.cancel()
                self.node_changes += 1
        for label, endpoint in wanted.items():
            if label not in self._tasks:
                sub = NodeSubscription(endpoint, self._sink, self.tracker(label), self._configure, stop)
                self._tasks[label] = (sub, asyncio.create_task(sub.run(), name=f"sub-{label}"))
                if self._applied_once:
                    # A node appeared after start: a failover promoted it, or the cluster grew.
                    self.node_changes += 1
        self._applied_once = True

    def connection_summary(self) -> dict[str, dict[str, float]]:
        return {label: t.summary() for label, t in self._trackers.items()}
