"""asyncio clients (nats-py) under Locust's gevent: one asyncio loop per process on a real OS thread.

Why not run asyncio in a greenlet: Locust monkey-patches everything (gevent.monkey.patch_all), and an asyncio loop
driven from a greenlet shares the OS thread with the gevent hub: each blocks the other's I/O, and greenlet switches
inside coroutines give "loop already running" / wrong-loop errors (locust#1251, #2383, asyncio-gevent #16/#17).
Patched `threading.Thread` is a greenlet too (gevent#2026), so the loop gets a thread from the *unpatched*
`_thread.start_new_thread`: a real OS thread where no greenlet ever runs.

Design (one Bridge per Locust process, kept on the Locust environment, started on first use):

    greenlets --call_soon--> inbox deque --(one call_soon_threadsafe per batch)--> asyncio thread
    asyncio thread --to_hub--> outbox deque --(one async_ watcher send per batch)--> gevent hub --> AsyncResult.set

- The loop is uvloop's when it is installed (kvload depends on it): uvloop does its socket I/O, DNS and timers in
  C (libuv), so gevent's patched socket/selectors/threading never reach it. Without uvloop, a SelectorEventLoop
  over the *original* `select.epoll` (gevent removes epoll from the patched `select`), resolving names with the
  original getaddrinfo (asyncio would use its default executor, whose patched "threads" are greenlets of a hub
  that never runs in this thread: a deadlock).
- Not `asyncio.run_coroutine_threadsafe`: its concurrent.futures.Future waits on a patched threading.Condition,
  i.e. a gevent lock shared across two OS threads; and one future + one wake-up per call. Here a greenlet appends
  to a deque (atomic under the GIL) and wakes the loop once per batch; the loop appends completions to another
  deque and wakes the hub once per batch through a gevent `async_` watcher (`send()` is the one gevent call that
  is documented thread-safe; libev coalesces sends into one eventfd write). The hub drains every completion of the
  wake-up in one callback and sets each waiting greenlet's AsyncResult.
- Nothing in the asyncio thread logs directly (logging's locks are patched gevent locks): messages are handed to
  the hub like completions.

NatsClient: one nats-py connection on the bridge with a fire-and-forget publish path (see publish_nowait), and
request / JetStream publish calls that block only the calling greenlet.
"""

from __future__ import annotations

import asyncio
import logging
import os
import selectors
import sys
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

import gevent
import gevent.event
import gevent.monkey

SWITCH_INTERVAL_S = 0.0005

log = logging.getLogger(__name__)

T = TypeVar("T")

_start_new_thread = gevent.monkey.get_original("_thread", "start_new_thread")
_original_getaddrinfo = gevent.monkey.get_original("socket", "getaddrinfo")
_OriginalEpollSelector: type[selectors.BaseSelector] = gevent.monkey.get_original("selectors", "EpollSelector")
_original_epoll = gevent.monkey.get_original("select", "epoll")


class BridgeClosed(RuntimeError):
    """The bridge was closed (Locust is quitting) before the call finished."""


class _RealEpollSelector(_OriginalEpollSelector):  # type: ignore[misc,valid-type]
    # the stdlib class binds select.epoll when `selectors` is first imported; make sure it is the real one
    _selector_cls = _original_epoll


