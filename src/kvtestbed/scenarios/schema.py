"""The fields a scenario file may have, as one tree: the parser rejects keys that are not here (a typo must not be
ignored) and `--set`/sweep paths are checked against it. Vocabularies (kinds, strategies, figures) live here too,
so that the messages listing them and the checks using them cannot drift apart."""

from __future__ import annotations

from typing import Any, Final

# Leaf markers of the tree.
SCALAR: Final = "scalar"  # a number, string or boolean (or a whole list/mapping given as one value)
FREE: Final = "free"  # a mapping whose keys the scenario file chooses (agents' config, Locust options, params)
SWEEP: Final = "sweep"  # sweep: {<dotted path>: [values]}: the rest of a path is ONE key

WRITER_FIELDS: Final = {"name": SCALAR, "group": SCALAR, "strategy": SCALAR, "rate": SCALAR,
                        "key_prefix": SCALAR, "value_size": SCALAR, "host": SCALAR, "keys": SCALAR}
AGENT_FIELDS: Final = {"name": SCALAR, "kind": SCALAR, "host": SCALAR, "config": FREE}
LOAD_FIELDS: Final = {"users": [SCALAR], "count": SCALAR, "rate": SCALAR, "spawn_rate": SCALAR, "target": SCALAR,
                      "processes": SCALAR, "options": FREE, "from": SCALAR}
FAULT_FIELDS: Final = {"at": SCALAR, "for": SCALAR, "kind": SCALAR, "group": SCALAR, "target": SCALAR,
                       "service": SCALAR, "params": FREE}
SLO_FIELDS: Final = {"figure": SCALAR, "op": SCALAR, "threshold": SCALAR}
BENCHMARK_FIELDS: Final = {"name": SCALAR, "group": SCALAR, "target": SCALAR, "host": SCALAR, "tool": SCALAR,
                           "tests": [SCALAR], "requests": SCALAR, "clients": SCALAR, "pipeline": SCALAR,
                           "value_size": SCALAR, "keyspace": SCALAR}
NEEDS_FIELDS: Final = {"groups": [SCALAR], "engines": FREE, "topologies": FREE}

# A list is written as a one-element list holding the schema of its elements.
SCENARIO_FIELDS: Final[dict[str, Any]] = {
    "name": SCALAR,
    "description": SCALAR,
    "tags": [SCALAR],
    "repeats": SCALAR,
    "needs": NEEDS_FIELDS,
    "warmup": SCALAR,
    "duration": SCALAR,
    "writers": [WRITER_FIELDS],
    "agents": [AGENT_FIELDS],
    "load": LOAD_FIELDS,
    "faults": [FAULT_FIELDS],
    # {<group>: N}: N replicas stay attached to the group's primary for the run, the others are stopped (a sweep's
    # axis: `sweep: {replicas.redis: [2, 1, 0]}`)
    "replicas": FREE,
    "benchmarks": [BENCHMARK_FIELDS],
    "checks": [SCALAR],
    "slo": [SLO_FIELDS],  # an entry may also be one string "<figure> <op> <number>"
    "sweep": SWEEP,
}

ENGINES: Final = ("redis", "valkey", "keydb", "nats")
TOPOLOGIES: Final = ("standalone", "replication", "cluster", "mesh")  # roles/kvstore: kvstore_topology
STRATEGIES: Final = ("redis-py", "quorum", "cluster", "jetstream", "node")
NODE_STRATEGY: Final = "node"  # writes to the one host the writer names (`host`), no failover
# strategies whose writers cannot share keys with others: a JetStream writer publishes messages to a stream of its own
STRATEGIES_WITHOUT_KEYS: Final = frozenset({"jetstream"})
# strategies whose keys live on every node of the group, so that the conflicts check can read them on each
STRATEGIES_ON_EVERY_NODE: Final = frozenset({"redis-py", "quorum", "node"})
MAX_WRITER_KEYS: Final = 10_000_000
AGENT_KINDS: Final = ("observer", "expiry", "streams", "pipeline", "hotkeys")

