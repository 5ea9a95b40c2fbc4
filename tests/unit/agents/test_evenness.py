"""Evenness figures used for per-worker counts and per-node ops."""

import math

import pytest
from kvagent.service.evenness import evenness


def test_perfectly_even() -> None:
    e = evenness({"a": 10, "b": 10, "c": 10})
    assert e.max_min == 1.0
    assert e.imbalance == 1.0
    assert e.cv == 0.0
    assert e.total == 30


def test_one_member_takes_all() -> None:
    e = evenness([30, 0, 0])
    assert math.isinf(e.max_min)
    assert e.imbalance == pytest.approx(3.0)
    assert e.as_dict()["max_min"] is None


def test_cv_value() -> None:
    e = evenness([8, 10, 12])
    assert e.max_min == pytest.approx(1.5)
    assert e.cv == pytest.approx(math.sqrt(8 / 3) / 10)


def test_empty_and_zero() -> None:
    assert evenness([]).n == 0
    assert math.isinf(evenness([0, 0]).imbalance)
