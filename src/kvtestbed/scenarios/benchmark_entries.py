"""The `benchmarks:` entries of a scenario file: the engines' own tools (redis-benchmark, valkey-benchmark,
keydb-benchmark) run by the runner one after another from the start of the measured phase, as an independent
reference beside our own figures (kvtestbed.load.engine_tools runs them; docs in scenarios/README.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from kvtestbed.load.engine_tools import TOOLS, ToolSpec
from kvtestbed.scenarios import schema
from kvtestbed.scenarios.errors import FieldError
from kvtestbed.scenarios.values import FieldPath, check_keys, choice, integer, mapping, name, sequence, text

_HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_GROUP = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")
DEFAULT_TESTS = ("set", "get")


@dataclass(frozen=True)
class Benchmark:
    name: str  # names its figures: benchmarks.<name>.<test>.<rps|p50_us|...>
    group: str  # the key-value group whose instance the tool hits
    target: str  # primary (asked of the servers when the tool starts) or a host of `group`
    host: str | None  # where the tool runs; None: the first loadgen host, else a host of the group not the target
    tool: str | None  # None: the group's engine's own tool
    spec: ToolSpec  # tests and sizes, checked now (tool replaced by the engine's at stage 2 when not given)

    def tool_spec(self, tool: str) -> ToolSpec:
        s = self.spec
        return ToolSpec(tool=tool, tests=s.tests, requests=s.requests, clients=s.clients, pipeline=s.pipeline,
                        value_size=s.value_size, keyspace=s.keyspace, timeout_s=s.timeout_s)  # fmt: skip


def parse_benchmarks(raw: Any) -> tuple[Benchmark, ...]:
    entries = tuple(_parse(entry, ("benchmarks", i)) for i, entry in enumerate(sequence(raw, ("benchmarks",))))
    names = [b.name for b in entries]
    for i, entry_name in enumerate(names):
        if entry_name in names[:i]:
            raise FieldError(("benchmarks", i, "name"), f"{entry_name!r} is used twice: names must be unique")
    return entries


def _parse(raw: Any, path: FieldPath) -> Benchmark:
    entry = mapping(raw, path)
    check_keys(entry, schema.BENCHMARK_FIELDS, path)
    group = text(entry.get("group"), (*path, "group"))
    if not _GROUP.match(group):
        raise FieldError((*path, "group"), f"{group!r} is not an inventory group name")
    target = text(entry.get("target", "primary"), (*path, "target"))
    if target != "primary" and not _HOST.match(target):
        raise FieldError((*path, "target"), f"{target!r}: give primary or a host name of the group")
    host = text(entry.get("host"), (*path, "host"), required=False) or None
    if host is not None and not _HOST.match(host):
        raise FieldError((*path, "host"), f"{host!r} is not a host name")
    tool = choice(entry["tool"], (*path, "tool"), TOOLS, "engine tool") if "tool" in entry else None
    tests = entry.get("tests", list(DEFAULT_TESTS))
    values = {
        "tests": [text(t, (*path, "tests", i)) for i, t in enumerate(sequence(tests, (*path, "tests")))],
        "requests": integer(entry.get("requests", 100_000), (*path, "requests"), minimum=1, maximum=10_000_000),
        "clients": integer(entry.get("clients", 50), (*path, "clients"), minimum=1, maximum=10_000),
        "pipeline": integer(entry.get("pipeline", 1), (*path, "pipeline"), minimum=1, maximum=10_000),
        "value_size": integer(entry.get("value_size", 64), (*path, "value_size"), minimum=1, maximum=1 << 20),
        "keyspace": integer(entry.get("keyspace", 100_000), (*path, "keyspace"), minimum=1, maximum=(1 << 31) - 1),
    }
    try:
        spec = ToolSpec(tool=tool or TOOLS[0], **values)
    except ValueError as exc:
        raise FieldError((*path, "tests"), str(exc).removeprefix("engine tool: ")) from None
    return Benchmark(name=name(entry.get("name"), (*path, "name")), group=group, target=target, host=host, tool=tool,
                     spec=spec)  # fmt: skip
