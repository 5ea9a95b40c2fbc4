"""Open-loop pacing: intended send times follow the profile, and a stall is paid for, not forgotten."""

from __future__ import annotations

import random
import time

import gevent
from kvload.pacing import EARLY_NS, Pacer, phases_of
from kvload.profiles import parse


def test_intended_times_follow_the_rate_exactly() -> None:
    t0 = time.perf_counter_ns()
    pacer = Pacer(parse("constant:rate=2000,for=10"), t0, users=2, phase=0.1)
    times = [pacer.wait() for _ in range(50)]
    assert all(t is not None for t in times)
    gaps = {b - a for a, b in zip(times, times[1:], strict=False)}  # type: ignore[operator]
    assert gaps == {1_000_000}  # 2000/s over 2 users: each user every 1 ms, to the nanosecond


def test_a_stalled_user_catches_up_with_its_intended_times_in_the_past() -> None:
    t0 = time.perf_counter_ns()
    pacer = Pacer(parse("constant:rate=1000,for=10"), t0, users=1, phase=0.2)
    first = pacer.wait()
    assert first is not None
    gevent.sleep(0.05)  # the stall under test (a server that did not answer for 50 ms), not a synchronisation
    overdue = []
    started = time.perf_counter_ns()
    for _ in range(40):
        intended = pacer.wait()
        assert intended is not None
        overdue.append(intended)
    # the 40 sends due during the stall leave at once (no sleeping) and keep their intended times, 1 ms apart
    assert time.perf_counter_ns() - started < 40 * 1_000_000
    assert overdue[0] == first + 1_000_000 and overdue[-1] == first + 40 * 1_000_000
    assert overdue[-1] < started  # every one of them was due before the catch-up began


def test_no_send_leaves_more_than_one_timer_tick_early() -> None:
    t0 = time.perf_counter_ns()
    pacer = Pacer(parse("constant:rate=200,for=10"), t0, users=1, phase=0.3)
    for _ in range(10):
        intended = pacer.wait()
        assert intended is not None
        assert time.perf_counter_ns() >= intended - EARLY_NS


def test_the_profile_end_ends_the_schedule() -> None:
    t0 = time.perf_counter_ns() - 2_000_000_000  # the run started 2 s ago
    pacer = Pacer(parse("constant:rate=100,for=1"), t0, users=1, phase=0.4)
    assert pacer.wait() is None


def test_users_start_phases_are_spread_evenly() -> None:
    for n in (2, 3, 4, 8, 50, 64):
        phases = phases_of(random.Random(6))
        firsts = sorted(next(phases) for _ in range(n))
        gaps = [b - a for a, b in zip(firsts, firsts[1:], strict=False)] + [1 - firsts[-1] + firsts[0]]
        # no gap below half the even spacing (independent random phases would put two of 50 users closer than
        # that in almost every run), and exactly even for a power of two
        assert min(gaps) >= 1 / (2 * n) - 1e-9, (n, min(gaps))
        if n & (n - 1) == 0:
            assert max(gaps) - min(gaps) < 1e-9, (n, gaps)
