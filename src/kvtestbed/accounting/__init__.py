"""The runner's own writers, Jepsen-style op logs, Sentinel client strategies, the read-back checker, failover time
and unavailability (docs/accounting.md); Redis Cluster, NATS JetStream and one-node writers through
kinds.make_writer; the conflicts of writers sharing keys (conflicts.py)."""

from kvtestbed.accounting.availability import (
    FAILOVER_BY_KIND,
    compare_failover,
    failover,
    servers_failover,
    unavailability,
)
from kvtestbed.accounting.checker import (
    agreed_primary,
    check_client,
    check_run,
    read_back,
    summarize_client,
    superseded,
    value_index,
)
from kvtestbed.accounting.cluster import ClusterTarget
from kvtestbed.accounting.conflicts import check_conflicts, classify, merge_conflicts
from kvtestbed.accounting.jetstream import JetStreamTarget
from kvtestbed.accounting.jetstream_check import ensure_stream
from kvtestbed.accounting.kinds import (
    STRATEGIES_BY_KIND,
    WRITER_STRATEGIES,
    Target,
    check_run_any,
    check_run_nodes,
    kind_of,
    make_writer,
)
from kvtestbed.accounting.node import GroupRead, NodeSet, NodeTarget, Peer, read_group
from kvtestbed.accounting.oplog import OpLog, OpRecord, read_ops, read_ops_dir
from kvtestbed.accounting.strategies import (
    STRATEGIES,
    AccountingError,
    QuorumStrategy,
    RedisPyStrategy,
    SentinelTarget,
    decide,
    make_strategy,
)
from kvtestbed.accounting.writer import Writer

__all__ = [
    "FAILOVER_BY_KIND",
    "STRATEGIES",
    "STRATEGIES_BY_KIND",
    "WRITER_STRATEGIES",
    "AccountingError",
    "ClusterTarget",
    "GroupRead",
    "NodeSet",
    "NodeTarget",
    "Peer",
    "JetStreamTarget",
    "Target",
    "OpLog",
    "OpRecord",
    "QuorumStrategy",
    "RedisPyStrategy",
    "SentinelTarget",
    "Writer",
    "agreed_primary",
    "check_client",
    "check_run",
    "check_conflicts",
    "check_run_any",
    "check_run_nodes",
    "classify",
    "compare_failover",
    "decide",
    "ensure_stream",
    "failover",
    "kind_of",
    "make_writer",
    "make_strategy",
    "merge_conflicts",
    "read_back",
    "read_ops",
    "read_group",
    "read_ops_dir",
    "servers_failover",
    "summarize_client",
    "superseded",
    "unavailability",
    "value_index",
]
