"""Sequence accounting for one keyspace-notification listener: coalesced, missed, duplicate, stale.

A writer overwrites one key with increasing sequence numbers; a listener gets one notification per
write and reads the key. Four different things can go wrong and are counted separately:

* coalesced: versions never read because the key was overwritten before the GET (seq gaps);
* missed: writes for which no notification arrived (fewer notifications than writes);
* duplicates: more notifications than writes (e.g. one write echoed by several KeyDB masters);
* stale reads: a read returned an older seq than one already seen (a lagging replica);
* repeat reads: a read returned the seq already seen, the normal companion of coalescing.

Missed and duplicates compare notifications received after the first read with the writes between
the first and the last seq read, so they are exact once the listener has caught up (after drain).
A new writer run (different run id) closes the window and starts another.

Attribution: notifications of one connection arrive in write order, so the k-th notification of a
window belongs to version first + k. on_read returns that version alongside the read's kind, so a
listener can time every write (from the history of write times carried in the value) even when
the GET already returned a newer version. If the read is older than the attributed version
(duplicate notifications) nothing is attributed; if it is more than ``history`` versions ahead
(missed notifications), attribution jumps to the version read.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from enum import Enum


class ReadKind(Enum):
    FIRST = "first"
    NEXT = "next"  # exactly last + 1: this notification was for this version
    GAP = "gap"  # newer than last + 1: some versions were overwritten unseen
    REPEAT = "repeat"
    STALE = "stale"


@dataclass
class _Window:
    first: int
    last: int
    notifications: int = 0  # received after the first read of this window
    coalesced: int = 0
    repeat_reads: int = 0
    stale_reads: int = 0
    versions: int = 1
    attributed: int = -1  # the version the previous notification was attributed to

    @property
    def expected(self) -> int:
        return self.last - self.first

    @property
    def missed(self) -> int:
        return max(0, self.expected - self.notifications)

    @property
    def duplicates(self) -> int:
        return max(0, self.notifications - self.expected)


@dataclass
class SeqTracker:
    notifications: int = 0
    unreadable: int = 0  # notification, but the key was gone or not ours
    _run_id: str | None = None
    _window: _Window | None = None
    _closed: dict[str, int] = field(default_factory=dict)
    _fresh: bool = False
    # The synchronous listener updates from its thread while /metrics reads from the loop.
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def on_notification(self) -> None:
        with self._lock:
            self.notifications += 1
            if self._window is not None:
                self._window.notifications += 1

    def on_unreadable(self) -> None:
        with self._lock:
            self.unreadable += 1

    def baseline(self, run_id: str | None, seq: int) -> None:
        """At the first subscription: the key's current version (None: no key yet, the writer starts at 1).

        Notifications counted from here on are compared with writes after this version, so a
        listener that joins a running writer does not count earlier writes as missed.
        """
        with self._lock:
            if self._window is not None or self._fresh:
                return
            if run_id is None:
                self._fresh = True
                return
            self._run_id = run_id
            self._window = _Window(first=seq, last=seq, versions=0, attributed=seq)

    def on_read(self, run_id: str, seq: int, history: int = 0) -> tuple[ReadKind, int | None]:
        """Account a read of ``seq``; returns its kind and the version this notification is attributed to."""
        with self._lock:
            kind = self._on_read(run_id, seq)
            window = self._window
            assert window is not None
            if window.attributed < 0:
                window.attributed = seq - 1
            candidate = window.attributed + 1
            if candidate > seq:
                return kind, None
            if seq - candidate > history:
                candidate = seq
            window.attributed = candidate
            return kind, candidate

    def _on_read(self, run_id: str, seq: int) -> ReadKind:
        window = self._window
        if window is None or run_id != self._run_id:
            if window is None and self._fresh:
                # Subscribed before this writer's first write: every notification so far is its.
                window = _Window(first=0, last=0, notifications=self.notifications, versions=0, attributed=0)
            elif window is None:
                window = _Window(first=seq, last=seq, versions=1)
                self._run_id, self._window = run_id, window
                return ReadKind.FIRST
            else:
                # A new writer run (restarted writer, seq from 1): this notification is the new run's,
                # not the old window's (on_notification counted it there).
                window.notifications -= 1
                self._close()
                window = _Window(first=0, last=0, notifications=1, versions=0, attributed=0)
            self._fresh = False
            self._run_id, self._window = run_id, window
        if seq == window.last + 1:
            window.last = seq
            window.versions += 1
            return ReadKind.NEXT
        if seq > window.last:
            window.coalesced += seq - window.last - 1
            window.last = seq
            window.versions += 1
            return ReadKind.GAP
        if seq == window.last:
            window.repeat_reads += 1
            return ReadKind.REPEAT
        window.stale_reads += 1
        return ReadKind.STALE

    def _close(self) -> None:
        if self._window is None:
            return
        for name, value in self._window_counts(self._window).items():
            self._closed[name] = self._closed.get(name, 0) + value
        self._window = None

    @staticmethod
    def _window_counts(w: _Window) -> dict[str, int]:
        return {
            "versions": w.versions,
            "coalesced": w.coalesced,
            "missed": w.missed,
            "duplicates": w.duplicates,
            "repeat_reads": w.repeat_reads,
            "stale_reads": w.stale_reads,
        }

    def counts(self) -> dict[str, int]:
        with self._lock:
            return self._counts()

    def _counts(self) -> dict[str, int]:
        out = {
            "versions": 0,
            "coalesced": 0,
            "missed": 0,
            "duplicates": 0,
            "repeat_reads": 0,
            "stale_reads": 0,
        }
        for name, value in self._closed.items():
            out[name] += value
        if self._window is not None:
            for name, value in self._window_counts(self._window).items():
                out[name] += value
        out["notifications"] = self.notifications
        out["unreadable"] = self.unreadable
        return out
