"""The RESP client's paths that need no server (kvload.resp.connection): packing commands, and handing replies to
their waiters in order whatever way the bytes arrive. What a real server does with them is tested against
redis-server and valkey-server in tests/integration/load/test_kv_users.py."""

from __future__ import annotations

import collections
import random
from typing import Any

import gevent
import pytest
from gevent.hub import Waiter
from kvload.resp.connection import RespConnectionError, RespError, _Batch, _own_pack, deliver, new_reader, pack


@pytest.mark.parametrize(
    ("args", "wire"),
    [
        ((b"PING",), b"*1\r\n$4\r\nPING\r\n"),
        (("GET", "k"), b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"),
        ((b"SET", b"k", 12, 2.5), b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n$3\r\n2.5\r\n"),
        ((b"SET", b"bin", b"a\r\n\x00b", b""), b"*4\r\n$3\r\nSET\r\n$3\r\nbin\r\n$5\r\na\r\n\x00b\r\n$0\r\n\r\n"),
        (("SET", "clé", "värde"), "*3\r\n$3\r\nSET\r\n$4\r\nclé\r\n$6\r\nvärde\r\n".encode()),
    ],
)
def test_packing_with_hiredis_and_our_own_gives_the_same_bytes(args: tuple[Any, ...], wire: bytes) -> None:
    assert pack(args) == wire
    assert _own_pack(args) == wire


def _resolve(*callback: Any) -> None:
    """What the reader greenlet does: wake a waiter from the hub (here: run the loop once right away)."""
    gevent.get_hub().loop.run_callback(*callback)


def _run_callbacks() -> None:
    gevent.sleep(0)  # one loop iteration: the hub runs the callbacks deliver() scheduled


def _chunks(data: bytes, rng: random.Random) -> list[bytes]:
    """data cut at random points, down to single bytes (as TCP may deliver it)."""
    out, i = [], 0
    while i < len(data):
        n = rng.choice((1, 1, 2, 3, 7, 40))
        out.append(data[i : i + n])
        i += n
    return out


REPLIES = (
    b"+OK\r\n"  # single: SET
    b"$5\r\nhello\r\n"  # single: GET
    b"$-1\r\n"  # pipeline of 4: GET of a missing key,
    b":42\r\n"  # INCR,
    b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"  # an error,
    b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n"  # a nested array
    b"-ERR unknown command 'NOPE'\r\n"  # single: an error reply
    b"$0\r\n\r\n"  # single: an empty value
)


@pytest.mark.parametrize("seed", range(5))
def test_replies_reach_their_waiters_in_order_however_the_bytes_arrive(seed: int) -> None:
    pending: collections.deque[Any] = collections.deque()
    singles = [Waiter() for _ in range(5)]
    batch = _Batch(4)
    for w in (singles[0], singles[1], batch, singles[2], singles[3]):
        pending.append(w)
    reader = new_reader()
    errors: list[RespError] = []
    for chunk in _chunks(REPLIES, random.Random(seed)):
        reader.feed(chunk)
        deliver(pending, reader.gets, _resolve, errors)
        _run_callbacks()
        assert batch.result.ready() == (len(batch.replies) == 4)  # a pipeline resolves once, when complete
    assert not pending
    assert singles[0].get() == b"OK"
    assert singles[1].get() == b"hello"
    replies = batch.result.get()
    assert replies[:2] == [None, 42]
    assert isinstance(replies[2], RespError) and str(replies[2]).startswith("WRONGTYPE")
    assert replies[3] == [b"a", [1]]
    with pytest.raises(RespError, match="unknown command"):
        singles[2].get()
    assert singles[3].get() == b""
    assert [str(e).split()[0] for e in errors] == ["WRONGTYPE", "ERR"]


def test_a_pipeline_split_across_reads_waits_for_its_last_reply() -> None:
    pending: collections.deque[Any] = collections.deque([_Batch(16)])
    reader = new_reader()
    for i in range(15):
        reader.feed(b":%d\r\n" % i)
        deliver(pending, reader.gets, _resolve)
    _run_callbacks()
    assert pending and not pending[0].result.ready()
    reader.feed(b":15\r\n")
    batch = pending[0]
    deliver(pending, reader.gets, _resolve)
    _run_callbacks()
    assert batch.result.get() == list(range(16))


def test_pipelines_and_singles_arriving_in_one_read() -> None:
    first, single, second = _Batch(3), Waiter(), _Batch(2)
    pending: collections.deque[Any] = collections.deque([first, single, second])
    reader = new_reader()
    reader.feed(b":1\r\n:2\r\n:3\r\n+PONG\r\n$1\r\na\r\n$-1\r\n")
    deliver(pending, reader.gets, _resolve)
    _run_callbacks()
    assert not pending
    assert first.result.get() == [1, 2, 3] and single.get() == b"PONG" and second.result.get() == [b"a", None]


def test_a_reply_nobody_asked_for_ends_the_connection() -> None:
    reader = new_reader()
    reader.feed(b"+OK\r\n")
    with pytest.raises(RespConnectionError, match="nobody asked for"):
        deliver(collections.deque(), reader.gets, _resolve)


def test_an_empty_pipeline_needs_no_round_trip() -> None:
    from kvload.resp.connection import Connection

    # port 1 is never connected to: an empty batch resolves before any I/O
    assert Connection(("127.0.0.1", 1)).submit_many([]).get() == []
