"""A lean asyncio RESP2 connection (asyncio.Protocol + hiredis) for latency-critical paths.

redis-py's asyncio client costs tens of microseconds per command in Python, which is the same order
as the loopback latencies the observer measures. This connection packs with hiredis, parses with
hiredis.Reader, pipelines naturally (FIFO of futures) and hands pub/sub messages to a callback
straight from data_received together with the receive timestamp, so the time a notification
arrived is taken before any other Python work. Errors surface as ConnectionError / TimeoutError
(the same families agent loops already retry) or RespError for error replies.

Kept over redis.asyncio by measurement: `make bench` runs the observer's path (SET of a stamped value ->
keyspace notification) with both on one loop against one server and fails unless this one wins every round
(test_resp_connection_vs_redis_asyncio_on_the_observer_path). 2026-12-01, five runs: one-way p50 88-112 us
here vs 205-243 us for redis.asyncio 8.1 with hiredis (x1.99-2.66).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from typing import Any

import hiredis

from kvagent.clients.connect import tls_context
from kvagent.service.config import RedisEndpoint

PushHandler = Callable[[list[Any], int], None]

_PUSH_KINDS = (b"message", b"pmessage")


class RespError(Exception):
    """An error reply from the server (-ERR ...)."""


class _RespProtocol(asyncio.Protocol):
    def __init__(self, on_push: PushHandler | None) -> None:
        self._parser = hiredis.Reader()
        self._waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._transport: asyncio.Transport | None = None
        self.on_push = on_push
        self.subscribed = False
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        received_ns = time.time_ns()  # first thing: this is the notification's arrival time
        self._parser.feed(data)
        while True:
            reply = self._parser.gets()
            if reply is False:
                return
            if (
                self.subscribed
                and self.on_push is not None
                and isinstance(reply, list)
                and reply
                and reply[0] in _PUSH_KINDS
            ):
                self.on_push(reply, received_ns)
                continue
            if not self._waiters:
                continue  # a reply nobody waits for (cancelled caller): drop it
            waiter = self._waiters.popleft()
            if waiter.done():
                continue
            if isinstance(reply, hiredis.ReplyError):
                waiter.set_exception(RespError(str(reply)))
            else:
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        error = ConnectionError(f"connection lost: {exc}" if exc else "connection closed by server")
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)
        if not self.lost.done():
            self.lost.set_result(None)

    @property
    def closing(self) -> bool:
        return self._transport is None or self._transport.is_closing()

    def send(self, packed: bytes, waiter: asyncio.Future[Any]) -> None:
        if self.closing:
            raise ConnectionError("connection is closed")
        self._waiters.append(waiter)
        self._transport.write(packed)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class RespConnection:
    """One TCP connection to a Redis-protocol server; commands pipeline in order."""

    def __init__(self, protocol: _RespProtocol, label: str) -> None:
        self._protocol = protocol
        self._loop = asyncio.get_running_loop()
        self.label = label

    @classmethod
    async def open(
        cls, endpoint: RedisEndpoint, on_push: PushHandler | None = None, timeout_s: float = 2.0
    ) -> RespConnection:
        loop = asyncio.get_running_loop()
        try:
            _transport, protocol = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _RespProtocol(on_push),
                    endpoint.host,
                    endpoint.port,
                    ssl=tls_context(endpoint.tls_ca_file) if endpoint.tls else None,
                ),
                timeout_s,
            )
        except OSError as exc:
            raise ConnectionError(f"{endpoint.label()}: {exc.strerror or exc}") from None
        conn = cls(protocol, endpoint.label())
        try:
            if endpoint.password is not None:
                auth = [endpoint.username, endpoint.password] if endpoint.username else [endpoint.password]
                await conn.execute(b"AUTH", *auth, timeout_s=timeout_s)
            if endpoint.db:
                await conn.execute(b"SELECT", endpoint.db, timeout_s=timeout_s)
        except BaseException:
            conn.close()
            raise
        return conn

    @property
    def closed(self) -> bool:
        # A closing transport refuses writes before connection_lost resolves `lost` (one loop turn later).
        return self._protocol.lost.done() or self._protocol.closing

    @property
    def lost(self) -> asyncio.Future[None]:
        """Resolves when the connection goes away (await it to notice a dead server without traffic)."""
        return self._protocol.lost

    def send(self, *args: Any) -> asyncio.Future[Any]:
        """Write a command now; the future resolves with its reply (do not need to await it)."""
        waiter: asyncio.Future[Any] = self._loop.create_future()
        self._protocol.send(hiredis.pack_command(args), waiter)
        return waiter

    async def execute(self, *args: Any, timeout_s: float = 5.0) -> Any:
        return await self.wait(self.send(*args), args[0], timeout_s)

    async def wait(self, waiter: asyncio.Future[Any], command: Any, timeout_s: float = 5.0) -> Any:
        """The reply of a command written with send(); a timeout drops the connection."""
        if waiter.done():
            return waiter.result()
        try:
            return await asyncio.wait_for(waiter, timeout_s)
        except TimeoutError:
            # The stream is now out of step with our waiters: drop the connection, callers reconnect.
            self.close()
            raise TimeoutError(f"{self.label}: no reply to {command!r} within {timeout_s} s") from None

    async def subscribe(self, *channels: str | bytes) -> None:
        self._protocol.subscribed = True
        for channel in channels:
            await self.execute(b"SUBSCRIBE", channel)

    def close(self) -> None:
        self._protocol.close()
