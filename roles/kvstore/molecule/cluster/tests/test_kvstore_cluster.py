"""Redis Cluster on three hosts: 3 masters + 3 replicas, no replica beside its master, all slots served."""

from __future__ import annotations

from tests.support.molecule_kv import cli


def test_instances_run_and_listen(host):
    address = host.ansible.get_variables()["ansible_host"]
    for port in (7000, 7001):
        assert host.service(f"redis@{port}").is_running
        assert host.socket(f"tcp://{address}:{port}").is_listening
        assert host.socket(f"tcp://{address}:{port + 10000}").is_listening
        conf = host.file(f"/etc/redis/redis-{port}.conf").content_string
        assert "cluster-enabled yes" in conf and "cluster-node-timeout 3000" in conf


def test_cluster_state_ok_with_all_slots(host):
    info = cli(host, 7000, "CLUSTER", "INFO", deployment="redis_cluster")
    assert "cluster_state:ok" in info
    assert "cluster_slots_assigned:16384" in info and "cluster_slots_ok:16384" in info
    assert "cluster_known_nodes:6" in info and "cluster_size:3" in info


def test_no_replica_shares_a_host_with_its_master(host):
    nodes = cli(host, 7000, "CLUSTER", "NODES", deployment="redis_cluster").splitlines()
    by_id = {line.split()[0]: line.split() for line in nodes}
    replicas = [f for f in by_id.values() if "slave" in f[2]]
    assert len(replicas) == 3
    for fields in replicas:
        master = by_id[fields[3]]
        assert fields[1].split(":")[0] != master[1].split(":")[0], f"{fields[1]} replicates {master[1]} on its host"


def test_writes_route_across_the_cluster(host):
    for key in ("a", "b", "c", "d"):
        assert cli(host, 7000, "-c", "SET", key, key, deployment="redis_cluster") == "OK"
        assert cli(host, 7001, "-c", "GET", key, deployment="redis_cluster") == key
