"""The scenario file model (scenarios/README.md documents every field) and its first validation stage, the file
alone: `load_scenario(path, overrides)` reads the YAML, applies `--set` overrides, expands the sweep and returns one
checked Scenario per sweep point. The second stage, against an inventory, is inventory_check.check_against."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kvtestbed.scenarios import schema
from kvtestbed.scenarios.benchmark_entries import Benchmark, parse_benchmarks
from kvtestbed.scenarios.errors import FieldError, ScenarioError
from kvtestbed.scenarios.fault_entries import Fault, parse_faults
from kvtestbed.scenarios.overrides import apply_overrides, sweep_points
from kvtestbed.scenarios.slo import Slo, parse_slos
from kvtestbed.scenarios.values import (
    FieldPath,
    check_keys,
    choice,
    integer,
    mapping,
    name,
    number,
    seconds,
    sequence,
    text,
)
from kvtestbed.scenarios.yamlfile import read_mapping

_GROUP = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")
_USER_CLASS = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_REPLICAS = 64  # replicas a `replicas:` entry may keep attached (a bound for typos, not a Redis limit)
LOAD_FROM = ("controller", "hosts")  # where Locust runs (Load.origin, `from:` in the file)
_OPTION = re.compile(r"^[a-z0-9][a-z0-9-]*$")

__all__ = ["Agent", "Fault", "Load", "Needs", "Scenario", "ScenarioError", "Slo", "Writer", "load_scenario",
           "parse_scenario"]


@dataclass(frozen=True)
class Needs:
    """What the run needs from the inventory (checked by check_against before anything starts)."""

    groups: tuple[str, ...] = ()  # groups that must exist and have hosts
    engines: dict[str, str] = field(default_factory=dict)  # group -> redis | valkey | keydb | nats
    topologies: dict[str, str] = field(default_factory=dict)  # group -> standalone | replication | cluster | mesh


@dataclass(frozen=True)
class Writer:
    """One of the runner's own accounting clients (an op log per client, read back after the heal)."""

    name: str
    group: str  # the key-value group it writes to
    # redis-py (redis-py's Sentinel client: first valid answer) | quorum (majority of Sentinels) for a replication
    # set; cluster (slot map, MOVED/ASK) for a Redis Cluster group; jetstream (acknowledged publishes) for a nats
    # group; node (the one host named in `host`, no failover) for any other key-value group
    strategy: str
    rate: float  # ops/s, open loop, 0 < rate <= schema.MAX_WRITER_RATE
    key_prefix: str  # default kvt:acct:<name>
    value_size: int  # bytes, default 64
    host: str | None = None  # strategy node: the host of the group it writes to (required there, refused elsewhere)
    # cycle over this many keys <key_prefix><i>, shared with the writers of the same group and prefix; None: a key
    # of its own per op, <key_prefix><name>:<seq>
    keys: int | None = None

    def shares_keys_with(self, other: Writer) -> bool:
        """Both write the same key sequence: one group, one prefix, `keys` set (and equal, which _writers checks)."""
        return (self.keys is not None and other.keys is not None and self.group == other.group
                and self.key_prefix == other.key_prefix)  # fmt: skip


@dataclass(frozen=True)
class Agent:
    """A deployed agent (kvtestbed-agent@<name>.service) the run starts, configures and stops."""

    name: str
    kind: str  # observer | expiry | streams | pipeline | hotkeys
    host: str | None  # None: wherever the inventory's agents_instances put it
    config: dict[str, Any] = field(default_factory=dict)  # the agent's own config, not checked here


