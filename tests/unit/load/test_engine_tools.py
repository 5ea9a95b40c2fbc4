"""The engine benchmark tools' driver without a server: their CSV (captured from the real tools on loopback),
the command line (no secret on it), the temporary user's ACL rules, ToolSpec's one-line errors, and how a tool's
failure becomes one line. Runs against real servers: tests/integration/load/test_engine_tools_live.py."""

from __future__ import annotations

import shlex

import pytest

from kvtestbed.load import engine_tools as et
from kvtestbed.remote import Completed

# redis-benchmark 7.0.15 -h 127.0.0.1 -n 2000 -c 10 -r 100000 -d 64 -t <all 13> --csv, against redis-server 7.0.15
REDIS_7_ALL = """\
"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
"PING_INLINE","62500.00","0.102","0.032","0.087","0.135","0.255","4.471"
"PING_MBULK","74074.07","0.083","0.032","0.087","0.127","0.143","0.199"
"SET","68965.52","0.096","0.032","0.095","0.143","0.191","0.287"
"GET","68965.52","0.093","0.032","0.087","0.143","0.183","1.255"
"INCR","64516.13","0.103","0.032","0.095","0.143","0.239","2.503"
"LPUSH","68965.52","0.090","0.016","0.087","0.143","0.167","0.223"
"RPUSH","66666.67","0.095","0.032","0.087","0.143","0.183","1.639"
"LPOP","64516.13","0.096","0.032","0.095","0.143","0.167","2.159"
"RPOP","64516.13","0.093","0.032","0.095","0.143","0.175","0.967"
"SADD","64516.13","0.095","0.024","0.087","0.143","0.175","3.327"
"HSET","57142.86","0.120","0.032","0.103","0.207","0.327","3.927"
"SPOP","64516.13","0.098","0.024","0.095","0.151","0.183","0.359"
"MSET (10 keys)","36363.64","0.237","0.056","0.231","0.407","0.487","2.839"
"""

# valkey-benchmark 8.0.1 -n 2000 -c 10 -r 100000 -d 64 -P 4 -t set,get,mset --csv, against valkey-server 8.0.1
VALKEY_8_PIPELINED = """\
"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
"SET","166666.67","0.203","0.056","0.167","0.343","0.855","2.503"
"GET","181818.19","0.149","0.032","0.127","0.191","2.335","2.375"
"MSET (10 keys)","64516.13","0.533","0.064","0.487","0.903","1.127","3.447"
"""

# redis-benchmark 7.0.15 -n 20 -c 1: INCR finished within one millisecond tick, so its rps is "inf"
REDIS_7_TOO_SHORT = """\
"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
"SET","20000.00","0.038","0.016","0.039","0.071","0.087","0.087"
"INCR","inf","0.035","0.016","0.031","0.055","0.087","0.087"
"""

# redis-benchmark 7.0.15 -t nosuch --csv: the header, no row, exit 0
REDIS_7_UNKNOWN_TEST = REDIS_7_ALL.splitlines(keepends=True)[0]

LATENCIES = ("min_us", "p50_us", "p95_us", "p99_us", "max_us")


# --- parse_csv ------------------------------------------------------------------------------------------------


def test_parse_csv_reads_every_test_of_redis_benchmark_7() -> None:
    parsed = et.parse_csv(REDIS_7_ALL)
    assert list(parsed) == list(et.TEST_COMMANDS)  # keyed by the -t names, "MSET (10 keys)" included
    assert parsed["set"] == {
        "rps": 68965.52,
        "avg_us": 96,
        "min_us": 32,
        "p50_us": 95,
        "p95_us": 143,
        "p99_us": 191,
        "max_us": 287,
    }
    assert parsed["mset"]["p99_us"] == 487
    assert parsed["ping_inline"]["max_us"] == 4471
    for test, entry in parsed.items():
        values = [entry[k] for k in LATENCIES]
        assert all(isinstance(v, int) for v in values), test
        assert values == sorted(values), test
        assert entry["min_us"] <= entry["avg_us"] <= entry["max_us"], test


