"""Key-value family on lab hosts: Sentinel and Cluster failover times, security, KeyDB mesh.

Brings up a lab of its own (lab_name kvf1, 198.18.46.0/24, three emulated Pis), converges playbooks/common.yml,
playbooks/redis.yml and playbooks/keydb.yml on it, measures, and removes it. Figures go to
results/kvstore_failover.json.

    .venv/bin/pytest -m lab tests/lab/test_kvstore_lab.py -s                  # needs root
    KVTESTBED_KEYDB_ARCHIVE=/path/KeyDB-6.3.3.tar.gz .venv/bin/pytest ...    # also builds and checks KeyDB
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

from tests.support.binaries import unavailable
from tests.support.lab import changed_total, lab_vars, run_playbook, ssh

ROOT = Path(__file__).resolve().parents[2]
LAB = "kvf1"
SUBNET = "198.18.46"
HOSTS = {"kf-1": f"{SUBNET}.11", "kf-2": f"{SUBNET}.12", "kf-3": f"{SUBNET}.13"}
KEY = f"/var/lib/kvtestbed/lab/{LAB}/ssh/id_ed25519"
DOWN_AFTER_MS, FAILOVER_TIMEOUT_MS, NODE_TIMEOUT_MS = 3000, 10000, 3000
OUTSIDE = "203.0.113.77"  # TEST-NET-3: an address outside the testbed subnet
# the archive vendored beside the project (what CI and the lab use), or another one given
_VENDORED = ROOT.parent / "shared" / "vendor" / "KeyDB-6.3.4.tar.gz"
KEYDB_ARCHIVE = os.environ.get("KVTESTBED_KEYDB_ARCHIVE", "") or (str(_VENDORED) if _VENDORED.is_file() else "")
KEYDB_SHA256 = "" if os.environ.get("KVTESTBED_KEYDB_ARCHIVE") else (
    "fee57ba95c85108fdd6c970b0c177de328e7969b736b7fdb70b40a6245545191")
# The role compares this with `keydb-server --version` to decide whether to build: it must match the archive.
_ARCHIVE_VERSION = re.search(r"(\d+\.\d+\.\d+)", Path(KEYDB_ARCHIVE).name)
KEYDB_VERSION = os.environ.get("KVTESTBED_KEYDB_VERSION") or (_ARCHIVE_VERSION[1] if _ARCHIVE_VERSION else "6.3.4")

INVENTORY = f"""---
all:
  hosts:
    kf-1: {{ansible_host: {HOSTS["kf-1"]}, lab_profile: pi4b}}
    kf-2: {{ansible_host: {HOSTS["kf-2"]}, lab_profile: pi4b}}
    kf-3: {{ansible_host: {HOSTS["kf-3"]}, lab_profile: pi4b}}
  children:
    redis:
      hosts: {{kf-1: , kf-2: , kf-3: }}
      vars:
        redis_kvstore: {{engine: redis, topology: replication, ports: [6379], primary: kf-1,
                         min_replicas_to_write: 1, notify_keyspace_events: Ex}}
    sentinel:
      hosts: {{kf-1: , kf-2: , kf-3: }}
      vars:
        sentinel_monitors: [{{name: redis, group: redis, port: 6379, primary: kf-1}}]
        sentinel_down_after_milliseconds: {DOWN_AFTER_MS}
        sentinel_failover_timeout: {FAILOVER_TIMEOUT_MS}
    redis_cluster:
      hosts: {{kf-1: , kf-2: , kf-3: }}
      vars:
        redis_cluster_kvstore: {{engine: redis, topology: cluster, ports: [7000, 7001], persistence: none,
                                 cluster_node_timeout: {NODE_TIMEOUT_MS}}}
    keydb:
      hosts: {{kf-1: , kf-2: , kf-3: }}
      vars:
        keydb_deploy: "{{{{ (keydb_source_archive | default('')) | length > 0 }}}}"
        keydb_kvstore: {{engine: keydb, topology: mesh, ports: [6381],
                         keydb_source_archive: "{{{{ keydb_source_archive | default('') }}}}",
                         keydb_source_checksum: "{{{{ keydb_source_checksum | default('') }}}}",
                         keydb_source_version: "{{{{ keydb_source_version | default('6.3.4') }}}}"}}
  vars:
{lab_vars(LAB, SUBNET)}
"""


def _playbook(inventory: Path, playbook: str, *extra: str) -> subprocess.CompletedProcess:
    return run_playbook(inventory, playbook, *extra)


def _ssh(host: str, command: str) -> subprocess.CompletedProcess:
    return ssh(HOSTS[host], KEY, command)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    work = tmp_path_factory.mktemp("kvf1")
    inventory = work / "hosts.yml"
    inventory.write_text(INVENTORY)
    secrets = work / "secrets"
    extra = ["-e", f"testbed_secrets_dir={secrets}"]
    if KEYDB_ARCHIVE:
        extra += ["-e", f"keydb_source_archive={KEYDB_ARCHIVE}", "-e", f"keydb_source_version={KEYDB_VERSION}",
                  "-e", f"keydb_source_checksum={KEYDB_SHA256}"]
    try:
        _playbook(inventory, "playbooks/lab.yml")
        _playbook(inventory, "playbooks/common.yml")
        _playbook(inventory, "playbooks/redis.yml", *extra)
        keydb = _playbook(inventory, "playbooks/keydb.yml", *extra)
        yield {"inventory": inventory, "secrets": secrets, "keydb_output": keydb.stdout, "extra": extra}
    finally:
        run_playbook(inventory, "playbooks/lab.yml", "-e", "lab_state=down", check=False, timeout=600)


def _secret(lab, name: str) -> str:
    return (lab["secrets"] / name).read_text().strip()


def _client(lab, host: str, port: int, deployment: str = "redis") -> redis.Redis:
    return redis.Redis(host=HOSTS[host], port=port, username="admin", password=_secret(lab, f"{deployment}-admin"),
                       socket_timeout=2, socket_connect_timeout=2, decode_responses=True)


def _record(key: str, value: object) -> None:
    out = ROOT / "results" / "kvstore_failover.json"
    out.parent.mkdir(exist_ok=True)
    data = json.loads(out.read_text()) if out.exists() else {}
    data[key] = value
    out.write_text(json.dumps(data, indent=2) + "\n")


def _connects(host: str, port: int, source: str) -> bool:
    """From kf-3, with the given source address: does a TCP connection to host:port open within 3 s?"""
    probe = (f"python3 -c \"import socket; s=socket.socket(); s.settimeout(3); s.bind(('{source}', 0)); "
             f"s.connect(('{HOSTS[host]}', {port})); print('open')\"")
    return "open" in _ssh("kf-3", probe).stdout


def test_client_without_password_gets_noauth(lab):
    with socket.create_connection((HOSTS["kf-2"], 6379), timeout=3) as anonymous:
        anonymous.sendall(b"PING\r\n")
        reply = anonymous.recv(256).decode()
    assert reply.startswith("-NOAUTH"), reply
    assert _client(lab, "kf-2", 6379).ping()


def test_ports_closed_outside_the_testbed_subnet(lab):
    # kf-3 gets an extra address outside the subnet; kf-1 routes it back on the link so only the firewall decides
    _ssh("kf-3", f"ip addr add {OUTSIDE}/32 dev host0 2>/dev/null || true")
    _ssh("kf-1", f"ip route replace {OUTSIDE}/32 dev host0")
    try:
        # control: the route between kf-1 and OUTSIDE works both ways (kf-1, inside the subnet, reaches kf-3's
        # ssh at OUTSIDE), so what OUTSIDE cannot reach below is the firewall's doing
        probe = f"python3 -c \"import socket; socket.create_connection(('{OUTSIDE}', 22), timeout=3); print('open')\""
        assert "open" in _ssh("kf-1", probe).stdout, "control: kf-1 reaches OUTSIDE"
        assert _connects("kf-1", 6379, HOSTS["kf-3"]), "control: 6379 is open inside the subnet"
        # ssh too: open to the testbed subnet and the controller only
        for port in (22, 6379, 26379, 7000, 17000):
            assert not _connects("kf-1", port, OUTSIDE), f"port {port} answers an address outside the subnet"
    finally:
        _ssh("kf-3", f"ip addr del {OUTSIDE}/32 dev host0")
        _ssh("kf-1", f"ip route del {OUTSIDE}/32 dev host0")


def test_no_generated_secret_in_committed_files(lab):
    secrets = [p.read_text().strip() for p in lab["secrets"].iterdir() if p.is_file() and p.stat().st_size < 200]
    assert secrets, "no passwords were generated"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True).stdout.split("\0")
    for name in filter(None, tracked):
        path = ROOT / name
        if path.is_file():
            text = path.read_text(errors="ignore")
            leaked = [s for s in secrets if s in text]
            assert not leaked, f"{name} contains a generated password"


def _sentinel_master(lab, host: str) -> tuple[str, int] | None:
    sentinel = redis.Redis(host=HOSTS[host], port=26379, password=_secret(lab, "sentinel-admin"), socket_timeout=1,
                           socket_connect_timeout=1, decode_responses=True)
    try:
        addr = sentinel.execute_command("SENTINEL", "get-master-addr-by-name", "redis")
        return (addr[0], int(addr[1])) if addr else None
    except redis.exceptions.RedisError:
        return None


def test_sentinel_promotes_a_replica_after_sigkill(lab):
    assert _sentinel_master(lab, "kf-2") == (HOSTS["kf-1"], 6379)
    replicas = _client(lab, "kf-1", 6379).info("replication")
    assert replicas["role"] == "master" and replicas["connected_slaves"] == 2
    _client(lab, "kf-1", 6379).set("failover-probe", "before")
    _ssh("kf-1", "kill -9 $(systemctl show -p MainPID --value redis@6379.service)")
    start = time.monotonic()
    limit = (DOWN_AFTER_MS + FAILOVER_TIMEOUT_MS) / 1000
    new = None
    while time.monotonic() - start < limit + 5:
        addr = _sentinel_master(lab, "kf-2")
        if addr and addr[0] != HOSTS["kf-1"]:
            host = next(h for h, a in HOSTS.items() if a == addr[0])
            if _client(lab, host, 6379).info("replication")["role"] == "master":
                new = host
                break
        time.sleep(0.1)
    elapsed = time.monotonic() - start
    _record("sentinel_failover_seconds", round(elapsed, 2))
    print(f"\nSentinel failover: {new} promoted {elapsed:.2f} s after SIGKILL (limit {limit:.0f} s)")
    assert new, f"no replica promoted within {limit + 5:.0f} s"
    assert elapsed <= limit
    assert _client(lab, new, 6379).get("failover-probe") == "before"


def _cluster_masters(node: redis.Redis) -> list[str]:
    """ip:port of the masters not flagged failed, from CLUSTER NODES (raw text or redis-py's parsed dict)."""
    nodes = node.execute_command("CLUSTER", "NODES")
    if isinstance(nodes, dict):
        entries = [(addr, str(meta.get("flags", ""))) for addr, meta in nodes.items()]
    else:
        entries = [(line.split()[1], line.split()[2]) for line in str(nodes).splitlines() if line.strip()]
    return [addr.split("@")[0] for addr, flags in entries
            if "master" in flags.split(",") and not {"fail", "fail?"} & set(flags.split(","))]


def test_cluster_replica_takes_over_a_killed_master(lab):
    node = _client(lab, "kf-2", 7000, "redis_cluster")
    info = node.execute_command("CLUSTER", "INFO")
    assert "cluster_state:ok" in info and "cluster_slots_assigned:16384" in info
    victim = f"{HOSTS['kf-1']}:7000"
    _ssh("kf-1", "kill -9 $(systemctl show -p MainPID --value redis@7000.service)")
    start = time.monotonic()
    promoted, state_ok = None, False
    while time.monotonic() - start < 60:
        try:
            masters = _cluster_masters(node)
            state_ok = "cluster_state:ok" in node.execute_command("CLUSTER", "INFO")
            # the layout put kf-3:7001 behind kf-1:7000
            if f"{HOSTS['kf-3']}:7001" in masters and victim not in masters and state_ok:
                promoted = f"{HOSTS['kf-3']}:7001"
                break
        except redis.exceptions.RedisError:
            pass
        time.sleep(0.1)
    elapsed = time.monotonic() - start
    _record("cluster_failover_seconds", round(elapsed, 2))
    print(f"\nCluster failover: {promoted} took over {victim}, cluster_state:ok {elapsed:.2f} s after SIGKILL")
    assert promoted and state_ok, "the killed master's replica was not promoted within 60 s"


def test_keydb_mesh_write_anywhere_read_everywhere(lab):
    if not KEYDB_ARCHIVE:
        assert "skipped: no KeyDB source archive" in lab["keydb_output"]
        unavailable("no KeyDB source archive: ../shared/vendor/KeyDB-6.3.4.tar.gz or KVTESTBED_KEYDB_ARCHIVE")
    # built once on the controller (it is of the Pis' kind here and has the build tools: make deps), the bundle
    # unpacked on the three Pis: none of them got a compiler or a -dev package
    for host in HOSTS:
        probe = _ssh(host, "dpkg-query -W -f='${Status}' libssl-dev gcc 2>/dev/null | grep -c 'install ok' || true")
        assert probe.stdout.strip() in ("", "0"), f"{host} has build packages: KeyDB was built there"
    clients = {h: _client(lab, h, 6381, "keydb") for h in HOSTS}
    for writer, client in clients.items():
        client.set(f"mesh:{writer}", writer)
    deadline = time.monotonic() + 10
    missing = []
    while time.monotonic() < deadline:
        missing = [(r, w) for r in clients for w in clients if clients[r].get(f"mesh:{w}") != w]
        if not missing:
            break
        time.sleep(0.2)
    assert not missing, f"writes not seen (reader, writer): {missing}"
    for host, client in clients.items():
        info = client.info("server")
        assert info.get("redis_version", "").startswith(KEYDB_VERSION[:3]) or "keydb" in str(info).lower(), host
    again = _playbook(lab["inventory"], "playbooks/keydb.yml", *lab["extra"])
    assert changed_total(again.stdout) == 0, f"second keydb.yml run changed something:\n{again.stdout[-3000:]}"