@dataclass(frozen=True)
class Load:
    """A Locust run with kvload's users (kvtestbed.load.runner.LoadSpec), started with the warm-up."""

    users: tuple[str, ...]  # kvload user classes (python -m kvload.catalog)
    count: int  # number of Locust users
    rate: str  # open-loop profile, kvload.profiles syntax ("" = closed loop for warmup + duration)
    spawn_rate: float | None  # users started per second; None = all at once
    target: str  # an inventory group (resolved by the runner) or a URL (redis://..., nats://...)
    processes: int
    options: dict[str, str] = field(default_factory=dict)  # kvload options without --kvt-, e.g. keys: "1000"
    # `from:` where Locust runs: "controller" (a headless Locust beside the runner) or "hosts" (the inventory's
    # Locust master, locust_role: master, and its workers on the loadgen hosts: kvtestbed.load.master). Not `on:`,
    # which YAML 1.1 reads as true.
    origin: str = "controller"


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    tags: tuple[str, ...]
    repeats: int
    needs: Needs
    warmup_s: float  # discarded phase before the measurement
    duration_s: float  # the measured phase; fault times count from its start
    writers: tuple[Writer, ...]
    agents: tuple[Agent, ...]
    load: Load | None
    faults: tuple[Fault, ...]
    checks: tuple[str, ...]  # names from schema.CHECKS, run after the heal
    slo: tuple[Slo, ...]
    source: str  # the file, as the user named it
    overrides: dict[str, Any] = field(default_factory=dict)  # --set and sweep values applied, by dotted path
    sweep_values: dict[str, Any] = field(default_factory=dict)  # the sweep's part of overrides (a sweep's x axis)
    document: dict[str, Any] = field(default_factory=dict)  # the mapping as run (overrides applied, no sweep)
    benchmarks: tuple[Benchmark, ...] = ()  # the engines' own tools, run from the measured phase's start
    # {group: N}: replicas left attached to the group's primary for the whole run; the runner stops the others
    replicas: dict[str, int] = field(default_factory=dict)

    def groups_used(self) -> tuple[str, ...]:
        """Every inventory group the scenario names, in first-use order."""
        found: dict[str, None] = dict.fromkeys(self.needs.groups)
        found.update(dict.fromkeys(self.needs.engines))
        found.update(dict.fromkeys(self.needs.topologies))
        found.update(dict.fromkeys(w.group for w in self.writers))
        found.update(dict.fromkeys(f.group for f in self.faults))
        found.update(dict.fromkeys(b.group for b in self.benchmarks))
        found.update(dict.fromkeys(self.replicas))
        if self.load and "://" not in self.load.target:
            found[self.load.target] = None
        return tuple(found)

    def key_sharing(self) -> tuple[tuple[str, str, tuple[str, ...]], ...]:
        """(group, key_prefix, writer names) of every set of two writers or more that write the same keys: what the
        conflicts check compares."""
        sets: dict[tuple[str, str], list[str]] = {}
        for writer in self.writers:
            if writer.keys is not None:
                sets.setdefault((writer.group, writer.key_prefix), []).append(writer.name)
        return tuple((group, prefix, tuple(names)) for (group, prefix), names in sets.items() if len(names) > 1)

    def to_yaml(self) -> str:
        """The scenario as run, for results/<run>/scenario.yml."""
        return yaml.safe_dump(self.document, sort_keys=False, allow_unicode=True)


