"""Two `node` writers sharing keys on a REAL 3-peer KeyDB active-replica mesh on loopback, one peer cut off while
both sides write, then the conflicts check after the rejoin: what multi-master replication did with the conflicting
writes, counted from the op logs and the values read on every peer.

The peer is cut off with REPLICAOF REMOVE both ways (as tests/integration/keydb/test_keydb_mesh.py does): what a
partition does to the replication links, without touching the machine's firewall. The writers log in as an ACL user
whose password is in a file, as the lab's `agent` user is. Also here: a `node` writer pinned to a replica of a
replication set, whose every write the replica refuses (READONLY -> fail).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from kvtestbed.accounting import (
    NodeSet,
    NodeTarget,
    OpLog,
    OpRecord,
    Peer,
    Writer,
    check_conflicts,
    check_run_nodes,
    make_writer,
    read_group,
    read_ops,
    value_index,
)
from kvtestbed.accounting.strategies import AccountingError
from tests.support.servers import RedisServer, free_port, wait_mesh_links, wait_replica_in_sync
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

USER, PASSWORD = "agent", "mesh-agent-secret"
RATE = 100.0  # ops/s per writer
KEYS = 20  # shared keys: each side writes every key every 0.2 s
PREFIX = "kvt:mesh:"


def add_data_user(server: RedisServer) -> None:
    """The lab's data user: every data command, no admin (the password goes over the wire, not on argv)."""
    with server.client(socket_timeout=2) as client:
        client.execute_command("ACL", "SETUSER", USER, "on", f">{PASSWORD}", "~*", "&*", "+@all", "-@admin")


def replication_links(peer: RedisServer, others: list[RedisServer], command: tuple[str, ...]) -> None:
    """REPLICAOF [REMOVE] between `peer` and each of `others`, both ways."""
    with peer.client(socket_timeout=2) as client:
        for other in others:
            client.execute_command("REPLICAOF", *command, other.host, other.port)
    for other in others:
        with other.client(socket_timeout=2) as client:
            client.execute_command("REPLICAOF", *command, peer.host, peer.port)


def node_set(servers: list[RedisServer], secret: Path) -> NodeSet:
    peers = tuple(Peer(f"peer-{i}", server.host, server.port) for i, server in enumerate(servers))
    return NodeSet("keydb", peers, username=USER, password_file=secret, converges=True)


def start_writer(name: str, target: NodeTarget, tmp_path: Path, t0: float, keys: int | None = KEYS) -> Writer:
    writer = make_writer(name, "node", target, PREFIX, RATE, OpLog(tmp_path / "ops" / f"{name}.jsonl"), t0=t0,
                         max_ops=int(RATE * 60), max_duration_s=60, keys=keys)  # fmt: skip
    writer.start()
    return writer


def expected_figures(ops: dict[str, list[OpRecord]], final: dict[str, str | None]) -> tuple[dict, dict, int]:
    """won and lost per writer, and the number of keys whose final write is the last acknowledged one by completion
    time, counted straight from the op logs: the check must agree."""
    by_value = {op.value: (name, op) for name, log in ops.items() for op in log}
    won = dict.fromkeys(ops, 0)
    lost = dict.fromkeys(ops, 0)
    last_by_completion = 0
    for key, value in final.items():
        owner, final_op = by_value[value]
        won[owner] += 1
        acked = [(name, op) for name, log in ops.items() for op in log if op.key == key and op.result == "ok"]
        for name, op in acked:
            lost[name] += op.t_start > final_op.t_end
        last_by_completion += max(acked, key=lambda item: item[1].t_end)[1] is final_op
    return won, lost, last_by_completion


