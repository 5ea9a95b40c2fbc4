"""One RESP2 connection shared by many greenlets, with automatic pipelining.

Why not redis-py: its per-call socket I/O under gevent costs a system call and a loop switch per request in each
direction; a plain Locust user with redis-py reached 0.21x of redis-benchmark here (issue 11). Here every caller
appends its pre-packed command to a buffer and waits on a Waiter; once per loop iteration everything queued
goes out in one send (a hub callback, `_flush`; a writer greenlet per connection takes over whatever the socket
cannot take at once, and all of TLS), and one reader greenlet per connection feeds whatever arrives to a
hiredis.Reader and resolves the waiters in FIFO order. Many users -> few system calls (figures against
redis-benchmark in kvload/users/kv.py).

Failures: an error reply raises RespError for that caller only. A connection that dies (EOF, reset, no reply within
reply_timeout_s while replies are owed) fails every pending caller with RespConnectionError; the next use
reconnects after redis-py's jittered exponential backoff, and callers queued behind a failed attempt fail with its
error instead of each waiting out a backoff of its own.
"""

from __future__ import annotations

import collections
import contextlib
import socket as _stdlib_socket
import ssl
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from time import perf_counter_ns
from typing import Any

import gevent
import gevent.event
import gevent.lock
import gevent.socket
import hiredis
from gevent.hub import Waiter
from redis.backoff import AbstractBackoff, ExponentialWithJitterBackoff

Address = tuple[str, int]
Arg = bytes | str | int | float

_MORE = object()  # hiredis.Reader's "no complete reply yet" (RESP3 `false` could not be told from False)
_RECV = 65536


class RespError(Exception):
    """An error reply from the server (-ERR ..., -MOVED ..., -WRONGPASS ...)."""


class RespConnectionError(ConnectionError):
    """The connection could not be made or was lost. `address` is the node, `reason` the cause in a few words."""

    def __init__(self, address: Address | None, reason: str, what: str = "connection lost") -> None:
        self.address = address
        self.reason = reason
        self.what = what
        where = f"{address[0]}:{address[1]}: " if address else ""
        super().__init__(f"{where}{what} ({reason})")


class AuthenticationFailed(RespConnectionError):
    """AUTH was refused (wrong password, unknown or disabled user)."""


