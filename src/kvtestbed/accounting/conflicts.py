"""The `conflicts` check: keys written by more than one writer, read on every node after the heal - which write is
final, and was it the newest?

Writers that share a key_prefix and `keys: N` on one group write the same N keys (`<prefix><i>`, i = op mod N) at
the same time, so during a partition both sides of a multi-master mesh take writes of the same keys. Per key written
by two writers or more (any outcome: an unknown or failed write may have been applied), with the values read on
every node (node.read_group):
- diverged: the nodes still disagree after the bounded settle; such a key has no final write and is not classified
  further;
- the final write is the op whose value the nodes hold (values name their writer and op, so exactly one op);
- newest_won: the final write was acknowledged and no acknowledged write of the key was sent after it had completed:
  it is the last write by completion time, or overlaps it (`concurrent_won` counts those: a register may order two
  overlapping writes either way);
- older_won: an acknowledged write is final although another acknowledged write of the key was sent after it had
  completed - the newer write was lost, which last-write-wins must never do; `lost` counts those newer writes
  (`lost_of.<writer>` by whose they were), and `lost_gap_s` how long after the final write had completed the newest
  lost write was sent (the largest over the keys: a few milliseconds is the servers' timestamp granularity or two
  writes the servers saw in the other order, seconds are clocks apart);
- unknown_final: the final value is from an op with an unknown or failed outcome (`unexpected_final`: failed, the
  server said no and yet it happened), from no op, or the key is missing;
- won.<writer>: keys whose final write is that writer's.
So keys = diverged + newest_won + older_won + unknown_final. Times are the writers' own (seconds since the run's t0,
one clock on the controller), so "sent after it had completed" is real-time order, as Jepsen's checkers use it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from kvtestbed.accounting.checker import value_index
from kvtestbed.accounting.oplog import OpRecord

Outcome = Literal["newest_won", "older_won", "unknown_final", "diverged"]
SAMPLE = 20
_PER_RUN = ("lost_gap_s", "won", "lost_of", "older_won_sample", "diverged_sample")  # merge_conflicts: not a set's
COUNTS: tuple[str, ...] = ("keys", "diverged", "newest_won", "concurrent_won", "older_won", "lost", "unknown_final",
                           "unexpected_final")  # fmt: skip


@dataclass(frozen=True)
class Verdict:
    key: str
    outcome: Outcome
    writer: str | None  # whose write the nodes hold (None: diverged, no op's value or missing)
    concurrent: bool = False  # newest_won by overlap with the last write, not by being it
    unexpected: bool = False  # the final value is a failed write's
    lost: tuple[tuple[str, OpRecord], ...] = ()  # acknowledged writes newer than the final one (older_won)
    final_end: float | None = None  # when the final write completed (older_won)


def shared_keys(ops_by_client: Mapping[str, Sequence[OpRecord]]) -> list[str]:
    """Keys written (any outcome) by more than one writer, sorted."""
    writers: dict[str, set[str]] = {}
    for client, ops in ops_by_client.items():
        for op in ops:
            if op.op == "write":
                writers.setdefault(op.key, set()).add(client)
    return sorted(key for key, who in writers.items() if len(who) > 1)


def classify_key(
    key: str,
    writes: Sequence[tuple[str, OpRecord]],
    values: Mapping[str, str | None],
    index: Mapping[str, tuple[str, OpRecord]],
) -> Verdict:
    """One key: `writes` are (writer, op) of every write of it, `values` its value on each node read."""
    seen = set(values.values())
    if len(seen) != 1:
        return Verdict(key, "diverged", None)
    (value,) = seen
    found = index.get(value) if value is not None else None
    if found is None or found[1].key != key:
        return Verdict(key, "unknown_final", None)
    writer, final = found
    if final.result != "ok" or final.t_end is None:
        return Verdict(key, "unknown_final", writer, unexpected=final.result == "fail")
    newer = tuple((who, op) for who, op in writes if op.result == "ok" and op.t_start > final.t_end)
    if newer:
        return Verdict(key, "older_won", writer, lost=newer, final_end=final.t_end)
    last_end = max(op.t_end for _, op in writes if op.result == "ok" and op.t_end is not None)
    return Verdict(key, "newest_won", writer, concurrent=final.t_end < last_end)


def classify(
    ops_by_client: Mapping[str, Sequence[OpRecord]], values_by_node: Mapping[str, Mapping[str, str | None]]
) -> list[Verdict]:
    """A verdict per shared key; a key a node's read lacks counts as missing there."""
    index = value_index(ops_by_client)
    writes: dict[str, list[tuple[str, OpRecord]]] = {}
    for client, ops in ops_by_client.items():
        for op in ops:
            if op.op == "write":
                writes.setdefault(op.key, []).append((client, op))
    return [
        classify_key(key, writes[key], {node: read.get(key) for node, read in values_by_node.items()}, index)
        for key in shared_keys(ops_by_client)
    ]


def figures(verdicts: Iterable[Verdict], writers: Iterable[str]) -> dict[str, Any]:
    """The counts of one set of writers sharing keys (module doc), with samples of the keys worth a look."""
    out: dict[str, Any] = dict.fromkeys(COUNTS, 0)
    won = dict.fromkeys(writers, 0)
    lost_of = dict(won)
    older: list[str] = []
    diverged: list[str] = []
    verdicts = list(verdicts)
    for verdict in verdicts:
        out["keys"] += 1
        out[verdict.outcome] += 1
        out["concurrent_won"] += verdict.concurrent
        out["unexpected_final"] += verdict.unexpected
        out["lost"] += len(verdict.lost)
        if verdict.writer is not None:
            won[verdict.writer] = won.get(verdict.writer, 0) + 1
        for who, _ in verdict.lost:
            lost_of[who] = lost_of.get(who, 0) + 1
        if verdict.outcome == "older_won":
            older.append(verdict.key)
        elif verdict.outcome == "diverged":
            diverged.append(verdict.key)
    gaps = [max(op.t_start for _, op in v.lost) - v.final_end for v in verdicts if v.lost and v.final_end is not None]
    out["lost_gap_s"] = round(max(gaps), 6) if gaps else 0.0
    out["won"] = won
    out["lost_of"] = lost_of
    out["older_won_sample"] = older[:SAMPLE]
    out["diverged_sample"] = diverged[:SAMPLE]
    return out


def check_conflicts(
    ops_by_client: Mapping[str, Sequence[OpRecord]], values_by_node: Mapping[str, Mapping[str, str | None]]
) -> dict[str, Any]:
    """classify + figures: the conflicts of one set of writers, from their op logs and every node's values."""
    return figures(classify(ops_by_client, values_by_node), ops_by_client)


def merge_conflicts(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The run's `accounting.conflicts` from the checks of each set of writers sharing keys (usually one): the
    counts added up, won/lost_of per writer (writer names are unique in a run), the samples and each set's own
    description in `sets`."""
    out: dict[str, Any] = dict.fromkeys(COUNTS, 0)
    out.update(lost_gap_s=0.0, won={}, lost_of={}, older_won_sample=[], diverged_sample=[], sets=[])
    for part in parts:
        for name in COUNTS:
            out[name] += int(part.get(name) or 0)
        out["lost_gap_s"] = max(out["lost_gap_s"], float(part.get("lost_gap_s") or 0.0))
        for name in ("won", "lost_of"):
            out[name].update(part.get(name) or {})
        for name in ("older_won_sample", "diverged_sample"):
            out[name] = (out[name] + list(part.get(name) or []))[:SAMPLE]
        out["sets"].append({k: v for k, v in part.items() if k not in (*COUNTS, *_PER_RUN)})
    return out
