"""The conflicts check's classification and the register rule of the read-back, as pure functions over op logs and
the values read on each node (kvtestbed.accounting.conflicts, checker.check_client)."""

from __future__ import annotations

from kvtestbed.accounting import OpRecord, check_client, check_conflicts, classify, merge_conflicts, superseded
from kvtestbed.accounting.checker import value_index

A_NODE, C_NODE = "127.0.0.1:7001", "127.0.0.1:7003"


def w(writer: str, seq: int, key: str, start: float, end: float | None, result: str = "ok") -> OpRecord:
    """A write of `writer`'s op `seq`, with the value format the writers use (<writer>:<nonce>-<seq>)."""
    return OpRecord(
        start,
        start,
        end,
        "write",
        key,
        f"{writer}:n-{seq}",
        result,  # type: ignore[arg-type]
        A_NODE if writer == "a" else C_NODE,
        None if result == "ok" else "x",
    )


def nodes(**values: str | None) -> dict[str, dict[str, str | None]]:
    """Three nodes that all hold the same values (the converged case)."""
    return {node: dict(values) for node in ("pi-1", "pi-2", "pi-3")}


def test_the_newest_acknowledged_write_wins() -> None:
    ops = {"a": [w("a", 0, "k0", 1.0, 1.1)], "c": [w("c", 0, "k0", 2.0, 2.1)]}
    figures = check_conflicts(ops, nodes(k0="c:n-0"))
    assert (figures["keys"], figures["newest_won"], figures["older_won"], figures["lost"]) == (1, 1, 0, 0)
    assert figures["won"] == {"a": 0, "c": 1} and figures["concurrent_won"] == figures["lost_gap_s"] == 0


def test_an_older_write_that_wins_loses_every_newer_acknowledged_write() -> None:
    # c's write at 2.0 and a's own later write at 3.0 were both sent after a's first write had completed
    ops = {"a": [w("a", 0, "k0", 1.0, 1.1), w("a", 1, "k0", 3.0, 3.1)], "c": [w("c", 0, "k0", 2.0, 2.1)]}
    figures = check_conflicts(ops, nodes(k0="a:n-0"))
    assert (figures["older_won"], figures["newest_won"], figures["lost"]) == (1, 0, 2)
    assert figures["lost_of"] == {"a": 1, "c": 1} and figures["won"] == {"a": 1, "c": 0}
    assert figures["older_won_sample"] == ["k0"] and abs(figures["lost_gap_s"] - 1.9) < 1e-9  # a@3.0 after 1.1


def test_overlapping_writes_may_end_either_way() -> None:
    # c's write started before a's completed: a register may order them either way, so a's is no violation
    ops = {"a": [w("a", 0, "k0", 1.0, 1.5)], "c": [w("c", 0, "k0", 1.2, 1.8)]}
    figures = check_conflicts(ops, nodes(k0="a:n-0"))
    assert (figures["newest_won"], figures["concurrent_won"], figures["older_won"], figures["lost"]) == (1, 1, 0, 0)


def test_unknown_failed_foreign_and_missing_finals() -> None:
    ops = {
        "a": [w("a", 0, "k0", 1.0, None, "unknown"), w("a", 1, "k1", 1.0, 1.1, "fail"), w("a", 2, "k2", 1.0, 1.1),
              w("a", 3, "k3", 1.0, 1.1)],
        "c": [w("c", 0, "k0", 2.0, 2.1), w("c", 1, "k1", 2.0, 2.1), w("c", 2, "k2", 2.0, 2.1),
              w("c", 3, "k3", 2.0, 2.1)],
    }  # fmt: skip
    figures = check_conflicts(ops, nodes(k0="a:n-0", k1="a:n-1", k2="someone-else", k3=None))
    assert (figures["keys"], figures["unknown_final"], figures["unexpected_final"]) == (4, 4, 1)
    assert figures["newest_won"] == figures["older_won"] == figures["lost"] == 0
    assert figures["won"] == {"a": 2, "c": 0}  # the unknown and the failed op's values are a's


def test_nodes_that_disagree_are_diverged_and_not_classified() -> None:
    ops = {"a": [w("a", 0, "k0", 1.0, 1.1), w("a", 1, "k1", 1.0, 1.1)],
           "c": [w("c", 0, "k0", 2.0, 2.1), w("c", 1, "k1", 2.0, 2.1)]}  # fmt: skip
    values = nodes(k0="c:n-0", k1="c:n-1")
    values["pi-3"]["k1"] = "a:n-1"  # the cut-off peer kept its own
    figures = check_conflicts(ops, values)
    assert (figures["keys"], figures["diverged"], figures["newest_won"]) == (2, 1, 1)
    assert figures["diverged_sample"] == ["k1"] and figures["won"] == {"a": 0, "c": 1}
    missing = nodes(k0="c:n-0", k1="c:n-1")
    del missing["pi-2"]["k1"]  # a node whose read lacks the key holds it missing
    assert check_conflicts(ops, missing)["diverged"] == 1


