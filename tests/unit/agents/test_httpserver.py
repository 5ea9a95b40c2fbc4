"""kvagent's HttpServer against raw sockets on loopback: keep-alive rules, timeouts, size limits, framing.

The server runs on its own event loop in a thread (the stdlib loop and uvloop, as agents use uvloop); the
tests speak HTTP by hand so that every byte on the wire is the test's choice. Waits are socket timeouts.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import uvloop
from kvagent.service.httpserver import HttpServer, Request, Response

READ_TIMEOUT_S = 0.5
IDLE_TIMEOUT_S = 0.8
MAX_HEADER = 1024
MAX_BODY = 1024
SLACK_S = 1.5  # how much later than its timeout a close may come on a loaded 2-CPU machine


class LiveServer:
    def __init__(self, loop_factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
        self.requests: list[Request] = []
        self.loop = loop_factory()
        self.thread = threading.Thread(target=self.loop.run_forever, name="httpserver-test", daemon=True)
        self.thread.start()
        self.server = HttpServer(
            self.handle,
            "127.0.0.1",
            0,
            read_timeout_s=READ_TIMEOUT_S,
            idle_timeout_s=IDLE_TIMEOUT_S,
            max_header_bytes=MAX_HEADER,
            max_body_bytes=MAX_BODY,
        )
        self.call(self.server.start())
        self.port = self.server.port

    def call(self, coro: object) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(5)  # type: ignore[arg-type]

    async def handle(self, request: Request) -> Response:
        self.requests.append(request)
        if request.path == "/boom":
            raise RuntimeError("handler bug")
        return Response(200, f"{request.method} {request.path} {len(request.body)}".encode())

    def connections(self) -> int:
        async def count() -> int:
            return self.server.connections

        return int(self.call(count()))  # type: ignore[call-overload]

    def stop(self) -> None:
        self.call(self.server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        assert not self.thread.is_alive()
        self.loop.close()


@pytest.fixture(params=["asyncio", "uvloop"])
def srv(request: pytest.FixtureRequest) -> Iterator[LiveServer]:
    factory = asyncio.new_event_loop if request.param == "asyncio" else uvloop.new_event_loop
    server = LiveServer(factory)
    yield server
    server.stop()


class Client:
    def __init__(self, port: int, timeout_s: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        self.buf += chunk
        return chunk

    def response(self, head_request: bool = False) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            if not self._recv():
                raise ConnectionError(f"closed before a full response head; got {self.buf!r}")
        raw, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        assert lines[0].startswith("HTTP/1.1 "), lines[0]
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = 0 if head_request or status == 100 else int(headers["content-length"])
        while len(self.buf) < length:
            if not self._recv():
                raise ConnectionError("closed mid-body")
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, headers, body

    def wait_closed(self, within_s: float) -> float:
        """Seconds until the server closed the connection (EOF or reset); fails if it stays open longer."""
        start = time.monotonic()
        self.sock.settimeout(within_s)
        try:
            while self._recv():
                assert time.monotonic() - start < within_s, "server kept sending instead of closing"
        except ConnectionResetError:
            pass
        except TimeoutError:
            pytest.fail(f"connection still open after {within_s} s")
        return time.monotonic() - start

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def client(srv: LiveServer) -> Iterator[Callable[[], Client]]:
    made: list[Client] = []

    def make() -> Client:
        made.append(Client(srv.port))
        return made[-1]

    yield make
    for c in made:
        c.close()


def get(path: str, version: str = "HTTP/1.1", extra: str = "", method: str = "GET") -> bytes:
    return f"{method} {path} {version}\r\nHost: t\r\n{extra}\r\n".encode()


# -- keep-alive -------------------------------------------------------------------------------------------
def test_http11_keeps_the_connection_by_default(srv: LiveServer, client: Callable[[], Client]) -> None:
    c = client()
    for i in range(3):
        c.send(get(f"/a{i}"))
        status, headers, body = c.response()
        assert (status, body) == (200, f"GET /a{i} 0".encode())
        assert headers["connection"] == "keep-alive"
        assert headers["keep-alive"] == f"timeout={IDLE_TIMEOUT_S:.0f}"
    assert [r.path for r in srv.requests] == ["/a0", "/a1", "/a2"]
    assert srv.connections() == 1


def test_connection_close_is_honoured(client: Callable[[], Client]) -> None:
    c = client()
    c.send(get("/x", extra="Connection: close\r\n"))
    status, headers, _ = c.response()
    assert status == 200 and headers["connection"] == "close"
    assert c.wait_closed(within_s=1.0) < 1.0


def test_connection_close_among_other_tokens(client: Callable[[], Client]) -> None:
    c = client()
    c.send(get("/x", extra="Connection: TE, Close\r\n"))
    assert c.response()[1]["connection"] == "close"
    c.wait_closed(within_s=1.0)


def test_http10_closes_unless_keep_alive_is_asked(client: Callable[[], Client]) -> None:
    plain = client()
    plain.send(get("/old", version="HTTP/1.0"))
    status, headers, _ = plain.response()
    assert status == 200 and headers["connection"] == "close"
    plain.wait_closed(within_s=1.0)

    kept = client()
    for _ in range(2):
        kept.send(get("/old", version="HTTP/1.0", extra="Connection: keep-alive\r\n"))
        status, headers, _ = kept.response()
        assert status == 200 and headers["connection"] == "keep-alive"


def test_pipelined_requests_are_answered_in_order(client: Callable[[], Client]) -> None:
    c = client()
    c.send(get("/one") + b"POST /two HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc" + get("/three"))
    assert [c.response()[2] for _ in range(3)] == [b"GET /one 0", b"POST /two 3", b"GET /three 0"]


def test_head_answer_has_no_body_and_keeps_framing(client: Callable[[], Client]) -> None:
    c = client()
    c.send(get("/m", method="HEAD") + get("/after"))
    status, headers, body = c.response(head_request=True)
    assert status == 200 and int(headers["content-length"]) > 0 and body == b""
    assert c.response()[2] == b"GET /after 0"  # would read the HEAD's body as a status line if one was sent


def test_expect_100_continue(client: Callable[[], Client]) -> None:
    c = client()
    c.send(b"POST /up HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    assert c.response()[0] == 100
    c.send(b"hello")
    assert c.response()[2] == b"POST /up 5"


def test_handler_error_is_a_500_and_the_connection_survives(client: Callable[[], Client]) -> None:
    c = client()
    c.send(get("/boom"))
    assert c.response()[0] == 500
    c.send(get("/ok"))
    assert c.response()[:1] == (200,)


# -- timeouts ---------------------------------------------------------------------------------------------
def test_half_a_request_head_is_dropped_after_the_read_timeout(client: Callable[[], Client]) -> None:
    c = client()
    start = time.monotonic()
    c.send(b"GET /slow HTTP/1.1\r\nHost:")
    status, headers, _ = c.response()
    assert status == 408 and headers["connection"] == "close"
    c.wait_closed(within_s=1.0)
    assert READ_TIMEOUT_S * 0.9 <= time.monotonic() - start < READ_TIMEOUT_S + SLACK_S


def test_half_a_body_is_dropped_after_the_read_timeout(srv: LiveServer, client: Callable[[], Client]) -> None:
    c = client()
    start = time.monotonic()
    c.send(b"POST /p HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
    assert c.response()[0] == 408
    c.wait_closed(within_s=1.0)
    assert READ_TIMEOUT_S * 0.9 <= time.monotonic() - start < READ_TIMEOUT_S + SLACK_S
    assert srv.requests == []


def test_a_trickled_request_is_bounded_as_a_whole(srv: LiveServer, client: Callable[[], Client]) -> None:
    """One byte every 0.1 s keeps each read short: the deadline runs from the first byte, not per read."""
    c = client()
    request = get("/trickle", extra="X-Pad: " + "p" * 40 + "\r\n")
    start = time.monotonic()
    sent = 0
    with pytest.raises((ConnectionError, BrokenPipeError)):
        for byte in request:  # bounded: len(request) passes, each waiting at most 0.1 s
            c.send(bytes([byte]))
            sent += 1
            c.sock.settimeout(0.1)
            try:
                if c.sock.recv(65536, socket.MSG_PEEK) == b"":
                    raise ConnectionError("closed")
                raise ConnectionError("server answered")  # the 408
            except TimeoutError:
                pass
    assert sent < len(request) and srv.requests == []
    assert time.monotonic() - start < READ_TIMEOUT_S + SLACK_S


def test_idle_keep_alive_connection_is_closed_after_the_idle_timeout(client: Callable[[], Client]) -> None:
    c = client()
    c.send(get("/x"))
    assert c.response()[0] == 200
    start = time.monotonic()
    waited = c.wait_closed(within_s=IDLE_TIMEOUT_S + SLACK_S)
    assert waited >= IDLE_TIMEOUT_S * 0.9, f"closed after {waited:.2f} s, before the idle timeout"
    assert c.buf == b"", "an idle close must not send anything"
    assert time.monotonic() - start < IDLE_TIMEOUT_S + SLACK_S


def test_activity_restarts_the_idle_timeout(client: Callable[[], Client]) -> None:
    c = client()
    start = time.monotonic()
    # bounded: requests 0.3 s apart for 1.5 x the idle timeout, the socket timeout paces them
    c.sock.settimeout(0.3)
    while time.monotonic() - start < IDLE_TIMEOUT_S * 1.5:
        c.send(get("/tick"))
        assert c.response()[0] == 200
        with pytest.raises(TimeoutError):
            c.sock.recv(1)  # nothing, and not closed, for 0.3 s
    c.send(get("/still-open"))
    assert c.response()[2] == b"GET /still-open 0"


def test_server_close_ends_idle_connections(srv: LiveServer, client: Callable[[], Client]) -> None:
    c = client()
    c.send(get("/x"))
    assert c.response()[0] == 200
    srv.call(srv.server.close())
    c.wait_closed(within_s=2.0)


# -- limits and malformed requests ------------------------------------------------------------------------
def test_body_at_the_limit_is_accepted(client: Callable[[], Client]) -> None:
    c = client()
    c.send(b"POST /big HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % MAX_BODY + b"x" * MAX_BODY)
    assert c.response()[2] == b"POST /big %d" % MAX_BODY


def test_body_over_the_limit_is_413_and_readable_though_the_client_sent_it_all(
    srv: LiveServer, client: Callable[[], Client]
) -> None:
    c = client()
    size = MAX_BODY + 1
    c.send(b"POST /big HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % size + b"x" * size)
    status, headers, body = c.response()
    assert status == 413 and headers["connection"] == "close" and b"over 1024" in body
    c.wait_closed(within_s=3.0)
    assert srv.requests == []


def test_a_huge_declared_body_is_refused_before_it_is_sent(client: Callable[[], Client]) -> None:
    c = client()
    c.send(b"POST /big HTTP/1.1\r\nContent-Length: 999999999999\r\n\r\n")
    assert c.response()[0] == 413


def test_request_head_over_the_limit_is_431(client: Callable[[], Client]) -> None:
    c = client()
    c.send(get("/h", extra="X-Big: " + "y" * MAX_HEADER + "\r\n"))
    assert c.response()[0] == 431
    c.wait_closed(within_s=3.0)


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /x HTTP/2.0\r\n\r\n", 505),
        (b"GET /x HTTP/1.1\r\nno-colon-here\r\n\r\n", 400),
        (b"GET /x HTTP/1.1\r\nBad Name : v\r\n\r\n", 400),
        (b"POST /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400),
        (b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 501),
    ],
)
def test_malformed_or_unsupported_requests_are_refused_and_closed(
    raw: bytes, status: int, srv: LiveServer, client: Callable[[], Client]
) -> None:
    c = client()
    c.send(raw)
    got, headers, _ = c.response()
    assert (got, headers["connection"]) == (status, "close")
    c.wait_closed(within_s=3.0)
    assert srv.requests == []
