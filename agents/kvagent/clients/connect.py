"""Connections that are expected to break: backoff, outage accounting, and startup checks.

Scenarios kill servers under the agents, so every loop catches connection errors, records the
outage in a ConnectionTracker and retries after Backoff.next_delay(). Only at startup is an
unreachable server or a rejected password fatal (ConnectError -> one line, exit 2).
"""

from __future__ import annotations

import ssl
import threading
import time
from typing import Any

import redis
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Counter, Gauge
from redis.backoff import FullJitterBackoff, NoBackoff

from kvagent.service.config import NatsEndpoint, RedisEndpoint

# Errors that mean "the server went away": retried forever by agent loops.
REDIS_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.BusyLoadingError,
    ConnectionError,
    TimeoutError,
    OSError,
)


class ConnectError(Exception):
    """A server could not be reached or refused our credentials at startup; one-line message."""


class Backoff:
    """redis-py's FullJitterBackoff (delay = uniform(0, min(cap, base * 2**attempt))) plus the attempt
    counter our loops need: next_delay() after each failure, reset() after a success.

    Full jitter rather than ExponentialWithJitterBackoff: that one is min(cap, random * base * 2**n),
    so once the exponent passes the cap almost every delay equals the cap and agents that lost the
    same server retry in lockstep; full jitter keeps them spread over [0, cap] however long the outage.
    """

    # FullJitterBackoff computes base * 2**failures as int * float: past ~2**1024 that overflows, and
    # the cap is reached long before 2**32 for any base we use.
    _MAX_EXPONENT = 32

    def __init__(self, base_s: float = 0.05, cap_s: float = 5.0) -> None:
        if base_s <= 0 or cap_s < base_s:
            raise ValueError("need 0 < base_s <= cap_s")
        self.base_s = base_s
        self.cap_s = cap_s
        self._policy = FullJitterBackoff(cap=cap_s, base=base_s)
        self._attempt = 0

    @property
    def attempt(self) -> int:
        return self._attempt

    def next_delay(self) -> float:
        delay = self._policy.compute(min(self._attempt, self._MAX_EXPONENT))
        self._attempt += 1
        return delay

    def reset(self) -> None:
        self._attempt = 0


class ConnectionTracker:
    """Counts disconnections and seconds spent disconnected for one target; thread safe, idempotent."""

    def __init__(self, registry: CollectorRegistry, target: str) -> None:
        self.target = target
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._disconnections = 0
        self._closed_seconds = 0.0
        self._count = _tracker_metric(registry, "disconnections", Counter, "Connections lost").labels(target)
        self._seconds = _tracker_metric(
            registry, "disconnected_seconds", Counter, "Seconds spent disconnected (closed outages)"
        ).labels(target)
        self._state = _tracker_metric(registry, "connected", Gauge, "1 while connected to the target").labels(
            target
        )
        self._state.set(1)

    @property
    def is_down(self) -> bool:
        return self._down_since is not None

    def down(self) -> None:
        """The connection broke (repeat calls during one outage count once)."""
        with self._lock:
            if self._down_since is not None:
                return
            self._down_since = time.monotonic()
            self._disconnections += 1
        self._count.inc()
        self._state.set(0)

    def up(self) -> None:
        with self._lock:
            if self._down_since is None:
                return
            elapsed = time.monotonic() - self._down_since
            self._down_since = None
            self._closed_seconds += elapsed
        self._seconds.inc(elapsed)
        self._state.set(1)

    @property
    def disconnections(self) -> int:
        return self._disconnections

    def disconnected_seconds(self) -> float:
        """Closed outages plus the current one, if any."""
        with self._lock:
            current = time.monotonic() - self._down_since if self._down_since is not None else 0.0
            return self._closed_seconds + current

    def summary(self) -> dict[str, Any]:
        return {
            "disconnections": self.disconnections,
            "disconnected_seconds": round(self.disconnected_seconds(), 3),
        }


def _tracker_metric(registry: CollectorRegistry, name: str, kind: Any, doc: str) -> Any:
    """One shared labelled metric per registry: several trackers (targets) register it only once."""
    full = f"kvt_{name}"
    existing = getattr(registry, "_kvt_tracker_metrics", None)
    if existing is None:
        existing = {}
        registry._kvt_tracker_metrics = existing  # type: ignore[attr-defined]
    if full not in existing:
        existing[full] = kind(full, doc, ["target"], registry=registry)
    return existing[full]


def tls_kwargs(endpoint: RedisEndpoint) -> dict[str, Any]:
    """redis-py's TLS arguments: verify the server against ``tls_ca_file`` (the testbed's own CA) or, without
    it, the system's trust store; the host name is checked too (redis-py's default). Empty without TLS:
    redis-py's non-TLS connection classes reject ssl_* arguments."""
    if not endpoint.tls:
        return {}
    return {"ssl": True, "ssl_cert_reqs": "required", "ssl_ca_certs": endpoint.tls_ca_file}


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """The same policy as an ssl.SSLContext, for clients that take one (hiredis connections, nats-py)."""
    return ssl.create_default_context(cafile=ca_file)


