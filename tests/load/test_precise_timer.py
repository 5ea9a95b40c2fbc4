"""kvload.timer: one timerfd wakes every sleeper of the hub, in deadline order, never before its deadline."""

from __future__ import annotations

import time
from collections.abc import Iterator

import gevent
import pytest
from kvload.pacing import PRECISE_EARLY_NS, Pacer
from kvload.profiles import parse
from kvload.timer import PreciseTimer


@pytest.fixture
def timer() -> Iterator[PreciseTimer]:
    made = PreciseTimer.create()
    assert made is not None, "this Linux has no timerfd"
    yield made
    made.close()


def test_sleepers_wake_in_deadline_order_and_never_early(timer: PreciseTimer) -> None:
    base = time.perf_counter_ns() + 5_000_000
    # deadlines given out of order, two of them equal, one earlier than the one already armed
    offsets_us = [900, 300, 300, 1500, 100, 2000, 700]
    woken: list[tuple[int, int, int]] = []

    def sleeper(i: int, deadline: int) -> None:
        timer.sleep_until(deadline)
        woken.append((i, deadline, time.perf_counter_ns()))

    # gevent starts greenlets in the order they were spawned: they go to sleep, and re-arm the timer, in this order
    greenlets = [gevent.spawn(sleeper, i, base + off * 1000) for i, off in enumerate(offsets_us)]
    gevent.joinall(greenlets, timeout=5, raise_error=True)
    assert len(woken) == len(offsets_us)
    assert all(at >= deadline for _, deadline, at in woken)
    assert [d for _, d, _ in woken] == sorted(base + off * 1000 for off in offsets_us)
    # equal deadlines: first asleep, first woken
    assert [i for i, _, _ in woken if offsets_us[i] == 300] == [1, 2]


def test_a_deadline_in_the_past_does_not_sleep(timer: PreciseTimer) -> None:
    timer.sleep_until(time.perf_counter_ns() - 1)  # returns without switching: nothing else could run
    assert timer._heap == []


def test_the_pacer_on_the_timer_sends_at_most_its_margin_early(timer: PreciseTimer) -> None:
    t0 = time.perf_counter_ns()
    pacer = Pacer(parse("constant:rate=500,for=10"), t0, users=1, phase=0.5, timer=timer)
    intended_times = []
    for _ in range(25):
        intended = pacer.wait()
        assert intended is not None
        assert time.perf_counter_ns() >= intended - PRECISE_EARLY_NS
        intended_times.append(intended)
    assert {b - a for a, b in zip(intended_times, intended_times[1:], strict=False)} == {2_000_000}
