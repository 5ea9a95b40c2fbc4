"""The JetStream writer against a real 3-server JetStream cluster on loopback and an R3 stream: the stream leader is
stopped mid-run, then started again (the heal). The checker's figures are compared with the stream itself (every
message read back by sequence with direct gets by the test) and with the stream's own record of its new leader.
The cluster is this module's own: the session's `nats_cluster_servers` must not lose a server.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from kvtestbed.accounting import (
    JetStreamTarget,
    OpLog,
    check_run_any,
    ensure_stream,
    make_writer,
    read_ops,
    servers_failover,
)
from kvtestbed.accounting.jetstream import MSG_ID
from tests.support.binaries import require
from tests.support.servers import NatsServer, nats_cluster, nats_server_binary
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

RATE = 150.0
STREAM, SUBJECT = "ACCT", "acct.w"


@pytest.fixture
def own_nats_cluster(tmp_path: Path) -> Iterator[list[NatsServer]]:
    binary = require(nats_server_binary(), "nats-server")
    with nats_cluster(binary, tmp_path / "nats") as servers:
        yield servers


async def _stream_leader(url: str) -> str | None:
    client = await nats.connect(url, connect_timeout=1, allow_reconnect=False)
    try:
        info = await client.jetstream(timeout=1).stream_info(STREAM)
        return info.cluster.leader if info.cluster else None
    finally:
        await client.close()


def stream_leader(servers: list[NatsServer]) -> str | None:
    for server in servers:
        if not server.running:
            continue
        try:
            return asyncio.run(_stream_leader(server.url))
        except (nats.errors.Error, OSError, TimeoutError):
            continue
    return None


async def _copies_by_id(url: str) -> Counter[str]:
    """Every message of the stream by direct get, sequence by sequence: {Nats-Msg-Id: copies}."""
    client = await nats.connect(url, connect_timeout=2)
    try:
        js = client.jetstream(timeout=5)
        state = (await js.stream_info(STREAM)).state
        copies: Counter[str] = Counter()
        for seq in range(state.first_seq, state.last_seq + 1):
            msg = await js.get_msg(STREAM, seq)
            copies[(msg.headers or {}).get(MSG_ID, "")] += 1
        return copies
    finally:
        await client.close()


def test_stop_of_the_stream_leader(own_nats_cluster: list[NatsServer], tmp_path: Path) -> None:
    servers = own_nats_cluster
    target = JetStreamTarget(servers=tuple(s.url for s in servers), stream=STREAM, subject=SUBJECT)
    ensure_stream(target, replicas=3)
    leader = wait_until(lambda: stream_leader(servers), 10, 0.1, "a stream leader")
    t0 = time.monotonic()
    ops_path = tmp_path / "ops" / "w-js.jsonl"
    writer = make_writer("w-js", "jetstream", target, "kvt:acct:", RATE, OpLog(ops_path), t0=t0,
                         max_ops=int(RATE * 40), max_duration_s=40)  # fmt: skip
    writer.start()
    victim = next(s for s in servers if s.name == leader)
    try:
        wait_until(lambda: writer.counts.ok >= 300, 10, 0.05, "300 acknowledged publishes")
        victim.stop()  # SIGTERM: nats-server's own shutdown, as systemctl stop does
        t_stop = time.monotonic() - t0
        new_leader = wait_until(lambda: (found := stream_leader(servers)) != leader and found, 20, 0.05,
                                "a new stream leader")  # fmt: skip
        t_new_leader = time.monotonic() - t0
        ok_then = writer.counts.ok
        wait_until(lambda: writer.counts.ok >= ok_then + 300, 10, 0.05, "300 more acknowledged publishes")
    finally:
        writer.stop()
    victim.start()  # the heal: the old leader comes back and catches up before the read-back
    ops = read_ops(ops_path)
    entry = check_run_any({"w-js": ops}, {"w-js": "jetstream"}, target, faults=[{"t_inject": t_stop}])["w-js"]
    copies = asyncio.run(_copies_by_id(servers[(servers.index(victim) + 1) % 3].url))
    acknowledged = [op for op in ops if op.result == "ok"]
    lost = sum(copies[op.key] == 0 for op in acknowledged)
    duplicates = sum(n - 1 for key, n in copies.items() if n > 1)
    unexpected = sum(copies[op.key] > 0 for op in ops if op.result == "fail")
    print(f"\njetstream leader stop: ok {entry['ok']} fail {entry['fail']} unknown {entry['unknown']} lost "
          f"{entry['lost']} duplicates {entry['duplicates']} unknown_applied {entry['unknown_applied']} failover_s "
          f"{entry['failover_s']} (new leader {new_leader} seen {t_new_leader - t_stop:.3f} s after the stop) "
          f"unavailability_s {entry['unavailability_s']}")
    assert entry["attempted"] == len(ops) == entry["ok"] + entry["fail"] + entry["unknown"]
    assert entry["lost"] == lost
    assert entry["duplicates"] == duplicates
    assert entry["unexpected"] == unexpected
    assert entry["stored"] == sum(copies[key] for key in {op.key for op in ops})
    assert entry["failover_s"] is not None and entry["failover_s"] > 0
    assert entry["failover_s"] <= t_new_leader - t_stop + 3.0
    switches = [s for s in servers_failover(writer.events(), STREAM) if s["source"] == "nats"]
    assert switches and switches[0]["from"] == leader and switches[0]["to"] == new_leader
    assert t_stop - 0.5 <= switches[0]["t"] <= t_new_leader + 1.0
