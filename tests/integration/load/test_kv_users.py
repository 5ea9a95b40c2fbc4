"""The key-value users and their RESP client against real servers: redis-server 7 and valkey-server 8 standalone,
an ACL user, TLS, a Sentinel master name, a Redis Cluster (with a slot moved under load).

What Locust counts must EQUAL what the server executed: INFO commandstats `calls` deltas of GET and SET, with no
failures. Each Locust run is headless and a few seconds long (tests/support/locustrun.py bounds it).
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
import pytest
from kvload.resp.connection import Connection, ConnectSettings, RespConnectionError, RespError, pack
from kvload.resp.sentinel import SentinelResolver, master_connection
from redis.crc import key_slot

from tests.support.binaries import require
from tests.support.locustrun import LocustResult, run_locust
from tests.support.servers import (
    LOOPBACK,
    RedisCluster,
    RedisServer,
    SentinelServer,
    SentinelSet,
    free_port,
    make_test_ca,
)
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

RUN_S = 3
USERS = 20
SMALL = ["--kvt-keys", "1000", "--kvt-connections", "4"]


def url(server: RedisServer, user: str | None = None) -> str:
    return f"redis://{user + '@' if user else ''}{server.host}:{server.port}"


def calls(server: RedisServer, field: str = "calls") -> dict[str, int]:
    with server.client(socket_timeout=5) as c:
        info = c.info("commandstats")
    return {cmd: int(info.get(f"cmdstat_{cmd}", {}).get(field, 0)) for cmd in ("get", "set")}


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after}


def assert_counts_equal(result: LocustResult, executed: dict[str, int]) -> None:
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.failures() == 0, result.stats
    counted = {"get": result.requests("GET kv"), "set": result.requests("SET kv")}
    print(f"\nlocust {counted} server {executed}")
    assert counted == executed
    # the HdrHistograms count every request too (kvload.stats), so their percentiles cover the same requests
    for kind in ("get", "set"):
        if counted[kind]:
            assert result.hdr["requests"][f"{kind.upper()} kv"]["count"] == counted[kind]


# -- standalone ----------------------------------------------------------------------------------------------
def test_gets_and_sets_counted_by_locust_equal_the_servers_commandstats(tmp_path: Path, kv_server: RedisServer) -> None:
    before = calls(kv_server)
    result = run_locust(tmp_path, "KvGetSetUser", host=url(kv_server), users=USERS, run_time_s=RUN_S, extra=SMALL)
    executed = delta(calls(kv_server), before)
    assert_counts_equal(result, executed)
    assert executed["get"] > 1000 and executed["set"] > 100
    # --kvt-get-ratio 0.9 by default
    assert 0.85 < executed["get"] / (executed["get"] + executed["set"]) < 0.95
    # SETs wrote 64-byte values under the prefix, inside the key space
    with kv_server.client() as c:
        keys = c.keys("kvt:load:*")
        assert keys and all(0 <= int(k.rsplit(b":", 1)[1]) < 1000 for k in keys)
        assert c.strlen(keys[0]) == 64


def test_fixed_ratio_classes_and_hot_keys(tmp_path: Path, redis_server: RedisServer) -> None:
    before = calls(redis_server)
    result = run_locust(
        tmp_path,
        "KvGetUser",
        "KvSetUser",
        host=url(redis_server),
        users=USERS,
        run_time_s=RUN_S,
        extra=[*SMALL, "--kvt-key-dist", "zipf:1.1", "--kvt-value-size", "10", "--kvt-key-prefix", "hot:"],
    )
    executed = delta(calls(redis_server), before)
    assert_counts_equal(result, executed)
    assert executed["get"] > 100 and executed["set"] > 100
    with redis_server.client() as c:
        assert c.strlen("hot:0") == 10  # the hottest key of zipf is written
        assert not c.keys("kvt:load:*")


def test_pipeline_depth_16_counts_each_command(tmp_path: Path, redis_server: RedisServer) -> None:
    before = calls(redis_server)
    result = run_locust(
        tmp_path,
        "KvGetSetUser",
        host=url(redis_server),
        users=USERS,
        run_time_s=RUN_S,
        extra=[*SMALL, "--kvt-pipeline", "16"],
    )
    executed = delta(calls(redis_server), before)
    assert_counts_equal(result, executed)
    # each round trip is 16 GETs or 16 SETs
    assert executed["get"] % 16 == 0 and executed["set"] % 16 == 0 and executed["get"] > 16 * 100


# -- credentials and TLS -------------------------------------------------------------------------------------
ACL_USER = ("--user", "kvtload", "on", ">kvt-acl-secret-1", "~kvt:load:*", "+get", "+set", "+ping")


def run_as_acl_user(tmp_path: Path, server: RedisServer, password: str) -> LocustResult:
    secret = tmp_path / "password"
    secret.write_text(password + "\n")
    return run_locust(tmp_path / "run", "KvGetSetUser", host=url(server, "kvtload"), users=USERS, run_time_s=RUN_S,
                      extra=[*SMALL, "--kvt-password-file", str(secret)])  # fmt: skip


def test_acl_user_with_a_password_file(tmp_path: Path, server_factory: Callable[..., RedisServer]) -> None:
    server = server_factory("redis", extra=ACL_USER)
    before = calls(server)
    result = run_as_acl_user(tmp_path, server, "kvt-acl-secret-1")
    assert_counts_equal(result, delta(calls(server), before))


def test_a_wrong_password_is_one_line_and_sends_nothing(
    tmp_path: Path, server_factory: Callable[..., RedisServer]
) -> None:
    server = server_factory("redis", extra=ACL_USER)
    before = calls(server)
    result = run_as_acl_user(tmp_path, server, "not-the-password-77")
    line = result.refusal()
    assert line == f"kvload: target {url(server, 'kvtload')}: authentication failed (check --kvt-password-file)"
    assert "not-the-password-77" not in result.stderr
    assert calls(server) == before


def test_tls_with_the_testbed_ca(tmp_path: Path, server_factory: Callable[..., RedisServer]) -> None:
    ca = make_test_ca(tmp_path / "ca", "testbed")
    server = server_factory("redis", tls=ca)
    host = f"rediss://{LOOPBACK}:{server.tls_port}"
    before = calls(server)
    result = run_locust(
        tmp_path / "run",
        "KvGetSetUser",
        host=host,
        users=USERS,
        run_time_s=RUN_S,
        extra=[*SMALL, "--kvt-tls-ca", str(ca.ca_cert)],
    )
    assert_counts_equal(result, delta(calls(server), before))
    # a server certificate another CA signed is refused before any load
    other = make_test_ca(tmp_path / "other", "other")
    refused = run_locust(
        tmp_path / "refused",
        "KvGetUser",
        host=host,
        users=1,
        run_time_s=RUN_S,
        extra=["--kvt-tls-ca", str(other.ca_cert)],
    )
    line = refused.refusal()
    assert line.startswith(f"kvload: target {host}: cannot connect (TLS: certificate verify failed"), line


# -- Sentinel ------------------------------------------------------------------------------------------------
def test_sentinel_master_name_and_a_failover(tmp_path: Path, sentinel_set: Callable[..., SentinelSet]) -> None:
    s = sentinel_set()
    before, before_replica = calls(s.primary), calls(s.replica)
    result = run_locust(
        tmp_path,
        "KvGetSetUser",
        host=f"redis+sentinel://{LOOPBACK}:{s.sentinel.port}/kvt",
        users=USERS,
        run_time_s=RUN_S,
        extra=SMALL,
    )
    assert_counts_equal(result, delta(calls(s.primary), before))
    assert delta(calls(s.replica), before_replica)["get"] == 0  # reads went to the master only

    # the same connection follows a failover: lost with the old master, re-resolved through the Sentinel
    settings = ConnectSettings(connect_timeout_s=2)
    conn = master_connection(SentinelResolver([(LOOPBACK, s.sentinel.port)], "kvt", settings), settings)
    assert conn.call(b"SET", b"kvt:failover", b"1") == b"OK"
    assert conn.address == (s.primary.host, s.primary.port)
    s.kill_primary()  # returns once Sentinel names the replica
    outcomes: list[str] = []
    for _ in range(20):  # bounded: each failed try waits out the connection's backoff (<= 1 s)
        try:
            assert conn.call(b"SET", b"kvt:failover", b"2") == b"OK"
            break
        except RespConnectionError as exc:
            outcomes.append(exc.reason)
    assert conn.address == (s.replica.host, s.replica.port), outcomes
    with s.replica.client() as c:
        assert c.get("kvt:failover") == b"2"
    conn.close()


def test_a_sentinel_with_a_password(tmp_path: Path, server_factory: Callable[..., RedisServer]) -> None:
    """Sentinels with requirepass (as roles/sentinel deploys them): --kvt-sentinel-password-file; without it, one
    line before any load."""
    primary = server_factory("redis")
    sentinel = SentinelServer(primary.argv[0], tmp_path / "sentinel", "kvt", primary.port, password="s3ntinel-pw")
    sentinel.start()
    try:
        host = f"redis+sentinel://{LOOPBACK}:{sentinel.port}/kvt"
        secret = tmp_path / "sentinel-password"
        secret.write_text("s3ntinel-pw\n")
        before = calls(primary)
        refused = run_locust(tmp_path / "without", "KvGetUser", host=host, users=1, run_time_s=RUN_S, extra=SMALL)
        line = refused.refusal()
        assert refused.returncode == 2 and line.startswith(f"kvload: target {host}"), line
        assert "s3ntinel-pw" not in refused.stderr
        assert delta(calls(primary), before) == {"get": 0, "set": 0}
        result = run_locust(tmp_path / "with", "KvGetSetUser", host=host, users=USERS, run_time_s=RUN_S,
                            extra=[*SMALL, "--kvt-sentinel-password-file", str(secret)])  # fmt: skip
        assert_counts_equal(result, delta(calls(primary), before))
    finally:
        sentinel.stop()


# -- Cluster -------------------------------------------------------------------------------------------------
def masters(cluster: RedisCluster) -> list[RedisServer]:
    out = []
    for node in cluster.nodes:
        with node.client(socket_timeout=5) as c:
            if c.execute_command("ROLE")[0] in (b"master", "master"):
                out.append(node)
    return out


def summed(servers: list[RedisServer], field: str = "calls") -> dict[str, int]:
    total = {"get": 0, "set": 0}
    for server in servers:
        for k, v in calls(server, field).items():
            total[k] += v
    return total


def cluster_url(cluster: RedisCluster) -> str:
    return "redis+cluster://" + ",".join(f"{LOOPBACK}:{n.port}" for n in cluster.nodes[:2])


def test_cluster_counts_summed_over_the_masters(tmp_path: Path, redis_cluster: RedisCluster) -> None:
    nodes = masters(redis_cluster)
    before = [calls(m) for m in nodes]
    result = run_locust(
        tmp_path, "KvGetSetUser", host=cluster_url(redis_cluster), users=USERS, run_time_s=RUN_S, extra=SMALL
    )
    per_master = [delta(calls(m), b) for m, b in zip(nodes, before, strict=True)]
    assert_counts_equal(result, {k: sum(d[k] for d in per_master) for k in ("get", "set")})
    assert all(d["get"] > 0 for d in per_master), per_master  # routed by slot: every master served its keys


def _node_id(server: RedisServer) -> str:
    with server.client(socket_timeout=5) as c:
        raw = c.execute_command("CLUSTER", "MYID")
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def move_slot(slot: int, src: RedisServer, dst: RedisServer, all_masters: list[RedisServer]) -> int:
    """The resharding steps of the Redis Cluster spec, keys included; returns how many keys moved."""
    src_id, dst_id = _node_id(src), _node_id(dst)
    moved = 0
    with src.client(socket_timeout=10) as s, dst.client(socket_timeout=10) as d:
        d.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        while keys := s.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            s.execute_command("MIGRATE", LOOPBACK, dst.port, "", 0, 5000, "KEYS", *keys)
            moved += len(keys)
        d.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        s.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
    for m in all_masters:
        if m not in (src, dst):
            with m.client(socket_timeout=5) as c:
                c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
    return moved


def owner(cluster_node: RedisServer, slot: int) -> int:
    with cluster_node.client(socket_timeout=5) as c:
        for start, end, master, *_ in c.execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return int(master[1])
    raise AssertionError(f"slot {slot} has no owner")


def test_cluster_follows_a_slot_moved_under_load(tmp_path: Path, redis_cluster: RedisCluster) -> None:
    nodes = masters(redis_cluster)
    slot = key_slot(b"kvt:load:0")  # key 0 of 200: each user hits it every few milliseconds
    src = next(m for m in nodes if m.port == owner(nodes[0], slot))
    dst = next(m for m in nodes if m is not src)
    before = [calls(m) for m in nodes]
    rejected_before = calls(src, "rejected_calls")
    errors: list[BaseException] = []
    moved_keys: list[int] = []

    def reshard() -> None:
        try:
            wait_until(
                lambda: calls(src)["get"] > before[nodes.index(src)]["get"] + 1000, 30, what="load on the source"
            )
            moved_keys.append(move_slot(slot, src, dst, nodes))
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread below
            errors.append(exc)

    mover = threading.Thread(target=reshard, daemon=True)
    mover.start()
    try:
        result = run_locust(
            tmp_path,
            "KvGetSetUser",
            host=cluster_url(redis_cluster),
            users=10,
            run_time_s=5,
            extra=["--kvt-keys", "200", "--kvt-connections", "2", "--kvt-get-ratio", "0.5"],
        )
        mover.join(30)
        assert not mover.is_alive() and not errors, errors
        per_master = [delta(calls(m), b) for m, b in zip(nodes, before, strict=True)]
        assert_counts_equal(result, {k: sum(d[k] for d in per_master) for k in ("get", "set")})
        assert owner(nodes[0], slot) == dst.port and moved_keys[0] >= 1
        # the source refused commands for the moved slot (MOVED/ASK), and still nothing failed: the users followed
        assert sum(delta(calls(src, "rejected_calls"), rejected_before).values()) > 0
    finally:
        if owner(nodes[0], slot) != src.port:
            move_slot(slot, dst, src, nodes)  # the cluster is shared by the session: give the slot back


# -- HdrHistogram below 1 ms ---------------------------------------------------------------------------------
def redis_benchmark_p50_ms(server: RedisServer, clients: int) -> float:
    binary = require(shutil.which("redis-benchmark"), "redis-benchmark")
    out = subprocess.run(
        [binary, "-h", LOOPBACK, "-p", str(server.port), "-c", str(clients), "-n", "20000", "-t", "get", "--csv"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    rows = list(csv.reader(io.StringIO(out)))
    header = rows[0]
    get = next(r for r in rows if r[0] == "GET")
    return float(get[header.index("p50_latency_ms")])


def test_hdr_reports_sub_millisecond_percentiles_where_redis_benchmark_does(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    users, rate, seconds = 10, 2000, 4
    bench_p50_ms = redis_benchmark_p50_ms(redis_server, users)
    before = calls(redis_server)
    result = run_locust(
        tmp_path,
        "KvGetUser",
        host=url(redis_server),
        users=users,
        run_time_s=seconds + 4,  # the profile's end stops the run
        # after the profile's end users idle inside their task until stopped: 1 s is plenty for a last reply
        extra=[*SMALL, "--kvt-rate", f"constant:rate={rate},for={seconds}", "--stop-timeout", "1"],
    )
    assert_counts_equal(result, delta(calls(redis_server), before))
    get = result.hdr["requests"]["GET kv"]
    print(f"\nHDR GET kv {get}; redis-benchmark -c {users} p50 {bench_p50_ms} ms")
    assert 0.75 * rate * seconds < get["count"] <= 1.05 * rate * seconds  # open loop: the rate was offered
    assert get["min_us"] < 1000  # microsecond resolution, not Locust's whole milliseconds
    if bench_p50_ms < 1.0:
        assert get["p50_us"] < 1000, (get, bench_p50_ms)


# -- bad input -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--kvt-keys", "-1"], "--kvt-keys -1: must be >= 1"),
        (["--kvt-get-ratio", "1.5"], "--kvt-get-ratio 1.5: must be between 0 and 1"),
        (["--kvt-pipeline", "0"], "--kvt-pipeline 0: must be >= 1"),
        (["--kvt-value-size", "-1"], "--kvt-value-size -1: must be >= 0"),
    ],
)
def test_bad_options_are_one_line_naming_the_option(tmp_path: Path, extra: list[str], message: str) -> None:
    result = run_locust(tmp_path, "KvGetSetUser", host=f"redis://{LOOPBACK}:{free_port()}", users=1, extra=extra)
    assert result.refusal().startswith(f"kvload: {message}")


def test_an_unreachable_target_or_a_password_in_the_url_is_one_line(tmp_path: Path) -> None:
    port = free_port()
    result = run_locust(tmp_path / "a", "KvGetUser", host=f"redis://{LOOPBACK}:{port}", users=1)
    assert result.refusal() == f"kvload: target redis://{LOOPBACK}:{port}: cannot connect (Connection refused)"
    result = run_locust(tmp_path / "b", "KvGetUser", host=f"redis://app:s3cr3t-in-url@{LOOPBACK}:{port}", users=1)
    line = result.refusal()
    assert "--kvt-password-file" in line and "s3cr3t-in-url" not in result.stderr


# -- the client itself against a real server -------------------------------------------------------------------
def _poll(predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """wait_until for gevent code: yields to the loop between samples so the client's greenlets run."""
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        gevent.sleep(0.01)
    return value