FAULT_KINDS: Final = ("kill", "stop", "pause", "partition", "shape", "netem", "reboot", "clock")
# kinds that change something until healed: their `for` (time until heal) is required
FAULT_KINDS_NEED_FOR: Final = frozenset({"stop", "pause", "partition", "shape", "netem", "clock"})
# kinds that act on a host's network or clock, not on a service
FAULT_KINDS_WITHOUT_SERVICE: Final = frozenset({"partition", "shape", "netem", "clock"})
FAULT_TARGETS: Final = ("primary", "replica", "one", "minority", "majority", "all")
STREAM_LEADER_TARGET: Final = "leader:"  # leader:<stream>: the server leading that JetStream stream (nats groups)
FAULT_SERVICES: Final = ("kv", "sentinel", "nats")  # or agent:<name>, or a systemd unit <name>.service
FAULT_PARAMS: Final[dict[str, tuple[str, ...]]] = {
    "kill": ("signal",),
    "stop": (),
    "pause": (),
    "partition": ("shape", "direction"),
    "shape": ("rate", "burst", "latency"),
    "netem": ("delay", "jitter", "loss"),
    "reboot": (),
    "clock": ("step",),
}
SIGNALS: Final = ("KILL", "TERM", "INT", "QUIT", "HUP", "ABRT", "SEGV")
PARTITION_SHAPES: Final = ("isolate", "halves", "one-way")
PARTITION_DIRECTIONS: Final = ("in", "out")

# checks run after the heal
CHECKS: Final[dict[str, str]] = {
    "lost-writes": "read back every acknowledged write of each writer through its own strategy: lost and unexpected",
    "read-back": "the same read-back on every server of each writer's group, per node (replicas caught up)",
    "servers-agree": "every server of each used group agrees on one primary and its replicas follow it",
    "agents": "the agents' own loss and duplicate counters (expiry dedup, streams, pipeline) after they drain",
    "conflicts": "keys written by several writers (same group, key_prefix and keys), read on every node after the "
                 "heal: which write is final, and was it the newest (accounting.conflicts.*)",
}
CHECKS_NEEDING_WRITERS: Final = frozenset({"lost-writes", "read-back", "conflicts"})
# figure sections a scenario produces only with the right parts (summary.json top-level keys of the same name)
FIGURE_SECTIONS: Final[dict[str, str]] = {
    "accounting": "the agents check's loss and duplicate counts per workload: accounting.<expiry|streams|pipeline>.*;"
                  " the conflicts check's accounting.conflicts.*",
    "benchmarks": "the engines' own tools: benchmarks.<name>.<test>.<rps|avg_us|p50_us|p95_us|p99_us|max_us>",
}

# figures an SLO may name (summary.json "figures"): clients.<writer|*>.<field>, load.<name>, and these
CLIENT_FIGURES: Final = ("attempted", "ok", "fail", "unknown", "lost", "unexpected", "unknown_applied",
                         "unavailability_s", "failover_s", "ops_per_s",
                         "latency_us.p50", "latency_us.p90", "latency_us.p99", "latency_us.p99.9", "latency_us.max")
RUN_FIGURES: Final = ("faults.count", "run.duration_s")
CONFLICTS_SECTION: Final = "conflicts"  # accounting.conflicts.<figure>: the conflicts check's, not the agents'
CONFLICT_FIGURES: Final = ("keys", "diverged", "newest_won", "concurrent_won", "older_won", "lost", "unknown_final",
                           "unexpected_final", "lost_gap_s")
CONFLICT_FIGURES_PER_WRITER: Final = ("won", "lost_of")  # accounting.conflicts.won.<writer>
SLO_OPS: Final = ("<=", ">=", "==", "<", ">")  # two-character ones first: the string form is split on them

MAX_WRITER_RATE: Final = 5000.0  # ops/s per writer: the controller is one Python process beside the lab
MAX_REPEATS: Final = 100
MAX_SWEEP_POINTS: Final = 256
