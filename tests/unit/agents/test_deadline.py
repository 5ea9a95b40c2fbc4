"""DeadlineTimer: wake-ups at a sub-millisecond deadline under uvloop, never before it."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest
import uvloop
from kvagent.service.deadline import DeadlineTimer


async def _wake_ups(use_timer: bool, count: int = 300) -> list[float]:
    """Seconds between each deadline (0.2-1.8 ms ahead) and the wake-up; negative means early."""
    timer = DeadlineTimer()
    early_or_late = []
    try:
        for i in range(count):
            deadline = time.monotonic() + 0.0002 + (i % 9) * 0.0002
            if use_timer:
                await timer.sleep_until(deadline)
            else:
                await asyncio.sleep(deadline - time.monotonic())
            early_or_late.append(time.monotonic() - deadline)
    finally:
        timer.close()
    return early_or_late


@pytest.mark.skipif(sys.platform != "linux", reason="timerfd is Linux's")
def test_never_wakes_before_the_deadline_where_uvloop_would() -> None:
    with_timer = uvloop.run(_wake_ups(use_timer=True))
    assert all(delta >= 0 for delta in with_timer), min(with_timer)
    # The reason the timer exists: uvloop rounds sleeps to whole milliseconds, so a plain sleep
    # of 0.2-0.4 ms returns at once, long before its deadline.
    plain = uvloop.run(_wake_ups(use_timer=False))
    assert sum(delta < -0.0001 for delta in plain) > len(plain) // 20


def test_past_deadline_returns_at_once_and_close_is_idempotent() -> None:
    async def run() -> bool:
        timer = DeadlineTimer()
        await timer.sleep_until(time.monotonic() - 1)
        precise = timer.precise
        timer.close()
        timer.close()
        return precise

    assert uvloop.run(run()) is (sys.platform == "linux")


def test_a_cancelled_sleep_leaves_the_timer_usable() -> None:
    async def run() -> float:
        timer = DeadlineTimer()
        try:
            task = asyncio.ensure_future(timer.sleep_until(time.monotonic() + 5))
            await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            deadline = time.monotonic() + 0.003
            await timer.sleep_until(deadline)
            return time.monotonic() - deadline
        finally:
            timer.close()

    assert 0 <= uvloop.run(run()) < 1.0
