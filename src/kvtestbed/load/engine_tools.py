"""The engines' own benchmark tools (redis-benchmark, valkey-benchmark, keydb-benchmark) as an independent reference
beside our load: one run of a tool against one instance, its CSV turned into rps and integer-microsecond latencies.

These tools take a password only as `-a <password>` on their command line, where `ps` shows it. So no secret goes
there: the controller logs in to the target instance as `admin` (password read from its secrets file) and creates a
throwaway ACL user `kvt-bench-<hex>` that is `nopass` and may run exactly the commands of the chosen tests on the
keys those tests touch. The tool logs in as that user with a meaningless placeholder password; the user is deleted
afterwards, and remove_leftover_users() heals what a killed run left behind. ACL users are per instance (never
replicated), so the user is made on the very instance the tool hits.

The tool runs wherever `execute(command, timeout_s)` runs commands: Remote.run on a lab host, a local subprocess in
tests. Errors are one line naming the tool, the host and what to do; never a password.
"""

from __future__ import annotations

import csv
import math
import secrets
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import redis

TOOLS = ("redis-benchmark", "valkey-benchmark", "keydb-benchmark")
ENGINE_TOOLS = {"redis": "redis-benchmark", "valkey": "valkey-benchmark", "keydb": "keydb-benchmark"}

# the tools' -t names -> the commands each sends (redis-benchmark 7.0 / valkey-benchmark 8.0 / keydb 6.3 agree)
TEST_COMMANDS: dict[str, tuple[str, ...]] = {
    "ping_inline": ("ping",),
    "ping_mbulk": ("ping",),
    "set": ("set",),
    "get": ("get",),
    "incr": ("incr",),
    "lpush": ("lpush",),
    "rpush": ("rpush",),
    "lpop": ("lpop",),
    "rpop": ("rpop",),
    "sadd": ("sadd",),
    "hset": ("hset",),
    "spop": ("spop",),
    "mset": ("mset",),
}
# tests that only read: allowed on a replica
READ_ONLY_TESTS = frozenset({"ping_inline", "ping_mbulk", "get"})
# what the tools send besides their tests: AUTH for --user, CONFIG GET save and appendonly at start (without it
# they warn "Could not fetch server CONFIG"; seen in INFO commandstats of redis-benchmark 7.0 and valkey-benchmark
# 8.0), PING; HELLO (their -3) and CLIENT SETNAME are not sent by those builds, allowed in case another one does
STARTUP_COMMANDS = ("ping", "config|get", "hello", "auth", "client|setname")
# the keys the built-in tests touch with -r: key:<12 digits> (set, get, mset), counter:<12 digits> (incr), and the
# fixed mylist, myset, myhash
KEY_PATTERNS = ("~key:*", "~counter:*", "~mylist", "~myset", "~myhash")

USER_PREFIX = "kvt-bench-"
# the tool needs -a to send `AUTH <user> <password>`; the user is nopass, so any word will do
PLACEHOLDER_PASSWORD = "unused"

MAX_REQUESTS = 10_000_000
MAX_KEYSPACE = 2**31 - 1  # the tools parse -r into a C int
MAX_VALUE_SIZE = 512 * 1024 * 1024  # the servers' default proto-max-bulk-len
DEFAULT_TIMEOUT_S = 600.0
VERSION_TIMEOUT_S = 30.0
ADMIN_TIMEOUT_S = 10.0

CSV_COLUMNS = (
    "test",
    "rps",
    "avg_latency_ms",
    "min_latency_ms",
    "p50_latency_ms",
    "p95_latency_ms",
    "p99_latency_ms",
    "max_latency_ms",
)
# the shell's "command not found"
RC_NOT_FOUND = 127


class EngineToolError(Exception):
    """One line: the tool, the host, what went wrong and what to do."""


class _Completed(Protocol):
    """What Remote.run returns (kvtestbed.remote.Completed)."""

    @property
    def rc(self) -> int: ...

    @property
    def stdout(self) -> str: ...

    @property
    def stderr(self) -> str: ...


# execute(command, timeout_s) -> (rc, stdout, stderr), or an object with rc/stdout/stderr like Remote.run's
Executor = Callable[[str, float], "tuple[int, str, str] | _Completed"]


def tool_for_engine(engine: str) -> str:
    try:
        return ENGINE_TOOLS[engine]
    except KeyError:
        raise ValueError(f"engine tool: unknown engine {engine!r} (one of {', '.join(ENGINE_TOOLS)})") from None


def _positive_int(name: str, value: object, upper: int | None = None) -> None:
    bound = f" up to {upper}" if upper is not None else ""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or (upper is not None and value > upper):
        raise ValueError(f"engine tool: {name} must be a positive integer{bound} (got {value!r})")


