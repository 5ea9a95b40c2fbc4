"""A writer's strategy for NATS JetStream: one acknowledged publish per op, on an asyncio loop of its own thread.

Each op publishes `value` to the target's subject (bound to its stream) with `Nats-Msg-Id: <key>` and waits for the
stream's PubAck; nats-py's JetStream publish is a request with one reply, never repeated. Outcomes:
- ok: a PubAck from the stream (a PubAck flagged `duplicate` is still ok: the message is stored once);
- fail: a definite refusal: no responders (no stream listens on the subject), an API error in the reply (stream not
  found, 503 no leader...), or the client was not connected when the op was due: the message was not handed to the
  client at all (a message published while nats-py reconnects would wait in its buffer and be sent later, a hidden
  retry: the op refuses instead);
- unknown: no PubAck within op_timeout_s, or the connection broke with the request out: it may be stored.
`node` is the server the client was connected to when it published (a JetStream publish reaches the stream's
leader through it).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient

from kvtestbed.accounting.strategies import AccountingError, Outcome, describe_error, read_secret

JETSTREAM_STRATEGY = "jetstream"
MSG_ID = "Nats-Msg-Id"
T = TypeVar("T")


@dataclass(frozen=True)
class JetStreamTarget:
    """A stream and the subject the writers publish to; any servers of the cluster; timeouts per attempt."""

    servers: tuple[str, ...]  # nats://host:port
    stream: str
    subject: str
    user: str | None = None
    password_file: Path | None = None
    op_timeout_s: float = 1.0
    connect_timeout_s: float = 1.0

    def __post_init__(self) -> None:
        if not self.servers:
            raise AccountingError(f"no NATS server given for stream {self.stream!r}")
        if not self.stream or not self.subject:
            raise AccountingError("a JetStream target needs a stream and a subject")
        if self.op_timeout_s <= 0 or self.connect_timeout_s <= 0:
            raise AccountingError("timeouts must be positive")

    def describe(self) -> str:
        return f"jetstream:{self.stream}@" + ",".join(urlparse(s).netloc or s for s in self.servers)

    def connect_options(self) -> dict[str, Any]:
        password = read_secret(self.password_file, "NATS") if self.password_file else None
        options: dict[str, Any] = {
            "servers": list(self.servers),
            "connect_timeout": self.connect_timeout_s,
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.1,
            "ping_interval": 1,
            "max_outstanding_pings": 2,  # a dead server is noticed in ~2 s, not nats-py's default 4 min
        }
        if self.user:
            options["user"] = self.user
            options["password"] = password
        return options

    def op_bound_s(self) -> float:
        return self.op_timeout_s + 1.0


class LoopThread:
    """An asyncio loop on a thread of its own, for synchronous callers (the writer thread, the checker)."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout_s)
        except FutureTimeout:
            future.cancel()
            raise

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self.loop.close()


async def connect(target: JetStreamTarget, name: str) -> NatsClient:
    async def quiet(_: Exception) -> None:  # nats-py prints errors to stderr without a callback
        return None

    try:
        return await nats.connect(name=name, error_cb=quiet, **target.connect_options())
    except (TimeoutError, nats.errors.Error, OSError) as err:
        raise AccountingError(f"{target.describe()}: cannot connect ({describe_error(err)})") from None


def server_of(client: NatsClient) -> str | None:
    url = client.connected_url
    return url.netloc if url is not None else None


def connect_blocking(target: JetStreamTarget, loop: LoopThread, name: str) -> NatsClient:
    try:
        return loop.run(connect(target, name), target.connect_timeout_s * (len(target.servers) + 1) + 5)
    except FutureTimeout:
        raise AccountingError(f"{target.describe()}: cannot connect (timed out)") from None


class JetStreamStrategy:
    """Acknowledged publishes, one attempt per op (module doc)."""

    name = JETSTREAM_STRATEGY

    def __init__(self, target: JetStreamTarget, client_name: str = "kvtestbed-writer") -> None:
        self.target = target
        self._loop = LoopThread(f"nats-{client_name}")
        try:
            self._client = connect_blocking(target, self._loop, client_name)
        except AccountingError:
            self._loop.close()
            raise
        self._js = self._client.jetstream(timeout=target.op_timeout_s)

    def op_bound_s(self) -> float:
        return self.target.op_bound_s()

    def set(self, key: str, value: str) -> Outcome:
        try:
            return self._loop.run(self._publish(key, value), self.target.op_timeout_s + 1.0)
        except FutureTimeout:
            return Outcome("unknown", server_of(self._client), "no answer from the client loop")

    async def _publish(self, key: str, value: str) -> Outcome:
        client = self._client
        node = server_of(client)
        if not client.is_connected:
            return Outcome("fail", node, "not connected (reconnecting): not sent")
        try:
            ack = await self._js.publish(self.target.subject, value.encode(), timeout=self.target.op_timeout_s,
                                         headers={MSG_ID: key})  # fmt: skip
        except (nats.js.errors.NoStreamResponseError, nats.errors.NoRespondersError) as err:
            return Outcome("fail", node, describe_error(err) or "no responders")
        except nats.js.errors.APIError as err:
            return Outcome("fail", node, describe_error(err))
        except (TimeoutError, nats.errors.TimeoutError) as err:
            return Outcome("unknown", node, describe_error(err) or "TimeoutError: no PubAck")
        except (nats.errors.Error, OSError) as err:  # connection closed or lost with the request out
            return Outcome("unknown", node, describe_error(err))
        return Outcome("ok", node, "duplicate" if ack.duplicate else None)

    def close(self) -> None:
        with contextlib.suppress(FutureTimeout, nats.errors.Error, OSError):
            self._loop.run(self._client.close(), 5)
        self._loop.close()