def test_parse_csv_reads_valkey_benchmark_8() -> None:
    parsed = et.parse_csv(VALKEY_8_PIPELINED)
    assert sorted(parsed) == ["get", "mset", "set"]
    assert parsed["get"]["rps"] == pytest.approx(181818.19)
    assert parsed["get"]["p99_us"] == 2335


def test_parse_csv_skips_what_comes_before_the_header_and_progress_overwritten_by_cr() -> None:
    text = "WARNING: Could not fetch server CONFIG\n" + REDIS_7_ALL.replace(
        '"GET"', 'GET: rps=1.0 (overall: 1.0)\r"GET"'
    )
    parsed = et.parse_csv(text)
    assert parsed["get"]["rps"] == 68965.52


def test_parse_csv_converts_milliseconds_to_whole_microseconds() -> None:
    header = REDIS_7_UNKNOWN_TEST
    parsed = et.parse_csv(header + '"GET","1.00","0.0005","0.0004","1.2345","2.000","10.001","1000.000"\n')
    assert parsed["get"] == {
        "rps": 1.0,
        "avg_us": 0,
        "min_us": 0,
        "p50_us": 1234,  # 1234.5 rounds to even
        "p95_us": 2000,
        "p99_us": 10001,
        "max_us": 1000000,
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no CSV header"),
        ("SET: 100000.00 requests per second, p50=0.1 msec\n", "no CSV header"),
        ('"test","rps"\n"SET","1000.00"\n', "unexpected CSV header test,rps"),
        (REDIS_7_TOO_SHORT, "INCR: rps is 'inf' (too few requests to time; raise requests)"),
        (REDIS_7_UNKNOWN_TEST + '"SET","1000.00","0.1"\n', "CSV row with 3 fields instead of 8"),
        (REDIS_7_UNKNOWN_TEST + '"SET","fast","1","1","1","1","1","1"\n', "SET: rps is 'fast', not a number"),
        (
            REDIS_7_UNKNOWN_TEST + '"SET","10.0","1","1","-1","1","1","1"\n',
            "SET: p50_latency_ms is '-1', not a latency",
        ),
        (REDIS_7_UNKNOWN_TEST + '"SET","10.0","1","1","1","nan","1","1"\n', "SET: p95_latency_ms is 'nan'"),
    ],
)
def test_parse_csv_refuses_what_it_cannot_read_in_one_line(text: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        et.parse_csv(text)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_parse_csv_of_a_header_alone_is_empty() -> None:
    assert et.parse_csv(REDIS_7_UNKNOWN_TEST) == {}


# --- command line and ACL rules -------------------------------------------------------------------------------


def test_command_carries_the_temporary_user_and_a_placeholder_never_a_secret() -> None:
    spec = et.ToolSpec("valkey-benchmark", ["set", "mset"], requests=5000, clients=8, pipeline=16, value_size=100)
    command = et.build_command(spec, "10.0.0.5", 6380, "kvt-bench-0a1b2c3d4e5f")
    argv = shlex.split(command)
    assert argv[0] == "valkey-benchmark"
    assert "--csv" in argv

    def after(flag: str) -> str:
        assert argv.count(flag) == 1, flag
        return argv[argv.index(flag) + 1]

    assert [after(f) for f in ("-h", "-p", "--user", "-a", "-c", "-n", "-P", "-d", "-r", "-t")] == [
        "10.0.0.5",
        "6380",
        "kvt-bench-0a1b2c3d4e5f",
        et.PLACEHOLDER_PASSWORD,
        "8",
        "5000",
        "16",
        "100",
        "100000",
        "set,mset",
    ]
    assert len(argv) == 1 + 1 + 2 * 10  # the tool, --csv and the ten options: nothing else on the line


def test_command_quotes_what_the_shell_would_read() -> None:
    spec = et.ToolSpec("redis-benchmark", ["get"], requests=10, clients=1)
    command = et.build_command(spec, "host name;rm -rf x", 6379, "kvt-bench-00")
    assert shlex.split(command)[2] == "host name;rm -rf x"


def test_acl_rules_allow_the_tests_commands_and_keys_and_nothing_else() -> None:
    rules = et.acl_rules(["set", "get", "mset"])
    assert rules == [
        "on",
        "nopass",
        "resetkeys",
        "resetchannels",
        "~key:*",
        "~counter:*",
        "~mylist",
        "~myset",
        "~myhash",
        "-@all",
        "+auth",
        "+client|setname",
        "+config|get",
        "+get",
        "+hello",
        "+mset",
        "+ping",
        "+set",
    ]
    assert "+lpush" not in et.acl_rules(["set"])
    assert "+lpush" in et.acl_rules(["lpush"])


# --- ToolSpec and tool_for_engine -----------------------------------------------------------------------------


def test_tool_spec_normalises_tests() -> None:
    assert et.ToolSpec("redis-benchmark", "SET, get", requests=1, clients=1).tests == ("set", "get")
    assert et.ToolSpec("keydb-benchmark", ["ping_mbulk"], requests=10_000_000, clients=1).requests == 10_000_000


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tool": "memtier_benchmark"}, "engine tool: unknown tool 'memtier_benchmark' (one of redis-benchmark, "),
        ({"tests": ["set", "lrange_100"]}, "engine tool: unknown test 'lrange_100' (one of ping_inline, "),
        ({"tests": []}, "engine tool: tests must name at least one test"),
        ({"tests": "set,,get"}, "engine tool: tests must name at least one test"),
        ({"tests": ["set", "SET"]}, "engine tool: a test is listed twice in set, set"),
        ({"requests": 0}, "engine tool: requests must be a positive integer up to 10000000 (got 0)"),
        ({"requests": 10_000_001}, "engine tool: requests must be a positive integer up to 10000000 (got 10000001)"),
        ({"requests": True}, "engine tool: requests must be a positive integer up to 10000000 (got True)"),
        ({"requests": 100.0}, "engine tool: requests must be a positive integer up to 10000000 (got 100.0)"),
        ({"clients": -1}, "engine tool: clients must be a positive integer (got -1)"),
        ({"pipeline": 0}, "engine tool: pipeline must be a positive integer (got 0)"),
        ({"value_size": 0}, "engine tool: value_size must be a positive integer up to 536870912 (got 0)"),
        ({"keyspace": 2**31}, "engine tool: keyspace must be a positive integer up to 2147483647 (got 2147483648)"),
        ({"timeout_s": 0}, "engine tool: timeout_s must be a positive number of seconds (got 0)"),
        ({"timeout_s": float("inf")}, "engine tool: timeout_s must be a positive number of seconds (got inf)"),
    ],
)
def test_tool_spec_refuses_bad_input_in_one_line(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"tool": "redis-benchmark", "tests": ["set"], "requests": 1000, "clients": 10}
    with pytest.raises(ValueError) as err:
        et.ToolSpec(**{**args, **kwargs})  # type: ignore[arg-type]
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_tool_for_engine() -> None:
    assert et.tool_for_engine("redis") == "redis-benchmark"
    assert et.tool_for_engine("valkey") == "valkey-benchmark"
    assert et.tool_for_engine("keydb") == "keydb-benchmark"
    with pytest.raises(ValueError, match=r"^engine tool: unknown engine 'nats' \(one of redis, valkey, keydb\)$"):
        et.tool_for_engine("nats")


