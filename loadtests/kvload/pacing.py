"""Open-loop pacing per user: intended send times from the rate profile, latency measured from them.

Each user owns a schedule (as wrk2 gives each connection one): its n-th request is intended at a fixed time
derived from R(t)/users. A user that falls behind (the server stalled, the generator saturated) sends its overdue
requests at once, and their latency still counts from the intended time, so a stall shows as the queue it caused
instead of vanishing (coordinated omission). How late each send left is recorded apart (Recorder.lag): a large
send lag with a small service time means the generator, not the server, was the bottleneck.

gevent's timers wake at millisecond granularity on an idle loop (libev rounds epoll's timeout up to 1 ms): sleeping
exactly until the intended time made sends leave a median 548 µs late at 500/s, all of it counted as latency. So the
pacer wakes up to EARLY_NS before the intended time and the request leaves then; its latency counts from
max(intended, actual send), so an early send is never credited with time it did not wait, and a late one still
carries its whole delay. The schedule itself stays on the intended times, so the average rate is exact.
"""

from __future__ import annotations

import random
import time

import gevent

from kvload.profiles import RateProfile

_IDLE_NS = 100_000_000  # while the profile's rate is 0, look again every 100 ms
EARLY_NS = 1_000_000  # one libev timer tick


class Pacer:
    def __init__(self, profile: RateProfile, t0_ns: int, users: int, rng: random.Random) -> None:
        self.profile = profile
        self.t0_ns = t0_ns
        self.users = max(users, 1)
        now = time.perf_counter_ns()
        rate = profile.rate_at(max(now - t0_ns, 0) / 1e9) / self.users
        # a random phase within one interval spreads the users' sends instead of starting them in step
        self.next_ns = now + (int(rng.random() * 1e9 / rate) if rate > 0 else 0)

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
            delay = intended - time.perf_counter_ns() - EARLY_NS
            if delay > 0:
                gevent.sleep(delay / 1e9)
            return intended
