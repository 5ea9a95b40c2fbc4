"""Open-loop pacing per user: intended send times from the rate profile, latency measured from them.

Each user owns a schedule (as wrk2 gives each connection one): its n-th request is intended at a fixed time
derived from R(t)/users. A user that falls behind (the server stalled, the generator saturated) sends its overdue
requests at once, and their latency still counts from the intended time, so a stall shows as the queue it caused
instead of vanishing (coordinated omission). How late each send left is recorded apart (Recorder.lag): a large
send lag with a small service time means the generator, not the server, was the bottleneck.

Wake-ups: on Linux the pacer sleeps on a timerfd (kvload.timer) until PRECISE_EARLY_NS before the intended time.
gevent's own timers wake at millisecond granularity: sleeping exactly until the intended time made sends leave a
median 548 µs late at 500/s, and waking a whole tick (EARLY_NS) early bunched every user's sends at tick boundaries
(at 2,000 GET/s p50 112-116 µs with 2-4 users against 53-62 µs with one). The early margin covers the wake-up
itself (timerfd to greenlet on an idle 2-vCPU VM: p50 22 µs); a request that leaves early counts its latency from
its actual send, a late one from its intended time (max of the two), so an early send is never credited with time
it did not wait and a late one carries its whole delay. The schedule itself stays on the intended times, so the
average rate is exact. Without a timerfd the pacer falls back to gevent's timers and EARLY_NS.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import gevent

from kvload.profiles import RateProfile
from kvload.timer import PreciseTimer

_IDLE_NS = 100_000_000  # while the profile's rate is 0, look again every 100 ms
EARLY_NS = 1_000_000  # one libev timer tick (gevent's timers)
PRECISE_EARLY_NS = 50_000  # a timerfd wake-up's p50 twice over (kvload.timer)


def _van_der_corput(k: int) -> float:
    """The k-th point of the base-2 van der Corput sequence: 0, 1/2, 1/4, 3/4, 1/8, 5/8... (k's bits mirrored)."""
    x, scale = 0.0, 0.5
    while k:
        if k & 1:
            x += scale
        k >>= 1
        scale /= 2
    return x


def phases_of(rng: random.Random) -> Iterator[float]:
    """Start phases for a process's users, in the order they start: the van der Corput sequence from a random
    offset.

    The users' sends are spread over each interval instead of starting in step, and evenly whatever the number of
    users (exactly even for 2, 4, 8... users, every gap within a factor 2 of even otherwise). Independent random
    phases let two users land close together and stay so for the whole run, a request queued behind another at
    every turn, and uneven gaps leave the CPUs idle for longer between some sends, which costs a deeper wake-up
    (KVM stops polling a halted vCPU after 200 µs): with 4 users at 2,000/s the p50 varied from 54 to 80 µs between
    runs with random phases. The random offset keeps the processes of a distributed run out of step with each other.
    """
    offset = rng.random()
    k = 0
    while True:
        yield (offset + _van_der_corput(k)) % 1.0
        k += 1


class Pacer:
    def __init__(
        self, profile: RateProfile, t0_ns: int, users: int, phase: float, timer: PreciseTimer | None = None
    ) -> None:
        """`phase` in [0, 1): where in its first interval this user's schedule starts (phases_of spreads them)."""
        self.profile = profile
        self.timer = timer
        self.early_ns = PRECISE_EARLY_NS if timer is not None else EARLY_NS
        self.t0_ns = t0_ns
        self.users = max(users, 1)
        now = time.perf_counter_ns()
        rate = profile.rate_at(max(now - t0_ns, 0) / 1e9) / self.users
        self.next_ns = now + (int(phase * 1e9 / rate) if rate > 0 else 0)

    def wait(self) -> int | None:
        """Sleep until the next intended send; its time (perf_counter ns), or None once the profile has ended."""
        while True:
            intended = self.next_ns
            t = (intended - self.t0_ns) / 1e9
            if t >= self.profile.duration_s:
                return None
            rate = self.profile.rate_at(max(t, 0.0)) / self.users
            if rate <= 0:
                self.next_ns = intended + _IDLE_NS
                delay = self.next_ns - time.perf_counter_ns()
                if delay > 0:
                    gevent.sleep(delay / 1e9)
                continue
            self.next_ns = intended + int(1e9 / rate)
            wake = intended - self.early_ns
            if self.timer is not None:
                self.timer.sleep_until(wake)
            else:
                delay = wake - time.perf_counter_ns()
                if delay > 0:
                    gevent.sleep(delay / 1e9)
            return intended