# --- the tool's failures as one line (the executor is the seam: what a host would answer) ----------------------


def _answering(rc: int, stdout: str = "", stderr: str = "") -> et.Executor:
    def execute(command: str, timeout_s: float) -> tuple[int, str, str]:
        return rc, stdout, stderr

    return execute


def test_tool_version_reads_a_remote_style_completed_too() -> None:
    def remote_run(command: str, timeout: float = 30.0) -> Completed:
        assert command == "redis-benchmark --version"
        return Completed(0, "redis-benchmark 7.0.15\n", "")

    assert et.tool_version("redis-benchmark", remote_run, "lg1") == "redis-benchmark 7.0.15"


def test_tool_version_names_a_missing_tool_and_its_package() -> None:
    with pytest.raises(et.EngineToolError) as err:
        et.tool_version("valkey-benchmark", _answering(127, "", "sh: 1: valkey-benchmark: not found"), "lg1")
    assert str(err.value) == "valkey-benchmark on lg1: not installed (install valkey-tools there, or pick another host)"


def test_an_executor_failure_becomes_one_line() -> None:
    def unreachable(command: str, timeout_s: float) -> tuple[int, str, str]:
        raise RuntimeError("host lg1 (10.0.0.9): does not answer on SSH (Connection refused)\nsecond line")

    with pytest.raises(et.EngineToolError) as err:
        et.tool_version("redis-benchmark", unreachable, "lg1")
    assert str(err.value) == "redis-benchmark on lg1: host lg1 (10.0.0.9): does not answer on SSH (Connection refused)"