def _outcome(conn: Connection, *args: Any) -> Any:
    """The reply or the exception of one call (a greenlet that raises would print its traceback)."""
    try:
        return conn.call(*args)
    except (RespError, RespConnectionError) as exc:
        return exc


def test_many_greenlets_share_one_connection_in_order(redis_server: RedisServer) -> None:
    conn = Connection((LOOPBACK, redis_server.port))
    seen: list[int] = []

    def incr(n: int) -> None:
        for _ in range(n):
            seen.append(conn.call(b"INCR", b"kvt:shared"))

    gevent.joinall([gevent.spawn(incr, 200) for _ in range(50)], timeout=30, raise_error=True)
    assert sorted(seen) == list(range(1, 10_001))  # every caller got its own reply, none twice
    assert conn.connects == 1
    # a pipeline mixing large values (many reads each) and an error reply
    big = b"x" * 1_000_000
    replies = conn.call_many(
        [(b"SET", b"kvt:big", big), (b"GET", b"kvt:big"), (b"LPUSH", b"kvt:big", b"1"), (b"STRLEN", b"kvt:big")],
        raise_on_error=False,
    )
    assert replies[0] == b"OK" and replies[1] == big and replies[3] == 1_000_000
    assert isinstance(replies[2], RespError) and str(replies[2]).startswith("WRONGTYPE")
    with pytest.raises(RespError, match="WRONGTYPE"):
        conn.call_many([(b"GET", b"kvt:big"), (b"LPUSH", b"kvt:big", b"1")])
    conn.close()


