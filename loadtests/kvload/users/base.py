"""What every kvtestbed user shares: the recorder, and open- or closed-loop timing.

Closed loop (no --kvt-rate): each user sends its next request when the previous one is answered, as Locust users
do. Open loop (--kvt-rate PROFILE): each user keeps its share of the profile's schedule (kvload.pacing) and the
latency it records counts from the intended send time.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

from locust import User, constant
from locust.env import Environment
from locust.exception import StopUser

from kvload.pacing import Pacer, phases_of
from kvload.plugin import run_profile, run_t0_ns
from kvload.stats import Recorder, recorder
from kvload.timer import for_environment


def next_phase(environment: Environment) -> float:
    """The next user's start phase in this process (kvload.pacing.phases_of, kept on the environment)."""
    phases: Iterator[float] | None = getattr(environment, "kvt_phases", None)
    if phases is None:
        phases = environment.kvt_phases = phases_of(random.Random())
    return next(phases)


class KvtUser(User):
    abstract = True
    wait_time = constant(0)  # pacing is ours: closed loop sends back to back, open loop follows the Pacer

    def __init__(self, environment) -> None:  # type: ignore[no-untyped-def]
        super().__init__(environment)
        self.recorder: Recorder = recorder(environment)
        self.rng = random.Random()
        profile = run_profile(environment)
        users = getattr(environment.parsed_options, "num_users", None) or 1
        self.sent_ns = 0  # when the current request actually left (begin)
        self.pacer = (
            Pacer(profile, run_t0_ns(environment), users, next_phase(environment), for_environment(environment))
            if profile is not None
            else None
        )

    def begin(self, request_type: str, name: str) -> int:
        """The time this request's latency counts from (perf_counter ns). Open loop: the intended send time."""
        if self.pacer is None:
            self.sent_ns = time.perf_counter_ns()
            return self.sent_ns
        intended = self.pacer.wait()
        if intended is None:
            # the profile has ended: this user is done (the master ends the run, kvload.plugin); stopping here, not
            # idling, lets a stop with --stop-timeout finish at once instead of waiting the timeout out
            raise StopUser()
        # the lag is recorded first, so recording it is not part of the request's own time
        self.recorder.lag(request_type, name, max(time.perf_counter_ns() - intended, 0))
        sent = self.sent_ns = time.perf_counter_ns()
        # early (kvload.pacing wakes a little before the intended time): count from the actual send
        return sent if sent <= intended else intended

    def ok(
        self, request_type: str, name: str, started_ns: int, length: int = 0, count: int = 1, replied_ns: int = 0
    ) -> None:
        """Record a success. `replied_ns`: when its reply was read (a ReplyClock), if the client knows; a time
        before this request's send means no read happened for it, and now is taken instead."""
        end = replied_ns if replied_ns > self.sent_ns else time.perf_counter_ns()
        self.recorder.success(request_type, name, end - started_ns, length, count)

    def failed(self, request_type: str, name: str, started_ns: int, exc: BaseException | str, count: int = 1) -> None:
        self.recorder.failure(request_type, name, time.perf_counter_ns() - started_ns, exc, count)
