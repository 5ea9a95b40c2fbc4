"""Clock offset between this host and a Redis server, NTP style, from the server's TIME command.

Writer and listeners each measure their offset to the same reference server (the writer's node);
the listener's offset to the writer is the difference of the two. The error of one sample is at
most half its round trip, so the sample with the smallest round trip wins.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ClockSample:
    offset_ns: int  # local wall clock minus server clock
    uncertainty_ns: int  # half the round trip of the best sample, plus TIME's 1 us resolution


def _sample(t0: int, reply: Any, t1: int) -> tuple[int, int]:
    seconds, micros = int(reply[0]), int(reply[1])
    server_ns = seconds * 1_000_000_000 + micros * 1_000
    return (t0 + t1) // 2 - server_ns, (t1 - t0) // 2 + 1_000


async def measure_offset(execute: Callable[..., Awaitable[Any]], samples: int = 8) -> ClockSample:
    """Local clock minus the server's, from ``samples`` TIME calls; ``execute(b"TIME")`` sends a command."""
    best: tuple[int, int] | None = None
    for _ in range(samples):
        t0 = time.time_ns()
        reply = await execute(b"TIME")
        t1 = time.time_ns()
        offset, err = _sample(t0, reply, t1)
        if best is None or err < best[1]:
            best = (offset, err)
    assert best is not None
    return ClockSample(*best)
