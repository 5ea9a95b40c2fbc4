"""After the heal: read back every key the writers attempted and count, per client, as Jepsen's set checker does.

- acknowledged = ok ops; lost = acknowledged writes whose key is missing, holds a value no op wrote, or holds the
  value of a write acknowledged before the lost one was sent (a key written once, as by default, is lost whenever it
  holds another value; a key written again and again - `keys: N` writers - keeps only its last write, and an
  earlier write that is overwritten by a later one is not lost: the register rule, see superseded());
- unexpected = fail ops whose value is present (the server said no, yet the write happened);
- unknown_applied = unknown (indeterminate) ops whose value is present;
- latency_us: HdrHistogram percentiles of ok ops, from the intended time (the actual send if earlier) to the reply;
- ops_per_s: ok ops per second of the measured phase.
Counts cover every op of the run (a lost write is lost whenever it was made); latency, rate, unavailability and
failover cover the measured phase.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import redis
from hdrh.histogram import HdrHistogram

from kvtestbed.accounting.availability import FailoverFn, failover, unavailability
from kvtestbed.accounting.oplog import OpRecord
from kvtestbed.accounting.strategies import AccountingError, QuorumResolver, SentinelTarget

LOST_SAMPLE = 20
_LATENCY_MAX_US = 3_600_000_000  # an hour: an op that waited longer is clamped, not dropped
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99.9": 99.9}


def agreed_primary(target: SentinelTarget, timeout_s: float = 30.0, interval_s: float = 0.2) -> str:
    """The primary every answering Sentinel (a majority at least) names and that itself says role:master (INFO
    replication); polls until the set has settled after the heal, or raises AccountingError after timeout_s."""
    resolver = QuorumResolver(target)
    node_kwargs = target.node_kwargs()
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    try:
        while True:
            resolution = resolver.resolve()
            if resolution.primary is not None and not resolution.disagree:
                host, port = resolution.primary.rsplit(":", 1)
                try:
                    # INFO replication, not ROLE: ROLE is an @admin command, which the data user (the kvstore
                    # role's `agent`: +@all -@admin) may not run
                    with redis.Redis(host=host, port=int(port), **node_kwargs) as client:
                        role = client.info("replication").get("role")
                    if role == "master":
                        return resolution.primary
                    last = f"{resolution.primary} says it is a {role!r}"
                except redis.RedisError as err:
                    last = f"{resolution.primary} does not answer ({type(err).__name__})"
            else:
                last = resolution.reason if resolution.primary is None else "the Sentinels disagree"
            if time.monotonic() > deadline:
                raise AccountingError(f"the Sentinels of {target.service!r} did not agree on a primary in "
                                      f"{timeout_s:g} s: {last}")
            time.sleep(interval_s)
    finally:
        resolver.close()


def read_back(client: redis.Redis, keys: Iterable[str], batch: int = 500, batches_per_trip: int = 8
              ) -> dict[str, str | None]:
    """Every key's value (None if missing) with MGETs of `batch` keys, `batches_per_trip` per pipeline round trip."""
    keys = list(dict.fromkeys(keys))
    values: dict[str, str | None] = {}
    chunks = [keys[i : i + batch] for i in range(0, len(keys), batch)]
    for first in range(0, len(chunks), batches_per_trip):
        trip = chunks[first : first + batches_per_trip]
        pipe = client.pipeline(transaction=False)
        for chunk in trip:
            pipe.mget(chunk)
        for chunk, replies in zip(trip, pipe.execute(), strict=True):
            for key, value in zip(chunk, replies, strict=True):
                values[key] = value.decode() if isinstance(value, bytes) else value
    return values


def read_back_from_primary(target: SentinelTarget, keys: Iterable[str], timeout_s: float = 30.0
                           ) -> tuple[str, dict[str, str | None]]:
    """(the agreed primary, every key's value on it)."""
    primary = agreed_primary(target, timeout_s)
    host, port = primary.rsplit(":", 1)
    kwargs = {**target.node_kwargs(), "socket_timeout": max(target.op_timeout_s, 10.0)}
    with redis.Redis(host=host, port=int(port), **kwargs) as client:
        return primary, read_back(client, keys)


def latency_us(op: OpRecord) -> int:
    assert op.t_end is not None
    return max(int(round((op.t_end - min(op.t_start, op.t_intended)) * 1e6)), 0)


def latency_summary(ops: Iterable[OpRecord]) -> dict[str, int | None]:
    histogram = HdrHistogram(1, _LATENCY_MAX_US, 3)
    for op in ops:
        histogram.record_value(min(max(latency_us(op), 1), _LATENCY_MAX_US))
    if histogram.get_total_count() == 0:
        return {**dict.fromkeys(PERCENTILES), "max": None}
    out: dict[str, int | None] = {
        name: int(histogram.get_value_at_percentile(p)) for name, p in PERCENTILES.items()
    }
    out["max"] = int(histogram.get_max_value())
    return out


def _in_phase(op: OpRecord, phase: tuple[float, float] | None) -> bool:
    return phase is None or phase[0] <= op.t_intended <= phase[1]