@dataclass(frozen=True)
class ToolSpec:
    """One run of an engine's benchmark tool: which tool, which of its built-in tests, how hard."""

    tool: str
    tests: Sequence[str]
    requests: int
    clients: int
    pipeline: int = 1
    value_size: int = 64
    keyspace: int = 100_000
    timeout_s: float = DEFAULT_TIMEOUT_S

    def __post_init__(self) -> None:
        if self.tool not in TOOLS:
            raise ValueError(f"engine tool: unknown tool {self.tool!r} (one of {', '.join(TOOLS)})")
        tests = self.tests.split(",") if isinstance(self.tests, str) else list(self.tests)
        tests = [str(t).strip().lower() for t in tests]
        if not tests or not all(tests):
            raise ValueError("engine tool: tests must name at least one test, e.g. [set, get]")
        for test in tests:
            if test not in TEST_COMMANDS:
                raise ValueError(f"engine tool: unknown test {test!r} (one of {', '.join(TEST_COMMANDS)})")
        if len(set(tests)) != len(tests):
            raise ValueError(f"engine tool: a test is listed twice in {', '.join(tests)}")
        object.__setattr__(self, "tests", tuple(tests))  # frozen: normalised once here
        _positive_int("requests", self.requests, MAX_REQUESTS)
        _positive_int("clients", self.clients)
        _positive_int("pipeline", self.pipeline)
        _positive_int("value_size", self.value_size, MAX_VALUE_SIZE)
        _positive_int("keyspace", self.keyspace, MAX_KEYSPACE)
        timeout = self.timeout_s
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout < math.inf:
            raise ValueError(f"engine tool: timeout_s must be a positive number of seconds (got {timeout!r})")

    def settings(self) -> dict[str, Any]:
        return {
            "tests": list(self.tests),
            "requests": self.requests,
            "clients": self.clients,
            "pipeline": self.pipeline,
            "value_size": self.value_size,
            "keyspace": self.keyspace,
        }


def acl_rules(tests: Sequence[str]) -> list[str]:
    """ACL SETUSER rules for the temporary user: no password, the tests' keys and commands, nothing else."""
    commands = sorted({c for t in tests for c in TEST_COMMANDS[t]} | set(STARTUP_COMMANDS))
    return ["on", "nopass", "resetkeys", "resetchannels", *KEY_PATTERNS, "-@all", *(f"+{c}" for c in commands)]


def build_command(spec: ToolSpec, host: str, port: int, user: str) -> str:
    """The tool's command line: the temporary user and the placeholder password, never a secret."""
    argv = [
        spec.tool,
        "-h",
        host,
        "-p",
        str(port),
        "--user",
        user,
        "-a",
        PLACEHOLDER_PASSWORD,
        "--csv",
        "-c",
        str(spec.clients),
        "-n",
        str(spec.requests),
        "-P",
        str(spec.pipeline),
        "-d",
        str(spec.value_size),
        "-r",
        str(spec.keyspace),
        "-t",
        ",".join(spec.tests),
    ]
    return " ".join(shlex.quote(a) for a in argv)


def _ms_to_us(text: str, column: str, label: str) -> int:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{label}: {column} is {text!r}, not a latency")
    return round(value * 1000)


def _test_key(label: str) -> str:
    # "MSET (10 keys)" -> mset, "PING_INLINE" -> ping_inline: the -t name of the test
    return label.split(" (", 1)[0].strip().lower()


def parse_csv(text: str) -> dict[str, dict[str, Any]]:
    """The tool's --csv output -> {test: {rps, avg_us, min_us, p50_us, p95_us, p99_us, max_us}} keyed by -t name.

    ValueError (one line) when there is no header, a row is short, or a number is not one; an rps of inf (a run
    shorter than the tool's millisecond clock) is one of those.
    """
    # split on \n only: a progress line the tool overwrote with \r is dropped, the row after its \r kept
    lines = [line.split("\r")[-1].strip() for line in text.split("\n")]
    rows = list(csv.reader(line for line in lines if line))
    start = next((i for i, row in enumerate(rows) if row and row[0] == "test"), None)
    if start is None:
        raise ValueError('no CSV header ("test","rps",...) in the output')
    header = tuple(rows[start])
    if header != CSV_COLUMNS:
        raise ValueError(f"unexpected CSV header {','.join(header)} (expected {','.join(CSV_COLUMNS)})")
    results: dict[str, dict[str, Any]] = {}
    for row in rows[start + 1 :]:
        if len(row) != len(CSV_COLUMNS):
            raise ValueError(f"CSV row with {len(row)} fields instead of {len(CSV_COLUMNS)}: {','.join(row)[:80]}")
        label = row[0]
        try:
            rps = float(row[1])
        except ValueError:
            raise ValueError(f"{label}: rps is {row[1]!r}, not a number") from None
        if not math.isfinite(rps) or rps < 0:
            raise ValueError(f"{label}: rps is {row[1]!r} (too few requests to time; raise requests)")
        entry: dict[str, Any] = {"rps": rps}
        for column, value in zip(CSV_COLUMNS[2:], row[2:], strict=True):
            entry[column.removesuffix("_latency_ms") + "_us"] = _ms_to_us(value, column, label)
        results.setdefault(_test_key(label), entry)
    return results


