"""One entry point per kind of target, so that the runner stays generic: a writer, its servers' watch, the check.

| target | strategies | the servers' own record (timeline) | read-back |
|---|---|---|---|
| SentinelTarget | redis-py, quorum | Sentinel `+switch-master` | MGET on the agreed primary |
| ClusterTarget | cluster | CLUSTER NODES promotions, `+failover` | MGET per slot through the cluster |
| JetStreamTarget | jetstream | stream leader, `+leader` | the whole stream, ordered consumer |
| NodeTarget | node | none (no failover: one node) | MGET on every node of the group once they agree, the writer's own |
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kvtestbed.accounting.availability import FAILOVER_BY_KIND
from kvtestbed.accounting.checker import check_run as check_run_sentinel
from kvtestbed.accounting.checker import summarize_client, value_index
from kvtestbed.accounting.cluster import CLUSTER_STRATEGY, ClusterStrategy, ClusterTarget
from kvtestbed.accounting.cluster_check import ClusterRoleWatch, read_back_cluster
from kvtestbed.accounting.jetstream import JETSTREAM_STRATEGY, JetStreamStrategy, JetStreamTarget
from kvtestbed.accounting.jetstream_check import StreamLeaderWatch, read_back_stream, stored_by_id
from kvtestbed.accounting.node import NODE_STRATEGY, GroupRead, NodeStrategy, NodeTarget
from kvtestbed.accounting.oplog import OpLog, OpRecord
from kvtestbed.accounting.strategies import STRATEGIES, AccountingError, PrimaryStrategy, SentinelTarget
from kvtestbed.accounting.writer import Writer

Target = SentinelTarget | ClusterTarget | JetStreamTarget | NodeTarget
STRATEGIES_BY_KIND: dict[str, tuple[str, ...]] = {
    "sentinel": STRATEGIES,
    "cluster": (CLUSTER_STRATEGY,),
    "jetstream": (JETSTREAM_STRATEGY,),
    "node": (NODE_STRATEGY,),
}
WRITER_STRATEGIES: tuple[str, ...] = tuple(s for kind in STRATEGIES_BY_KIND.values() for s in kind)


def kind_of(target: Target) -> str:
    if isinstance(target, SentinelTarget):
        return "sentinel"
    if isinstance(target, ClusterTarget):
        return "cluster"
    if isinstance(target, JetStreamTarget):
        return "jetstream"
    if isinstance(target, NodeTarget):
        return "node"
    raise AccountingError(f"not a writer target: {type(target).__name__}")


def check_strategy(name: str, strategy: str, target: Target) -> None:
    """AccountingError (one line) when `strategy` does not fit the target's kind."""
    kind = kind_of(target)
    if strategy not in STRATEGIES_BY_KIND[kind]:
        allowed = ", ".join(STRATEGIES_BY_KIND[kind])
        raise AccountingError(f"writer {name}: strategy {strategy!r} does not fit a {kind} target (use {allowed})")


def make_writer(
    name: str,
    strategy: str,
    target: Target,
    key_prefix: str,
    rate: float,
    oplog: OpLog,
    *,
    t0: float,
    max_ops: int,
    max_duration_s: float,
    watch_servers: bool = True,
    keys: int | None = None,
) -> Writer:
    """A writer of any kind (not started). With `watch_servers` it also records the servers' own role changes
    (Sentinel / cluster / stream leader) in its events(); one watching writer per target is enough. `keys`: cycle
    over that many keys shared with the writers of the same prefix (Writer), default a key of its own per op."""
    check_strategy(name, strategy, target)
    if keys is not None and isinstance(target, JetStreamTarget):
        raise AccountingError(f"writer {name}: keys: a JetStream writer publishes messages, it has no keys to share")
    if isinstance(target, SentinelTarget):
        return Writer.for_strategy(name, strategy, target, key_prefix, rate, oplog, t0=t0, max_ops=max_ops,
                                   max_duration_s=max_duration_s, listen_sentinels=watch_servers,
                                   keys=keys)  # fmt: skip
    made: PrimaryStrategy
    if isinstance(target, NodeTarget):
        made = NodeStrategy(target)
    elif isinstance(target, ClusterTarget):
        made = ClusterStrategy(target)
    else:
        made = JetStreamStrategy(target, name)
    writer = Writer(name, made, key_prefix, rate, oplog, t0=t0, max_ops=max_ops, max_duration_s=max_duration_s,
                    keys=keys)  # fmt: skip
    # a node writer follows no role: nothing to watch
    if watch_servers and isinstance(target, ClusterTarget):
        writer.add_watch(ClusterRoleWatch(target, t0, writer.add_event))
    elif watch_servers and isinstance(target, JetStreamTarget):
        writer.add_watch(StreamLeaderWatch(target, t0, writer.add_event))
    return writer


