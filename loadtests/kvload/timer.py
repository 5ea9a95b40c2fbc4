"""Wake-ups at microsecond precision for the open-loop pacer: one Linux timerfd per gevent hub.

Why: gevent's timers (libev) wake at millisecond granularity (epoll_wait's timeout is in ms and libev rounds it
up). A pacer on them either wakes late, and the lag counts as latency, or wakes a whole tick early, which bunches
the sends of all users at tick boundaries: measured at 2,000 GET/s on one connection (server and Locust on a CPU
each), 2 or 4 users gave p50 112-116 us against 53-62 us for one user, because bunched sends leave the CPUs idle
for longer between bursts and each burst pays a deeper wake-up (KVM halt polling stops at 200 us). A timerfd
armed at an absolute CLOCK_MONOTONIC time (the clock of time.perf_counter_ns on Linux) makes epoll return on
time, so each user sends at its own intended time and the process's sends are spread as the schedule says.

One timerfd serves every sleeper of a hub: a heap of deadlines, the fd armed for the earliest, its io watcher
wakes everything due. Python 3.13 has os.timerfd_create; this runs on 3.11, so the two calls go through ctypes.
Where there is no timerfd (not Linux), `for_hub` returns None and the pacer keeps gevent's timers.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import heapq
import itertools
import os
import sys
import time
from typing import Any

import gevent
from gevent.hub import Waiter

_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = os.O_CLOEXEC
_TFD_TIMER_ABSTIME = 1
_READ = 1  # libev's EV_READ


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.timerfd_settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    except (OSError, AttributeError):
        return None
    return libc


class PreciseTimer:
    """sleep_until(ns) on time.perf_counter_ns's clock, for the greenlets of the hub it was made in."""

    def __init__(self, libc: Any, fd: int) -> None:
        self._libc = libc
        self._fd = fd
        self._heap: list[tuple[int, int, Waiter]] = []
        self._order = itertools.count()  # ties: first asleep, first woken
        self._armed_ns: int | None = None
        self._spec = _Itimerspec()
        self._watcher = gevent.get_hub().loop.io(fd, _READ)
        self._watcher.start(self._expired)

    @classmethod
    def create(cls) -> PreciseTimer | None:
        libc = _libc()
        if libc is None:
            return None
        fd = libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if fd < 0:
            return None
        return cls(libc, fd)

    def sleep_until(self, deadline_ns: int) -> None:
        if deadline_ns <= time.perf_counter_ns():
            return
        waiter = Waiter()
        heapq.heappush(self._heap, (deadline_ns, next(self._order), waiter))
        if self._armed_ns is None or deadline_ns < self._armed_ns:
            self._arm(deadline_ns)
        waiter.get()

    def close(self) -> None:
        """Release the fd (tests); only when nobody sleeps on it."""
        self._watcher.stop()
        os.close(self._fd)

    def _arm(self, deadline_ns: int) -> None:
        self._armed_ns = deadline_ns
        value = self._spec.it_value
        value.tv_sec, value.tv_nsec = divmod(deadline_ns, 1_000_000_000)
        if self._libc.timerfd_settime(self._fd, _TFD_TIMER_ABSTIME, ctypes.byref(self._spec), None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")

    def _expired(self) -> None:
        """The io watcher's callback, in the hub: wake every sleeper that is due, arm for the next one."""
        with contextlib.suppress(BlockingIOError):  # re-armed after it became readable: nothing to read
            os.read(self._fd, 8)
        heap = self._heap
        now = time.perf_counter_ns()
        while heap and heap[0][0] <= now:
            heapq.heappop(heap)[2].switch(None)
        self._armed_ns = None
        if heap:
            self._arm(heap[0][0])


def for_environment(environment: Any) -> PreciseTimer | None:
    """The process's PreciseTimer (made on first use, kept on the Locust environment, not in a global), or None
    where the platform has no timerfd."""
    timer: PreciseTimer | None | bool = getattr(environment, "kvt_precise_timer", False)
    if timer is False:
        timer = environment.kvt_precise_timer = PreciseTimer.create()
    return timer  # type: ignore[return-value]
