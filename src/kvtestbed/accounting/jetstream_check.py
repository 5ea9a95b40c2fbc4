"""The stream's own view: its leader changes as timeline events, its settling after the heal, and the read-back.

- StreamLeaderWatch (a connection of its own) hears `$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.<stream>` and also
  asks `$JS.API.STREAM.INFO.<stream>` every `interval_s` (an advisory published while the watch reconnects is lost);
  each change of `cluster.leader` becomes `{"source": "nats", "event": "+leader", "detail": {"stream", "from",
  "to", "via"}}` (server names, as the stream reports them), stamped when the controller heard it.
- read_back_stream() waits (bounded) until the stream has a leader and every replica is current, then reads the
  whole stream with an ordered consumer: every stored message's Nats-Msg-Id, payload and stream sequence.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from kvtestbed.accounting.jetstream import MSG_ID, JetStreamTarget, LoopThread, connect_blocking
from kvtestbed.accounting.strategies import AccountingError, describe_error

TimelineSink = Callable[[dict[str, Any]], None]
LEADER_ELECTED = "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED."


@dataclass(frozen=True)
class StoredMessage:
    msg_id: str | None
    payload: str
    seq: int


class StreamLeaderWatch:
    """Records the stream leader's changes (module doc)."""

    def __init__(self, target: JetStreamTarget, t0: float, sink: TimelineSink, interval_s: float = 0.5) -> None:
        self.target = target
        self.t0 = t0
        self.interval_s = interval_s
        self._sink = sink
        self._leader: str | None = None
        self._lock = threading.Lock()
        self._loop: LoopThread | None = None
        self._client: NatsClient | None = None
        self._task: asyncio.Future[None] | None = None

    def start(self) -> None:
        self._loop = LoopThread(f"nats-watch-{self.target.stream}")
        self._client = connect_blocking(self.target, self._loop, "kvtestbed-leader-watch")
        self._loop.run(self._subscribe(), 5)
        self._task = asyncio.run_coroutine_threadsafe(self._poll(), self._loop.loop)

    def stop(self) -> None:
        if self._loop is None:
            return
        if self._task is not None:
            self._task.cancel()
        if self._client is not None:
            with contextlib.suppress(FutureTimeout, nats.errors.Error, OSError):
                self._loop.run(self._client.close(), 5)
        self._loop.close()
        self._loop = None

    def _saw(self, leader: str | None, via: str) -> None:
        if not leader:
            return
        with self._lock:
            previous, self._leader = self._leader, leader
        if leader != previous:
            t = round(time.monotonic() - self.t0, 6)
            detail = {"stream": self.target.stream, "from": previous, "to": leader, "via": via}
            self._sink({"t": t, "source": "nats", "event": "+leader", "detail": detail})

    async def _subscribe(self) -> None:
        assert self._client is not None

        async def on_advisory(msg: Msg) -> None:
            try:
                leader = json.loads(msg.data).get("leader")
            except ValueError:
                return
            self._saw(leader, "advisory")

        await self._client.subscribe(LEADER_ELECTED + self.target.stream, cb=on_advisory)

    async def _poll(self) -> None:
        assert self._client is not None
        js = self._client.jetstream(timeout=self.interval_s)
        while True:
            try:
                info = await js.stream_info(self.target.stream)
                self._saw(info.cluster.leader if info.cluster else None, "stream-info")
            except (TimeoutError, nats.errors.Error, OSError):
                pass  # no leader or not connected right now: the next poll or the advisory tells
            await asyncio.sleep(self.interval_s)


def ensure_stream(target: JetStreamTarget, replicas: int) -> None:
    """Create the target's stream (subjects: its subject, `replicas` copies) unless it exists."""
    loop = LoopThread("nats-ensure")
    try:
        client = connect_blocking(target, loop, "kvtestbed-ensure-stream")
        try:
            loop.run(_ensure(client, target, replicas), PLACEMENT_WAIT_S + 15)
        finally:
            loop.run(client.close(), 5)
    except (nats.errors.Error, FutureTimeout) as err:
        raise AccountingError(f"{target.describe()}: cannot create the stream ({describe_error(err)})") from None
    finally:
        loop.close()