def _run(execute: Executor, command: str, timeout_s: float, what: str) -> tuple[int, str, str]:
    try:
        done = execute(command, timeout_s)
    except Exception as exc:  # the executor's own failure (SSH down, timeout): its message is one line
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise EngineToolError(f"{what}: {detail}") from None
    if isinstance(done, tuple):
        rc, out, err = done
        return int(rc), str(out), str(err)
    return int(done.rc), done.stdout, done.stderr


def _last_line(*texts: str) -> str:
    for text in texts:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if lines:
            return lines[-1][:200]
    return "no output"


def tool_version(tool: str, execute: Executor, where: str) -> str:
    """`<tool> --version`'s first line; EngineToolError when the tool is not installed where it should run."""
    what = f"{tool} on {where}"
    rc, out, err = _run(execute, f"{shlex.quote(tool)} --version", VERSION_TIMEOUT_S, what)
    if rc == RC_NOT_FOUND:
        package = tool.replace("-benchmark", "-tools")
        raise EngineToolError(f"{what}: not installed (install {package} there, or pick another host)")
    if rc != 0 or not out.strip():
        raise EngineToolError(f"{what}: --version failed ({_last_line(err, out)}); is the tool broken there?")
    return out.strip().splitlines()[0]


def _read_password(path: Path, admin_user: str, what: str) -> str:
    try:
        password = path.read_text().strip()
    except OSError as exc:
        raise EngineToolError(
            f"{what}: password file {path} of {admin_user} cannot be read ({exc.strerror}; run kvtestbed deploy?)"
        ) from None
    if not password:
        raise EngineToolError(f"{what}: password file {path} of {admin_user} is empty")
    return password


def _admin_client(host: str, port: int, admin_user: str, password_file: Path, what: str) -> redis.Redis:
    """The controller's own connection to the instance, as admin_user; `what` starts every error."""
    client = redis.Redis(
        host=host,
        port=port,
        username=admin_user,
        password=_read_password(password_file, admin_user, what),
        socket_timeout=ADMIN_TIMEOUT_S,
        socket_connect_timeout=ADMIN_TIMEOUT_S,
        decode_responses=True,
    )
    try:
        client.ping()
    except redis.AuthenticationError:
        client.close()
        raise EngineToolError(
            f"{what}: the instance refused {admin_user} (check the password in {password_file})"
        ) from None
    except redis.RedisError as exc:
        client.close()
        raise EngineToolError(f"{what}: the controller cannot reach the instance as {admin_user} ({exc})") from None
    return client


def _check_target(client: redis.Redis, spec: ToolSpec, what: str) -> None:
    """Refuse instances the tools would fail on halfway: a cluster node (MOVED), a replica for write tests."""
    cluster = client.info("cluster")
    if str(cluster.get("cluster_enabled", 0)) == "1":
        raise EngineToolError(f"{what}: a cluster node; the engine tool baseline runs against standalone instances")
    role = client.info("replication").get("role")
    writes = [t for t in spec.tests if t not in READ_ONLY_TESTS]
    if role == "slave" and writes:
        raise EngineToolError(
            f"{what}: a replica, which refuses the write tests {', '.join(writes)}; point it at the primary"
        )


def _names(reply: Any) -> list[str]:
    return [n.decode() if isinstance(n, bytes) else str(n) for n in reply or []]


def create_temp_user(client: redis.Redis, tests: Sequence[str]) -> str:
    """A new `kvt-bench-<hex>` user allowed exactly the tests' commands on their keys; its name."""
    for _ in range(5):
        name = f"{USER_PREFIX}{secrets.token_hex(6)}"
        if name not in _names(client.execute_command("ACL", "USERS")):
            client.execute_command("ACL", "SETUSER", name, *acl_rules(tests))
            return name
    raise EngineToolError("could not pick an unused kvt-bench- user name")  # 48 random bits: never in practice


def remove_leftover_users(client: redis.Redis) -> list[str]:
    """Delete every kvt-bench-* user on the instance `client` is logged in to (admin); the names deleted."""
    leftovers = [n for n in _names(client.execute_command("ACL", "USERS")) if n.startswith(USER_PREFIX)]
    if leftovers:
        client.execute_command("ACL", "DELUSER", *leftovers)
    return leftovers


