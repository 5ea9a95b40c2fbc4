"""Following the master of a Sentinel-managed set, with redis-py's Sentinel client for every agent.

redis-py does the asking: ``Sentinel.discover_master`` tries each Sentinel in turn, skips one whose view
of the master is subjectively or objectively down, and moves the Sentinel that answered to the front.
Agents that use redis-py clients take ``master_for`` (streams: a pool that asks again on each new
connection and drops a connection to a demoted master on its READONLY reply). Agents that need an
address rather than a client (the observer's lean hiredis connections, expiry's per-node
subscriptions) call ``discover_master`` through ``master_endpoint``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from kvagent.clients.connect import redis_kwargs
from kvagent.service.config import ConfigError, RedisEndpoint


@dataclass
class SentinelSettings:
    """Follow the master that Sentinel names instead of a fixed node.

    The agent asks the Sentinels on every new connection; after a failover its usual reconnects land on
    the promoted replica. The node endpoint configured beside it gives the credentials, TLS and db.
    """

    sentinels: list[RedisEndpoint] = field(default_factory=list)
    master_name: str = "mymaster"

    def __post_init__(self) -> None:
        if not self.sentinels:
            raise ConfigError("sentinel.sentinels must list at least one Sentinel")


def sentinel_manager(sentinels: list[RedisEndpoint], timeout_s: float = 2.0) -> Sentinel:
    """redis-py's Sentinel for these Sentinels. redis-py applies one set of connection arguments to every
    Sentinel, so the first one's username, password and TLS settings are used for all of them."""
    first = sentinels[0]
    kwargs = redis_kwargs(
        first,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        # No silent retries: a dead Sentinel must cost one connect timeout, then the next one is asked.
        retry=Retry(NoBackoff(), 0),
    )
    for per_node in ("host", "port", "db"):
        kwargs.pop(per_node)
    return Sentinel([(s.host, s.port) for s in sentinels], sentinel_kwargs=kwargs)


async def master_endpoint(manager: Sentinel, master_name: str, template: RedisEndpoint) -> RedisEndpoint:
    """``template`` (credentials, TLS, db) pointed at the master Sentinel names now.

    Raises the builtin ConnectionError (one line) when no Sentinel names a master that is up, so callers
    handle it like any other unreachable server.
    """
    try:
        host, port = await manager.discover_master(master_name)
    except (redis.RedisError, OSError) as exc:
        text = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise ConnectionError(f"sentinel: {text}") from None
    return dataclasses.replace(template, host=str(host), port=int(port))


async def current_master(settings: SentinelSettings, credentials: RedisEndpoint) -> RedisEndpoint:
    """One-shot ``master_endpoint``: a manager of its own, closed again, so it works from any event loop
    (the observer's sync listener asks from a thread with a short-lived loop)."""
    manager = sentinel_manager(settings.sentinels)
    try:
        return await master_endpoint(manager, settings.master_name, credentials)
    finally:
        await manager.aclose()
