"""How a writer finds the primary of a Sentinel-managed set, and how one SET is sent and classified.

Two strategies, named in every result because they measure different things:
- `redis-py`: redis-py's own `Sentinel(...).master_for(name)` as a typical application uses it. Each new connection
  asks the Sentinels in turn and the first valid answer wins (redis-py then moves that Sentinel to the front); an
  established connection stays on its node until it breaks or the node answers READONLY.
- `quorum`: asks every Sentinel (`SENTINEL get-master-addr-by-name` and `SENTINEL master` for `config-epoch`) and
  follows the address a majority of all configured Sentinels report; when the Sentinels that answer are a majority
  but split, the highest config epoch wins (a later failover has a higher epoch, and was voted by a majority). Fewer
  answers than a majority: no primary, and the write fails at once with the reason. A background thread refreshes
  the view every `refresh_s` and at once after an error that suggests the primary moved (spaced by redis-py's
  ExponentialBackoff so that a dead primary does not make the writer hammer the Sentinels).

Each op is exactly one attempt (redis-py's retries are turned off): the writer's schedule is the retry, and with one
attempt the outcome of an op is exact. Outcomes, as Jepsen defines them:
- fail: the SET certainly did not happen: an error reply (READONLY, NOREPLICAS, NOAUTH...) or an error before the
  command left (connection refused, Sentinel had no master, the connect/AUTH handshake timed out);
- unknown: the command may have been applied: timeout or connection lost after it was sent;
- ok: the reply +OK.
Passwords are read from files, never taken from argv, and never appear in errors.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.connection import ConnectionPool
from redis.exceptions import RedisError, ResponseError
from redis.retry import Retry
from redis.sentinel import Sentinel

from kvtestbed.accounting.oplog import Result

STRATEGIES: tuple[str, ...] = ("redis-py", "quorum")
EventSink = Callable[[str, dict[str, Any]], None]


class AccountingError(Exception):
    """Bad input for the accounting code: one line naming what to fix."""


def read_secret(path: Path, what: str) -> str:
    """The first line of a password file (the file, not its content, is named when it cannot be read)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise AccountingError(f"cannot read the {what} password file {path}: {err.strerror}") from None
    secret = text.splitlines()[0].strip() if text.strip() else ""
    if not secret:
        raise AccountingError(f"the {what} password file {path} is empty")
    return secret


@dataclass(frozen=True)
class SentinelTarget:
    """Where a Sentinel-managed set is and how to authenticate; timeouts are per attempt."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    sentinel_password_file: Path | None = None
    sentinel_username: str | None = None
    username: str | None = None  # the data nodes' ACL user
    password_file: Path | None = None
    op_timeout_s: float = 1.0
    connect_timeout_s: float = 0.5
    sentinel_timeout_s: float = 0.3

    def __post_init__(self) -> None:
        if not self.sentinels:
            raise AccountingError(f"no Sentinel given for {self.service!r}")
        if self.op_timeout_s <= 0 or self.connect_timeout_s <= 0 or self.sentinel_timeout_s <= 0:
            raise AccountingError("timeouts must be positive")

    def describe(self) -> str:
        return f"sentinel:{self.service}@" + ",".join(f"{host}:{port}" for host, port in self.sentinels)

    def sentinel_kwargs(self) -> dict[str, Any]:
        password = read_secret(self.sentinel_password_file, "Sentinel") if self.sentinel_password_file else None
        return {
            "username": self.sentinel_username,
            "password": password,
            "socket_timeout": self.sentinel_timeout_s,
            "socket_connect_timeout": self.sentinel_timeout_s,
            "retry": Retry(NoBackoff(), 0),
        }

    def node_kwargs(self) -> dict[str, Any]:
        password = read_secret(self.password_file, "data node") if self.password_file else None
        return {
            "username": self.username,
            "password": password,
            "socket_timeout": self.op_timeout_s,
            "socket_connect_timeout": self.connect_timeout_s,
            "retry": Retry(NoBackoff(), 0),
        }


@dataclass(frozen=True)
class Outcome:
    result: Result
    node: str | None
    error: str | None = None

    @property
    def suggests_moved_primary(self) -> bool:
        """An error after which a careful client asks the Sentinels again."""
        if self.result == "ok" or self.error is None:
            return False
        return not self.error.startswith("no primary:")


def describe_error(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def _response_error_in(err: BaseException) -> ResponseError | None:
    """The server's error reply behind `err`, if any: redis-py's Sentinel connection turns READONLY into a
    ConnectionError raised while handling the ReadOnlyError, so the reply is the exception's __context__."""
    seen: BaseException | None = err
    for _ in range(4):
        if seen is None:
            return None
        if isinstance(seen, ResponseError):
            return seen
        seen = seen.__context__
    return None