SPEC = et.ToolSpec("redis-benchmark", ["set", "get"], requests=2000, clients=4)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (
            (1, "", "Node 10.0.0.5:6379 replied with error:\nWRONGPASS invalid username-password pair\n"),
            "the temporary user was refused (WRONGPASS invalid username-password pair)",
        ),
        (
            (
                1,
                REDIS_7_UNKNOWN_TEST,
                "Error from server: NOPERM this user has no permissions to run the 'get' command",
            ),
            "a command outside the temporary user's rules (Error from server: NOPERM",
        ),
        (
            (1, "", "Could not connect to server at 10.0.0.5:6379: Connection refused\n"),
            "cannot reach the instance from lg1 (Could not connect to server at 10.0.0.5:6379: Connection refused)",
        ),
        ((139, "", ""), "exit 139 (no output)"),
        ((0, "Segmentation fault\n", ""), "unreadable output (no CSV header"),
        ((0, REDIS_7_UNKNOWN_TEST, ""), "no result for set, get"),
        ((0, REDIS_7_TOO_SHORT, ""), "unreadable output (INCR: rps is 'inf'"),
    ],
)
def test_run_tool_failures_name_tool_host_and_cause(answer: tuple[int, str, str], message: str) -> None:
    with pytest.raises(et.EngineToolError) as err:
        et.run_tool(SPEC, "10.0.0.5", 6379, "kvt-bench-00", _answering(*answer), "lg1")
    text = str(err.value)
    assert text.startswith("redis-benchmark on lg1")
    assert message in text
    assert "\n" not in text


def test_run_tool_keeps_the_requested_tests_in_order() -> None:
    run = et.run_tool(SPEC, "10.0.0.5", 6379, "kvt-bench-00", _answering(0, REDIS_7_ALL), "lg1")
    assert list(run.tests) == ["set", "get"]
    assert run.tests["get"]["p50_us"] == 87
    assert run.command == et.build_command(SPEC, "10.0.0.5", 6379, "kvt-bench-00")


def test_a_tls_instance_is_refused_before_anything_runs() -> None:
    ran: list[str] = []

    def execute(command: str, timeout_s: float) -> tuple[int, str, str]:
        ran.append(command)
        return 0, "", ""

    with pytest.raises(et.EngineToolError) as err:
        et.run_engine_tool(SPEC, "10.0.0.5", 6379, "admin", "/nonexistent/redis-admin", execute, tls=True)
    assert str(err.value) == (
        "redis-benchmark against 10.0.0.5:6379: a TLS instance; the engine tool baseline supports plain-text "
        "instances only"
    )
    assert ran == []


def test_a_missing_password_file_is_one_line_naming_it() -> None:
    def execute(command: str, timeout_s: float) -> tuple[int, str, str]:
        return 0, "redis-benchmark 7.0.15\n", ""

    with pytest.raises(et.EngineToolError) as err:
        et.run_engine_tool(SPEC, "127.0.0.1", 1, "admin", "/nonexistent/redis-admin", execute)
    assert str(err.value) == (
        "redis-benchmark against 127.0.0.1:1: password file /nonexistent/redis-admin of admin cannot be read "
        "(No such file or directory; run kvtestbed deploy?)"
    )
