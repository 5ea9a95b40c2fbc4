"""Existing-cluster mode (docs/existing-cluster.md): `kvtestbed run` against servers it did not deploy.

The "cluster" is REAL: a Redis primary and two replicas with the data user `agent`, and three Sentinels with a
requirepass, each emulated host on an address of its own (127.0.0.2, .3, .4) and every instance of a kind on the
same port, as on separate machines. The inventory names those hosts with `ansible_connection: local` and an SSH
port nothing listens on, so a run passes only if no command went over SSH. The CLI runs as a subprocess.
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from kvtestbed.faults import FaultSpecError, make_context, make_fault
from kvtestbed.inventory import Host, Inventory
from kvtestbed.remote import Remote, RemoteError
from tests.support.binaries import require, unavailable
from tests.support.lab import kvtestbed
from tests.support.servers import RedisServer, SentinelServer, port_free_on_every, wait_replica_in_sync
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

HOSTS = {"r1": "127.0.0.2", "r2": "127.0.0.3", "r3": "127.0.0.4"}
MONITOR = "redis"
# the kvstore role's rules for the data user (roles/kvstore/defaults/main.yml): data commands, no admin
AGENT_RULES = ("~*", "&*", "+@all", "-@admin", "+config|get")
# port 9 (discard) has no sshd: a command sent over SSH instead of run locally fails the run's preflight
NO_SSH_PORT = 9

SCENARIO = """
name: existing-cluster
description: two writers against a Sentinel-managed set the runner did not deploy
needs: {groups: [redis, sentinel], engines: {redis: redis}, topologies: {redis: replication}}
warmup: 2s
duration: 8s
writers:
  - {name: redis-py, group: redis, strategy: redis-py, rate: 100}
  - {name: quorum, group: redis, strategy: quorum, rate: 100}
checks: [lost-writes, read-back, servers-agree]
slo:
  - clients.*.lost == 0
"""

KILL = "faults: [{at: 2, kind: kill, group: redis, target: primary}]\n"


def inventory_text(port: int, sentinel_port: int, secrets_dir: Path) -> str:
    hosts = "\n".join(
        f"    {name}: {{ansible_host: {address}, ansible_connection: local, ansible_port: {NO_SSH_PORT}}}"
        for name, address in HOSTS.items()
    )
    members = "{" + ", ".join(f"{name}: " for name in HOSTS) + "}"
    return f"""all:
  hosts:
{hosts}
  vars:
    testbed_secrets_dir: {secrets_dir}
  children:
    redis:
      hosts: {members}
      vars:
        redis_kvstore: {{engine: redis, topology: replication, ports: [{port}]}}
    sentinel:
      hosts: {members}
      vars:
        sentinel_port: {sentinel_port}
        sentinel_monitors: [{{name: {MONITOR}, group: redis}}]
