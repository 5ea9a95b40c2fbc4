"""Key-value users (Redis, Valkey, KeyDB; standalone, Sentinel, Cluster): GET, SET and a mix of both.

    locust -f loadtests/locustfile.py --host redis://127.0.0.1:6379 --headless -u 200 -t 30s KvGetSetUser
    locust -f loadtests/locustfile.py --host redis+cluster://10.0.0.1:7000,10.0.0.2:7000 KvGetUser \\
        --kvt-key-dist zipf:0.99 --kvt-pipeline 16
    locust -f loadtests/locustfile.py --host redis+sentinel://10.0.0.1:26379/mymaster KvSetUser \\
        --kvt-password-file secrets/redis-password          # ACL user: redis://loadgen@host:6379

Every user of a process shares --kvt-connections auto-pipelined connections per node (kvload.resp), so a few
connections carry many users with few system calls. Requests are recorded as "GET kv" / "SET kv"; a pipeline of
depth P is one round trip recorded once with count=P, so Locust's request count equals the server's command count
(INFO commandstats). With --kvt-pipeline P each round trip is all GETs or all SETs (chosen with the ratio), and an
open-loop --kvt-rate counts round trips, i.e. P commands each. Run with --stop-timeout (see BURST) for exact counts.

Throughput against redis-benchmark: `make bench` (tests/bench/test_bench_load.py), latest figures in docs/load.md.
Earlier rounds (2026-12-01, redis-server on CPU0, Locust on CPU1, 200 users over --kvt-connections 50) put
Locust's own CPU at 10.7-12.2 us per GET at depth 1 and 1.3-1.4 us at depth 16.
At depth 1 about half of the user's own Python time is the recorder (kvload.stats: HdrHistogram.record_value).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import gevent.ssl
from locust import events, task
from locust.exception import StopUser

from kvload.keys import KeyChooser, KeyDistributionError, chooser_for
from kvload.plugin import PreflightError, read_secret
from kvload.resp.cluster import ClusterClient, ClusterHandle
from kvload.resp.connection import AuthenticationFailed, Connection, ConnectSettings, RespConnectionError, RespError
from kvload.resp.pool import Client, pool_for
from kvload.resp.sentinel import SentinelResolver, master_connection
from kvload.resp.target import Target, TargetError, parse_target
from kvload.users.base import KvtUser

__all__ = ["KvGetSetUser", "KvGetUser", "KvSetUser"]

log = logging.getLogger(__name__)

NAME = "kv"
# Requests per Locust task in closed loop. Locust's task machinery (pick a task, run it, wait_time, sleep(0)) cost
# about as much per request as our client: one request per task made 31k GET/s, a burst of 32 made 59k GET/s (200
# users over 50 connections, server and Locust pinned to a CPU each). With --stop-timeout a stopping user finishes
# its burst (Locust lets a running task end), so no request is cut off between send and record; without it
# (Locust's default 0) users are killed at once and up to one request per user is executed but never counted.
BURST = 32


@events.init_command_line_parser.add_listener
def _kv_options(parser: Any) -> None:
    parser.add_argument("--kvt-keys", type=int, default=100_000, help="key-value users: size of the key space")
    parser.add_argument(
        "--kvt-key-dist", default="uniform", help="key-value users: uniform, or zipf:S for hot keys (e.g. zipf:0.99)"
    )
    parser.add_argument(
        "--kvt-get-ratio", type=float, default=0.9, help="KvGetSetUser: share of GETs, 0..1 (the rest are SETs)"
    )
    parser.add_argument("--kvt-value-size", type=int, default=64, help="key-value users: bytes per SET value")
    parser.add_argument("--kvt-pipeline", type=int, default=1, help="key-value users: commands per round trip")
    parser.add_argument("--kvt-key-prefix", default="kvt:load:", help="key-value users: prefix of every key")
    parser.add_argument(
        "--kvt-sentinel-password-file",
        default="",
        include_in_web_ui=False,
        help="redis+sentinel:// targets: file with the Sentinels' password (their requirepass), if they ask for one",
    )
    parser.add_argument(
        "--kvt-connections",
        type=int,
        default=16,
        help="key-value users: shared connections per Locust process and server node",
    )


# -- options, checked once per process and option set ----------------------------------------------------------
@dataclass(frozen=True)
class KvConfig:
    target: Target
    settings: ConnectSettings
    chooser: KeyChooser
    get_ratio: float
    value_size: int
    pipeline: int
    prefix: bytes
    connections: int
    pool_key: tuple[Any, ...]
    sentinel_password: str | None = field(default=None, repr=False)


def _option_values(environment: Any) -> tuple[Any, ...]:
    o = environment.parsed_options
    return (
        environment.host or getattr(o, "host", None) or "",
        o.kvt_keys,
        o.kvt_key_dist,
        o.kvt_get_ratio,
        o.kvt_value_size,
        o.kvt_pipeline,
        o.kvt_key_prefix,
        o.kvt_connections,
        getattr(o, "kvt_password_file", ""),
        getattr(o, "kvt_tls_ca", ""),
        getattr(o, "kvt_sentinel_password_file", ""),
    )


def kv_config(environment: Any) -> KvConfig:
    """This run's key-value settings (PreflightError names the option to fix); cached per option values, so the
    password file is read once per process, not per user."""
    values = _option_values(environment)
    cached: tuple[tuple[Any, ...], KvConfig] | None = getattr(environment, "kvt_kv_config", None)
    if cached is not None and cached[0] == values:
        return cached[1]
    host, keys, dist, ratio, value_size, pipeline, prefix, connections, password_file, tls_ca, sentinel_file = values
    if keys < 1:
        raise PreflightError(f"--kvt-keys {keys}: must be >= 1")
    if not 0.0 <= ratio <= 1.0:
        raise PreflightError(f"--kvt-get-ratio {ratio:g}: must be between 0 and 1")
    if value_size < 0:
        raise PreflightError(f"--kvt-value-size {value_size}: must be >= 0")
    if pipeline < 1:
        raise PreflightError(f"--kvt-pipeline {pipeline}: must be >= 1")
    if connections < 1:
        raise PreflightError(f"--kvt-connections {connections}: must be >= 1")
    try:
        chooser = chooser_for(environment, dist, keys)
        target = parse_target(host)
    except (KeyDistributionError, TargetError) as exc:
        raise PreflightError(str(exc)) from None
    password = read_secret(password_file)
    if target.username and password is None:
        raise PreflightError(f"--host names user {target.username!r}: pass its password with --kvt-password-file")
    ssl_context = None
    if target.tls:
        try:
            # gevent's SSLContext: its sockets yield to the loop even without monkey patching
            ssl_context = gevent.ssl.create_default_context(cafile=tls_ca or None)
        except (OSError, gevent.ssl.SSLError) as exc:
            raise PreflightError(f"--kvt-tls-ca {tls_ca}: cannot load it ({exc.strerror or exc})") from None
    settings = ConnectSettings(username=target.username, password=password, db=target.db, ssl_context=ssl_context)
    config = KvConfig(
        target=target,
        settings=settings,
        chooser=chooser,
        get_ratio=float(ratio),
        value_size=value_size,
        pipeline=pipeline,
        prefix=str(prefix).encode(),
        connections=connections,
        pool_key=(host, connections, password_file, tls_ca, sentinel_file),
        sentinel_password=read_secret(sentinel_file),
    )
    environment.kvt_kv_config = (values, config)
    return config


# -- the check before load ---------------------------------------------------------------------------------------
def probe(config: KvConfig) -> None:
    """Connect, AUTH and PING every server the users will talk to (Sentinel: the master it names; Cluster: every
    master of CLUSTER SLOTS). Sends no GET or SET. PreflightError with one line on any failure."""
    target, settings = config.target, config.settings
    opened: list[Connection | ClusterClient] = []
    try:
        if target.kind == "cluster":
            cluster = ClusterClient(target.nodes, settings, size=1)
            opened.append(cluster)
            cluster.refresh()
            servers = [cluster.connection(address, 0) for address in cluster.masters()]
            if not servers:
                raise PreflightError(f"target {target}: CLUSTER SLOTS lists no master (is the cluster created?)")
        elif target.kind == "sentinel":
            assert target.master_name is not None
            resolver = SentinelResolver(target.nodes, target.master_name, settings, config.sentinel_password)
            servers = [master_connection(resolver, settings)]
        else:
            servers = [Connection(target.nodes[0], settings)]
        opened.extend(servers)
        for conn in servers:
            conn.call(b"PING")
    except AuthenticationFailed:
        raise PreflightError(f"target {target}: authentication failed (check --kvt-password-file)") from None
    except RespConnectionError as exc:
        where = ""
        if exc.address is not None and (target.kind != "standalone" or exc.address != target.nodes[0]):
            where = f" to {exc.address[0]}:{exc.address[1]}"
        raise PreflightError(f"target {target}: {exc.what}{where} ({exc.reason})") from None
    except RespError as exc:
        text = str(exc)
        if text.startswith("NOAUTH"):
            raise PreflightError(f"target {target}: the server wants a password (pass --kvt-password-file)") from None
        raise PreflightError(f"target {target}: PING refused ({text.splitlines()[0][:120]})") from None
    finally:
        for item in opened:
            item.close()


# -- pre-encoded commands ----------------------------------------------------------------------------------------
# Key spaces up to this size keep every key and its GET and SET head encoded once per process (100,000 keys: ~15 MB,
# ~0.2 s at the first user's start): choosing and packing a key then costs two list lookups instead of formatting
# (~0.8 µs per command before, the largest share of a pipelined user's time in Python).
CACHE_KEYS_MAX = 1 << 18


def _pack_get(key: bytes) -> bytes:
    return b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key)


def _pack_set_head(key: bytes) -> bytes:
    return b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n" % (len(key), key)


class Commands:
    """Keys and commands by key index, shared by the users of a process: key(i), get(i) (a whole GET),
    set_head(i) + set_tail (a whole SET)."""

    def __init__(self, prefix: bytes, keys: int, value_size: int) -> None:
        value = (b"kvtload-" * (value_size // 8 + 1))[:value_size]
        self.set_tail = b"$%d\r\n%s\r\n" % (len(value), value)
        self.key: Callable[[int], bytes]
        self.get: Callable[[int], bytes]
        self.set_head: Callable[[int], bytes]
        if keys <= CACHE_KEYS_MAX:
            names = [prefix + b"%d" % i for i in range(keys)]
            # bound __getitem__ of a list: a C call, no Python frame per command
            self.key = names.__getitem__
            self.get = [_pack_get(k) for k in names].__getitem__
            self.set_head = [_pack_set_head(k) for k in names].__getitem__
        else:
            self.key = lambda i: prefix + b"%d" % i
            self.get = lambda i: _pack_get(prefix + b"%d" % i)
            self.set_head = lambda i: _pack_set_head(prefix + b"%d" % i)


def commands_for(environment: Any, config: KvConfig) -> Commands:
    cache: dict[tuple[bytes, int, int], Commands] | None = getattr(environment, "kvt_kv_commands", None)
    if cache is None:
        cache = environment.kvt_kv_commands = {}
    key = (config.prefix, config.chooser.keys, config.value_size)
    commands = cache.get(key)
    if commands is None:
        commands = cache[key] = Commands(*key)
    return commands


# -- the users ---------------------------------------------------------------------------------------------------
class KvUser(KvtUser):
    """GET/SET against the --host target; subclasses fix the share of GETs (None: --kvt-get-ratio)."""

    abstract = True
    get_ratio: ClassVar[float | None] = None

    @classmethod
    def preflight(cls, environment: Any) -> None:
        config = kv_config(environment)
        if getattr(environment, "kvt_kv_probed", None) == config.pool_key:
            return  # another key-value class of this run already probed the same target
        probe(config)
        environment.kvt_kv_probed = config.pool_key

    def on_start(self) -> None:
        try:
            config = kv_config(self.environment)
        except PreflightError as exc:
            # on a worker (preflight runs on the master only): say it once, then stop this user
            if getattr(self.environment, "kvt_kv_error", None) != str(exc):
                self.environment.kvt_kv_error = str(exc)
                log.error("kvload: %s", exc)
            raise StopUser() from None
        self.client: Client = pool_for(
            self.environment, config.pool_key, config.target, config.settings, config.connections,
            sentinel_password=config.sentinel_password,
        ).client()  # fmt: skip
        self.clock = config.settings.clock  # replies timed at the read (kvload.resp.connection.ReplyClock)
        self.cmds = commands_for(self.environment, config)
        self.ratio = config.get_ratio if self.get_ratio is None else self.get_ratio
        self.depth = config.pipeline
        self.choose = config.chooser.choose
        self.choose_many = config.chooser.choose_many
        # only a cluster routes by key: elsewhere a pipeline's keys are not even listed
        self.routed = isinstance(self.client, ClusterHandle)
        self.random = self.rng.random
        # closed loop: several requests per Locust task (see BURST); open loop: the pacer sets the pace anyway
        self.burst = BURST if self.pacer is None else 1

    @task
    def kv(self) -> None:
        ratio, random = self.ratio, self.random
        for _ in range(self.burst):
            if ratio >= 1.0 or (ratio > 0.0 and random() < ratio):
                self._get()
            else:
                self._set()

    def _get(self) -> None:
        cmds = self.cmds
        if self.depth > 1:
            idx = self.choose_many(self.random, self.depth)
            keys = list(map(cmds.key, idx)) if self.routed else None
            self._pipeline("GET", keys, list(map(cmds.get, idx)))
            return
        i = self.choose(self.random)
        key, packed = cmds.key(i), cmds.get(i)
        t0 = self.begin("GET", NAME)
        try:
            reply = self.client.send(key, packed)
        except (RespError, RespConnectionError) as exc:
            self.failed("GET", NAME, t0, exc)
            return
        self.ok("GET", NAME, t0, len(reply) if reply is not None else 0, replied_ns=self.clock.ns)

    def _set(self) -> None:
        cmds = self.cmds
        tail = cmds.set_tail
        if self.depth > 1:
            idx = self.choose_many(self.random, self.depth)
            keys = list(map(cmds.key, idx)) if self.routed else None
            self._pipeline("SET", keys, [head + tail for head in map(cmds.set_head, idx)])
            return
        i = self.choose(self.random)
        key, packed = cmds.key(i), cmds.set_head(i) + tail
        t0 = self.begin("SET", NAME)
        try:
            self.client.send(key, packed)
        except (RespError, RespConnectionError) as exc:
            self.failed("SET", NAME, t0, exc)
            return
        self.ok("SET", NAME, t0, replied_ns=self.clock.ns)

    def _pipeline(self, kind: str, keys: list[bytes] | None, packed: list[bytes]) -> None:
        t0 = self.begin(kind, NAME)
        try:
            replies = self.client.send_many(keys, packed)
        except (RespError, RespConnectionError) as exc:
            self.failed(kind, NAME, t0, exc, count=len(packed))
            return
        if RespError not in map(type, replies):  # the common case, in C: no Python loop over the replies
            length = sum(map(len, filter(None, replies))) if kind == "GET" else 0
            self.ok(kind, NAME, t0, length, count=len(replies), replied_ns=self.clock.ns)
            return
        errors = [r for r in replies if type(r) is RespError]
        self.failed(kind, NAME, t0, errors[0], count=len(errors))
        if len(errors) < len(replies):
            length = sum(len(r) for r in replies if type(r) is bytes) if kind == "GET" else 0
            self.ok(kind, NAME, t0, length, count=len(replies) - len(errors), replied_ns=self.clock.ns)


class KvGetSetUser(KvUser):
    """GETs and SETs, --kvt-get-ratio of them GETs (default 0.9)."""


class KvGetUser(KvUser):
    """GETs only."""

    get_ratio = 1.0


class KvSetUser(KvUser):
    """SETs only."""

    get_ratio = 0.0
