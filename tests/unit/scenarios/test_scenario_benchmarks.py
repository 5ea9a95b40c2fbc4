"""`benchmarks:` entries (the engines' own tools): defaults, one-line errors, their figures in SLOs."""

from __future__ import annotations

import pytest

from kvtestbed.scenarios import ScenarioError, load_scenario


def test_defaults_and_the_tool_from_the_engine_later(valid, write_scenario):
    valid["benchmarks"] = [{"name": "b1", "group": "redis"}]
    (scenario,) = load_scenario(write_scenario(valid))
    (bench,) = scenario.benchmarks
    assert (bench.target, bench.host, bench.tool) == ("primary", None, None)
    assert (bench.spec.tests, bench.spec.requests, bench.spec.clients, bench.spec.pipeline) == (("set", "get"),
                                                                                                100000, 50, 1)
    assert bench.tool_spec("valkey-benchmark").tool == "valkey-benchmark"
    assert "redis" in scenario.groups_used()


@pytest.mark.parametrize(("entry", "expected"), [
    ({"name": "b", "group": "redis", "tests": ["sett"]},
     "benchmarks[0].tests: unknown test 'sett' (one of ping_inline, ping_mbulk, set, get, incr, lpush, rpush, lpop, "
     "rpop, sadd, hset, spop, mset)"),
    ({"name": "b", "group": "redis", "tool": "memtier"},
     "benchmarks[0].tool: unknown engine tool 'memtier' (redis-benchmark, valkey-benchmark, keydb-benchmark)"),
    ({"name": "b", "group": "redis", "clients": 0},
     "benchmarks[0].clients: 0 is out of range: must be between 1 and 10000"),
    ({"name": "b", "group": "redis", "threads": 4},
     "benchmarks[0].threads: unknown field (known: name, group, target, host, tool, tests, requests, clients, "
     "pipeline, value_size, keyspace)"),
    ({"name": "b", "group": "redis", "target": "the primary"},
     "benchmarks[0].target: 'the primary': give primary or a host name of the group"),
], ids=["test", "tool", "clients", "key", "target"])
def test_one_line_errors(valid, write_scenario, entry, expected):
    valid["benchmarks"] = [entry]
    path = write_scenario(valid)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert str(caught.value).startswith(f"{path}: {expected}"), str(caught.value)


def test_names_are_unique(valid, write_scenario):
    valid["benchmarks"] = [{"name": "b", "group": "redis"}, {"name": "b", "group": "valkey"}]
    with pytest.raises(ScenarioError, match=r"benchmarks\[1\]\.name: 'b' is used twice"):
        load_scenario(write_scenario(valid))


def test_a_benchmark_figure_needs_benchmarks(valid, write_scenario):
    valid["slo"] = ["benchmarks.b.get.rps > 1000"]
    with pytest.raises(ScenarioError, match=r"slo\[0\]: figure 'benchmarks.b.get.rps': the scenario has no benchmarks"):
        load_scenario(write_scenario(valid))
    valid["benchmarks"] = [{"name": "b", "group": "redis"}]
    (scenario,) = load_scenario(write_scenario(valid))
    assert [str(s) for s in scenario.slo] == ["benchmarks.b.get.rps > 1000"]
