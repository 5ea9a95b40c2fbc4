"""kvload's own gevent RESP client: shared connections with automatic pipelining, Sentinel and Cluster routing.

    connection.py  one connection, many greenlets: a writer and a reader greenlet, hiredis parsing, reconnect
    pool.py        N connections per process and target, kept on the Locust environment
    cluster.py     slot map, MOVED/ASK, pipelines grouped by node
    sentinel.py    the master a Sentinel set names, followed across failovers
    target.py      --host URLs (redis://, rediss://, redis+sentinel://, redis+cluster://)

No module here imports Locust (unit tests use them without gevent's monkey patching).
"""

from kvload.resp.connection import (
    AuthenticationFailed,
    Connection,
    ConnectSettings,
    RespConnectionError,
    RespError,
    pack,
)
from kvload.resp.target import Target, TargetError, parse_target

__all__ = [
    "AuthenticationFailed",
    "ConnectSettings",
    "Connection",
    "RespConnectionError",
    "RespError",
    "Target",
    "TargetError",
    "pack",
    "parse_target",
]