def load_scenario(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> list[Scenario]:
    """Read, override (`key=value` strings as given to --set), expand the sweep and check a scenario file.

    Returns one Scenario per sweep point (one without a sweep). Raises ScenarioError, one line, on any problem.
    """
    source = str(path)
    raw = read_mapping(Path(path), source)
    try:
        check_keys(raw, schema.SCENARIO_FIELDS, ())
    except FieldError as exc:
        raise exc.at(source) from None
    document, applied = apply_overrides(raw, overrides, source)
    sweep = document.pop("sweep", None)
    scenarios = []
    for point_document, point in sweep_points(document, sweep, applied, source):
        context = ", ".join(f"{k}={v}" for k, v in point.items())
        try:
            scenarios.append(parse_scenario(point_document, source, {**applied, **point}, point))
        except FieldError as exc:
            raise exc.at(source, f"sweep {context}" if context else "") from None
    return scenarios


def parse_scenario(document: dict[str, Any], source: str, overrides: dict[str, Any] | None = None,
                   sweep_values: dict[str, Any] | None = None) -> Scenario:
    """Stage 1 on one mapping (overrides already applied, no sweep). Raises FieldError (load_scenario adds the
    file name); callers outside this package use load_scenario."""
    check_keys(document, schema.SCENARIO_FIELDS, ())
    if "sweep" in document:
        raise FieldError(("sweep",), "expand sweeps with load_scenario")
    scenario_name = name(document.get("name"), ("name",))
    duration_s = _duration(document)
    warmup_s = seconds(document.get("warmup", 0), ("warmup",))
    if warmup_s < 0:
        raise FieldError(("warmup",), f"{warmup_s:g} s is negative")
    writers = _writers(document.get("writers"))
    writer_names = tuple(w.name for w in writers)
    agents = _agents(document.get("agents"))
    benchmarks = parse_benchmarks(document.get("benchmarks"))
    return Scenario(
        name=scenario_name,
        description=text(document.get("description"), ("description",), required=False),
        tags=tuple(text(t, ("tags", i)) for i, t in enumerate(sequence(document.get("tags"), ("tags",)))),
        repeats=integer(document.get("repeats", 1), ("repeats",), minimum=1, maximum=schema.MAX_REPEATS),
        needs=_needs(document.get("needs")),
        warmup_s=warmup_s,
        duration_s=duration_s,
        writers=writers,
        agents=agents,
        load=_load(document.get("load"), warmup_s + duration_s),
        faults=parse_faults(document.get("faults"), duration_s),
        checks=(checks := _checks(document.get("checks"), writers, agents)),
        slo=_check_accounting_slos(parse_slos(document.get("slo"), writer_names, _figure_sections(checks, benchmarks)),
                                   checks, writer_names),
        benchmarks=benchmarks,
        replicas=_replicas(document.get("replicas")),
        source=source,
        overrides=dict(overrides or {}),
        sweep_values=dict(sweep_values or {}),
        document=copy.deepcopy(document),
    )


def _figure_sections(checks: tuple[str, ...], benchmarks: tuple[Benchmark, ...]) -> dict[str, str | None]:
    """Which optional figure sections this scenario produces (None), or why not (slo.check_figure). Two checks
    fill `accounting` (agents, conflicts): which one a figure needs is checked by _check_accounting_slos."""
    return {"accounting": None,
            "benchmarks": None if benchmarks else "the scenario has no benchmarks (the engines' own tools)"}


def _check_accounting_slos(slos: tuple[Slo, ...], checks: tuple[str, ...], writer_names: tuple[str, ...]
                           ) -> tuple[Slo, ...]:
    """accounting.conflicts.* needs the conflicts check and names one of its figures; any other accounting.* the
    agents check."""
    prefix = f"accounting.{schema.CONFLICTS_SECTION}."
    for i, slo in enumerate(slos):
        if not slo.figure.startswith("accounting."):
            continue
        if not slo.figure.startswith(prefix):
            if "agents" not in checks:
                raise FieldError(("slo", i), f"figure {slo.figure!r}: add 'agents' to checks (the agents' own "
                                             "accounting)")
            continue
        if "conflicts" not in checks:
            raise FieldError(("slo", i), f"figure {slo.figure!r}: add 'conflicts' to checks")
        figure, _, writer = slo.figure.removeprefix(prefix).partition(".")
        if figure in schema.CONFLICT_FIGURES_PER_WRITER and writer in writer_names:
            continue
        if figure in schema.CONFLICT_FIGURES and not writer:
            continue
        known = ", ".join((*schema.CONFLICT_FIGURES, *(f"{name}.<writer>" for name in
                                                       schema.CONFLICT_FIGURES_PER_WRITER)))  # fmt: skip
        raise FieldError(("slo", i), f"unknown figure {slo.figure!r}: the conflicts check gives {known}")
    return slos


def _replicas(value: Any) -> dict[str, int]:
    """`replicas: {<group>: N}`; whether the group has a primary and N replicas is the inventory's check."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not value:
        raise FieldError(("replicas",), "give a mapping {<group>: <replicas to keep attached>}, e.g. {redis: 1}")
    return {_group(group, ("replicas",)): integer(count, ("replicas", str(group)), minimum=0, maximum=MAX_REPLICAS)
            for group, count in value.items()}


def _duration(document: dict[str, Any]) -> float:
    if document.get("duration") is None:
        raise FieldError(("duration",), "required: the measured phase in seconds (e.g. 60 or \"2m\")")
    duration_s = seconds(document["duration"], ("duration",))
    if duration_s <= 0:
        raise FieldError(("duration",), f"{duration_s:g} s: must be > 0")
    return duration_s


def _group(value: Any, path: FieldPath) -> str:
    group = text(value, path)
    if not _GROUP.match(group):
        raise FieldError(path, f"{group!r} is not an inventory group name")
    return group


def _needs(raw: Any) -> Needs:
    needs = mapping(raw, ("needs",))
    check_keys(needs, schema.NEEDS_FIELDS, ("needs",))
    groups = tuple(_group(g, ("needs", "groups", i)) for i, g in enumerate(sequence(needs.get("groups"),
                                                                                    ("needs", "groups"))))
    engines = {_group(g, ("needs", "engines", str(g))): choice(e, ("needs", "engines", str(g)), schema.ENGINES,
                                                                "engine")
               for g, e in mapping(needs.get("engines"), ("needs", "engines")).items()}
    topologies = {_group(g, ("needs", "topologies", str(g))): choice(t, ("needs", "topologies", str(g)),
                                                                     schema.TOPOLOGIES, "topology")
                  for g, t in mapping(needs.get("topologies"), ("needs", "topologies")).items()}
    return Needs(tuple(dict.fromkeys(groups)), engines, topologies)


def _unique(names: list[str], section: str) -> None:
    for i, item in enumerate(names):
        if item in names[:i]:
            raise FieldError((section, i, "name"), f"{item!r} is already the name of {section}[{names.index(item)}]")


def _writers(raw: Any) -> tuple[Writer, ...]:
    writers = []
    for i, entry in enumerate(sequence(raw, ("writers",))):
        path: FieldPath = ("writers", i)
        entry = mapping(entry, path)
        check_keys(entry, schema.WRITER_FIELDS, path)
        writer_name = name(entry.get("name"), (*path, "name"))
        rate = number(entry.get("rate"), (*path, "rate")) if entry.get("rate") is not None else None
        if rate is None:
            raise FieldError((*path, "rate"), "required: operations per second")
        if not 0 < rate <= schema.MAX_WRITER_RATE:
            raise FieldError((*path, "rate"), f"{rate:g} ops/s: must be > 0 and <= {schema.MAX_WRITER_RATE:g}")
        strategy = choice(entry.get("strategy"), (*path, "strategy"), schema.STRATEGIES, "strategy")
        writers.append(Writer(
            name=writer_name,
            group=_group(entry.get("group"), (*path, "group")),
            strategy=strategy,
            rate=rate,
            key_prefix=text(entry.get("key_prefix", f"kvt:acct:{writer_name}"), (*path, "key_prefix")),
            value_size=integer(entry.get("value_size", 64), (*path, "value_size"), minimum=1, maximum=1 << 20),
            host=_writer_host(entry.get("host"), strategy, path),
            keys=_writer_keys(entry.get("keys"), strategy, path),
        ))
    _unique([w.name for w in writers], "writers")
    _same_keys(writers)
    return tuple(writers)


def _writer_host(raw: Any, strategy: str, path: FieldPath) -> str | None:
    if strategy != schema.NODE_STRATEGY:
        if raw is not None:
            raise FieldError((*path, "host"), f"only for strategy node (a {strategy} writer finds its node itself)")
        return None
    if raw is None or raw == "":
        raise FieldError((*path, "host"), "required with strategy node: the host of the group it writes to")
    return text(raw, (*path, "host"))


def _writer_keys(raw: Any, strategy: str, path: FieldPath) -> int | None:
    if raw is None:
        return None
    if strategy in schema.STRATEGIES_WITHOUT_KEYS:
        raise FieldError((*path, "keys"), f"a {strategy} writer publishes messages of its own: it has no keys to "
                                          "share")  # fmt: skip
    return integer(raw, (*path, "keys"), minimum=1, maximum=schema.MAX_WRITER_KEYS)


def _same_keys(writers: list[Writer]) -> None:
    """Writers of one group and prefix that cycle over keys write the same sequence: the same `keys`."""
    for i, writer in enumerate(writers):
        for first in writers[:i]:
            if (writer.keys is not None and first.keys is not None and writer.group == first.group
                    and writer.key_prefix == first.key_prefix and writer.keys != first.keys):  # fmt: skip
                raise FieldError(("writers", i, "keys"), f"{writer.keys} keys, and {first.name} writes {first.keys} "
                                                         f"with the same group and key_prefix: give both the same keys")


def _agents(raw: Any) -> tuple[Agent, ...]:
    agents = []
    for i, entry in enumerate(sequence(raw, ("agents",))):
        path: FieldPath = ("agents", i)
        entry = mapping(entry, path)
        check_keys(entry, schema.AGENT_FIELDS, path)
        host = text(entry.get("host"), (*path, "host"), required=False) or None
        agents.append(Agent(
            name=name(entry.get("name"), (*path, "name")),
            kind=choice(entry.get("kind"), (*path, "kind"), schema.AGENT_KINDS, "agent kind"),
            host=host,
            config=copy.deepcopy(mapping(entry.get("config"), (*path, "config"))),
        ))
    _unique([a.name for a in agents], "agents")
    return tuple(agents)


def _load(raw: Any, run_s: float) -> Load | None:
    if raw is None:
        return None
    load = mapping(raw, ("load",))
    check_keys(load, schema.LOAD_FIELDS, ("load",))
    users = tuple(text(u, ("load", "users", i)) for i, u in enumerate(sequence(load.get("users"), ("load", "users"))))
    if not users:
        raise FieldError(("load", "users"), "name at least one kvload user class (python -m kvload.catalog)")
    for i, user in enumerate(users):
        if not _USER_CLASS.match(user):
            raise FieldError(("load", "users", i), f"{user!r} is not a user class name")
    rate = text(load.get("rate"), ("load", "rate"), required=False)
    if rate:
        _check_profile(rate, run_s)
    spawn_rate = None
    if load.get("spawn_rate") is not None:
        spawn_rate = number(load["spawn_rate"], ("load", "spawn_rate"))
        if spawn_rate <= 0:
            raise FieldError(("load", "spawn_rate"), f"{spawn_rate:g}: must be > 0")
    origin = choice(load.get("from", "controller"), ("load", "from"), LOAD_FROM, "place for Locust")
    if origin == "hosts" and "processes" in load:
        raise FieldError(("load", "processes"), "with from: hosts the workers are the loadgen hosts' (locust_workers): "
                                                "leave processes out")
    target = text(load.get("target"), ("load", "target"))
    if "://" not in target and not _GROUP.match(target):
        raise FieldError(("load", "target"), f"{target!r}: give an inventory group or a URL such as redis://host:6379")
    return Load(
        users=users,
        count=integer(load.get("count", 10), ("load", "count"), minimum=1, maximum=100_000),
        rate=rate,
        spawn_rate=spawn_rate,
        target=target,
        processes=integer(load.get("processes", 1), ("load", "processes"), minimum=1, maximum=64),
        options=_options(load.get("options")),
        origin=origin,
    )


def _check_profile(rate: str, run_s: float) -> None:
    try:
        from kvload.profiles import ProfileError, parse
    except ImportError:  # kvload not installed beside the controller: the load runner checks it before starting
        return
    try:
        profile = parse(rate)
    except ProfileError as exc:
        raise FieldError(("load", "rate"), str(exc)) from None
    if profile.duration_s < run_s:
        raise FieldError(("load", "rate"), f"the profile ends at {profile.duration_s:g} s, before the run's end at "
                                           f"{run_s:g} s (warmup + duration): raise its for=")


def _options(raw: Any) -> dict[str, str]:
    options = {}
    for key, value in mapping(raw, ("load", "options")).items():
        path: FieldPath = ("load", "options", str(key))
        if not isinstance(key, str) or not _OPTION.match(key) or key.startswith("kvt-"):
            raise FieldError(path, "give kvload's option name without --kvt-, e.g. keys or get-ratio")
        if isinstance(value, dict | list) or value is None:
            raise FieldError(path, f"give one value, not {value!r}")
        options[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return options


def _checks(raw: Any, writers: tuple[Writer, ...], agents: tuple[Agent, ...]) -> tuple[str, ...]:
    checks: list[str] = []
    for i, entry in enumerate(sequence(raw, ("checks",))):
        check = choice(entry, ("checks", i), tuple(schema.CHECKS), "check")
        if check in checks:
            raise FieldError(("checks", i), f"{check!r} is listed twice")
        if check in schema.CHECKS_NEEDING_WRITERS and not writers:
            raise FieldError(("checks", i), f"{check} reads back the writers' operations: add a writer")
        if check == "agents" and not agents:
            raise FieldError(("checks", i), "agents reads the agents' counters: add an agent")
        if check == "conflicts":
            _check_conflicts(writers, ("checks", i))
        checks.append(check)
    return tuple(checks)


def _check_conflicts(writers: tuple[Writer, ...], path: FieldPath) -> None:
    """The conflicts check needs two writers sharing keys, on a group whose every node holds them."""
    sharing = [w for w in writers if any(w.shares_keys_with(o) for o in writers if o is not w)]
    if not sharing:
        raise FieldError(path, "conflicts compares writes of shared keys: give two writers of one group the same "
                               "key_prefix and keys (e.g. keys: 100)")  # fmt: skip
    for writer in sharing:
        if writer.strategy not in schema.STRATEGIES_ON_EVERY_NODE:
            raise FieldError(path, f"conflicts reads the shared keys on every node: not for a {writer.strategy} "
                                   f"writer ({writer.name})")  # fmt: skip