def _written_keys(ops_by_client: Mapping[str, Sequence[OpRecord]]) -> list[str]:
    return [op.key for ops in ops_by_client.values() for op in ops if op.op == "write"]


def check_run_any(
    ops_by_client: Mapping[str, Sequence[OpRecord]],
    strategies: Mapping[str, str],
    target: Target,
    phase: tuple[float, float] | None = None,
    faults: Sequence[Mapping[str, Any]] = (),
    timeout_s: float = 30.0,
    index: Mapping[str, tuple[str, OpRecord]] | None = None,
) -> dict[str, dict[str, Any]]:
    """{client: its summary.json entry} for the writers of one target, after reading everything back; `index`
    (checker.value_index over every writer of the run) lets writers sharing keys see each other's writes.

    JetStream entries also carry `duplicates` (acknowledged-or-not messages of the client stored more than once) and
    `stored` (messages of the client in the stream). Node writers are checked with check_run_nodes."""
    kind = kind_of(target)
    index = index if index is not None else value_index(ops_by_client)
    if isinstance(target, SentinelTarget):
        return check_run_sentinel(ops_by_client, strategies, target, phase, faults, timeout_s, index)
    if isinstance(target, NodeTarget):
        raise AccountingError("node writers are read back on every node: use check_run_nodes")
    copies = None
    if isinstance(target, ClusterTarget):
        stored = read_back_cluster(target, _written_keys(ops_by_client), timeout_s)
    else:
        stored, copies = stored_by_id(read_back_stream(target, timeout_s))
    out: dict[str, dict[str, Any]] = {}
    for client, ops in ops_by_client.items():
        entry = summarize_client(strategies.get(client, kind), target.describe(), ops, stored, phase, faults,
                                 failover_fn=FAILOVER_BY_KIND[kind], index=index)  # fmt: skip
        if copies is not None:
            keys = {op.key for op in ops if op.op == "write"}
            entry["duplicates"] = sum(copies[key] - 1 for key in keys if copies[key] > 1)
            entry["stored"] = sum(copies[key] for key in keys)
        out[client] = entry
    return out


def check_run_nodes(
    ops_by_client: Mapping[str, Sequence[OpRecord]],
    targets: Mapping[str, NodeTarget],
    read: GroupRead,
    phase: tuple[float, float] | None = None,
    faults: Sequence[Mapping[str, Any]] = (),
    index: Mapping[str, tuple[str, OpRecord]] | None = None,
) -> dict[str, dict[str, Any]]:
    """{client: its summary.json entry} for `node` writers of one group, from `read` (node.read_group of every key
    they wrote): each client's writes are checked against its own node's values, read once the nodes agreed (or at
    the settle deadline: `nodes_agree` says which). Failover is the first ok op sent after the fault."""
    index = index if index is not None else value_index(ops_by_client)
    out: dict[str, dict[str, Any]] = {}
    for client, ops in ops_by_client.items():
        target = targets[client]
        entry = summarize_client(NODE_STRATEGY, target.describe(), ops, read.on(target.host), phase, faults,
                                 failover_fn=FAILOVER_BY_KIND["node"], index=index)  # fmt: skip
        entry["nodes_agree"] = read.converged
        out[client] = entry
    return out
