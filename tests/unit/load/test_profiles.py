"""Rate profiles (kvload.profiles): what each shape offers over time, and input that cannot run."""

from __future__ import annotations

import pytest
from kvload.profiles import ProfileError, parse


def test_constant_offers_its_rate_until_its_end() -> None:
    p = parse("constant:rate=5000,for=60")
    assert (p.name, p.duration_s) == ("constant", 60)
    assert p.rate_at(0) == p.rate_at(59.9) == 5000


def test_step_climbs_every_interval_and_respects_its_cap() -> None:
    p = parse("step:from=1000,by=500,every=10,for=60,max=2500")
    assert [p.rate_at(t) for t in (0, 9.9, 10, 25, 59)] == [1000, 1000, 1500, 2000, 2500]


def test_ramp_is_linear_then_held() -> None:
    p = parse("ramp:from=0,to=10000,over=30s,for=60")
    assert p.rate_at(0) == 0
    assert p.rate_at(15) == pytest.approx(5000)
    assert p.rate_at(45) == 10000


def test_spike_is_peak_only_inside_its_window() -> None:
    p = parse("spike:base=100,peak=1000,at=20,length=5,for=40")
    assert [p.rate_at(t) for t in (19.9, 20, 24.9, 25)] == [100, 1000, 1000, 100]
    assert p.peak() == 1000


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("sine:rate=1,for=3", "unknown, use one of"),
        ("constant:rate=100", "missing for"),
        ("constant:rate=-5,for=10", "rate=-5 is negative"),
        ("constant:rate=0,for=10", "rate must be > 0"),
        ("constant:rate=abc,for=10", "is not a number"),
        ("constant:rate=5,for=10,burst=3", "unknown field 'burst'"),
        ("step:from=10,by=10,every=70,for=60", "comes after its end"),
        ("ramp:to=100,over=90,for=60", "runs past its end"),
        ("spike:base=1,peak=10,at=55,length=10,for=60", "runs past its end"),
        ("constant:rate,for=3", "is not key=value"),
    ],
)
def test_bad_profiles_fail_with_one_line_naming_the_field(spec: str, fragment: str) -> None:
    with pytest.raises(ProfileError) as err:
        parse(spec)
    message = str(err.value)
    assert fragment in message and "\n" not in message
