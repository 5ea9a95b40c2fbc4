"""Open-loop pacing and interruptible sleeps for bounded load loops."""

from __future__ import annotations

import asyncio
import contextlib
import time


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep, waking early when stop is set; returns True when stop is set."""
    if seconds <= 0:
        return stop.is_set()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    return stop.is_set()


class Pacer:
    """Schedules item n at start + n/rate (open loop: a slow server does not slow the schedule,
    so latency includes queueing). rate <= 0 means as fast as possible."""

    def __init__(self, rate_per_s: float) -> None:
        self.rate = rate_per_s
        self.start = time.monotonic()
        self.sent = 0

    def due_in(self) -> float:
        """Seconds until the next item (index ``sent``) is due; <= 0 means already due."""
        if self.rate <= 0:
            return 0.0
        return self.start + self.sent / self.rate - time.monotonic()

    async def wait(self, stop: asyncio.Event, n: int = 1) -> bool:
        """Wait until the first of the next n items is due, then count them sent; True on stop."""
        stopped = await sleep_or_stop(stop, self.due_in())
        self.sent += n
        return stopped