def value_index(ops_by_client: Mapping[str, Sequence[OpRecord]]) -> dict[str, tuple[str, OpRecord]]:
    """value -> (client, op) for every write: the writers' values are unique (`<client>:<nonce>-<seq>`), so a value
    read back names the one op that wrote it."""
    return {op.value: (client, op) for client, ops in ops_by_client.items() for op in ops
            if op.op == "write" and op.value is not None}  # fmt: skip


def superseded(write: OpRecord, final: OpRecord | None) -> bool:
    """Is the acknowledged `write` lost when its key holds `final`'s value (None: missing, or a value no op wrote)?

    Only when `final` cannot come after it: no op at all, or a write acknowledged before `write` was sent. A write
    that overlaps it or came after it may legally be the last; so may an unknown or failed op, which the server may
    have applied at any time after it was sent (a paused server runs its queue when it resumes)."""
    if final is None:
        return True
    if final.value == write.value:
        return False
    return final.result == "ok" and final.t_end is not None and final.t_end < write.t_start


def check_client(
    ops: Sequence[OpRecord],
    stored: Mapping[str, str | None],
    phase: tuple[float, float] | None = None,
    index: Mapping[str, tuple[str, OpRecord]] | None = None,
) -> dict[str, Any]:
    """The accounting fields of one client; `stored` holds every written key's value read back (None: missing);
    `index` (value_index) knows the other writers' ops when writers share keys (default: this client's own)."""
    writes = [op for op in ops if op.op == "write"]
    counts = {result: sum(op.result == result for op in writes) for result in ("ok", "fail", "unknown")}
    own = index if index is not None else value_index({"": writes})

    def final_of(key: str) -> OpRecord | None:
        value = stored.get(key)
        found = own.get(value) if value is not None else None
        return found[1] if found is not None and found[1].key == key else None

    lost_keys = [op.key for op in writes
                 if op.result == "ok" and stored.get(op.key) != op.value and superseded(op, final_of(op.key))]
    unexpected = sum(op.result == "fail" and stored.get(op.key) == op.value for op in writes)
    unknown_applied = sum(op.result == "unknown" and stored.get(op.key) == op.value for op in writes)
    measured_ok = [op for op in writes if op.result == "ok" and op.t_end is not None and _in_phase(op, phase)]
    if phase is not None:
        span = phase[1] - phase[0]
    elif writes:
        span = max((op.t_end or op.t_start) for op in writes) - min(op.t_intended for op in writes)
    else:
        span = 0.0
    return {
        "attempted": len(writes),
        **counts,
        "lost": len(lost_keys),
        "lost_sample": lost_keys[:LOST_SAMPLE],
        "unexpected": unexpected,
        "unknown_applied": unknown_applied,
        "latency_us": latency_summary(measured_ok),
        "ops_per_s": round(len(measured_ok) / span, 3) if span > 0 else 0.0,
    }


def summarize_client(
    strategy: str,
    target: str,
    ops: Sequence[OpRecord],
    stored: Mapping[str, str | None],
    phase: tuple[float, float] | None = None,
    faults: Sequence[Mapping[str, Any]] = (),
    failover_fn: FailoverFn = failover,
    index: Mapping[str, tuple[str, OpRecord]] | None = None,
) -> dict[str, Any]:
    """One `clients.<client>` entry of summary.json (schema 1): accounting, unavailability and the failover after
    the first fault (faults.jsonl objects; the runner adds servers_failover from servers_failover()); `failover_fn`
    is the client kind's definition of failover (availability.FAILOVER_BY_KIND)."""
    measured = [op for op in ops if _in_phase(op, phase)]
    gap, window = unavailability(measured, phase)
    injects = sorted(float(f["t_inject"]) for f in faults if f.get("t_inject") is not None)
    first = failover_fn(ops, injects[0]) if injects else None
    return {
        "strategy": strategy,
        "target": target,
        **check_client(ops, stored, phase, index),
        "unavailability_s": gap,
        "unavailability_window": list(window) if window else None,
        "failover_s": first.failover_s if first else None,
        "failover_to": first.failover_to if first else None,
    }


def check_run(
    ops_by_client: Mapping[str, Sequence[OpRecord]],
    strategies: Mapping[str, str],
    target: SentinelTarget,
    phase: tuple[float, float] | None = None,
    faults: Sequence[Mapping[str, Any]] = (),
    timeout_s: float = 30.0,
    index: Mapping[str, tuple[str, OpRecord]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Read back every written key from the agreed primary and summarize each client ({client: entry}); `index`
    (value_index over every writer of the run) by default covers these clients."""
    keys = [op.key for ops in ops_by_client.values() for op in ops if op.op == "write"]
    _, stored = read_back_from_primary(target, keys, timeout_s)
    shared = index if index is not None else value_index(ops_by_client)
    return {
        client: summarize_client(strategies.get(client, "unknown"), target.describe(), ops, stored, phase, faults,
                                 index=shared)  # fmt: skip
        for client, ops in ops_by_client.items()
    }