class _ThreadSelectorLoop(asyncio.SelectorEventLoop):
    """The fallback loop: stdlib asyncio over the real epoll, name resolution inline in the loop thread."""

    async def getaddrinfo(  # type: ignore[override]
        self, host: Any, port: Any, *, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> list[Any]:
        # blocks the loop thread for one lookup, at connect time only; never the hub, never a patched executor
        return _original_getaddrinfo(host, port, family, type, proto, flags)  # type: ignore[no-any-return]


def new_loop(kind: str = "auto") -> tuple[asyncio.AbstractEventLoop, str]:
    """(loop, "uvloop"|"selector"). kind "auto" takes uvloop when it is installed."""
    if kind in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise
        else:
            return uvloop.new_event_loop(), "uvloop"
    return _ThreadSelectorLoop(_RealEpollSelector()), "selector"


class _Call:
    """One coroutine submitted by a greenlet: its AsyncResult and (in the loop thread) its task."""

    __slots__ = ("result", "task")

    def __init__(self) -> None:
        self.result: gevent.event.AsyncResult = gevent.event.AsyncResult()
        self.task: asyncio.Task[Any] | None = None


class Bridge:
    """One asyncio loop on a real OS thread; greenlets run coroutines on it and wait only themselves."""

    def __init__(self, loop_kind: str = "auto") -> None:
        self._loop_kind = loop_kind
        self.loop: asyncio.AbstractEventLoop | None = None
        self.kind = ""
        self._inbox: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._inbox_signalled = False
        self._outbox: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._outbox_signalled = False
        self._watcher: Any = None
        self._thread_done = gevent.event.AsyncResult()
        self._closed = False
        # figures for tests and the benchmark: hub wake-ups against completions handed over
        self.hub_wakeups = 0
        self.hub_items = 0

    # -- lifecycle (greenlet side) ---------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.loop is not None and not self._closed

    def start(self, timeout_s: float = 10.0) -> Bridge:
        if self.loop is not None:
            return self
        hub = gevent.get_hub()
        # Stays referenced (keeps the hub's loop alive) for the bridge's life: a greenlet waiting on a result while
        # nothing else is active must not make the hub think it would block forever (LoopExit).
        self._watcher = hub.loop.async_()
        self._watcher.start(self._drain_outbox)
        self.loop, self.kind = new_loop(self._loop_kind)
        self.loop.set_exception_handler(self._loop_exception)
        # Two OS threads now share the GIL: at CPython's default 5 ms switch interval a completion waited for the
        # GIL most of that (publish hand-off p50 ~3 ms); at 0.5 ms it fell to 0.55 ms with no throughput loss
        # (measured on this 2-core machine kind, 50 NatsPublishUsers). Process-wide, so only a Locust process that
        # uses NATS gets it.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        ready = gevent.event.AsyncResult()
        _start_new_thread(self._thread_main, (ready,))
        if ready.wait(timeout_s) is None and not ready.ready():
            raise RuntimeError(f"the asyncio thread did not start within {timeout_s} s")
        return self

    def close(self, timeout_s: float = 5.0) -> None:
        """Cancel what is still running, stop the loop, wait (bounded) for its thread. Idempotent."""
        if self.loop is None or self._closed:
            return
        self._closed = True
        self.loop.call_soon_threadsafe(self._shutdown)
        self._thread_done.wait(timeout_s)
        # completions the thread posted last (cancelled calls -> BridgeClosed) are still in the outbox
        self._drain_outbox()
        self._watcher.stop()
        self._watcher.close()

    def _thread_main(self, ready: gevent.event.AsyncResult) -> None:
        loop = self.loop
        assert loop is not None
        try:
            loop.call_soon(self.to_hub, ready.set, None)
            loop.run_forever()
            tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in tasks:
                t.cancel()
            if tasks:
                loop.run_until_complete(asyncio.wait(tasks, timeout=2))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
        except BaseException as exc:  # noqa: BLE001 - a thread has nobody above it: report it in the hub
            self.to_hub(log.error, "asyncio thread failed: %r", exc)
        finally:
            self.to_hub(self._thread_done.set, None)

    def _shutdown(self) -> None:
        assert self.loop is not None
        for t in asyncio.all_tasks(self.loop):
            t.cancel()
        self.loop.stop()

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # asyncio's default handler logs from this thread; hand the message to the hub instead
        exc = context.get("exception")
        self.to_hub(log.warning, "asyncio: %s%s", context.get("message", ""), f" ({exc!r})" if exc else "")

    # -- greenlets -> loop ------------------------------------------------------------------------------------
    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run fn(*args) in the loop thread, in submission order. Never blocks the greenlet."""
        if self.loop is None or self._closed:
            raise BridgeClosed("the asyncio bridge is not running")
        self._inbox.append((fn, args))
        # One wake-up per batch: set before the loop drains, cleared by the loop before it drains, so an item
        # appended after the loop's last look always finds the flag clear and schedules another drain.
        if not self._inbox_signalled:
            self._inbox_signalled = True
            self.loop.call_soon_threadsafe(self._drain_inbox)

    def _drain_inbox(self) -> None:
        self._inbox_signalled = False
        inbox = self._inbox
        while inbox:
            fn, args = inbox.popleft()
            try:
                fn(*args)
            except Exception as exc:  # noqa: BLE001 - one bad item must not strand the rest of the batch
                self.to_hub(log.error, "bridge call %r failed: %r", fn, exc)

    def spawn(self, coro: Coroutine[Any, Any, T]) -> gevent.event.AsyncResult:
        """Start coro on the loop; its result (or exception) arrives in the returned AsyncResult."""
        return self._submit(coro).result

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """Run coro on the loop and block this greenlet (only) until it finishes; its exception is raised here.

        timeout_s: TimeoutError after that long, and the task is cancelled. A greenlet killed while waiting
        (Locust stopping a user) cancels its task too.
        """
        call = self._submit(coro)
        try:
            call.result.wait(timeout_s)
            if not call.result.ready():
                raise TimeoutError(f"no answer within {timeout_s:g} s")
            return call.result.get(block=False)  # type: ignore[no-any-return]
        finally:
            if not call.result.ready() and self.running:
                self.call_soon(self._cancel, call)

    def _submit(self, coro: Coroutine[Any, Any, Any]) -> _Call:
        """Hand coro to the loop; a closed bridge closes it unrun (no "never awaited" warning) and raises."""
        call = _Call()
        try:
            self.call_soon(self._start, coro, call)
        except BridgeClosed:
            coro.close()
            raise
        return call

    def _start(self, coro: Coroutine[Any, Any, Any], call: _Call) -> None:
        assert self.loop is not None
        task = call.task = self.loop.create_task(coro)
        task.add_done_callback(lambda t: self._settle(call, t))

    @staticmethod
    def _cancel(call: _Call) -> None:
        if call.task is not None:
            call.task.cancel()

    def _settle(self, call: _Call, task: asyncio.Task[Any]) -> None:
        # read the outcome here, in the loop's thread; the hub only sets it
        if task.cancelled():
            self.to_hub(call.result.set_exception, BridgeClosed("cancelled: the asyncio bridge is closing"))
            return
        exc = task.exception()
        if exc is not None:
            self.to_hub(call.result.set_exception, exc)
        else:
            self.to_hub(call.result.set, task.result())

    # -- loop -> hub ------------------------------------------------------------------------------------------
    def to_hub(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run fn(*args) in the gevent hub (from the loop thread), in order. fn must not block."""
        self._outbox.append((fn, args))
        if not self._outbox_signalled:
            self._outbox_signalled = True
            self._watcher.send()

    def _drain_outbox(self) -> None:
        self._outbox_signalled = False
        self.hub_wakeups += 1
        outbox = self._outbox
        while outbox:
            fn, args = outbox.popleft()
            self.hub_items += 1
            try:
                fn(*args)
            except Exception:  # noqa: BLE001 - the hub must survive a bad completion
                log.exception("bridge completion %r failed", fn)


# ---------------------------------------------------------------------------------------------------- NATS


class PublishSink(Protocol):
    """Where the outcome of fire-and-forget publishes goes (called in the hub, one batch at a time)."""

    def published(self, latencies_ns: list[int], failures: list[tuple[int, BaseException]]) -> None: ...


# At most this many publishes queued or being written per connection; a greenlet publishing beyond it waits until
# the backlog is half gone (the loop thread is behind: waiting there is the generator's real limit, made visible as
# send lag in open loop instead of memory growth).
MAX_PUBLISH_BACKLOG = 8192
# Completions handed to the hub per batch: bounds how long one hub callback runs (recording ~1.5 µs each).
PUBLISH_CHUNK = 1024
# The connection is flushed (PING/PONG: the server has everything before it) this often while publishing.
FLUSH_INTERVAL_S = 1.0


class NatsClient:
    """One nats-py connection living on a Bridge. Greenlets call it; nothing here blocks the hub."""

    def __init__(self, bridge: Bridge, options: dict[str, Any]) -> None:
        self.bridge = bridge
        self.options = options
        self.nc: Any = None
        self.js: Any = None
        self._pubq: deque[tuple[str, bytes, dict[str, str] | None, int, PublishSink]] = deque()
        self._pub_signalled = False
        self._publisher: asyncio.Task[None] | None = None  # loop thread only
        self._flusher: asyncio.Task[None] | None = None
        self._backlog = 0  # hub thread only: publishes handed over and not yet reported back
        self._room = gevent.event.Event()
        self._room.set()
        self.publish_errors = 0

    # -- connection -------------------------------------------------------------------------------------------
    def connect(self, timeout_s: float = 10.0) -> NatsClient:
        """Connect (raises what nats-py raises, see connect_error_text); call once."""
        self.bridge.start()
        self.nc = self.bridge.run(self._connect(), timeout_s)
        return self

    async def _connect(self) -> Any:
        import nats

        nc = await nats.connect(**self.options)
        self.js = nc.jetstream()  # made in the loop thread: it may hold loop-bound objects
        return nc

    def close(self, timeout_s: float = 5.0) -> None:
        if self.nc is None or not self.bridge.running:
            return
        try:
            self.bridge.run(self._close(), timeout_s)
        except Exception as exc:  # noqa: BLE001 - closing at quit: report, never raise
            log.debug("closing the NATS connection: %r", exc)
        self.nc = None

    async def _close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
        await self.nc.close()  # flushes what is pending first

    # -- calls that wait (this greenlet only) -----------------------------------------------------------------
    def request(self, subject: str, payload: bytes, timeout_s: float, headers: dict[str, str] | None = None) -> Any:
        """nats-py's request: the reply Msg, or NoRespondersError / nats TimeoutError raised here."""
        # the bridge's own timeout is a safety net behind nats-py's (which raises the precise error)
        return self.bridge.run(self.nc.request(subject, payload, timeout=timeout_s, headers=headers), timeout_s + 5)

    def js_publish(self, subject: str, payload: bytes, timeout_s: float, headers: dict[str, str] | None = None) -> Any:
        """JetStream publish waiting for the PubAck (stream, seq, duplicate)."""
        return self.bridge.run(self.js.publish(subject, payload, timeout=timeout_s, headers=headers), timeout_s + 5)

    def call(self, fn: Callable[[Any, Any], Coroutine[Any, Any, T]], timeout_s: float) -> T:
        """Run fn(nc, js) on the loop: anything else nats-py offers (stream management, subscribe...)."""
        return self.bridge.run(fn(self.nc, self.js), timeout_s)

    # -- fire and forget --------------------------------------------------------------------------------------
    def publish_nowait(
        self, subject: str, payload: bytes, started_ns: int, sink: PublishSink, headers: dict[str, str] | None = None
    ) -> None:
        """Hand a core publish to the client and return at once (no round trip per message).

        The loop thread passes it to nats-py's publish (its write buffer, sent by nats-py's flusher task); the
        outcome comes back in batches to sink.published in the hub: latency = from started_ns until nats-py took
        it, or the exception nats-py raised (connection closed, buffer full while reconnecting).
        """
        if self._backlog >= MAX_PUBLISH_BACKLOG:
            self._room.clear()
            if not self._room.wait(30):
                raise TimeoutError("the NATS client took no publish for 30 s")
        self._backlog += 1
        self._pubq.append((subject, payload, headers, started_ns, sink))
        if not self._pub_signalled:  # same batching discipline as Bridge.call_soon
            self._pub_signalled = True
            self.bridge.call_soon(self._kick_publisher)

    def flush(self, timeout_s: float = 10.0) -> None:
        """Every publish handed over so far is written, reported to its sink, and the server has it (PING/PONG)."""
        if self.nc is None or not self.bridge.running:
            return
        self.bridge.run(self._flush(timeout_s), timeout_s + 1)

    async def _flush(self, timeout_s: float) -> None:
        # this coroutine started after every publish handed over before flush() was called was queued (the inbox
        # is FIFO), so once the publisher task is done they have all been given to nats-py and reported
        while self._publisher is not None and not self._publisher.done():
            await asyncio.wait([self._publisher])
        if self.nc.is_connected:
            await self.nc.flush(timeout=timeout_s)

    def _kick_publisher(self) -> None:
        self._pub_signalled = False
        if self._publisher is None or self._publisher.done():
            self._publisher = asyncio.get_running_loop().create_task(self._publish_all())
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    async def _publish_all(self) -> None:
        # runs until the queue is empty; a kick while it runs only adds to the queue it is draining
        q = self._pubq
        publish = self.nc.publish
        while q:
            groups: dict[Any, tuple[list[int], list[tuple[int, BaseException]]]] = {}
            n = 0
            while q and n < PUBLISH_CHUNK:
                subject, payload, headers, started_ns, sink = q.popleft()
                n += 1
                group = groups.get(sink)
                if group is None:
                    group = groups[sink] = ([], [])
                try:
                    await publish(subject, payload, headers=headers)
                except Exception as exc:  # noqa: BLE001 - reported to the sink as this publish's failure
                    group[1].append((time.perf_counter_ns() - started_ns, exc))
                else:
                    group[0].append(time.perf_counter_ns() - started_ns)
            self.bridge.to_hub(self._report, n, groups)

    def _report(self, n: int, groups: dict[Any, tuple[list[int], list[tuple[int, BaseException]]]]) -> None:
        # hub thread
        self._backlog -= n
        for sink, (oks, fails) in groups.items():
            self.publish_errors += len(fails)
            sink.published(oks, fails)
        if self._backlog <= MAX_PUBLISH_BACKLOG // 2:
            self._room.set()

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            if self.nc.is_connected:
                try:
                    await self.nc.flush(timeout=max(FLUSH_INTERVAL_S, 2.0))
                except Exception:  # noqa: BLE001, S112 - a slow PONG under load is no error of any publish
                    continue


def connect_error_text(exc: BaseException, errors: list[BaseException]) -> str:
    """What went wrong connecting, in words: 'cannot connect (...)' / 'authorization failed' / TLS."""
    import ssl

    import nats.errors

    text = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
    if "authorization" in text.lower() or any("authorization" in str(e).lower() for e in errors):
        return "authorization failed"
    if isinstance(exc, ssl.SSLError) or any(isinstance(e, ssl.SSLError) for e in errors):
        bad = next((e for e in [exc, *errors] if isinstance(e, ssl.SSLError)), exc)
        return f"TLS failed ({getattr(bad, 'reason', None) or bad})"
    if isinstance(exc, nats.errors.NoServersError | TimeoutError | OSError) and errors:
        return f"cannot connect ({_os_error_text(errors[-1])})"
    return f"cannot connect ({text})"


def probe_options(options: dict[str, Any], errors: list[BaseException]) -> dict[str, Any]:
    """The options of a connection that gives up instead of retrying (nats-py retries forever with
    max_reconnect_attempts 0 or -1: 1 tries each server twice), collecting what failed into `errors`."""

    async def collect(exc: Exception) -> None:
        errors.append(exc)

    return {
        **options,
        "allow_reconnect": False,
        "max_reconnect_attempts": 1,
        "reconnect_time_wait": 0.1,
        "error_cb": collect,
    }


def _os_error_text(exc: BaseException) -> str:
    """'Connection refused' alike: asyncio's selector loop words a refusal 'Connect call failed (addr)', uvloop
    'Connection refused'; the errno says the same in both."""
    import socket

    if isinstance(exc, socket.gaierror):
        return str(exc.strerror or exc)
    if isinstance(exc, OSError) and exc.errno and exc.errno > 0:
        return os.strerror(exc.errno)
    return str(exc) or exc.__class__.__name__
