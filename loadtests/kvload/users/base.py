"""What every kvtestbed user shares: the recorder, and open- or closed-loop timing.

Closed loop (no --kvt-rate): each user sends its next request when the previous one is answered, as Locust users
do. Open loop (--kvt-rate PROFILE): each user keeps its share of the profile's schedule (kvload.pacing) and the
latency it records counts from the intended send time.
"""

from __future__ import annotations

import random
import time

from locust import User, constant
from locust.exception import StopUser

from kvload.pacing import Pacer
from kvload.plugin import run_profile, run_t0_ns
from kvload.stats import Recorder, recorder


class KvtUser(User):
    abstract = True
    wait_time = constant(0)  # pacing is ours: closed loop sends back to back, open loop follows the Pacer

    def __init__(self, environment) -> None:  # type: ignore[no-untyped-def]
        super().__init__(environment)
        self.recorder: Recorder = recorder(environment)
        self.rng = random.Random()
        profile = run_profile(environment)
        users = getattr(environment.parsed_options, "num_users", None) or 1
        self.pacer = Pacer(profile, run_t0_ns(environment), users, self.rng) if profile is not None else None

    def begin(self, request_type: str, name: str) -> int:
        """The time this request's latency counts from (perf_counter ns). Open loop: the intended send time."""
        if self.pacer is None:
            return time.perf_counter_ns()
        intended = self.pacer.wait()
        if intended is None:
            # the profile has ended: this user is done (the master ends the run, kvload.plugin); stopping here, not
            # idling, lets a stop with --stop-timeout finish at once instead of waiting the timeout out
            raise StopUser()
        sent = time.perf_counter_ns()
        if sent <= intended:
            self.recorder.lag(request_type, name, 0)
            return sent  # up to one timer tick early (kvload.pacing): count from the actual send
        self.recorder.lag(request_type, name, sent - intended)
        return intended

    def ok(self, request_type: str, name: str, started_ns: int, length: int = 0, count: int = 1) -> None:
        self.recorder.success(request_type, name, time.perf_counter_ns() - started_ns, length, count)

    def failed(self, request_type: str, name: str, started_ns: int, exc: BaseException | str, count: int = 1) -> None:
        self.recorder.failure(request_type, name, time.perf_counter_ns() - started_ns, exc, count)
