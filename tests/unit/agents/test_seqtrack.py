"""SeqTracker: coalesced, missed, duplicate, stale and repeat reads, and notification attribution."""

from __future__ import annotations

from kvagent.workloads.observer.seqtrack import ReadKind, SeqTracker


def _feed(tracker: SeqTracker, reads: list[int], run: str = "r") -> list[tuple[ReadKind, int | None]]:
    out = []
    for seq in reads:
        tracker.on_notification()
        out.append(tracker.on_read(run, seq, history=8))
    return out


def test_clean_stream_from_a_fresh_start() -> None:
    tracker = SeqTracker()
    tracker.baseline(None, 0)
    results = _feed(tracker, [1, 2, 3, 4])
    assert [a for _, a in results] == [1, 2, 3, 4]
    counts = tracker.counts()
    assert counts["versions"] == 4 and counts["notifications"] == 4
    assert (counts["missed"], counts["duplicates"], counts["coalesced"]) == (0, 0, 0)


def test_coalescing_is_not_loss_and_every_write_is_attributed() -> None:
    tracker = SeqTracker()
    tracker.baseline(None, 0)
    # Notification 1's GET already saw 3; notifications 2 and 3 then read 3 again.
    results = _feed(tracker, [3, 3, 3, 4])
    assert [k for k, _ in results] == [ReadKind.GAP, ReadKind.REPEAT, ReadKind.REPEAT, ReadKind.NEXT]
    assert [a for _, a in results] == [1, 2, 3, 4]
    counts = tracker.counts()
    assert counts["coalesced"] == 2 and counts["repeat_reads"] == 2
    assert counts["missed"] == 0 and counts["duplicates"] == 0 and counts["versions"] == 2


def test_missed_notifications() -> None:
    tracker = SeqTracker()
    tracker.baseline("r", 10)  # joined a running writer at seq 10
    _feed(tracker, [11, 12])
    _feed(tracker, [15])  # notifications for 13 and 14 never came
    counts = tracker.counts()
    assert counts["missed"] == 2 and counts["coalesced"] == 2 and counts["duplicates"] == 0


def test_duplicates_and_stale_reads() -> None:
    tracker = SeqTracker()
    tracker.baseline(None, 0)
    results = _feed(tracker, [1, 1, 2, 1])  # echo of write 1; then a lagging node answers 1 again
    counts = tracker.counts()
    assert counts["duplicates"] == 2 and counts["stale_reads"] == 1
    assert results[1] == (ReadKind.REPEAT, None)  # nothing left to attribute it to


def test_new_writer_run_opens_a_new_window() -> None:
    tracker = SeqTracker()
    tracker.baseline(None, 0)
    _feed(tracker, [1, 2, 3], run="a")
    results = _feed(tracker, [1, 2], run="b")
    assert [a for _, a in results] == [1, 2]
    counts = tracker.counts()
    assert counts["versions"] == 5 and counts["missed"] == 0 and counts["duplicates"] == 0


def test_attribution_jumps_when_history_is_exceeded() -> None:
    tracker = SeqTracker()
    tracker.baseline(None, 0)
    _feed(tracker, [1])
    ((kind, attributed),) = _feed(tracker, [50])
    assert kind is ReadKind.GAP and attributed == 50
