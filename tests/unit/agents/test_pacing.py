"""Open-loop pacing: item n is due at start + n/rate, regardless of how late the previous one was."""

from __future__ import annotations

import asyncio
import time

from kvagent.service.pacing import Pacer, sleep_or_stop


def test_pacer_rate() -> None:
    async def run() -> float:
        pacer = Pacer(200.0)
        stop = asyncio.Event()
        started = time.monotonic()
        for _ in range(41):
            await pacer.wait(stop)
        return time.monotonic() - started

    elapsed = asyncio.run(run())
    assert 0.18 <= elapsed <= 0.5  # 40 intervals of 5 ms


def test_unpaced_and_stop() -> None:
    async def run() -> tuple[float, bool]:
        stop = asyncio.Event()
        assert Pacer(0).due_in() == 0.0
        asyncio.get_running_loop().call_later(0.05, stop.set)
        started = time.monotonic()
        stopped = await sleep_or_stop(stop, 5.0)
        return time.monotonic() - started, stopped

    elapsed, stopped = asyncio.run(run())
    assert stopped and elapsed < 1.0