def test_a_lost_connection_fails_its_callers_and_reconnects_on_next_use(redis_server: RedisServer) -> None:
    conn = Connection((LOOPBACK, redis_server.port))
    assert conn.call(b"PING") == b"PONG"
    waiting = [gevent.spawn(_outcome, conn, b"BLPOP", b"kvt:never", 10) for _ in range(3)]
    with redis_server.client() as c:
        # the first BLPOP blocks the connection on the server; the other two wait behind it in the pipeline
        _poll(lambda: c.info("clients")["blocked_clients"] == 1, 10, "the first BLPOP blocked")
        c.client_kill_filter(_type="normal", skipme=True)
    gevent.joinall(waiting, timeout=10)
    assert all(isinstance(g.value, RespConnectionError) for g in waiting), [g.value for g in waiting]
    assert conn.call(b"PING") == b"PONG"  # reconnected (after a backoff step)
    assert conn.connects == 2
    conn.close()


def test_a_server_that_stops_answering_is_a_connection_error_not_a_hang(redis_server: RedisServer) -> None:
    conn = Connection((LOOPBACK, redis_server.port), ConnectSettings(reply_timeout_s=0.3))
    started = time.monotonic()
    with pytest.raises(RespConnectionError, match="no reply within 0.3 s"):
        conn.call(b"BLPOP", b"kvt:never", 5)  # the server holds the reply for 5 s
    assert time.monotonic() - started < 2
    conn.close()


