"""Wake-ups at an exact time.monotonic() deadline, for pacing at sub-millisecond intervals.

uvloop (libuv) keeps timers in whole milliseconds: ``asyncio.sleep(0.0004)`` is rounded to 0 ms and
returns at once, ``asyncio.sleep(0.0006)`` to 1 ms, and the loop's clock itself only advances in
milliseconds. A writer paced at 1,000/s therefore fires up to a millisecond early or late: writes
bunch (two within microseconds, so a listener's GET sees the next value and counts it as coalesced)
and the schedule falls behind. A Linux timerfd armed with an absolute CLOCK_MONOTONIC deadline (the
clock behind time.monotonic()) wakes the loop through its reader callback at the microsecond, never
before the deadline, without spinning. Where timerfd is not available (not Linux) this falls back to
the loop's own timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import time

_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = 0o2000000
_TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        libc.timerfd_create.restype = ctypes.c_int
        libc.timerfd_settime.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


class DeadlineTimer:
    """One reusable timer for one task: ``await timer.sleep_until(deadline)``; ``close()`` when done."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._waiter: asyncio.Future[None] | None = None
        self._libc = _libc()
        self._fd = -1
        if self._libc is not None:
            fd = self._libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
            if fd >= 0:
                self._fd = fd
                self._loop.add_reader(fd, self._expired)

    @property
    def precise(self) -> bool:
        return self._fd >= 0

    async def sleep_until(self, deadline: float) -> None:
        """Return at ``deadline`` (a time.monotonic() value) or just after it; at once if it has passed."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        if self._fd < 0 or self._libc is None:
            await asyncio.sleep(remaining)
            return
        whole = int(deadline)
        value = _Timespec(whole, int((deadline - whole) * 1e9))
        spec = _Itimerspec(_Timespec(0, 0), value)
        self._waiter = self._loop.create_future()
        if self._libc.timerfd_settime(self._fd, _TFD_TIMER_ABSTIME, ctypes.byref(spec), None) != 0:
            self._waiter = None
            await asyncio.sleep(remaining)
            return
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _expired(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self._fd, 8)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def close(self) -> None:
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