def _own_pack(args: Sequence[Arg]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(parts)


def pack(args: Sequence[Arg]) -> bytes:
    """One command in RESP: hiredis's C packer when this hiredis has it (>= 2.1), our own otherwise."""
    return _hiredis_pack(tuple(args)) if _hiredis_pack is not None else _own_pack(args)


_hiredis_pack: Callable[[tuple[Arg, ...]], bytes] | None = getattr(hiredis, "pack_command", None)


def reason_of(exc: BaseException) -> str:
    """A few words for a socket/TLS failure ("Connection refused", "certificate verify failed ...")."""
    if isinstance(exc, RespConnectionError):
        return exc.reason
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: certificate verify failed: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    if isinstance(exc, TimeoutError | _stdlib_socket.timeout | gevent.Timeout):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class ReplyClock:
    """When the latest reply data was read off any socket that shares this clock (perf_counter ns).

    A caller resumed with its reply reads `ns` to time the request at the read, not at its own resumption: the hub
    resumes callers one by one after the reader has handed every reply out, and that queueing is the generator's,
    not the server's (an isolated GET every 0.5 ms: p50 49-54 us timed at the read against 68-76 us at the
    caller's resumption; the bare-socket floor is 49-55 us). Reads happen one after another in one thread, so when
    a caller resumes, `ns` is at or after the read that completed its reply and never after the present: the
    latency it gives is never shorter than the true one.
    """

    __slots__ = ("ns",)

    def __init__(self) -> None:
        self.ns = 0


@dataclass(frozen=True)
class ConnectSettings:
    """How to open and set up a connection; shared by every connection to one target."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    db: int = 0
    ssl_context: ssl.SSLContext | None = None
    connect_timeout_s: float = 5.0
    # a connection owing replies that hears nothing for this long is declared dead (a stalled server must not
    # hang users forever); checked per blocking read, not per request. Blocking commands (BLPOP, XREADGROUP
    # BLOCK) need a larger value than their own block time.
    reply_timeout_s: float = 10.0
    # shared by every connection made with these settings (ReplyClock)
    clock: ReplyClock = field(default_factory=ReplyClock, compare=False, repr=False)


class _Batch:
    """Waits for `n` replies sent back to back: one wake-up for the whole pipeline instead of n."""

    __slots__ = ("n", "replies", "result")

    def __init__(self, n: int) -> None:
        self.n = n
        self.replies: list[Any] = []
        self.result = Waiter()


class Connection:
    """A shared, automatically pipelined connection. Safe for any number of greenlets of one process.

    `address` is fixed or a callable asked at every (re)connect (Sentinel's current master). `handshake` adds
    commands after AUTH/SELECT whose replies `check` may refuse (raise RespConnectionError), e.g. INFO replication.
    """

    def __init__(
        self,
        address: Address | Callable[[], Address],
        settings: ConnectSettings = ConnectSettings(),
        *,
        backoff: AbstractBackoff | None = None,
        handshake: Sequence[Sequence[Arg]] = (),
        check: Callable[[list[Any]], None] | None = None,
        drop_on_readonly: bool = False,
    ) -> None:
        self._address = address if callable(address) else (lambda: address)
        self.address: Address | None = None if callable(address) else address
        self.settings = settings
        self._backoff = backoff or ExponentialWithJitterBackoff(cap=1.0, base=0.008)
        self._handshake_extra = [tuple(c) for c in handshake]
        self._check = check
        self._drop_on_readonly = drop_on_readonly
        self._sock: Any = None
        self._raw: Any = None
        self._writing = False
        self._flush_scheduled = False
        self._loop: Any = None
        self._pending: collections.deque[Any] = collections.deque()
        self._out: list[bytes] = []
        self._wake = gevent.event.Event()
        self._reader: gevent.Greenlet | None = None
        self._writer: gevent.Greenlet | None = None
        self._lock = gevent.lock.Semaphore()
        self._failures = 0
        self._attempts = 0
        self._last_error: RespConnectionError | None = None
        self.connects = 0  # successful connects (tests, reports)
        self._closed = False

    # -- sending -----------------------------------------------------------------------------------------
    def submit(self, packed: bytes) -> Waiter:
        """Queue one packed command; the Waiter's get() returns the reply or raises (RespError, connection)."""
        if self._sock is None:
            self._connect()
        waiter = Waiter()
        pending = self._pending
        if not pending and not self._out and self._raw is not None and not self._writing:
            # an idle connection: send now, from the caller, instead of one loop iteration later from the hub.
            # Measured side by side (make bench, 3 runs each): GET p50 at 2,000/s x0.99-1.06 of a minimal paced
            # client sending now against x1.63-1.78 through the hub; the cost is throughput at saturation, where a
            # connection that empties for a moment sends a batch of one (GET P1, 200 users over 50 connections:
            # x0.80-0.91 of redis-benchmark against x0.94-1.02).
            pending.append(waiter)
            self._send_now(packed)
            return waiter
        pending.append(waiter)
        self._enqueue(packed)
        return waiter

    def _send_now(self, data: bytes) -> None:
        """Send on the raw non-blocking socket; what it cannot take now goes to the writer greenlet."""
        try:
            sent = self._raw.send(data)
        except OSError:
            sent = 0
        if sent != len(data):
            self._out = [data[sent:]]
            self._wake.set()

    def submit_many(self, packed: Sequence[bytes]) -> Waiter:
        """Queue commands back to back; the Waiter's get() returns their replies in order (error replies as
        RespError instances in the list)."""
        if not packed:
            done = Waiter()
            done.switch([])  # nobody waits yet: the value is stored
            return done
        if self._sock is None:
            self._connect()
        batch = _Batch(len(packed))
        self._pending.append(batch)
        self._enqueue(b"".join(packed))
        return batch.result

    def _enqueue(self, data: bytes) -> None:
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.run_callback(self._flush)

    def _flush(self) -> None:
        """Send what is queued, from the hub, once every greenlet made ready in this loop iteration has queued its
        command: one send for all of them, without a switch into the writer greenlet.

        Measured (GET, 200 users over 50 connections, server and Locust pinned to a CPU each, 3 alternating
        rounds): 42.7-43.9k/s with this callback against 33.2-37.0k/s waking the writer greenlet for every batch.
        (A command for an idle connection does not wait for this: submit sends it at once, see there.) The raw
        non-blocking socket never yields; what it cannot take now, the writer greenlet sends when the socket is
        writable.
        """
        self._flush_scheduled = False
        out = self._out
        if not out or self._sock is None:
            return
        if self._writing or self._raw is None:
            self._wake.set()  # the writer is mid-send (it takes this next), or TLS: the writer does all sends
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        try:
            sent = self._raw.send(data)
        except OSError:
            sent = 0  # would block, or broken: the writer retries and meets the error itself
        if sent == len(data):
            self._out = []
            return
        self._out = [data[sent:]]
        self._wake.set()

    # the user-facing calls (kvload.resp.Client): `key` routes in a cluster, here it is not needed
    def send(self, key: bytes | None, packed: bytes) -> Any:
        return self.submit(packed).get()

    def send_many(self, keys: Sequence[bytes | None] | None, packed: Sequence[bytes]) -> list[Any]:
        return self.submit_many(packed).get()  # type: ignore[no-any-return]

    def call(self, *args: Arg) -> Any:
        return self.submit(pack(args)).get()

    def call_many(self, commands: Iterable[Sequence[Arg]], raise_on_error: bool = True) -> list[Any]:
        replies: list[Any] = self.submit_many([pack(c) for c in commands]).get()
        if raise_on_error:
            for r in replies:
                if isinstance(r, RespError):
                    raise r
        return replies

    # -- connecting --------------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._sock is not None

    def connect(self) -> None:
        """Connect now (preflight): raises RespConnectionError / AuthenticationFailed instead of waiting."""
        if self._sock is None:
            self._connect()

    def _connect(self) -> None:
        attempt = self._attempts
        with self._lock:
            if self._sock is not None:
                return
            if self._closed:
                raise RespConnectionError(self.address, "closed by the client", "connection closed")
            if self._attempts != attempt and self._last_error is not None:
                # an attempt failed while we queued for the lock: fail with it rather than retry per caller
                raise self._last_error
            self._attempts += 1
            if self._failures:
                gevent.sleep(self._backoff.compute(self._failures))
            try:
                sock = self._open()
            except RespConnectionError as exc:
                self._failures += 1
                self._last_error = exc
                raise
            self._failures = 0
            self._last_error = None
            self._start(sock)

    def _open(self) -> Any:
        s = self.settings
        try:
            address = self._address()
        except RespConnectionError:
            raise
        except Exception as exc:  # a resolver (Sentinel) that failed in a way of its own
            raise RespConnectionError(None, reason_of(exc), "cannot resolve the server") from None
        self.address = address
        sock = None
        try:
            sock = gevent.socket.create_connection(address, timeout=s.connect_timeout_s)
            sock.setsockopt(_stdlib_socket.IPPROTO_TCP, _stdlib_socket.TCP_NODELAY, 1)
            if s.ssl_context is not None:
                sock = s.ssl_context.wrap_socket(sock, server_hostname=address[0])
            self._handshake(sock, address)
        except RespConnectionError:
            _close_quietly(sock)
            raise
        except (OSError, gevent.Timeout) as exc:
            _close_quietly(sock)
            raise RespConnectionError(address, reason_of(exc), "cannot connect") from None
        sock.settimeout(s.reply_timeout_s)
        return sock

    def _handshake(self, sock: Any, address: Address) -> None:
        """AUTH (ACL user + password, or password alone), SELECT, then the extra commands; RESP2 throughout."""
        s = self.settings
        commands: list[tuple[Arg, ...]] = []
        if s.password is not None:
            commands.append((b"AUTH", s.username, s.password) if s.username else (b"AUTH", s.password))
        if s.db:
            commands.append((b"SELECT", s.db))
        commands += self._handshake_extra
        if not commands:
            return
        sock.sendall(b"".join(pack(c) for c in commands))
        reader = hiredis.Reader(notEnoughData=_MORE)
        replies: list[Any] = []
        while len(replies) < len(commands):
            data = sock.recv(_RECV)
            if not data:
                raise RespConnectionError(address, "closed by the server during the handshake", "cannot connect")
            reader.feed(data)
            while (reply := reader.gets()) is not _MORE:
                replies.append(reply)
        i = 0
        if s.password is not None:
            if isinstance(replies[0], hiredis.ReplyError):
                # WRONGPASS / ERR invalid password / ERR AUTH <password> called without any password configured
                raise AuthenticationFailed(address, str(replies[0]).split("\n")[0][:120], "authentication failed")
            i = 1
        if s.db:
            if isinstance(replies[i], hiredis.ReplyError):
                raise RespConnectionError(address, f"SELECT {s.db}: {replies[i]}", "cannot connect")
            i += 1
        if self._check is not None:
            try:
                self._check(replies[i:])
            except RespConnectionError as exc:
                if exc.address is None:
                    raise RespConnectionError(address, exc.reason, "cannot connect") from None
                raise

    def _start(self, sock: Any) -> None:
        self._sock = sock
        # gevent's plain socket keeps the OS socket, non-blocking, as _sock; TLS sockets always use the writer
        raw = getattr(sock, "_sock", None)
        self._raw = raw if self.settings.ssl_context is None and raw is not None and raw.gettimeout() == 0.0 else None
        self._writing = False
        self._flush_scheduled = False
        self._loop = gevent.get_hub().loop
        self._pending = collections.deque()
        self._out = []
        self._wake = gevent.event.Event()
        self.connects += 1
        self._reader = gevent.spawn(self._read_loop, sock, self._pending)
        self._writer = gevent.spawn(self._write_loop, sock)

    # -- the two greenlets -------------------------------------------------------------------------------
    def _write_loop(self, sock: Any) -> None:
        wake = self._wake
        try:
            while True:
                wake.wait()
                wake.clear()
                out = self._out
                if not out:
                    continue
                self._out = []
                self._writing = True
                sock.sendall(out[0] if len(out) == 1 else b"".join(out))
                self._writing = False
        except gevent.GreenletExit:
            raise
        except BaseException as exc:  # noqa: BLE001 - any failure ends this connection, callers see why
            self._lost(sock, exc)

    def _read_loop(self, sock: Any, pending: collections.deque[Any]) -> None:
        # error replies come out of hiredis as RespError instances: nothing to convert per reply
        reader = new_reader()
        # one buffer for the connection's life: recv(n) allocated 64 KiB per read and shrank it again
        buffer = bytearray(_RECV)
        recv_into = sock.recv_into
        feed = reader.feed
        gets = reader.gets
        errors: list[RespError] | None = [] if self._drop_on_readonly else None
        resolve = self._loop.run_callback
        clock = self.settings.clock
        try:
            while True:
                try:
                    n = recv_into(buffer)
                except TimeoutError:
                    if pending:
                        raise RespConnectionError(
                            self.address, f"no reply within {self.settings.reply_timeout_s:g} s"
                        ) from None
                    continue  # idle, nothing owed
                if not n:
                    raise RespConnectionError(self.address, "closed by the server")
                clock.ns = perf_counter_ns()
                feed(buffer, 0, n)  # hiredis copies what it is given
                deliver(pending, gets, resolve, errors)
                if errors:
                    if any(str(e).startswith("READONLY") for e in errors):
                        # Sentinel failover: the server we write to became a replica; drop the connection so
                        # the next use asks the Sentinels for the new master
                        raise RespConnectionError(self.address, "the server is now a read-only replica")
                    errors.clear()
        except gevent.GreenletExit:
            raise
        except BaseException as exc:  # noqa: BLE001 - any failure ends this connection, callers see why
            self._lost(sock, exc)

    def _lost(self, sock: Any, exc: BaseException) -> None:
        if self._sock is not sock:
            return  # this connection was already replaced
        self._sock = None
        self._raw = None
        self._failures += 1
        err = exc if isinstance(exc, RespConnectionError) else RespConnectionError(self.address, reason_of(exc))
        current = gevent.getcurrent()
        for g in (self._reader, self._writer):
            if g is not None and g is not current:
                g.kill(block=False)
        _close_quietly(sock)
        pending, self._pending = self._pending, collections.deque()
        self._out = []
        resolve = self._loop.run_callback
        for waiter in pending:
            resolve((waiter.result if type(waiter) is _Batch else waiter).throw, err)

    def close(self) -> None:
        """Close for good: pending callers fail, later use raises."""
        self._closed = True
        if self._sock is not None:
            self._lost(self._sock, RespConnectionError(self.address, "closed by the client", "connection closed"))


def deliver(
    pending: collections.deque[Any],
    gets: Callable[[], Any],
    resolve: Callable[..., Any],
    errors: list[RespError] | None = None,
) -> None:
    """Hand every complete reply hiredis holds to its waiter, first in first out: a Waiter gets one reply (an error
    reply is thrown into its caller), a _Batch collects its n replies and wakes its caller once. `resolve` is the
    hub loop's run_callback: a Waiter is switched from the hub (gevent's rule), after this read's replies are all
    handed out. `errors`, when given, receives the error replies (the READONLY check). Raises RespConnectionError
    for a reply nobody asked for.

    Why Waiter, not AsyncResult: with 100 greenlets waiting and one resolving, an AsyncResult's set/get cost
    2.8-4.9 us per reply, a Waiter switched by a hub callback 1.4-2.4 us (3 rounds on this machine kind); at
    ~15 us of client CPU per unpipelined GET that is a tenth of the throughput.
    """
    popleft = pending.popleft
    while pending:
        waiter = pending[0]
        if type(waiter) is Waiter:
            reply = gets()
            if reply is _MORE:
                return
            popleft()
            if type(reply) is RespError:
                resolve(waiter.throw, reply)
                if errors is not None:
                    errors.append(reply)
            else:
                resolve(waiter.switch, reply)
            continue
        replies = waiter.replies
        # a comprehension pulls a pipeline's replies faster than a loop; past the end of the data gets() keeps
        # answering _MORE, which is cut off again
        got = [gets() for _ in range(waiter.n - len(replies))]
        if got[-1] is _MORE:
            replies += got[: got.index(_MORE)]
            return
        if replies:
            replies += got
        else:
            waiter.replies = replies = got  # the whole pipeline in one read, the common case: no copy
        popleft()
        resolve(waiter.result.switch, replies)
        if errors is not None:
            errors.extend(r for r in replies if type(r) is RespError)
    if gets() is not _MORE:
        raise RespConnectionError(None, "a reply nobody asked for (protocol out of step)")


def new_reader() -> Any:
    """The reader deliver() expects: error replies as RespError, _MORE when no reply is complete."""
    return hiredis.Reader(notEnoughData=_MORE, replyError=RespError)


def _close_quietly(sock: Any) -> None:
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.close()
