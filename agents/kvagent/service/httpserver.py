"""A minimal asyncio HTTP/1.1 server (keep-alive, Content-Length bodies) for metrics, health and ingress.

Why our own and not aiohttp: measured side by side in one run, twice (2026-12-01, the 2-vCPU VM shared with
other jobs, load average 5-10): both servers serve the same Prometheus registry with a streams agent's
imports, both on uvloop, pinned to one CPU, the client on the other; ranges are over 3 rounds per run.

    .venv/bin/pip install aiohttp && .venv/bin/python -m tests.bench.compare_libraries http

- RSS: this server 39.1-39.2 MB, aiohttp 3.14.5 51.4 MB (+12.2 MB; after load 39.2-39.4 vs 51.6-51.7 MB).
  Importing aiohttp alone costs +10.8 MB (`compare_libraries imports`); agents must stay <= 60 MB.
- Latency, one keep-alive connection per server at 250 requests/s each, interleaved request by request:
  POST /request (the streams ingress' shape, 64-byte body) p50 158-225 us here vs 269-312 us with aiohttp
  (aiohttp/ours x1.39-1.74), p99 x0.75-1.08 of ours (noise: 3.4-6.4 ms for both on this VM). GET /metrics
  p50 2.2-2.7 ms for both (x1.02-1.12): generate_latest and the process collector take ~2 ms either way.
- Throughput, wrk -t1 -c8 keep-alive, 3 s: POST 10.4-16.2k req/s here vs 3.5-9.3k with aiohttp
  (aiohttp/ours x0.24-0.71); GET /metrics x0.76-1.30 (the collector dominates).

What it implements, and nothing more: request line and headers (at most ``max_header_bytes``, else 431), a
Content-Length body (at most ``max_body_bytes``, else 413; chunked uploads get 501), ``Expect:
100-continue``, HEAD without a body, keep-alive as RFC 9112 says (HTTP/1.1 persists unless ``Connection:
close``; HTTP/1.0 closes unless ``Connection: keep-alive``), pipelined requests in order, a read timeout (a
request must arrive whole within ``read_timeout_s`` of its first byte, else 408 and close; the same bound
applies to a client that stops reading its response), and an idle timeout between requests (close after
``idle_timeout_s`` without a byte). Tests: tests/unit/agents/test_httpserver.py (raw sockets, loopback).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 4 * 1024 * 1024
READ_TIMEOUT_S = 10.0
# Longer than Prometheus' default 15 s scrape interval, so that a scraper's connection is reused.
IDLE_TIMEOUT_S = 60.0
# After an error answer the rest of the client's request is read and dropped for at most this long, so that
# closing a socket with unread data (which sends a RST) does not destroy the answer before the client reads it.
LINGER_S = 2.0
_READ_CHUNK = 64 * 1024


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    version: str = "HTTP/1.1"


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Awaitable[Response]]

_REASONS = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _encode(resp: Response, keep_alive: bool, idle_timeout_s: float, head: bool = False) -> bytes:
    lines = [
        f"HTTP/1.1 {resp.status} {_REASONS.get(resp.status, 'Status')}",
        f"Content-Type: {resp.content_type}",
        f"Content-Length: {len(resp.body)}",
        f"Connection: keep-alive\r\nKeep-Alive: timeout={idle_timeout_s:.0f}" if keep_alive else "Connection: close",
    ]
    lines.extend(f"{k}: {v}" for k, v in resp.headers.items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head else resp.body)


def _parse_head(raw: bytes) -> tuple[str, str, str, dict[str, str]]:
    """(method, target, version, headers) of a request head without its final CRLFCRLF."""
    lines = raw.decode("latin-1").split("\r\n")  # latin-1 maps every byte: no decode error
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise _BadRequest(400, "bad request line")
    method, target, version = parts
    if not version.startswith("HTTP/1."):
        raise _BadRequest(505 if version.startswith("HTTP/") else 400, f"unsupported version {version[:16]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        # no colon, whitespace before it (RFC 9112 5.1) or an obsolete folded line: a malformed request
        if not sep or not name or name != name.strip() or line[0] in " \t":
            raise _BadRequest(400, "malformed header line")
        key, value = name.lower(), value.strip()
        if key in headers:
            if key == "content-length" and headers[key] != value:
                raise _BadRequest(400, "conflicting Content-Length headers")
            if key != "content-length":
                value = f"{headers[key]}, {value}"
        headers[key] = value
    return method.upper(), target, version, headers


def _keep_alive(version: str, headers: dict[str, str]) -> bool:
    tokens = {token.strip().lower() for token in headers.get("connection", "").split(",")}
    if version == "HTTP/1.0":
        return "keep-alive" in tokens
    return "close" not in tokens


class _Connection:
    """One client connection: our own buffer over the stream, so that idle and mid-request are told apart."""

    def __init__(self, server: HttpServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.buf = bytearray()
        self.loop = asyncio.get_running_loop()
        self.timer: asyncio.TimerHandle | None = None
        self.timed_out = ""

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self.timer = self.loop.call_later(seconds, self._expire, what)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expire(self, what: str) -> None:
        self.timer = None
        self.timed_out = what
        transport = self.writer.transport
        if what == "read":
            # Half a request: say why, then close (the answer is small, the socket buffer takes it at once).
            transport.write(_encode(Response(408, b"request timeout\n"), False, 0))
            transport.close()
        else:  # idle: nothing to say; response: the client does not read, so nothing more can be written
            transport.abort()

    async def _fill(self) -> bool:
        chunk = await self.reader.read(_READ_CHUNK)
        if not chunk:
            return False
        self.buf += chunk
        return True

    async def read_request(self) -> Request | None:
        """The next request, or None when the client closed (or timed out) between requests."""
        srv = self.server
        if not self.buf:
            self._arm(srv.idle_timeout_s, "idle")
            if not await self._fill():
                return None
        self._arm(srv.read_timeout_s, "read")  # from the request's first byte to its last
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            if len(self.buf) > srv.max_header_bytes:
                raise _BadRequest(431, f"request head over {srv.max_header_bytes} bytes")
            if not await self._fill():
                return None
        if end > srv.max_header_bytes:
            raise _BadRequest(431, f"request head over {srv.max_header_bytes} bytes")
        method, target, version, headers = _parse_head(bytes(self.buf[:end]))
        del self.buf[: end + 4]
        if "transfer-encoding" in headers:
            raise _BadRequest(501, "Transfer-Encoding is not supported; send Content-Length")
        raw_length = headers.get("content-length", "0")
        if not raw_length.isdigit():
            raise _BadRequest(400, f"bad Content-Length {raw_length[:20]!r}")
        length = int(raw_length)
        if length > srv.max_body_bytes:
            raise _BadRequest(413, f"body of {length} bytes over {srv.max_body_bytes}")
        if length and headers.get("expect", "").lower() == "100-continue" and len(self.buf) < length:
            self.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        while len(self.buf) < length:
            if not await self._fill():
                return None
        body = bytes(self.buf[:length])
        del self.buf[:length]
        self._disarm()
        path, _, query = target.partition("?")
        return Request(method, path, query, headers, body, version)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        if self.writer.transport.get_write_buffer_size():
            self._arm(self.server.read_timeout_s, "response")
            await self.writer.drain()
            self._disarm()

    async def linger(self) -> None:
        """Read and drop what the client still sends, bounded in time, so that it reads our error answer."""
        if self.writer.can_write_eof():
            self.writer.write_eof()
        deadline = self.loop.time() + min(LINGER_S, self.server.read_timeout_s)
        while (left := deadline - self.loop.time()) > 0:
            try:
                chunk = await asyncio.wait_for(self.reader.read(_READ_CHUNK), left)
            except TimeoutError:
                return
            if not chunk:
                return

    async def serve(self) -> None:
        srv = self.server
        try:
            while True:
                try:
                    request = await self.read_request()
                except _BadRequest as exc:
                    self._disarm()
                    await self.send(_encode(Response(exc.status, f"{exc}\n".encode()), False, 0))
                    await self.linger()
                    return
                if request is None:
                    return
                try:
                    response = await srv.handler(request)
                except Exception:  # a handler bug must not take the agent down; log it and answer 500
                    log.exception("http handler failed for %s %s", request.method, request.path)
                    response = Response(500, b"internal error\n")
                keep_alive = _keep_alive(request.version, request.headers) and not srv.closing
                await self.send(_encode(response, keep_alive, srv.idle_timeout_s, head=request.method == "HEAD"))
                if not keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._disarm()
            self.writer.close()


class HttpServer:
    """Serves one async handler on host:port; .port is the bound port (useful when asked for port 0)."""

    def __init__(
        self,
        handler: Handler,
        host: str,
        port: int,
        *,
        read_timeout_s: float = READ_TIMEOUT_S,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        max_header_bytes: int = MAX_HEADER_BYTES,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.handler = handler
        self._host = host
        self._port = port
        self.read_timeout_s = read_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self.closing = False
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def connections(self) -> int:
        """Open client connections (for tests and debugging)."""
        return len(self._connections)

    async def start(self) -> None:
        self.closing = False
        self._server = await asyncio.start_server(self._serve, self._host, self._port, limit=_READ_CHUNK)

    async def close(self) -> None:
        if self._server is None:
            return
        self.closing = True
        self._server.close()
        for writer in list(self._connections):
            writer.close()
        await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        try:
            await _Connection(self, reader, writer).serve()
        finally:
            self._connections.discard(writer)