def test_only_keys_of_two_writers_count_and_the_counts_add_up() -> None:
    ops = {"a": [w("a", i, f"k{i % 3}", i, i + 0.1) for i in range(6)] + [w("a", 9, "own", 9.0, 9.1)],
           "c": [w("c", i, f"k{i % 3}", i + 0.5, i + 0.6) for i in range(6)]}  # fmt: skip
    # k0: c's last (3.5) is final; k1: a's first (1.0) won over three newer acknowledged writes; k2: a's last (5.0)
    # won over c's 5.5 sent after it completed at 5.1: one lost
    verdicts = {v.key: v for v in classify(ops, nodes(k0="c:n-3", k1="a:n-1", k2="a:n-5", own="a:n-9"))}
    assert sorted(verdicts) == ["k0", "k1", "k2"]
    assert verdicts["k0"].outcome == "newest_won"
    assert verdicts["k1"].outcome == "older_won" and len(verdicts["k1"].lost) == 3  # a@4, c@1.5, c@4.5
    assert verdicts["k2"].outcome == "older_won" and [op.value for _, op in verdicts["k2"].lost] == ["c:n-5"]
    figures = check_conflicts(ops, nodes(k0="c:n-3", k1="a:n-1", k2="a:n-5"))
    parts = ("diverged", "newest_won", "older_won", "unknown_final")
    assert sum(figures[p] for p in parts) == figures["keys"] == 3
    assert sum(figures["won"].values()) == 3 and sum(figures["lost_of"].values()) == figures["lost"] == 4


def test_merge_adds_up_sets_and_keeps_their_description() -> None:
    one = check_conflicts({"a": [w("a", 0, "k0", 1, 1.1)], "c": [w("c", 0, "k0", 2, 2.1)]}, nodes(k0="c:n-0"))
    two = check_conflicts({"b": [w("b", 0, "j0", 1, 1.1)], "d": [w("d", 0, "j0", 2, 2.1)]}, nodes(j0="b:n-0"))
    one.update(group="keydb", key_prefix="kvt:m:", converged=True)
    merged = merge_conflicts([one, two])
    assert (merged["keys"], merged["newest_won"], merged["older_won"], merged["lost"]) == (2, 1, 1, 1)
    assert merged["won"] == {"a": 0, "c": 1, "b": 1, "d": 0}
    assert merged["sets"][0] == {"group": "keydb", "key_prefix": "kvt:m:", "converged": True}
    assert abs(merged["lost_gap_s"] - 0.9) < 1e-9  # the largest of the sets' (d@2.0 after b's ended at 1.1)
    assert merge_conflicts([])["keys"] == 0


def test_the_register_rule_of_the_read_back() -> None:
    first, second = w("a", 0, "k0", 1.0, 1.1), w("a", 1, "k0", 2.0, 2.1)
    assert not superseded(first, second)  # overwritten by a later write: not lost
    assert superseded(second, first)  # the older one is back: the newer is lost
    assert superseded(first, None)  # missing, or a value no op wrote
    assert not superseded(second, w("a", 2, "k0", 0.5, None, "unknown"))  # may have been applied late
    overlapping = w("c", 0, "k0", 1.05, 1.3)
    assert not superseded(first, overlapping) and not superseded(overlapping, first)


def test_check_client_counts_lost_writes_of_cycled_and_shared_keys() -> None:
    own = [w("a", 0, "k0", 1.0, 1.1), w("a", 1, "k1", 2.0, 2.1), w("a", 2, "k0", 3.0, 3.1), w("a", 3, "k1", 4.0, 4.1)]
    # k0 holds a's last write, k1 went back to a's first: the write at 4.0 is lost, none of the overwritten ones
    entry = check_client(own, {"k0": "a:n-2", "k1": "a:n-1"})
    assert (entry["ok"], entry["lost"], entry["lost_sample"]) == (4, 1, ["k1"])
    other = [w("c", 0, "k0", 3.5, 3.6)]
    index = value_index({"a": own, "c": other})
    # another writer's newer write is final: a lost nothing; without its ops the value is foreign: both a's lost
    assert check_client(own, {"k0": "c:n-0", "k1": "a:n-3"}, index=index)["lost"] == 0
    assert check_client(own, {"k0": "c:n-0", "k1": "a:n-3"})["lost"] == 2


def test_check_client_keeps_the_single_write_semantics() -> None:
    ops = [w("a", i, f"k{i}", float(i), i + 0.1) for i in range(3)] + [w("a", 3, "k3", 3.0, 3.1, "fail")]
    entry = check_client(ops, {"k0": "a:n-0", "k1": None, "k2": "a:n-7", "k3": "a:n-3"})
    assert (entry["lost"], entry["lost_sample"], entry["unexpected"]) == (2, ["k1", "k2"], 1)