def test_a_peer_cut_off_while_both_sides_write_shared_keys(keydb_mesh, tmp_path: Path) -> None:
    servers = keydb_mesh(3, extra=("--repl-diskless-sync-delay", "0"))  # the rejoin syncs at once
    for server in servers:
        add_data_user(server)
    secret = tmp_path / "keydb-agent"
    secret.write_text(PASSWORD + "\n")
    nodes = node_set(servers, secret)
    a, c = NodeTarget(nodes, "peer-0"), NodeTarget(nodes, "peer-2")
    t0 = time.monotonic()
    writers = {"wa": start_writer("wa", a, tmp_path, t0), "wc": start_writer("wc", c, tmp_path, t0)}
    try:
        wait_until(lambda: all(w.counts.ok >= KEYS for w in writers.values()), 10, 0.02, "every key written by both")
        replication_links(servers[2], servers[:2], ("REMOVE",))
        linked = {name: w.counts.ok for name, w in writers.items()}
        # every key written five times on each side of the cut
        wait_until(lambda: all(w.counts.ok >= linked[n] + 5 * KEYS for n, w in writers.items()), 15, 0.02,
                   "both sides writing while cut off")  # fmt: skip
        # the cut-off side writes every key twice more, so that its last write of each key is newer than the other
        # side's by 0.2 s or more: far above the servers' millisecond timestamps, the newest write is known
        writers["wa"].stop()
        alone = writers["wc"].counts.ok
        wait_until(lambda: writers["wc"].counts.ok >= alone + 2 * KEYS, 10, 0.02, "the cut-off side writing on")
    finally:
        for writer in writers.values():
            writer.stop()
    ops = {name: read_ops(tmp_path / "ops" / f"{name}.jsonl") for name in writers}
    keys = [f"{PREFIX}{i}" for i in range(KEYS)]
    assert {op.key for log in ops.values() for op in log} == set(keys)
    assert all(op.result == "ok" for log in ops.values() for op in log), "loopback writes all acknowledged"
    assert {op.node for op in ops["wc"]} == {f"{servers[2].host}:{servers[2].port}"}  # pinned to its peer

    # before the rejoin the sides disagree: the read does not converge, the check counts the keys diverged
    cut = read_group(nodes, keys, timeout_s=1.0)
    assert not cut.converged and cut.values["peer-0"] == cut.values["peer-1"] != cut.values["peer-2"]
    assert check_conflicts(ops, cut.values)["diverged"] > 0

    replication_links(servers[2], servers[:2], ())
    for server in servers:
        wait_mesh_links(server, 2)
    healed = read_group(nodes, keys, timeout_s=30.0)
    assert healed.converged, healed.values
    figures = check_conflicts(ops, healed.values)
    print(f"conflicts after the rejoin: {figures}")  # what KeyDB did, for the log
    assert (figures["keys"], figures["diverged"], figures["unknown_final"]) == (KEYS, 0, 0)
    assert figures["newest_won"] + figures["older_won"] == KEYS
    # last write wins: the cut-off peer's writes, the newest, are final everywhere
    assert (figures["newest_won"], figures["won"]["wc"], figures["lost"]) == (KEYS, KEYS, 0)

    won, lost, last_by_completion = expected_figures(ops, healed.values["peer-0"])
    assert figures["won"] == won and figures["lost_of"] == lost and figures["lost"] == sum(lost.values())
    assert figures["newest_won"] - figures["concurrent_won"] == last_by_completion
    assert (figures["older_won"] == 0) == (figures["lost"] == 0)

    # the writers' own read-back: each on its own peer, after they agreed; a lost write of theirs is a newer write
    # that an older one overwrote, exactly what the conflicts check counts per writer
    entries = check_run_nodes(ops, {"wa": a, "wc": c}, healed, index=value_index(ops))
    for name, writer in writers.items():
        entry = entries[name]
        assert (entry["attempted"], entry["ok"], entry["fail"]) == (len(ops[name]), writer.counts.ok, 0)
        assert entry["lost"] == lost[name] and entry["nodes_agree"] is True
        assert entry["target"] == f"node:{'peer-0' if name == 'wa' else 'peer-2'}@{ops[name][0].node}"


def test_a_node_writer_on_a_replica_fails_every_write(server_factory, tmp_path: Path) -> None:
    primary = server_factory("redis", extra=("--repl-diskless-sync-delay", "0"))  # the replica syncs at once
    replica = server_factory("redis", extra=("--replicaof", primary.host, str(primary.port)))
    wait_replica_in_sync(replica)
    nodes = NodeSet("redis", (Peer("p", primary.host, primary.port), Peer("r", replica.host, replica.port)))
    t0 = time.monotonic()
    writers = {
        "on-replica": start_writer("on-replica", NodeTarget(nodes, "r"), tmp_path, t0, keys=None),
        "on-primary": start_writer("on-primary", NodeTarget(nodes, "p"), tmp_path, t0, keys=None),
    }
    try:
        wait_until(lambda: all(w.counts.attempted >= 30 for w in writers.values()), 10, 0.02, "30 ops each")
    finally:
        for writer in writers.values():
            writer.stop()
    refused = read_ops(tmp_path / "ops" / "on-replica.jsonl")
    assert refused and all(op.result == "fail" and "ReadOnlyError" in (op.error or "") for op in refused)
    accepted = read_ops(tmp_path / "ops" / "on-primary.jsonl")
    assert accepted and all(op.result == "ok" for op in accepted)
    # own keys (no `keys`): one per op, named after the writer
    assert accepted[1].key == f"{PREFIX}on-primary:1" and accepted[1].value.startswith("on-primary:")
    ops = {"on-replica": refused, "on-primary": accepted}
    read = read_group(nodes, [op.key for log in ops.values() for op in log], timeout_s=15.0)
    assert read.converged  # the replica caught up with the primary
    targets = {"on-replica": NodeTarget(nodes, "r"), "on-primary": NodeTarget(nodes, "p")}
    entries = check_run_nodes(ops, targets, read)
    assert entries["on-primary"]["lost"] == 0 and entries["on-replica"]["unexpected"] == 0
    assert entries["on-replica"]["fail"] == len(refused)


def test_a_node_that_does_not_answer_the_read_is_named(server_factory, tmp_path: Path) -> None:
    server = server_factory("redis")
    secret = tmp_path / "agent"
    secret.write_text("never-shown\n")
    silent = Peer("gone", server.host, free_port())  # nothing listens there
    nodes = NodeSet("g", (Peer("up", server.host, server.port), silent), password_file=secret)
    started = time.monotonic()
    with pytest.raises(AccountingError) as caught:
        read_group(nodes, ["k"], timeout_s=0.5)
    assert time.monotonic() - started < 5  # bounded by the deadline
    line = str(caught.value)
    assert line.startswith(f"group g: gone ({silent.endpoint}: ConnectionError) did not answer") and "\n" not in line
    assert "never-shown" not in line