def redis_kwargs(endpoint: RedisEndpoint, **kw: Any) -> dict[str, Any]:
    """Client keyword arguments for an endpoint; redis-py's own retries are off, agents retry themselves."""
    args: dict[str, Any] = {
        "host": endpoint.host,
        "port": endpoint.port,
        "db": endpoint.db,
        "password": endpoint.password,
        "username": endpoint.username,
        "socket_connect_timeout": 2.0,
        "socket_timeout": 5.0,
        **tls_kwargs(endpoint),
    }
    args.update(kw)
    return args


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__


def _describe_redis_error(endpoint: RedisEndpoint, exc: BaseException) -> ConnectError:
    text = _first_line(exc)
    lowered = text.lower()
    if "certificate verify failed" in lowered or "wrong version number" in lowered or isinstance(exc, ssl.SSLError):
        # Which CA was used matters to the operator; its path is configuration, not a secret.
        ca = endpoint.tls_ca_file or "the system trust store"
        return ConnectError(f"redis {endpoint.label()}: TLS verification failed against {ca} ({text})")
    if isinstance(exc, redis.AuthenticationError) or any(
        m in lowered for m in ("wrongpass", "noauth", "invalid password", "invalid username", "auth")
    ):
        return ConnectError(f"redis {endpoint.label()}: authentication failed ({text})")
    if isinstance(exc, redis.ResponseError):
        return ConnectError(f"redis {endpoint.label()}: server refused ({text})")
    return ConnectError(f"redis {endpoint.label()}: unreachable ({text})")


async def connect_redis(endpoint: RedisEndpoint, **kw: Any) -> aioredis.Redis:
    """An asyncio client that answered PING; auth failure or no server -> ConnectError (one line)."""
    from redis.asyncio.retry import Retry as AsyncRetry

    kw.setdefault("retry", AsyncRetry(NoBackoff(), 0))
    client = aioredis.Redis(**redis_kwargs(endpoint, **kw))
    try:
        await client.ping()
    except (TimeoutError, redis.RedisError, OSError) as exc:
        await client.aclose()
        raise _describe_redis_error(endpoint, exc) from None
    return client


def connect_redis_sync(endpoint: RedisEndpoint, **kw: Any) -> redis.Redis:
    """Synchronous twin of connect_redis, for agents that keep a blocking client in a thread."""
    from redis.retry import Retry

    kw.setdefault("retry", Retry(NoBackoff(), 0))
    client = redis.Redis(**redis_kwargs(endpoint, **kw))
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        client.close()
        raise _describe_redis_error(endpoint, exc) from None
    return client


async def connect_nats(endpoint: NatsEndpoint, name: str = "kvtestbed", **kw: Any) -> Any:
    """A nats-py client; startup failures -> ConnectError. Afterwards nats-py reconnects by itself
    (max_reconnect_attempts=-1) and the caller hooks its callbacks to a ConnectionTracker."""
    import nats
    from nats.errors import Error as NatsError

    options: dict[str, Any] = {
        "servers": endpoint.servers,
        "name": name,
        "connect_timeout": 2,
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.25,
    }
    if endpoint.user is not None:
        options["user"] = endpoint.user
    if endpoint.password is not None:
        options["password"] = endpoint.password
    if endpoint.tls_ca_file is not None:
        # nats-py upgrades to TLS with this context (tls:// URLs, or a server that requires TLS).
        options["tls"] = tls_context(endpoint.tls_ca_file)
    options.update(kw)

    async def _quiet(exc: Exception) -> None:  # nats-py would log every failed reconnect attempt
        return None

    options.setdefault("error_cb", _quiet)
    try:
        # Probe once without reconnects: with max_reconnect_attempts=-1 nats-py would retry a wrong
        # URL or password forever, and at startup that must be one clear error instead.
        # The probe gets none of the caller's callbacks: its close is not a disconnection to count.
        callbacks = ("disconnected_cb", "reconnected_cb", "closed_cb")
        probe_options = {k: v for k, v in options.items() if k not in callbacks}
        probe = await nats.connect(**{**probe_options, "allow_reconnect": False, "max_reconnect_attempts": 0})
        await probe.close()
        return await nats.connect(**options)
    except (TimeoutError, NatsError, OSError) as exc:
        text = _first_line(exc)
        lowered = text.lower()
        if "certificate verify failed" in lowered or isinstance(exc, ssl.SSLError):
            kind = f"TLS verification failed against {endpoint.tls_ca_file or 'the system trust store'}"
        else:
            kind = "authentication failed" if "authorization" in lowered else "unreachable"
        raise ConnectError(f"nats {endpoint.label()}: {kind} ({text})") from None