def execute_once(pool: ConnectionPool, args: Sequence[str], node_hint: Callable[[], str | None]) -> Outcome:
    """One attempt of a command on a connection of `pool`, classified by the phase it reached."""
    try:
        conn = pool.get_connection()  # connects (and, for redis-py's Sentinel pool, asks the Sentinels) if needed
    except RedisError as err:  # the command never left: a definite fail
        return Outcome("fail", node_hint(), describe_error(err))
    node = f"{conn.host}:{conn.port}"
    try:
        conn.send_command(*args)
        reply = conn.read_response()
    except RedisError as err:
        refused = _response_error_in(err)
        if refused is not None:
            return Outcome("fail", node, describe_error(refused))
        conn.disconnect()  # a late reply must never be read as the next command's
        return Outcome("unknown", node, describe_error(err))
    except BaseException:
        conn.disconnect()
        raise
    finally:
        pool.release(conn)
    if reply in (b"OK", "OK", True):
        return Outcome("ok", node)
    return Outcome("fail", node, f"unexpected reply {reply!r}")


class PrimaryStrategy(Protocol):
    name: str

    def set(self, key: str, value: str) -> Outcome: ...

    def close(self) -> None: ...


def _address(host: str, port: int | str) -> str:
    return f"{host}:{int(port)}"


class RedisPyStrategy:
    """redis-py's Sentinel client, first Sentinel that answers wins."""

    name = "redis-py"

    def __init__(self, target: SentinelTarget) -> None:
        self.target = target
        self._sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=target.sentinel_kwargs())
        self._client = self._sentinel.master_for(target.service, **target.node_kwargs())

    def set(self, key: str, value: str) -> Outcome:
        pool = self._client.connection_pool
        return execute_once(pool, ("SET", key, value), lambda: self._known_master(pool))

    @staticmethod
    def _known_master(pool: Any) -> str | None:
        address = getattr(pool, "master_address", None)
        return _address(*address) if address else None

    def close(self) -> None:
        self._client.close()
        self._sentinel.close()


@dataclass(frozen=True)
class SentinelView:
    sentinel: str
    primary: str | None
    config_epoch: int | None
    error: str | None = None


@dataclass(frozen=True)
class Resolution:
    primary: str | None
    reason: str
    views: tuple[SentinelView, ...]

    @property
    def disagree(self) -> bool:
        return len({view.primary for view in self.views if view.primary is not None}) > 1

    def views_detail(self) -> list[dict[str, Any]]:
        return [
            {"sentinel": v.sentinel, "primary": v.primary, "config_epoch": v.config_epoch, "error": v.error}
            for v in self.views
        ]


def majority(total: int) -> int:
    return total // 2 + 1


def decide(views: Sequence[SentinelView], total: int) -> Resolution:
    """The primary a quorum-aware client follows, from every Sentinel's answer (pure, see the module doc)."""
    answered = [view for view in views if view.primary is not None]
    need = majority(total)
    if len(answered) < need:
        return Resolution(None, f"only {len(answered)} of {total} Sentinels answered (need {need})", tuple(views))
    votes: dict[str, int] = {}
    for view in answered:
        votes[view.primary] = votes.get(view.primary, 0) + 1  # type: ignore[index]
    leader, count = max(votes.items(), key=lambda item: item[1])
    if count >= need:
        return Resolution(leader, f"{count} of {total} Sentinels agree", tuple(views))
    epochs: dict[str, int] = {}
    for view in answered:
        epoch = view.config_epoch if view.config_epoch is not None else -1
        epochs[view.primary] = max(epochs.get(view.primary, -1), epoch)  # type: ignore[index]
    best = max(epochs.values())
    newest = [address for address, epoch in epochs.items() if epoch == best]
    if len(newest) != 1:
        return Resolution(None, f"Sentinels split with equal config epochs {best}: {sorted(newest)}", tuple(views))
    return Resolution(newest[0], f"Sentinels split, highest config epoch {best} wins", tuple(views))


