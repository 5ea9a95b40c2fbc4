"""`kvtestbed run` with two `node` writers sharing keys on a REAL KeyDB active-replica mesh, in existing-cluster
mode (docs/existing-cluster.md): the runner's wiring of the `node` strategy, `keys` and the `conflicts` check, from
the scenario file to summary.json, its figures and SLOs, and the report.

Three keydb-server peers, each on an address of its own (127.0.0.2, .3, .4) and the same port, as on separate
machines, with the lab's data user `agent`; the inventory names them with `ansible_connection: local`, so no command
goes over SSH. No fault: a partition needs the firewall, which tests on this machine leave alone (the partition
itself is in test_accounting_mesh.py, with the links removed by REPLICAOF REMOVE; the lab runs the real one).
"""

from __future__ import annotations

import json
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.binaries import require, unavailable
from tests.support.lab import kvtestbed
from tests.support.servers import RedisServer, keydb_server_binary, link_mesh, port_free_on_every

pytestmark = pytest.mark.integration

HOSTS = {"k1": "127.0.0.2", "k2": "127.0.0.3", "k3": "127.0.0.4"}
KEYS = 10
AGENT_RULES = ("~*", "&*", "+@all", "-@admin", "+config|get")  # the kvstore role's data user

SCENARIO = f"""
name: mesh-conflicts
description: two node writers on two peers of a KeyDB mesh, writing the same keys at the same time
needs: {{groups: [keydb], engines: {{keydb: keydb}}, topologies: {{keydb: mesh}}}}
warmup: 1s
duration: 2.5s
writers:
  - {{name: a, group: keydb, strategy: node, host: k1, rate: 50, key_prefix: "kvt:m:", keys: {KEYS}}}
  - {{name: c, group: keydb, strategy: node, host: k3, rate: 20, key_prefix: "kvt:m:", keys: {KEYS}}}
checks: [lost-writes, conflicts]
slo:
  - accounting.conflicts.keys == {KEYS}
  - accounting.conflicts.unknown_final == 0
"""


@pytest.fixture
def mesh_inventory(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(inventory dir, secrets dir) of a 3-peer KeyDB mesh on 127.0.0.2-4."""
    binary = require(keydb_server_binary(), "keydb-server", "make keydb builds it from the vendored KeyDB archive")
    try:
        for address in HOSTS.values():
            with socket.socket() as sock:
                sock.bind((address, 0))
    except OSError as exc:
        unavailable(f"cannot bind loopback addresses {', '.join(HOSTS.values())} ({exc.strerror})")
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir(mode=0o700)
    password = secrets.token_hex(16)
    (secrets_dir / "keydb-agent").write_text(password + "\n")
    port = port_free_on_every(list(HOSTS.values()))
    peers: list[RedisServer] = []
    try:
        for name, address in HOSTS.items():
            peer = RedisServer(binary, tmp_path / name, port=port, bind=address,
                               extra=("--active-replica", "yes", "--multi-master", "yes",
                                      "--repl-diskless-sync-delay", "0"))  # fmt: skip
            peers.append(peer)
            peer.start()
            with peer.client(socket_timeout=2) as client:  # the password goes over the wire, not argv
                client.execute_command("ACL", "SETUSER", "agent", "reset", "on", f">{password}", *AGENT_RULES)
        link_mesh(peers)
        inventory = tmp_path / "inventory"
        inventory.mkdir()
        hosts = "\n".join(f"    {name}: {{ansible_host: {address}, ansible_connection: local, ansible_port: 9}}"
                          for name, address in HOSTS.items())  # fmt: skip
        (inventory / "hosts.yml").write_text(f"""all:
  hosts:
{hosts}
  vars:
    testbed_secrets_dir: {secrets_dir}
  children:
    keydb:
      hosts: {{k1: , k2: , k3: }}
      vars:
        keydb_kvstore: {{engine: keydb, topology: mesh, ports: [{port}]}}
""")
        yield inventory, secrets_dir
    finally:
        for peer in peers:
            peer.stop()


def test_a_run_with_node_writers_and_the_conflicts_check(mesh_inventory: tuple[Path, Path], tmp_path: Path) -> None:
    inventory, secrets_dir = mesh_inventory
    scenario = tmp_path / "mesh-conflicts.yml"
    scenario.write_text(SCENARIO)
    results = tmp_path / "results"
    done = kvtestbed("run", str(scenario), "--inventory", str(inventory), "--results", str(results),
                     "--metrics-port", "0", timeout=300)
    assert done.returncode == 0, (done.returncode, done.stdout[-3000:], done.stderr[-3000:])
    (run_dir,) = [path for path in results.iterdir() if path.is_dir()]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["run"]["status"] == "passed", summary["run"]
    assert all(slo["ok"] for slo in summary["slo"]) and len(summary["slo"]) == 2, summary["slo"]

    conflicts = summary["accounting"]["conflicts"]
    # what the servers did is theirs to decide (two peers taking writes of one key in the same millisecond may
    # keep different values: KeyDB's "undefined winner"); the figures must add up whatever it was
    assert conflicts["keys"] == KEYS and conflicts["unknown_final"] == 0, conflicts
    assert conflicts["diverged"] + conflicts["newest_won"] + conflicts["older_won"] == KEYS
    assert sum(conflicts["won"].values()) == KEYS - conflicts["diverged"] and set(conflicts["won"]) == {"a", "c"}
    (part,) = conflicts["sets"]
    assert (part["group"], part["writers"], part["nodes"]) == ("keydb", ["a", "c"], ["k1", "k2", "k3"])
    assert part["converged"] == (conflicts["diverged"] == 0)
    assert summary["figures"]["accounting.conflicts.keys"] == KEYS
    assert f"conflicts: 10 shared keys, {conflicts['diverged']} diverged" in done.stdout

    print(f"mesh run, linked peers: {conflicts}")  # what KeyDB did with same-time writes, for the log
    clients = summary["clients"]
    assert set(summary["inventory"]["hosts"]) == set(HOSTS)
    for name, host in (("a", "k1"), ("c", "k3")):
        entry = clients[name]
        assert entry["strategy"] == "node" and entry["target"].startswith(f"node:{host}@{HOSTS[host]}:"), entry
        assert entry["ok"] > 0 and entry["fail"] == entry["unknown"] == 0, entry
        assert entry["nodes_agree"] == part["converged"]
        if part["converged"]:  # its own peer holds the agreed values: its lost writes are the check's
            assert entry["lost"] == conflicts["lost_of"][name]
        ops = [json.loads(line) for line in (run_dir / "ops" / f"{name}.jsonl").read_text().splitlines()]
        assert {op["key"] for op in ops} == {f"kvt:m:{i}" for i in range(KEYS)}
        assert all(op["value"].startswith(f"{name}:") and op["node"] == entry["target"].split("@")[1] for op in ops)
    assert ">Conflicting writes</h2>" in (run_dir / "report.html").read_text()
    password = (secrets_dir / "keydb-agent").read_text().strip()
    assert password not in done.stdout + done.stderr
    assert not any(password in path.read_text(errors="replace") for path in run_dir.rglob("*") if path.is_file())
