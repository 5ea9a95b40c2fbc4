"""A circuit breaker: stop hammering a failing backend, probe it again after a pause.

closed --(failure_threshold consecutive failures)--> open --(reset_timeout_s)--> half_open
half_open --(probe succeeds)--> closed;  half_open --(probe fails)--> open

Every request that is let through gets a Permit naming the breaker generation (one per state
change) it started in, and its outcome is reported with that permit. A result from an older
generation is ignored: without that, the answer to a request sent while closed, arriving after
the breaker tripped, closed the OPEN breaker and cancelled its reset timeout, and a late failure
while half-open reopened it although the probe was still out. Only the probe closes a half-open
breaker.

Kept in-house rather than adopted: aiobreaker's last release is 1.2.0 (2021-05) and purgatory
(3.0.1, 2024-11) is built around wrapping one awaited call in the breaker, whereas a streams
request is several attempts, each allowed or refused on its own, whose timeouts are failures and
whose answer arrives on a response stream; the state machine below is small enough to own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum


class BreakerState(IntEnum):
    # Integer values are what the Prometheus gauge exports.
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


@dataclass(frozen=True)
class Permit:
    """Leave to send one request; hand it back with its outcome."""

    generation: int
    probe: bool


class CircuitBreaker:
    def __init__(
        self,
        failure_threshold: int = 5,
        reset_timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerState], None] | None = None,
    ) -> None:
        if failure_threshold < 1 or reset_timeout_s <= 0:
            raise ValueError("failure_threshold >= 1 and reset_timeout_s > 0 required")
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self._clock = clock
        self._on_change = on_change
        self._state = BreakerState.CLOSED
        self._generation = 0
        self._failures = 0
        self._opened_at = 0.0
        self._probe_out = False
        self.opened = 0  # how many times it tripped

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.reset_timeout_s:
            self._set(BreakerState.HALF_OPEN)
        return self._state

    def allow(self) -> Permit | None:
        """A permit if a request may go out now, else None. In half-open only one probe at a time."""
        state = self.state
        if state is BreakerState.CLOSED:
            return Permit(self._generation, probe=False)
        if state is BreakerState.HALF_OPEN and not self._probe_out:
            self._probe_out = True
            return Permit(self._generation, probe=True)
        return None

    def record_success(self, permit: Permit) -> None:
        if permit.generation != self._generation:
            return  # sent before the last state change: says nothing about the backend now
        if self._state is BreakerState.CLOSED:
            self._failures = 0
        elif self._state is BreakerState.HALF_OPEN and permit.probe:
            self._set(BreakerState.CLOSED)

    def record_failure(self, permit: Permit) -> None:
        if permit.generation != self._generation:
            return
        if self._state is BreakerState.CLOSED:
            self._failures += 1
            if self._failures >= self.failure_threshold:
                self._trip()
        elif self._state is BreakerState.HALF_OPEN and permit.probe:
            self._trip()

    def release(self, permit: Permit) -> None:
        """Hand back a permit whose outcome will never be reported (its request was cancelled, say at stop).

        Without this a cancelled probe held the half-open breaker's only slot for good: no probe could go
        out again and every request was refused. A permit already answered is from an older generation (every
        probe outcome changes state), so releasing it after its outcome is harmless."""
        if permit.probe and permit.generation == self._generation and self._state is BreakerState.HALF_OPEN:
            self._probe_out = False

    def _trip(self) -> None:
        self._opened_at = self._clock()
        self.opened += 1
        self._set(BreakerState.OPEN)

    def _set(self, state: BreakerState) -> None:
        # A new generation on every change: permits issued before it no longer count.
        self._generation += 1
        self._state = state
        self._failures = 0
        self._probe_out = False
        if self._on_change is not None:
            self._on_change(state)