# JetStream's "no suitable peers for placement": right after a cluster (re)starts, the meta leader may not yet see
# every peer as online (seen in CI on a loaded machine); asked again, bounded, until the peers are current
NO_PLACEMENT_ERR_CODE = 10005
PLACEMENT_WAIT_S = 10.0


async def _ensure(client: NatsClient, target: JetStreamTarget, replicas: int) -> None:
    js = client.jetstream(timeout=10)
    try:
        await js.stream_info(target.stream)
        return
    except nats.js.errors.NotFoundError:
        pass
    deadline = time.monotonic() + PLACEMENT_WAIT_S
    while True:
        try:
            await js.add_stream(name=target.stream, subjects=[target.subject], num_replicas=replicas)
            return
        except nats.js.errors.BadRequestError as err:
            if err.err_code != NO_PLACEMENT_ERR_CODE or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.25)


async def _settled(client: NatsClient, target: JetStreamTarget, timeout_s: float) -> int:
    """The stream's last sequence once it has a leader and every replica is current."""
    js = client.jetstream(timeout=2)
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while True:
        try:
            info = await js.stream_info(target.stream)
            cluster = info.cluster
            lagging = [p.name for p in (cluster.replicas or []) if not p.current or p.offline] if cluster else []
            if cluster is None or (cluster.leader and not lagging):
                return info.state.last_seq
            last = f"leader {cluster.leader}, replicas not current: {', '.join(map(str, lagging))}"
        except (TimeoutError, nats.errors.Error) as err:
            last = describe_error(err)
        if time.monotonic() > deadline:
            raise AccountingError(f"stream {target.stream} did not settle in {timeout_s:g} s: {last}")
        await asyncio.sleep(0.2)


async def _read_all(client: NatsClient, target: JetStreamTarget, timeout_s: float) -> list[StoredMessage]:
    last_seq = await _settled(client, target, timeout_s)
    if last_seq == 0:
        return []
    js = client.jetstream(timeout=5)
    sub = await js.subscribe(target.subject, stream=target.stream, ordered_consumer=True)
    out: list[StoredMessage] = []
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            msg = await sub.next_msg(timeout=max(min(5.0, deadline - time.monotonic()), 0.1))
            seq = msg.metadata.sequence.stream
            out.append(StoredMessage((msg.headers or {}).get(MSG_ID), msg.data.decode(errors="replace"), seq))
            if seq >= last_seq:
                return out
    except nats.errors.TimeoutError:
        raise AccountingError(f"stream {target.stream}: read {len(out)} messages, then nothing more before "
                              f"sequence {last_seq}") from None
    finally:
        await sub.unsubscribe()


def read_back_stream(target: JetStreamTarget, timeout_s: float = 30.0) -> list[StoredMessage]:
    """Every message of the stream, in stream order (module doc)."""
    loop = LoopThread("nats-read-back")
    try:
        client = connect_blocking(target, loop, "kvtestbed-read-back")
        try:
            return loop.run(_read_all(client, target, timeout_s), 2 * timeout_s + 10)
        finally:
            loop.run(client.close(), 5)
    except (nats.errors.Error, FutureTimeout) as err:
        raise AccountingError(f"{target.describe()}: read-back failed ({describe_error(err)})") from None
    finally:
        loop.close()


def stored_by_id(messages: Iterable[StoredMessage]) -> tuple[dict[str, str | None], Counter[str]]:
    """({msg id: payload of its first copy}, {msg id: copies}) for the checker."""
    first: dict[str, str | None] = {}
    copies: Counter[str] = Counter()
    for message in messages:
        if message.msg_id is None:
            continue
        copies[message.msg_id] += 1
        first.setdefault(message.msg_id, message.payload)
    return first, copies
