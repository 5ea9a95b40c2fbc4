"""The cluster writer against a real Redis Cluster on loopback (3 masters + 3 replicas, node timeout 2 s, an ACL
user `agent` without @admin): SIGKILL of a master mid-run. The checker's figures are compared with what the cluster
itself holds (an independent GET of every acknowledged key) and with its own record of the promotion (CLUSTER NODES
polled by the test). The cluster is this module's own: the session's `redis_cluster` must not lose a node.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from kvtestbed.accounting import ClusterTarget, OpLog, check_run_any, make_writer, read_ops, servers_failover
from kvtestbed.accounting.cluster_check import ClusterNodeLine, parse_cluster_nodes
from tests.support.binaries import require
from tests.support.servers import LOOPBACK, build_redis_cluster, wait_replica_in_sync
from tests.support.servers import RedisCluster as ClusterProcs
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

USER, PASSWORD = "agent", "agent-secret"
RATE = 150.0


@pytest.fixture
def acl_cluster(tmp_path: Path) -> Iterator[ClusterProcs]:
    binary = require(shutil.which("redis-server"), "redis-server")
    cli = require(shutil.which("redis-cli"), "redis-cli")
    cluster = build_redis_cluster(binary, cli, tmp_path / "cluster")
    try:
        for node in cluster.nodes:  # ACLs are per node: the lab's data user, no admin commands
            with node.client(socket_timeout=2) as client:
                client.execute_command("ACL", "SETUSER", USER, "on", f">{PASSWORD}", "~*", "&*", "+@all", "-@admin")
                replica = client.info("replication").get("role") == "slave"
            if replica:  # a replica that never synced refuses to fail over (cluster-replica-validity-factor)
                wait_replica_in_sync(node)
        yield cluster
    finally:
        cluster.stop()


def view_from(port: int) -> dict[str, ClusterNodeLine]:
    with redis.Redis(host=LOOPBACK, port=port, socket_timeout=1, decode_responses=True) as client:
        return parse_cluster_nodes(str(client.execute_command("CLUSTER", "NODES")))


def test_sigkill_of_a_master(acl_cluster: ClusterProcs, tmp_path: Path) -> None:
    secret = tmp_path / "agent-password"
    secret.write_text(PASSWORD + "\n")
    target = ClusterTarget(nodes=tuple((LOOPBACK, n.port) for n in acl_cluster.nodes), username=USER,
                           password_file=secret)  # fmt: skip
    t0 = time.monotonic()
    ops_path = tmp_path / "ops" / "w-cluster.jsonl"
    writer = make_writer("w-cluster", "cluster", target, "kvt:acct:", RATE, OpLog(ops_path), t0=t0,
                         max_ops=int(RATE * 40), max_duration_s=40)  # fmt: skip
    writer.start()
    try:
        wait_until(lambda: writer.counts.ok >= 300, 10, 0.05, "300 acknowledged writes")
        victim_port = acl_cluster.nodes[0].port
        before = view_from(acl_cluster.nodes[1].port)
        victim = next(n for n in before.values() if n.address == f"{LOOPBACK}:{victim_port}")
        assert victim.role == "master" and victim.slots > 0
        replica = next(n for n in before.values() if n.master_id == victim.node_id)
        acl_cluster.nodes[0].kill()
        t_kill = time.monotonic() - t0

        def promoted() -> bool:
            view = view_from(acl_cluster.nodes[1].port)
            return view[replica.node_id].role == "master"

        wait_until(promoted, 20, 0.05, "the replica's promotion in CLUSTER NODES")
        t_promoted = time.monotonic() - t0
        ok_then = writer.counts.ok
        wait_until(lambda: writer.counts.ok >= ok_then + 300, 10, 0.05, "300 more acknowledged writes")
    finally:
        writer.stop()
    ops = read_ops(ops_path)
    entry = check_run_any({"w-cluster": ops}, {"w-cluster": "cluster"}, target, faults=[{"t_inject": t_kill}])[
        "w-cluster"
    ]
    # independent read-back: GET every acknowledged key through a plain RedisCluster client (its own retries on)
    with RedisCluster(startup_nodes=[ClusterNode(LOOPBACK, n.port) for n in acl_cluster.nodes[1:]],
                      decode_responses=True) as client:  # fmt: skip
        acknowledged = [op for op in ops if op.result == "ok"]
        lost = sum(client.get(op.key) != op.value for op in acknowledged)
    print(f"\ncluster SIGKILL: ok {entry['ok']} fail {entry['fail']} unknown {entry['unknown']} lost {entry['lost']}"
          f" unknown_applied {entry['unknown_applied']} failover_s {entry['failover_s']} (promotion seen "
          f"{t_promoted - t_kill:.3f} s after the kill) unavailability_s {entry['unavailability_s']}")
    assert entry["attempted"] == len(ops) == entry["ok"] + entry["fail"] + entry["unknown"]
    assert entry["lost"] == lost
    assert entry["fail"] + entry["unknown"] > 0  # the victim's slots were refused or timed out until the promotion
    assert entry["failover_to"] == replica.address
    assert entry["failover_s"] is not None
    # the promoted replica cannot acknowledge before it is master (a replica answers MOVED): the client's failover
    # is after the promotion the test saw, less the test's polling interval, and within the writer's map refresh
    assert t_promoted - t_kill - 0.3 <= entry["failover_s"] <= t_promoted - t_kill + 3.0
    switches = servers_failover(writer.events())
    assert [(s["source"], s["from"], s["to"]) for s in switches] == [("cluster", victim.address, replica.address)]
    assert t_kill <= switches[0]["t"] <= t_promoted + 0.5