def test_callers_queued_behind_a_failed_connect_fail_with_its_error() -> None:
    port = free_port()
    conn = Connection((LOOPBACK, port))
    started = time.monotonic()
    callers = [gevent.spawn(_outcome, conn, b"PING") for _ in range(20)]
    gevent.joinall(callers, timeout=10)
    assert all(isinstance(g.value, RespConnectionError) for g in callers), [g.value for g in callers]
    assert {g.value.reason for g in callers} == {"Connection refused"}
    # one attempt for the 20 callers (not 20 attempts, each after a longer backoff)
    assert time.monotonic() - started < 1.0


def test_an_idle_connection_sends_at_once_even_what_the_socket_cannot_take_at_once(redis_server: RedisServer) -> None:
    # a SET of 16 MB on an idle connection: submit sends from the caller, the kernel takes part of it, the writer
    # greenlet sends the rest; a command queued meanwhile goes out after it, never inside it
    conn = Connection((LOOPBACK, redis_server.port))
    conn.connect()
    big = b"y" * (16 << 20)
    first = conn.submit(pack((b"SET", b"kvt:huge", big)))
    second = conn.submit(pack((b"STRLEN", b"kvt:huge")))
    assert first.get() == b"OK"
    assert second.get() == len(big)
    assert conn.call(b"GET", b"kvt:huge") == big
    conn.close()


def test_the_reply_clock_notes_the_read_not_the_callers_resumption(redis_server: RedisServer) -> None:
    settings = ConnectSettings()
    conn = Connection((LOOPBACK, redis_server.port), settings)
    conn.connect()
    for _ in range(20):
        before = time.perf_counter_ns()
        assert conn.call(b"PING") == b"PONG"
        after = time.perf_counter_ns()
        assert before < settings.clock.ns <= after
    # every connection made with the same settings writes the same clock
    other = Connection((LOOPBACK, redis_server.port), settings)
    before = time.perf_counter_ns()
    other.call(b"PING")
    assert settings.clock.ns > before
    conn.close()
    other.close()
