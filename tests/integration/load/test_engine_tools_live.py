"""The engines' own benchmark tools driven by kvtestbed.load.engine_tools against real servers set up like the
kvstore role's: ACL users from an aclfile, `admin` with a password (hashed in the file), the default user off.

redis-benchmark against redis-server 7 and valkey-benchmark against valkey-server 8, run locally through a
subprocess executor that records every command line: the admin password is on none of them, the temporary user
exists (nopass, only the tests' commands) while the tool runs and is gone afterwards, and the tool's commands
really reached the instance (INFO commandstats).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from kvtestbed.load import engine_tools as et
from tests.support.binaries import require
from tests.support.servers import LOOPBACK, RedisServer, free_port

pytestmark = pytest.mark.integration

SERVERS = {
    "redis": shutil.which("redis-server"),
    "valkey": shutil.which("valkey-server")
    or ("/usr/bin/valkey-server" if os.path.exists("/usr/bin/valkey-server") else None),
}
ENGINES = ["redis", "valkey"]


class AclServer(RedisServer):
    """A server whose only way in is `admin` with a password, like a deployed instance (kvstore.conf.j2)."""

    def __init__(self, binary: str, workdir: Path, admin_password: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        aclfile = workdir / "users.acl"  # the password only as its sha256, as the role writes it
        digest = hashlib.sha256(admin_password.encode()).hexdigest()
        aclfile.write_text(f"user admin on #{digest} ~* &* +@all\nuser default off resetkeys resetchannels -@all\n")
        self.admin_password = admin_password
        super().__init__(binary, workdir, extra=["--aclfile", str(aclfile)])

    def client(self, **kw: object) -> redis.Redis:
        return redis.Redis(host=LOOPBACK, port=self.port, username="admin", password=self.admin_password, **kw)  # type: ignore[arg-type]

    def acl_users(self) -> list[str]:
        with self.client(decode_responses=True) as c:
            return sorted(c.execute_command("ACL", "USERS"))

    def bench_users(self) -> list[str]:
        return [u for u in self.acl_users() if u.startswith(et.USER_PREFIX)]

    def calls(self, command: str) -> int:
        with self.client() as c:
            return int(c.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


@dataclass
class Deployed:
    """A started AclServer, its admin password file (like secrets/redis-admin) and the engine's tool."""

    engine: str
    server: AclServer
    password: str
    password_file: Path
    tool: str


@pytest.fixture
def deploy(tmp_path: Path) -> Iterator[Callable[[str], Deployed]]:
    started: list[AclServer] = []

    def make(engine: str) -> Deployed:
        binary = require(SERVERS[engine], f"{engine}-server")
        tool = et.tool_for_engine(engine)
        require(shutil.which(tool), tool, f"make deps installs it ({engine}-tools)")
        password = secrets.token_hex(16)
        workdir = tmp_path / f"{engine}{len(started)}"
        server = AclServer(binary, workdir, password)
        started.append(server)
        server.start()
        password_file = workdir / f"{engine}-admin"
        password_file.write_text(password + "\n")
        password_file.chmod(0o600)
        return Deployed(engine, server, password, password_file, tool)

    yield make
    for server in started:
        server.stop()


