"""Waiting for a condition, never for a length of time: every wait samples until the condition holds or a
deadline passes, and the caller sees what was last sampled."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def settle(sample: Callable[[], T], done: Callable[[T], bool], timeout_s: float, interval_s: float = 0.25) -> T:
    """Sample until done(value) or timeout_s has passed; the last value either way, so that the caller's
    assertions on it say what was wrong."""
    deadline = time.monotonic() + timeout_s
    value = sample()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(interval_s)
        value = sample()
    return value


def wait_until(
    predicate: Callable[[], Any], timeout_s: float, interval_s: float = 0.25, what: str = "condition"
) -> Any:
    """predicate()'s first truthy value, or AssertionError naming `what` after timeout_s."""
    value = settle(predicate, bool, timeout_s, interval_s)
    if not value:
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
    return value
