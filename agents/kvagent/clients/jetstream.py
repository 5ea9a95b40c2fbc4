"""NATS/JetStream plumbing shared by the expiry and pipeline agents: connect, ensure a stream and a
durable pull consumer, and bind to it.

nats-py reconnects by itself (and replays subscriptions); we only replace its fixed wait with our
capped exponential backoff with jitter, and feed a ConnectionTracker from its callbacks.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from kvagent.clients.connect import Backoff, ConnectError, ConnectionTracker, connect_nats
from kvagent.service.config import ConfigError, NatsEndpoint
from kvagent.service.pacing import sleep_or_stop


@dataclass
class StreamSettings:
    """The JetStream stream an agent publishes to or consumes from."""

    name: str
    subject: str
    storage: Literal["file", "memory"] = "file"
    replicas: int = 1
    # Seconds; the window within which a repeated Nats-Msg-Id is dropped by the stream.
    duplicate_window_s: float = 120.0
    # Seconds; 0 keeps messages until consumed (WorkQueue) or forever (limits).
    max_age_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in " .*>"):
            raise ConfigError(f"stream.name {self.name!r}: must be non-empty without spaces, '.', '*' or '>'")
        if not self.subject or " " in self.subject:
            raise ConfigError(f"stream.subject {self.subject!r}: must be a non-empty NATS subject")
        if not 1 <= self.replicas <= 5:
            raise ConfigError(f"stream.replicas {self.replicas}: must be 1..5")
        if self.duplicate_window_s < 0 or self.max_age_s < 0:
            raise ConfigError("stream.duplicate_window_s and stream.max_age_s must be >= 0")


@dataclass
class ConsumerSettings:
    """A durable pull consumer on the stream."""

    durable: str
    ack_wait_s: float = 30.0
    max_ack_pending: int = 1000
    extra: dict[str, Any] = field(default_factory=dict)


async def probe_nats(endpoint: NatsEndpoint, timeout_s: float = 10.0) -> None:
    """Fail fast at startup. connect_nats' own probe keeps max_reconnect_attempts=-1, with which
    nats-py's server selection retries an unreachable URL forever; a bounded attempt count makes it
    give up with NoServersError instead."""

    async def quiet(_exc: Exception) -> None:
        return None

    servers = ",".join(endpoint.servers)
    try:
        probe = await asyncio.wait_for(
            nats.connect(
                servers=endpoint.servers,
                user=endpoint.user,
                password=endpoint.password,
                connect_timeout=2,
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.1,
                error_cb=quiet,
            ),
            timeout_s,
        )
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        text = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        if isinstance(exc, nats.errors.NoServersError):
            text = "no server answered"
        kind = "authentication failed" if "authorization" in text.lower() else "unreachable"
        raise ConnectError(f"nats {servers}: {kind} ({text})") from None
    await probe.close()


async def connect_tracked(
    endpoint: NatsEndpoint,
    name: str,
    tracker: ConnectionTracker | None = None,
    backoff: Backoff | None = None,
) -> NATS:
    """connect_nats (one-line ConnectError at start) with our backoff between reconnect attempts
    and the outage recorded in ``tracker``."""
    backoff = backoff or Backoff()
    # connect_nats first opens a probe connection with the same callbacks and closes it; only the
    # real connection's outages count, so the callbacks stay inert until connect_nats returns.
    armed = False

    def choose_server(_servers: list[Any], _info: dict[str, Any]) -> tuple[Any, float]:
        # None lets nats-py take the head of its (randomised) pool; we only decide the delay.
        return None, backoff.next_delay()

    async def on_disconnect() -> None:
        if armed and tracker is not None:
            tracker.down()

    async def on_reconnect() -> None:
        backoff.reset()
        if armed and tracker is not None:
            tracker.up()

    await probe_nats(endpoint)
    nc: NATS = await connect_nats(
        endpoint,
        name,
        reconnect_to_server_handler=choose_server,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        # Small publish buffer: while disconnected we stop reading rather than buffer unboundedly.
        pending_size=2 * 1024 * 1024,
    )
    armed = True
    return nc


def _stream_config(settings: StreamSettings, retention: RetentionPolicy) -> StreamConfig:
    return StreamConfig(
        name=settings.name,
        subjects=[settings.subject],
        retention=retention,
        storage=StorageType.FILE if settings.storage == "file" else StorageType.MEMORY,
        num_replicas=settings.replicas,
        duplicate_window=settings.duplicate_window_s,
        max_age=settings.max_age_s or None,
    )


async def ensure_stream(js: JetStreamContext, settings: StreamSettings, retention: RetentionPolicy) -> None:
    """Create the stream if missing; several agents race to do this at start, all succeed."""
    config = _stream_config(settings, retention)
    try:
        await js.add_stream(config)
    except nats.js.errors.BadRequestError as exc:
        # 10058: a stream with that name exists with another config: keep it, but bring its replica count
        # to the one asked for (a run measuring an R3 stream must not silently measure an earlier R1 one);
        # JetStream moves the data itself. Retention cannot change in place: refuse with one line.
        if exc.err_code != 10058:
            raise
        info = await js.stream_info(settings.name)
        if info.config.retention != retention:
            raise ConnectError(
                f"stream {settings.name} exists with retention {info.config.retention}, want {retention}"
            ) from None
        if info.config.num_replicas != settings.replicas:
            info.config.num_replicas = settings.replicas
            await js.update_stream(info.config)


async def ensure_pull_consumer(js: JetStreamContext, stream: str, c: ConsumerSettings) -> None:
    options: dict[str, Any] = {"deliver_policy": DeliverPolicy.ALL, **c.extra}  # extra may choose another start
    config = ConsumerConfig(
        durable_name=c.durable,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=c.ack_wait_s,
        max_ack_pending=c.max_ack_pending,
        **options,
    )
    try:
        await js.add_consumer(stream, config)
    except nats.js.errors.BadRequestError as exc:
        # The durable already exists (another worker made it first): share it, that is the point.
        if exc.err_code not in (10148, 10013):
            raise


async def bind_pull(
    js: JetStreamContext, stream: StreamSettings, consumer: ConsumerSettings, retention: RetentionPolicy
) -> JetStreamContext.PullSubscription:
    await ensure_stream(js, stream, retention)
    await ensure_pull_consumer(js, stream.name, consumer)
    return await js.pull_subscribe_bind(durable=consumer.durable, stream=stream.name)


# what a pull consumer outlives by binding again: the server restarted (maybe without the stream) or is unreachable
JETSTREAM_ERRORS: tuple[type[BaseException], ...] = (nats.errors.Error, nats.js.errors.Error, OSError, TimeoutError)


async def pull_batches(
    js_of: Callable[[], JetStreamContext],
    stream: StreamSettings,
    consumer: ConsumerSettings,
    retention: RetentionPolicy,
    batch: int,
    fetch_timeout_s: float,
    stop: asyncio.Event,
    on_error: Callable[[BaseException], None],
) -> AsyncIterator[list[Msg]]:
    """Batches of a durable pull consumer until stop; an error is reported to on_error, then the consumer is
    bound again after a jittered pause (the stream and consumer are created again if the server lost them)."""
    backoff = Backoff(cap_s=2.0)
    sub: JetStreamContext.PullSubscription | None = None
    while not stop.is_set():
        try:
            if sub is None:
                sub = await bind_pull(js_of(), stream, consumer, retention)
            msgs = await sub.fetch(batch, timeout=fetch_timeout_s)
        except nats.errors.TimeoutError:
            continue  # nothing to fetch within the timeout
        except JETSTREAM_ERRORS as exc:
            on_error(exc)
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
            sub = None
            await sleep_or_stop(stop, backoff.next_delay())
            continue
        backoff.reset()
        yield msgs


async def consumer_pending(js: JetStreamContext, stream: str, durable: str) -> tuple[int, int]:
    """(num_pending, num_ack_pending) of a durable: how far the consumer is behind the stream."""
    info = await js.consumer_info(stream, durable, timeout=2.0)
    return int(info.num_pending or 0), int(info.num_ack_pending or 0)