def heal_leftover_users(host: str, port: int, admin_user: str, admin_password_file: str | Path) -> list[str]:
    """remove_leftover_users on host:port, logged in as admin_user; EngineToolError (one line) when it cannot."""
    what = f"{USER_PREFIX}* users on {host}:{port}"
    client = _admin_client(host, port, admin_user, Path(admin_password_file), what)
    try:
        return remove_leftover_users(client)
    except redis.RedisError as exc:
        raise EngineToolError(f"{what}: {admin_user} cannot list or delete them ({exc})") from None
    finally:
        client.close()


def _tool_failure(spec: ToolSpec, where: str, target: str, rc: int, out: str, err: str) -> EngineToolError:
    line = _last_line(err, out)
    what = f"{spec.tool} on {where} against {target}"
    if "WRONGPASS" in err or "NOAUTH" in err:
        return EngineToolError(f"{what}: the temporary user was refused ({line}); does the tool support --user?")
    if "NOPERM" in err:
        return EngineToolError(f"{what}: a command outside the temporary user's rules ({line}); report this")
    if "Could not connect" in err:
        return EngineToolError(f"{what}: cannot reach the instance from {where} ({line})")
    return EngineToolError(f"{what}: exit {rc} ({line})")


@dataclass
class ToolRun:
    command: str = ""
    duration_s: float = 0.0
    tests: dict[str, dict[str, Any]] = field(default_factory=dict)


def run_tool(spec: ToolSpec, host: str, port: int, user: str, execute: Executor, where: str) -> ToolRun:
    """One run of the tool as `user` (who must exist): its command line, duration and figures per test."""
    run = ToolRun(command=build_command(spec, host, port, user))
    target = f"{host}:{port}"
    started = time.monotonic()
    rc, out, err = _run(execute, run.command, spec.timeout_s, f"{spec.tool} on {where}")
    run.duration_s = round(time.monotonic() - started, 3)
    if rc != 0:
        raise _tool_failure(spec, where, target, rc, out, err)
    try:
        parsed = parse_csv(out)
    except ValueError as exc:
        raise EngineToolError(f"{spec.tool} on {where}: unreadable output ({exc})") from None
    missing = [t for t in spec.tests if t not in parsed]
    if missing:
        raise EngineToolError(
            f"{spec.tool} on {where}: no result for {', '.join(missing)} ({_last_line(err, out)}); "
            "does this version know the test?"
        )
    run.tests = {t: parsed[t] for t in spec.tests}
    return run


def _run_as(
    client: redis.Redis, user: str, spec: ToolSpec, host: str, port: int, execute: Executor, where: str
) -> ToolRun:
    """The tool run as `user`, who is deleted afterwards whatever happens."""
    ok = False
    try:
        run = run_tool(spec, host, port, user, execute, where)
        ok = True
        return run
    finally:
        try:
            client.execute_command("ACL", "DELUSER", user)
        except redis.RedisError as exc:
            if ok:  # after a failure, that first error is the one to tell; the runner's heal removes the user
                raise EngineToolError(
                    f"{spec.tool} against {host}:{port}: temporary user {user} could not be deleted ({exc}); "
                    "remove_leftover_users will"
                ) from None


def run_engine_tool(
    spec: ToolSpec,
    host: str,
    port: int,
    admin_user: str,
    admin_password_file: str | Path,
    execute: Executor,
    *,
    tool_host: str = "the tool host",
    tls: bool = False,
) -> dict[str, Any]:
    """Run spec.tool against host:port through `execute` as a temporary ACL user; its figures per test.

    `tool_host` names where `execute` runs, for messages. The controller itself connects to host:port as
    admin_user (password from admin_password_file) to create and later delete the temporary user.
    """
    target = f"{host}:{port}"
    what = f"{spec.tool} against {target}"
    if tls:
        raise EngineToolError(f"{what}: a TLS instance; the engine tool baseline supports plain-text instances only")
    version = tool_version(spec.tool, execute, tool_host)
    client = _admin_client(host, port, admin_user, Path(admin_password_file), what)
    try:
        try:
            _check_target(client, spec, what)
            user = create_temp_user(client, spec.tests)
        except redis.RedisError as exc:
            raise EngineToolError(f"{what}: {admin_user} cannot prepare the temporary user ({exc})") from None
        run = _run_as(client, user, spec, host, port, execute, tool_host)
    finally:
        client.close()
    return {
        "tool": spec.tool,
        "version": version,
        "tool_host": tool_host,
        "target": target,
        "command": run.command,
        "duration_s": run.duration_s,
        "settings": spec.settings(),
        "tests": run.tests,
    }