class QuorumResolver:
    """Asks every Sentinel in parallel (a Sentinel that does not answer costs one sentinel_timeout_s, not one per
    Sentinel)."""

    def __init__(self, target: SentinelTarget) -> None:
        self.target = target
        kwargs = target.sentinel_kwargs()
        self._clients = [
            (_address(host, port), redis.Redis(host=host, port=port, decode_responses=True, **kwargs))
            for host, port in target.sentinels
        ]
        self._pool = ThreadPoolExecutor(max_workers=len(self._clients), thread_name_prefix="quorum-ask")

    def _ask(self, address: str, client: redis.Redis) -> SentinelView:
        try:
            reply = client.sentinel_get_master_addr_by_name(self.target.service)
            state = client.sentinel_master(self.target.service)
        except ResponseError as err:  # e.g. "No such master with that name": this Sentinel does not know the set
            return SentinelView(address, None, None, describe_error(err))
        except RedisError as err:
            return SentinelView(address, None, None, describe_error(err))
        if not reply:
            return SentinelView(address, None, None, "no address for the service")
        epoch = state.get("config-epoch") if isinstance(state, dict) else None
        return SentinelView(address, _address(reply[0], reply[1]), None if epoch is None else int(epoch))

    def views(self) -> list[SentinelView]:
        futures = [self._pool.submit(self._ask, address, client) for address, client in self._clients]
        return [future.result() for future in futures]

    def resolve(self) -> Resolution:
        return decide(self.views(), len(self._clients))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        for _, client in self._clients:
            client.close()


def _signature(resolution: Resolution) -> tuple[tuple[str, str | None], ...]:
    return tuple((view.sentinel, view.primary) for view in resolution.views)


class QuorumStrategy:
    """Follows the majority of the Sentinels; a plain redis.Redis to the chosen node."""

    name = "quorum"

    def __init__(self, target: SentinelTarget, refresh_s: float = 0.5, on_event: EventSink | None = None) -> None:
        self.target = target
        self.refresh_s = refresh_s
        self._on_event = on_event
        self._node_kwargs = target.node_kwargs()
        self._resolver = QuorumResolver(target)
        self._clients: dict[str, redis.Redis] = {}
        self._backoff = ExponentialBackoff(cap=refresh_s, base=0.01)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._resolution = self._resolver.resolve()  # the first op already has a view
        self._report(self._resolution, None)
        self._thread = threading.Thread(target=self._refresh_loop, name="quorum-refresh", daemon=True)
        self._thread.start()

    @property
    def resolution(self) -> Resolution:
        return self._resolution

    def set(self, key: str, value: str) -> Outcome:
        resolution = self._resolution
        if resolution.primary is None:
            return Outcome("fail", None, f"no primary: {resolution.reason}")
        client = self._client_for(resolution.primary)
        outcome = execute_once(client.connection_pool, ("SET", key, value), lambda: resolution.primary)
        if outcome.suggests_moved_primary:
            self._wake.set()
        return outcome

    def _client_for(self, address: str) -> redis.Redis:
        client = self._clients.get(address)
        if client is None:  # only the writer thread calls set(): no lock needed
            host, port = address.rsplit(":", 1)
            client = redis.Redis(host=host, port=int(port), **self._node_kwargs)
            self._clients[address] = client
        return client

    def _report(self, resolution: Resolution, previous: Resolution | None) -> None:
        if self._on_event is None:
            return
        changed = previous is None or _signature(resolution) != _signature(previous)
        if changed and (resolution.disagree or resolution.primary is None):  # once per change, not per refresh
            self._on_event(
                "sentinels-disagree" if resolution.disagree else "no-primary",
                {"chosen": resolution.primary, "reason": resolution.reason, "views": resolution.views_detail()},
            )
        if previous is None or resolution.primary != previous.primary:
            self._on_event("primary", {"group": self.target.service, "node": resolution.primary})

    def _refresh_loop(self) -> None:
        pressed = 0  # error-triggered refreshes in a row that found the same primary: back off
        while not self._stop.is_set():
            triggered = self._wake.wait(self.refresh_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            previous = self._resolution
            resolution = self._resolver.resolve()
            self._resolution = resolution
            self._report(resolution, previous)
            same = resolution.primary == previous.primary
            pressed = pressed + 1 if triggered and same else 0
            if pressed:
                self._stop.wait(self._backoff.compute(pressed))

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(5)
        self._resolver.close()
        for client in self._clients.values():
            client.close()


def make_strategy(name: str, target: SentinelTarget, on_event: EventSink | None = None) -> PrimaryStrategy:
    if name == "redis-py":
        return RedisPyStrategy(target)
    if name == "quorum":
        return QuorumStrategy(target, on_event=on_event)
    raise AccountingError(f"unknown client strategy {name!r} (one of: {', '.join(STRATEGIES)})")
