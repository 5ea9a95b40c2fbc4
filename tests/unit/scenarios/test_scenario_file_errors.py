"""Stage 1, the file alone: every way a scenario file can be wrong gives ONE line naming the file, the field and
what to fix, and nothing else (no traceback, no partial result)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from kvtestbed.scenarios import ScenarioError, load_scenario

Mutation = Callable[[dict[str, Any]], None]


def put(path: str, value: Any) -> Mutation:
    """Set a dotted path (digits index lists), written here independently of the code under test."""

    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        node: Any = doc
        for part in parents:
            node = node[part]
        node[last] = value

    return mutate


def drop(path: str) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        node: Any = doc
        for part in parents:
            node = node[part]
        del node[last]

    return mutate


def both(*mutations: Mutation) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        for mutation in mutations:
            mutation(doc)

    return mutate


CASES: list[tuple[str, Mutation, str]] = [
    ("top-level typo", put("durration", 60),
     "durration: unknown field (known: name, description, tags, repeats, needs, warmup, duration, writers, agents, "
     "load, faults, replicas, benchmarks, checks, slo, sweep)"),
    ("name missing", drop("name"), "name: required"),
    ("name with a space", put("name", "my run"),
     "name: 'my run': use letters, digits, '-' and '_' only (it names files and figures)"),
    ("repeats zero", put("repeats", 0), "repeats: 0 is out of range: must be between 1 and 100"),
    ("duration missing", drop("duration"), "duration: required: the measured phase in seconds (e.g. 60 or \"2m\")"),
    ("duration zero", put("duration", "0s"), "duration: 0 s: must be > 0"),
    ("duration not a duration", put("duration", "soon"),
     "duration: 'soon' is not a duration: give seconds (30) or a string such as 30s, 2m, 1m30s"),
    ("duration a boolean", put("duration", True), "duration: give a duration (30, \"30s\", \"2m\"), not True (bool)"),
    ("warmup negative", put("warmup", -1), "warmup: -1 s is negative"),
    ("tags not a list", put("tags", "unit"), "tags: give a list, not 'unit'"),
    ("unknown engine", put("needs.engines.redis", "mysql"),
     "needs.engines.redis: unknown engine 'mysql' (redis, valkey, keydb, nats)"),
    ("unknown topology", put("needs.topologies.redis", "ring"),
     "needs.topologies.redis: unknown topology 'ring' (standalone, replication, cluster, mesh)"),
    ("needs typo", put("needs.group", ["redis"]), "needs.group: unknown field (known: groups, engines, topologies)"),
    ("writer typo", put("writers.0.rat", 5),
     "writers[0].rat: unknown field (known: name, group, strategy, rate, key_prefix, value_size, host, keys)"),
    ("writer strategy", put("writers.1.strategy", "smart"),
     "writers[1].strategy: unknown strategy 'smart' (redis-py, quorum, cluster, jetstream, node)"),
    ("writer rate zero", put("writers.0.rate", 0), "writers[0].rate: 0 ops/s: must be > 0 and <= 5000"),
    ("writer rate too high", put("writers.0.rate", 6000), "writers[0].rate: 6000 ops/s: must be > 0 and <= 5000"),
    ("writer rate missing", drop("writers.0.rate"), "writers[0].rate: required: operations per second"),
    ("writer names twice", put("writers.1.name", "w1"), "writers[1].name: 'w1' is already the name of writers[0]"),
    ("writer value size", put("writers.0.value_size", 0),
     "writers[0].value_size: 0 is out of range: must be between 1 and 1048576"),
    ("agent kind", put("agents.0.kind", "spy"),
     "agents[0].kind: unknown agent kind 'spy' (observer, expiry, streams, pipeline, hotkeys)"),
    ("agent typo", put("agents.0.configs", {}), "agents[0].configs: unknown field (known: name, kind, host, config)"),
    ("load without users", put("load.users", []),
     "load.users: name at least one kvload user class (python -m kvload.catalog)"),
    ("load profile", put("load.rate", "wave:rate=1,for=60"),
     "load.rate: rate profile 'wave': unknown, use one of constant, step, ramp, spike "
     "(e.g. constant:rate=1000,for=60)"),
    ("load profile too short", put("load.rate", "constant:rate=100,for=30"),
     "load.rate: the profile ends at 30 s, before the run's end at 65 s (warmup + duration): raise its for="),
    ("load option with prefix", put("load.options", {"kvt-keys": 10}),
     "load.options.kvt-keys: give kvload's option name without --kvt-, e.g. keys or get-ratio"),
    ("load from", put("load.from", "cloud"), "load.from: unknown place for Locust 'cloud' (controller, hosts)"),
    ("load from hosts with processes", both(put("load.from", "hosts"), put("load.processes", 2)),
     "load.processes: with from: hosts the workers are the loadgen hosts' (locust_workers): leave processes out"),
    ("load target", put("load.target", "redis host"),
     "load.target: 'redis host': give an inventory group or a URL such as redis://host:6379"),
    ("fault kind", put("faults.1.kind", "explode"),
     "faults[1].kind: unknown fault kind 'explode' (kill, stop, pause, partition, shape, netem, reboot, clock)"),
    ("fault typo", put("faults.0.duration", 5),
     "faults[0].duration: unknown field (known: at, for, kind, group, target, service, params)"),
    ("fault param unknown", put("faults.1.params", {"signal": "KILL", "force": True}),
     "faults[1].params.force: unknown parameter (kill takes signal)"),
    ("fault param of a kind without any", both(put("faults.1.kind", "stop"), put("faults.1.for", 5),
                                               put("faults.1.params", {"signal": "TERM"})),
     "faults[1].params.signal: unknown parameter (stop takes none)"),
    ("fault for required", drop("faults.0.for"),
     "faults[0].for: required for partition: seconds until the fault is healed"),
    ("fault after the end", put("faults.0.for", "65s"),
     "faults[0].for: the partition ends at 75 s (at 10 + for 65), after the run's end at 60 s (duration): shorten it "
     "or lengthen duration"),
    ("fault starts after the end", put("faults.1.at", "1m"),
     "faults[1].at: 60 s is not before the run's end at 60 s (duration)"),
    ("fault at missing", drop("faults.0.at"), "faults[0].at: required: seconds after the measured phase starts"),
    ("faults overlap", put("faults.1.at", 25),
     "faults[1]: overlaps faults[0] on redis/primary (partition 10-30 s, kill at 25 s): move one or give another "
     "target"),
    ("fault target", put("faults.0.target", "the leader"),
     "faults[0].target: 'the leader': give primary, replica, one, minority, majority, all, leader:<stream> or a host "
     "name"),
    ("fault service on a partition", put("faults.0.service", "kv"),
     "faults[0].service: not used by partition (it acts on hosts): remove it"),
    ("fault service unknown", put("faults.1.service", "kvv"),
     "faults[1].service: unknown service 'kvv' (kv, sentinel, nats, agent:<name>, <unit>.service)"),
    ("kill signal", put("faults.1.params", {"signal": "STOP"}),
     "faults[1].params.signal: unknown signal 'STOP' (KILL, TERM, INT, QUIT, HUP, ABRT, SEGV)"),
    ("partition shape", put("faults.0.params", {"shape": "ring"}),
     "faults[0].params.shape: unknown partition shape 'ring' (isolate, halves, one-way)"),
    ("one-way without direction", put("faults.0.params", {"shape": "one-way"}),
     "faults[0].params.direction: required"),
    ("direction without one-way", put("faults.0.params", {"shape": "isolate", "direction": "in"}),
     "faults[0].params.direction: only for shape one-way (this one is isolate): remove it"),
    ("halves of all", both(put("faults.0.params", {"shape": "halves"}), put("faults.0.target", "all")),
     "faults[0].params.shape: halves with target all leaves the other half empty: pick a smaller target"),
    ("shape without rate", both(put("faults.0.kind", "shape"), put("faults.0.params", {"burst": "32kbit"})),
     "faults[0].params.rate: required: a tc rate such as 1mbit or 512kbit"),
    ("shape latency", both(put("faults.0.kind", "shape"), put("faults.0.params", {"rate": "1mbit", "latency": 5})),
     "faults[0].params.latency: 5 is not a time such as 50ms"),
    ("netem without delay or loss", both(put("faults.0.kind", "netem"), put("faults.0.params", {})),
     "faults[0].params: netem needs delay, loss or both (e.g. {delay: 50ms, loss: 1%})"),
    ("netem loss", both(put("faults.0.kind", "netem"), put("faults.0.params", {"loss": "150%"})),
     "faults[0].params.loss: 150% is more than 100%"),
    ("clock step", both(put("faults.0.kind", "clock"), put("faults.0.params", {"step": "30s"})),
     "faults[0].params.step: '30s' is not a signed duration such as +30s or -2m"),
    ("check unknown", put("checks", ["lost-writes", "no-loss"]),
     "checks[1]: unknown check 'no-loss' (lost-writes, read-back, servers-agree, agents, conflicts)"),
    ("check twice", put("checks", ["lost-writes", "lost-writes"]), "checks[1]: 'lost-writes' is listed twice"),
    ("check needs writers", both(put("writers", []), put("slo", [])),
     "checks[0]: lost-writes reads back the writers' operations: add a writer"),
    ("slo unknown figure", put("slo.0", "clients.*.lots == 0"),
     "slo[0]: unknown figure 'clients.*.lots': no client field 'lots' (attempted, ok, fail, unknown, lost, "
     "unexpected, unknown_applied, unavailability_s, failover_s, ops_per_s, latency_us.p50, latency_us.p90, "
     "latency_us.p99, latency_us.p99.9, latency_us.max)"),
    ("slo unknown client", put("slo.1.figure", "clients.w3.failover_s"),
     "slo[1]: unknown figure 'clients.w3.failover_s': no client 'w3' (clients: w1, w2; or *)"),
    ("slo unknown family", put("slo.0", "latency.p99 <= 5"),
     "slo[0]: unknown figure 'latency.p99' (clients.<writer|*>.<field>, load.<name>, accounting.<name>, "
     "benchmarks.<name>, faults.count, run.duration_s)"),
    ("stream leader without a name", put("faults.0.target", "leader:"),
     "faults[0].target: 'leader:': name a JetStream stream after 'leader:' (A-Z a-z 0-9 - _)"),
    ("slo syntax", put("slo.0", "clients.*.lost is 0"),
     "slo[0]: 'clients.*.lost is 0': write '<figure> <op> <number>', e.g. 'clients.*.lost == 0' "
     "(ops: <=, >=, ==, <, >)"),
    ("slo threshold", put("slo.0", "clients.*.lost == none"), "slo[0]: threshold 'none' is not a number"),
    ("slo op", put("slo.1.op", "=<"), "slo[1].op: unknown operator '=<' (<=, >=, ==, <, >)"),
    ("slo without writers", both(put("writers", []), put("checks", []), put("slo", ["clients.*.lost == 0"])),
     "slo[0]: figure 'clients.*.lost': the scenario has no writers to measure it"),
    ("sweep not a mapping", put("sweep", ["duration"]),
     "sweep: give a mapping {<dotted path>: [values]}, e.g. {writers.0.rate: [100, 200]}"),
    ("sweep empty values", put("sweep", {"duration": []}), "sweep.duration: give a non-empty list of values"),
    ("sweep unknown path", put("sweep", {"writers.0.rat": [1, 2]}),
     "sweep.writers.0.rat: unknown field 'rat': writers[0] has name, group, strategy, rate, key_prefix, value_size, "
     "host, keys"),
    ("sweep index out of range", put("sweep", {"faults.5.for": [1, 2]}),
     "sweep.faults.5.for: faults has 2 entries (indices 0-1), no 5"),
    ("replicas not a mapping", put("replicas", [1]),
     "replicas: give a mapping {<group>: <replicas to keep attached>}, e.g. {redis: 1}"),
    ("replicas negative", put("replicas", {"redis": -1}),
     "replicas.redis: -1 is out of range: must be between 0 and 64"),
    ("replicas not a number", put("replicas", {"redis": "two"}), "replicas.redis: give a whole number, not 'two'"),
    ("replicas bad group", put("replicas", {"re dis": 1}), "replicas: 're dis' is not an inventory group name"),
    ("sweep too big", put("sweep", {"writers.0.rate": list(range(1, 20)), "duration": list(range(30, 50))}),
     "sweep: 380 combinations, more than 256: sweep fewer"),
]


@pytest.mark.parametrize(("mutation", "expected"), [(m, e) for _, m, e in CASES], ids=[c[0] for c in CASES])
def test_one_line_names_file_and_field(valid, write_scenario, mutation, expected):
    mutation(valid)
    path = write_scenario(valid)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert str(caught.value) == f"{path}: {expected}"
    assert "\n" not in str(caught.value)


def test_the_valid_scenario_loads(valid, write_scenario):
    (scenario,) = load_scenario(write_scenario(valid))
    assert (scenario.name, scenario.duration_s, scenario.warmup_s) == ("t", 60.0, 5.0)
    assert [f.kind for f in scenario.faults] == ["partition", "kill"]


def test_a_replica_count_sweeps_into_one_scenario_per_count(valid, write_scenario):
    valid["replicas"] = {"redis": 2}
    valid["sweep"] = {"replicas.redis": [2, 1, 0]}
    points = load_scenario(write_scenario(valid))
    assert [p.replicas for p in points] == [{"redis": 2}, {"redis": 1}, {"redis": 0}]
    assert [p.sweep_values for p in points] == [{"replicas.redis": 2}, {"replicas.redis": 1}, {"replicas.redis": 0}]
    assert "redis" in points[0].groups_used()


def test_a_sweep_point_is_named_in_the_error(valid, write_scenario):
    valid["sweep"] = {"writers.0.rate": [100, 9000]}
    path = write_scenario(valid)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert str(caught.value) == (f"{path} (sweep writers.0.rate=9000): writers[0].rate: 9000 ops/s: "
                                 "must be > 0 and <= 5000")


@pytest.mark.parametrize(("text", "expected"), [
    ("name: t\nduration: 60\nfaults:\n  - at: 10\n   kind: kill\n",
     "line 5, column 4: expected <block end>, but found '<block mapping start>'"),
    ("name: t\nduration: [60\n", "line 3, column 1: expected ',' or ']', but got '<stream end>'"),
    ("name: t\nduration: 60\nname: u\n", "line 3, column 1: key 'name' given twice (first on line 1)"),
    ("- name: t\n", "the file is a list; a scenario is a mapping with name, duration, ..."),
    ("", "the file is empty; a scenario is a mapping with name, duration, ..."),
], ids=["bad indentation", "unclosed list", "duplicate key", "a list", "empty"])
def test_yaml_problems_name_the_line(write_scenario, text, expected):
    path = write_scenario(text)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert str(caught.value) == f"{path}: {expected}"


def test_a_missing_file_is_one_line(tmp_path):
    with pytest.raises(ScenarioError) as caught:
        load_scenario(tmp_path / "nope.yml")
    assert str(caught.value) == (f"{tmp_path / 'nope.yml'}: no such scenario file "
                                 "(scenarios/README.md lists the shipped ones)")