"""


def write_secret(path: Path, value: str) -> None:
    path.write_text(value + "\n")
    path.chmod(0o600)


@dataclass
class Cluster:
    inventory: Path
    secrets: Path
    primary: RedisServer
    sentinels: list[SentinelServer]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    binary = require(shutil.which("redis-server"), "redis-server")
    try:
        for address in HOSTS.values():
            with socket.socket() as sock:
                sock.bind((address, 0))
    except OSError as exc:
        unavailable(f"cannot bind loopback addresses {', '.join(HOSTS.values())} ({exc.strerror})")
    root = tmp_path_factory.mktemp("existing-cluster")
    secrets_dir = root / "secrets"  # beside the inventory, as a user keeps them; the inventory points at it
    secrets_dir.mkdir(mode=0o700)
    agent_password, sentinel_password = secrets.token_hex(16), secrets.token_hex(16)
    write_secret(secrets_dir / "redis-agent", agent_password)
    write_secret(secrets_dir / "sentinel-admin", sentinel_password)
    port = port_free_on_every(list(HOSTS.values()), set())
    sentinel_port = port_free_on_every(list(HOSTS.values()), {port})
    primary_address = HOSTS["r1"]
    started: list[RedisServer | SentinelServer] = []
    try:
        servers = []
        for name, address in HOSTS.items():
            # bind-source-addr: replication and Sentinel links leave from the host's own address, so the
            # primary and the Sentinels see .3 and .4 (not 127.0.0.1) as on separate machines
            extra = ["--bind-source-addr", address, "--repl-diskless-sync-delay", "0"]
            if address != primary_address:
                extra += ["--replicaof", primary_address, str(port)]
            server = RedisServer(binary, root / name / "redis", port=port, bind=address, extra=extra)
            started.append(server)
            server.start()
            with server.client(socket_timeout=2) as client:  # the password goes over the wire, not argv
                client.execute_command("ACL", "SETUSER", "agent", "reset", "on", f">{agent_password}", *AGENT_RULES)
            servers.append(server)
        for replica in servers[1:]:
            wait_replica_in_sync(replica)
        sentinels = []
        for name, address in HOSTS.items():
            sentinel = SentinelServer(binary, root / name / "sentinel", MONITOR, port, quorum=2,
                                      password=sentinel_password, port=sentinel_port, bind=address,
                                      master_host=primary_address, extra=[f"bind-source-addr {address}"])  # fmt: skip
            started.append(sentinel)
            sentinel.start()
            sentinels.append(sentinel)

        def every_sentinel_knows_the_set() -> bool:
            for sentinel in sentinels:
                with redis.Redis(sentinel.bind, sentinel.port, password=sentinel_password, socket_timeout=1) as c:
                    state = c.sentinel_master(MONITOR)
                if state.get("num-slaves") != 2 or state.get("num-other-sentinels") != 2:
                    return False
            return True

        wait_until(every_sentinel_knows_the_set, timeout_s=30, what="3 Sentinels that see 2 replicas and each other")
        inventory = root / "inventory"
        inventory.mkdir()
        (inventory / "hosts.yml").write_text(inventory_text(port, sentinel_port, secrets_dir))
        yield Cluster(inventory, secrets_dir, servers[0], sentinels)
    finally:
        for process in reversed(started):
            process.stop()


def scenario_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "existing-cluster.yml"
    path.write_text(text)
    return path


def test_a_scenario_runs_against_servers_it_did_not_deploy(cluster: Cluster, tmp_path: Path) -> None:
    results = tmp_path / "results"
    started = time.monotonic()
    done = kvtestbed("run", str(scenario_file(tmp_path, SCENARIO)), "--inventory", str(cluster.inventory),
                     "--metrics-port", "0", "--results", str(results), timeout=300)  # fmt: skip
    took = time.monotonic() - started
    assert done.returncode == 0, (done.returncode, done.stdout[-3000:], done.stderr[-3000:])
    (run_dir,) = [path for path in results.iterdir() if path.is_dir()]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["run"]["status"] == "passed", summary["run"]
    clients = summary["clients"]
    assert set(clients) == {"redis-py", "quorum"}, clients
    for name, client in clients.items():
        assert client["ok"] > 0 and client["lost"] == 0, (name, client)
    assert all(slo["ok"] for slo in summary["slo"]) and summary["slo"], summary["slo"]
    # INFO was read with the data user from the secrets file: the servers' own version is in the summary
    assert summary["engines"]["redis"]["version"], summary["engines"]
    assert set(summary["inventory"]["hosts"]) == set(HOSTS)
    assert (run_dir / "report.html").is_file()
    # no password of the secrets dir reached the run's output or its folder's text files
    for secret in cluster.secrets.iterdir():
        value = secret.read_text().strip()
        assert value not in done.stdout + done.stderr
        assert not any(value in path.read_text(errors="replace") for path in run_dir.rglob("*") if path.is_file())
    print(f"existing-cluster run: {took:.1f} s")


def test_a_fault_on_hosts_it_does_not_manage_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    results = tmp_path / "results"
    done = kvtestbed("run", str(scenario_file(tmp_path, SCENARIO + KILL)), "--inventory", str(cluster.inventory),
                     "--metrics-port", "0", "--results", str(results), timeout=120)  # fmt: skip
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "faults[0]" in lines[0] and "host r1" in lines[0] and "ansible_connection local" in lines[0], lines[0]
    assert not results.exists() or not any(results.iterdir())  # refused before anything started
    with cluster.primary.client(socket_timeout=2) as client:  # and nothing was done to the servers
        assert client.info("replication")["role"] == "master"


def local_remote(name: str = "r1") -> Remote:
    return Remote(Host(name=name, address=HOSTS[name], vars={"ansible_connection": "local"}))


def test_a_local_remote_runs_commands_on_the_controller(tmp_path: Path) -> None:
    with local_remote() as remote:
        assert remote.answers()
        done = remote.run("echo out; echo err >&2; exit 255")  # 255 is the command's own, not a failed link
        assert (done.rc, done.stdout, done.stderr) == (255, "out\n", "err\n")
        assert remote.check("cat", input_text="from stdin") == "from stdin"
        with pytest.raises(RemoteError, match=r"host r1 \(127\.0\.0\.2\): `false` failed: rc=1"):
            remote.check("false")


def test_a_local_remote_command_that_outlives_its_timeout_ends_with_all_it_started(tmp_path: Path) -> None:
    marker = tmp_path / "child.pid"
    with local_remote() as remote, pytest.raises(RemoteError, match="did not finish within 1 s"):
        remote.run(f"sleep 300 & echo $! > {marker}; wait", timeout=1)
    child = int(marker.read_text())

    def gone() -> bool:  # no such process, or a zombie that whoever reaps orphans has not reaped yet
        try:
            stat = Path(f"/proc/{child}/stat").read_text()
        except OSError:
            return True
        return stat.rsplit(")", 1)[1].split()[0] == "Z"

    wait_until(gone, timeout_s=10, what=f"the command's child {child} to end")


def test_a_fault_that_would_touch_a_local_host_is_refused_even_from_another_group() -> None:
    """A mixed inventory: SSH hosts the testbed deployed, and the controller as a local host of its own group.
    Faults on the SSH group stay allowed, except an isolating partition, which also changes every other host."""
    listing = {
        "_meta": {"hostvars": {
            "pi-1": {"ansible_host": "198.18.9.11"},
            "pi-2": {"ansible_host": "198.18.9.12"},
            "pi-3": {"ansible_host": "198.18.9.13"},
            "controller": {"ansible_host": "127.0.0.1", "ansible_connection": "local"},
        }},
        "all": {"children": ["redis", "load"]},
        "redis": {"hosts": ["pi-1", "pi-2", "pi-3"]},
        "load": {"hosts": ["controller"]},
    }  # fmt: skip
    inventory = Inventory.from_listing("mixed", listing)
    context = make_context(inventory, seed=1)
    try:
        assert make_fault({"kind": "kill", "group": "redis", "target": "one"}, inventory, context).kind == "kill"
        halves = {"kind": "partition", "group": "redis", "target": "one", "for": 5, "params": {"shape": "halves"}}
        assert make_fault(halves, inventory, context).kind == "partition"
        with pytest.raises(FaultSpecError, match="partition isolate .* host controller has ansible_connection local"):
            make_fault({"kind": "partition", "group": "redis", "target": "one", "for": 5}, inventory, context)
        with pytest.raises(FaultSpecError, match="group load: host controller has ansible_connection local"):
            make_fault({"kind": "stop", "group": "load", "target": "all", "for": 5, "service": "x.service"},
                       inventory, context)  # fmt: skip
    finally:
        context.remotes.close()
