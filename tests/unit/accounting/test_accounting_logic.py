"""The pure parts of kvtestbed.accounting: the quorum rule, the op log round trip, the figures from a history."""

from __future__ import annotations

from pathlib import Path

from kvtestbed.accounting import OpLog, OpRecord, check_client, decide, failover, read_ops, unavailability
from kvtestbed.accounting.availability import faults_on_hosts, servers_failover
from kvtestbed.accounting.strategies import SentinelView

A, B = "10.0.0.1:6379", "10.0.0.2:6379"


def view(name: str, primary: str | None, epoch: int | None = None) -> SentinelView:
    return SentinelView(name, primary, epoch, None if primary else "timeout")


def test_majority_wins_over_a_higher_epoch_minority() -> None:
    assert decide([view("s1", A, 1), view("s2", A, 1), view("s3", B, 7)], 3).primary == A


def test_split_answers_follow_the_highest_epoch_and_a_minority_gives_none() -> None:
    assert decide([view("s1", A, 1), view("s2", None), view("s3", B, 2)], 3).primary == B
    assert decide([view("s1", A, 2), view("s2", None), view("s3", B, 2)], 3).primary is None
    lonely = decide([view("s1", A, 1), view("s2", None), view("s3", None)], 3)
    assert lonely.primary is None and "only 1 of 3" in lonely.reason


def op(seq: int, t: float, result: str, node: str | None = A, end: float | None = None) -> OpRecord:
    return OpRecord(t, t, t + 0.001 if end is None else end, "write", f"k{seq}", f"v{seq}", result, node,  # type: ignore[arg-type]
                    None if result == "ok" else "x")


def test_oplog_round_trip_survives_a_truncated_last_line(tmp_path: Path) -> None:
    path = tmp_path / "ops" / "w.jsonl"
    records = [op(i, i * 0.1, "ok") for i in range(5)]
    with OpLog(path) as log:
        for record in records:
            log.append(record)
    with open(path, "a") as handle:
        handle.write('{"t_intended": 1.0, "t_sta')
    assert read_ops(path) == records


def test_figures_from_a_history() -> None:
    ops = [op(0, 0.0, "ok"), op(1, 1.0, "ok"), op(2, 2.0, "fail"), op(3, 3.0, "unknown"), op(4, 5.0, "ok", B),
           op(5, 6.0, "ok", B)]
    stored = {"k0": "v0", "k1": None, "k2": "v2", "k3": "v3", "k4": "v4", "k5": "v5"}
    entry = check_client(ops, stored, (0.0, 6.0))
    assert (entry["ok"], entry["fail"], entry["unknown"]) == (4, 1, 1)
    assert entry["lost"] == 1 and entry["lost_sample"] == ["k1"]
    assert entry["unexpected"] == 1 and entry["unknown_applied"] == 1
    gap, window = unavailability(ops, (0.0, 6.0))
    assert window == (1.001, 5.001) and abs(gap - 4.0) < 1e-9
    moved = failover(ops, 2.5)
    assert moved.primary_before == A and moved.failover_to == B and abs(moved.failover_s - 2.501) < 1e-9


def test_servers_failover_keeps_the_earliest_hearing() -> None:
    events = [{"t": t, "source": "sentinel", "event": "+switch-master", "detail": {"master": "m", "from": A, "to": B}}
              for t in (3.2, 3.0, 3.1)]
    assert servers_failover(events) == [{"source": "sentinel", "t": 3.0, "from": A, "to": B}]


def test_a_writers_failover_is_timed_from_the_first_fault_on_its_own_group() -> None:
    # all-workloads.yml: an agent on pc-2 paused at 15 s, the Redis primary (pi-2) killed at 25 s; the Redis writer's
    # failover counted from the pause read 14.27 s instead of 4.27 s
    pause = {"id": "pause-1", "kind": "pause", "hosts": ["pc-2"], "t_inject": 15.0}
    kill = {"id": "kill-1", "kind": "kill", "hosts": ["pi-2"], "t_inject": 25.0}
    partition = {"id": "partition-1", "kind": "partition", "hosts": ["pi-1", "pc-1"], "t_inject": 40.0}
    records = [pause, kill, partition]
    assert faults_on_hosts(records, {"pi-1", "pi-2", "pi-3"}) == [kill, partition]
    assert faults_on_hosts(records, ["pc-1", "pc-2"]) == [pause, partition]
    assert faults_on_hosts(records, ["pc-9"]) == []
    assert faults_on_hosts([{"id": "x", "hosts": None}], ["pi-1"]) == []
