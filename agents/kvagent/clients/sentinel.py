"""Finding the master of a Sentinel-managed set, for agents that write to "whatever is primary now"."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from kvagent.clients.targets import TargetSettings, make_resolver
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


async def current_master(settings: SentinelSettings, credentials: RedisEndpoint) -> RedisEndpoint:
    """The master's endpoint with ``credentials``' user, password, TLS and db; ConnectionError when no
    Sentinel can name it."""
    target = TargetSettings(
        mode="sentinel",
        sentinels=settings.sentinels,
        master_name=settings.master_name,
        username=credentials.username,
        password=credentials.password,
        db=credentials.db,
    )
    (master,) = await make_resolver(target).resolve()
    return dataclasses.replace(master, tls=credentials.tls)
