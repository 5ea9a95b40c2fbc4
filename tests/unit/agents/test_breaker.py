"""CircuitBreaker state machine with a fake clock."""

from __future__ import annotations

from kvagent.service.breaker import BreakerState, CircuitBreaker, Permit


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _permit(breaker: CircuitBreaker) -> Permit:
    permit = breaker.allow()
    assert permit is not None
    return permit


def _half_open_with_probe(breaker: CircuitBreaker, clock: FakeClock) -> Permit:
    """Trip a breaker with failure_threshold 1 and reset_timeout_s 1, wait it out: the probe's permit."""
    breaker.record_failure(_permit(breaker))
    clock.now += 1.0
    probe = _permit(breaker)
    assert probe.probe and breaker.state is BreakerState.HALF_OPEN
    return probe


def test_opens_after_threshold_and_probes_after_timeout() -> None:
    clock = FakeClock()
    changes: list[BreakerState] = []
    breaker = CircuitBreaker(3, 2.0, clock=clock, on_change=changes.append)
    for _ in range(2):
        breaker.record_failure(_permit(breaker))
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure(_permit(breaker))
    assert breaker.state is BreakerState.OPEN and breaker.allow() is None
    clock.now = 1.9
    assert breaker.allow() is None
    clock.now = 2.0
    assert breaker.state is BreakerState.HALF_OPEN
    probe = _permit(breaker)
    assert probe.probe and breaker.allow() is None  # one probe at a time
    breaker.record_failure(probe)
    assert breaker.state is BreakerState.OPEN and breaker.opened == 2
    clock.now = 4.5
    breaker.record_success(_permit(breaker))
    assert breaker.state is BreakerState.CLOSED and breaker.allow()
    assert changes == [
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.CLOSED,
    ]


def test_success_resets_consecutive_failures() -> None:
    breaker = CircuitBreaker(2, 1.0, clock=FakeClock())
    breaker.record_failure(_permit(breaker))
    breaker.record_success(_permit(breaker))
    breaker.record_failure(_permit(breaker))
    assert breaker.state is BreakerState.CLOSED


def test_late_success_of_a_request_sent_while_closed_does_not_close_an_open_breaker() -> None:
    # The defect of issue 10: this request's answer closed the OPEN breaker and cancelled its timeout.
    clock = FakeClock()
    breaker = CircuitBreaker(2, 2.0, clock=clock)
    slow = _permit(breaker)  # a slow request goes out while closed
    breaker.record_failure(_permit(breaker))
    breaker.record_failure(_permit(breaker))
    assert breaker.state is BreakerState.OPEN
    clock.now = 0.5
    breaker.record_success(slow)  # ...and its answer arrives now, after the breaker tripped
    assert breaker.state is BreakerState.OPEN and breaker.allow() is None
    clock.now = 2.0  # the reset timeout still runs from the trip
    assert breaker.state is BreakerState.HALF_OPEN


def test_late_results_while_half_open_neither_close_reopen_nor_free_the_probe_slot() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(1, 1.0, clock=clock)
    early_ok, early_bad = _permit(breaker), _permit(breaker)
    breaker.record_failure(_permit(breaker))
    clock.now = 1.0
    probe = _permit(breaker)
    assert probe.probe
    breaker.record_success(early_ok)
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.record_failure(early_bad)
    assert breaker.state is BreakerState.HALF_OPEN and breaker.opened == 1
    assert breaker.allow() is None  # the probe is still out: no second one
    breaker.record_success(probe)
    assert breaker.state is BreakerState.CLOSED


def test_a_result_from_before_a_full_cycle_is_ignored() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(1, 1.0, clock=clock)
    ancient = _permit(breaker)
    breaker.record_failure(_permit(breaker))  # open
    clock.now = 1.0
    breaker.record_success(_permit(breaker))  # probe: closed again, a new generation
    breaker.record_failure(ancient)  # from the first closed period: must not trip the new one
    assert breaker.state is BreakerState.CLOSED and breaker.opened == 1


def test_a_released_probe_lets_the_next_probe_out() -> None:
    """A probe whose request was cancelled reports no outcome: released, the half-open slot is free again."""
    clock = FakeClock()
    breaker = CircuitBreaker(1, 1.0, clock=clock)
    probe = _half_open_with_probe(breaker, clock)
    assert breaker.allow() is None
    breaker.release(probe)
    second = breaker.allow()
    assert second is not None and second.probe
    breaker.record_success(second)
    assert breaker.state is BreakerState.CLOSED


def test_releasing_an_answered_or_ordinary_permit_changes_nothing() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(1, 1.0, clock=clock)
    ordinary = _permit(breaker)
    breaker.release(ordinary)  # closed: nothing to give back
    assert breaker.state is BreakerState.CLOSED
    probe = _half_open_with_probe(breaker, clock)
    breaker.record_failure(probe)  # the probe failed: open again, a new generation
    breaker.release(probe)  # released after its outcome (the finally of the request)
    assert breaker.state is BreakerState.OPEN and breaker.allow() is None
