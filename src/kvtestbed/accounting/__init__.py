"""The runner's own writers, Jepsen-style op logs, Sentinel client strategies, the read-back checker, failover time
and unavailability (docs/accounting.md)."""

from kvtestbed.accounting.availability import compare_failover, failover, servers_failover, unavailability
from kvtestbed.accounting.checker import agreed_primary, check_client, check_run, read_back, summarize_client
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
    "STRATEGIES",
    "AccountingError",
    "OpLog",
    "OpRecord",
    "QuorumStrategy",
    "RedisPyStrategy",
    "SentinelTarget",
    "Writer",
    "agreed_primary",
    "check_client",
    "check_run",
    "compare_failover",
    "decide",
    "failover",
    "make_strategy",
    "read_back",
    "read_ops",
    "read_ops_dir",
    "servers_failover",
    "summarize_client",
    "unavailability",
]