@dataclass
class LocalExecutor:
    """execute(command, timeout_s) on this machine through /bin/sh, as Remote.run would on a host; every command
    line recorded, and, while the tool runs as a kvt-bench user, that user's ACL as the server shows it."""

    server: AclServer | None = None
    env: dict[str, str] | None = None
    commands: list[str] = field(default_factory=list)
    seen_users: list[list[str]] = field(default_factory=list)
    seen_rules: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, command: str, timeout_s: float) -> tuple[int, str, str]:
        self.commands.append(command)
        if self.server is not None and "--user" in command:
            users = self.server.bench_users()
            self.seen_users.append(users)
            with self.server.client(decode_responses=True) as c:
                for user in users:
                    self.seen_rules.append(c.acl_getuser(user))
        # a session of its own, so that a timeout kills the tool and not only the shell
        proc = subprocess.Popen(
            command,
            shell=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise TimeoutError(f"`{command[:40]}...` did not finish within {timeout_s:g} s") from None
        return proc.returncode, out, err


def _assert_sane(entry: dict[str, Any]) -> None:
    assert entry["rps"] > 0
    values = [entry[k] for k in ("min_us", "p50_us", "p95_us", "p99_us", "max_us")]
    assert all(isinstance(v, int) and v >= 0 for v in values), entry
    assert values == sorted(values), entry
    assert entry["min_us"] <= entry["avg_us"] <= entry["max_us"], entry
    assert entry["max_us"] < 10_000_000, entry  # a loopback request under 10 s


@pytest.mark.parametrize("engine", ENGINES)
def test_set_and_get_through_a_temporary_user_that_is_gone_afterwards(
    engine: str, deploy: Callable[[str], Deployed]
) -> None:
    d = deploy(engine)
    execute = LocalExecutor(d.server)
    spec = et.ToolSpec(d.tool, ["set", "get"], requests=2000, clients=4, keyspace=1000)
    sets_before = d.server.calls("set")

    result = et.run_engine_tool(spec, LOOPBACK, d.server.port, "admin", d.password_file, execute, tool_host="localhost")

    assert list(result["tests"]) == ["set", "get"]
    for entry in result["tests"].values():
        _assert_sane(entry)
    assert result["tool"] == d.tool
    assert result["version"].startswith(f"{d.tool} ")
    assert result["target"] == f"{LOOPBACK}:{d.server.port}"
    assert result["duration_s"] > 0
    assert result["settings"]["requests"] == 2000
    # the tool's requests reached this instance (each of the 4 clients may add a few)
    assert d.server.calls("set") - sets_before >= 2000
    with d.server.client(decode_responses=True) as c:
        assert 0 < c.dbsize() <= 1000
        assert all(k.startswith("key:") for k in c.scan_iter(count=1000))

    # no secret on any command line, nor in what is kept
    assert execute.commands == [f"{d.tool} --version", result["command"]]
    for command in execute.commands:
        assert d.password not in command
    assert d.password not in json.dumps(result)

    # while the tool ran there was exactly one temporary user: nopass, the tests' commands, the tests' keys
    assert len(execute.seen_users) == 1 and len(execute.seen_users[0]) == 1
    user = execute.seen_users[0][0]
    assert f"--user {user} -a {et.PLACEHOLDER_PASSWORD} " in result["command"]
    rules = execute.seen_rules[0]
    assert "nopass" in rules["flags"] and "on" in rules["flags"]
    assert rules["categories"] == ["-@all"]
    assert sorted(rules["commands"]) == sorted(
        ["+set", "+get", "+ping", "+config|get", "+hello", "+auth", "+client|setname"]
    )
    assert rules["keys"] == list(et.KEY_PATTERNS) and rules["channels"] == []
    # ... and afterwards there is none; admin and default are all there is
    assert d.server.acl_users() == ["admin", "default"]


@pytest.mark.parametrize("engine", ENGINES)
def test_every_supported_test_runs_within_the_temporary_users_rules(
    engine: str, deploy: Callable[[str], Deployed]
) -> None:
    d = deploy(engine)
    execute = LocalExecutor()
    spec = et.ToolSpec(d.tool, list(et.TEST_COMMANDS), requests=500, clients=2, keyspace=1000)

    result = et.run_engine_tool(spec, LOOPBACK, d.server.port, "admin", d.password_file, execute)

    assert list(result["tests"]) == list(et.TEST_COMMANDS)
    for entry in result["tests"].values():
        _assert_sane(entry)
    with d.server.client() as c:  # a command the rules lacked would show up as an ACL LOG entry
        assert c.execute_command("ACL", "LOG") == []
    assert d.server.bench_users() == []


def test_a_wrong_admin_password_is_one_line_without_any_password(deploy: Callable[[str], Deployed]) -> None:
    d = deploy("redis")
    wrong = secrets.token_hex(16)
    wrong_file = d.password_file.with_name("wrong-admin")
    wrong_file.write_text(wrong)
    execute = LocalExecutor()
    spec = et.ToolSpec(d.tool, ["set"], requests=100, clients=1)

    with pytest.raises(et.EngineToolError) as err:
        et.run_engine_tool(spec, LOOPBACK, d.server.port, "admin", wrong_file, execute, tool_host="localhost")

    message = str(err.value)
    where = f"redis-benchmark against {LOOPBACK}:{d.server.port}"
    assert message == f"{where}: the instance refused admin (check the password in {wrong_file})"
    assert wrong not in message and d.password not in message
    assert execute.commands == [f"{d.tool} --version"]  # the tool itself never ran
    assert d.server.bench_users() == []


def test_a_host_without_the_tool_is_told_before_any_user_is_made(
    deploy: Callable[[str], Deployed], tmp_path: Path
) -> None:
    d = deploy("valkey")
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    execute = LocalExecutor(env={"PATH": str(empty)})
    spec = et.ToolSpec(d.tool, ["get"], requests=100, clients=1)

    with pytest.raises(et.EngineToolError) as err:
        et.run_engine_tool(spec, LOOPBACK, d.server.port, "admin", d.password_file, execute, tool_host="lg1")

    assert str(err.value) == "valkey-benchmark on lg1: not installed (install valkey-tools there, or pick another host)"
    assert d.server.acl_users() == ["admin", "default"]


def test_a_run_that_times_out_still_deletes_its_user(deploy: Callable[[str], Deployed]) -> None:
    d = deploy("redis")
    execute = LocalExecutor(d.server)
    # far more requests than 1 client sends in 0.5 s
    spec = et.ToolSpec(d.tool, ["set"], requests=10_000_000, clients=1, timeout_s=0.5)

    with pytest.raises(et.EngineToolError) as err:
        et.run_engine_tool(spec, LOOPBACK, d.server.port, "admin", d.password_file, execute, tool_host="localhost")

    assert str(err.value).startswith("redis-benchmark on localhost: `redis-benchmark -h 127.0.0.1")
    assert "did not finish within 0.5 s" in str(err.value)
    assert len(execute.seen_users) == 1 and len(execute.seen_users[0]) == 1  # it did exist while the tool ran
    assert d.server.bench_users() == []
    with d.server.client() as c:  # the tool (killed) and its connections are gone: only our own client is left
        assert [cl for cl in c.client_list() if cl.get("user", "").startswith(et.USER_PREFIX)] == []


def test_a_replica_is_refused_for_writes_but_not_for_reads(deploy: Callable[[str], Deployed]) -> None:
    d = deploy("valkey")
    with d.server.client() as c:  # a replica of nothing: role slave at once, writes refused (READONLY)
        c.execute_command("REPLICAOF", LOOPBACK, str(free_port()))
    writes = et.ToolSpec(d.tool, ["get", "set", "incr"], requests=200, clients=1)

    with pytest.raises(et.EngineToolError) as err:
        et.run_engine_tool(writes, LOOPBACK, d.server.port, "admin", d.password_file, LocalExecutor())

    where = f"valkey-benchmark against {LOOPBACK}:{d.server.port}"
    assert str(err.value) == f"{where}: a replica, which refuses the write tests set, incr; point it at the primary"
    assert d.server.bench_users() == []

    reads = et.ToolSpec(d.tool, ["get", "ping_mbulk"], requests=200, clients=1)
    result = et.run_engine_tool(reads, LOOPBACK, d.server.port, "admin", d.password_file, LocalExecutor())
    assert result["tests"]["get"]["rps"] > 0
    assert d.server.bench_users() == []


def test_remove_leftover_users_deletes_only_kvt_bench_users(deploy: Callable[[str], Deployed]) -> None:
    d = deploy("redis")
    with d.server.client(decode_responses=True) as c:
        c.execute_command("ACL", "SETUSER", "kvt-bench-abc", "on", "nopass", "+ping")
        c.execute_command("ACL", "SETUSER", "kvt-benchmark-keeper", "off")  # a near miss that must stay
        assert et.remove_leftover_users(c) == ["kvt-bench-abc"]
        assert et.remove_leftover_users(c) == []
    assert d.server.acl_users() == ["admin", "default", "kvt-benchmark-keeper"]


def test_heal_finds_the_instances_from_the_inventory_and_removes_what_a_killed_run_left(
    deploy: Callable[[str], Deployed],
) -> None:
    from kvtestbed.inventory import Inventory
    from kvtestbed.scenarios.wiring import heal_engine_tool_users

    d = deploy("redis")
    with d.server.client(decode_responses=True) as c:
        c.execute_command("ACL", "SETUSER", "kvt-bench-0123456789ab", "on", "nopass", "+ping")
    listing = {"_meta": {"hostvars": {"r1": {"ansible_host": LOOPBACK,
                                             "redis_kvstore": {"engine": "redis", "ports": [d.server.port]}},
                                      "down": {"ansible_host": "127.0.0.9",  # nothing listens: left alone
                                               "redis_kvstore": {"engine": "redis", "ports": [d.server.port]}}}},
               "all": {"children": ["redis"]}, "redis": {"hosts": ["r1", "down"]}}
    inventory = Inventory.from_listing("test", listing)
    secrets_dir = d.password_file.parent
    (secrets_dir / "redis-admin").write_text(d.password + "\n")
    assert heal_engine_tool_users(inventory, secrets_dir) == [
        f"r1: removed ACL user kvt-bench-0123456789ab on port {d.server.port}"]
    assert d.server.bench_users() == []
    assert heal_engine_tool_users(inventory, secrets_dir) == []
