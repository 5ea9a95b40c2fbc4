"""Open-loop rate profiles by name and parameters: constant, step, ramp, spike.

A profile is the total offered rate R(t) in requests/s over the seconds since the run started, and where it ends.
It is written as one string, the form the CLI, the web UI's start form and scenario files share:

    constant:rate=5000,for=60
    step:from=1000,by=1000,every=10,for=60        1000/s, 2000/s after 10 s, ... until 60 s
    ramp:from=0,to=10000,over=30,for=60           linear from 0 to 10000/s in 30 s, then held
    spike:base=1000,peak=10000,at=20,length=5,for=40

Every profile ends (`for`, seconds): a load loop is always bounded in time. Each user sends at R(t)/users, so the
total is R(t) however many workers share the users.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


class ProfileError(ValueError):
    """A profile string that cannot be run; the message names the field to fix."""


@dataclass(frozen=True)
class RateProfile:
    name: str
    duration_s: float
    rate_at: Callable[[float], float]
    spec: str

    def peak(self, step_s: float = 0.1) -> float:
        n = int(self.duration_s / step_s) + 1
        return max(self.rate_at(i * step_s) for i in range(n))


# name -> (required fields, optional fields with defaults)
_FIELDS: dict[str, tuple[tuple[str, ...], dict[str, float]]] = {
    "constant": (("rate", "for"), {}),
    "step": (("from", "by", "every", "for"), {"max": float("inf")}),
    "ramp": (("to", "over", "for"), {"from": 0.0}),
    "spike": (("base", "peak", "at", "length", "for"), {}),
}


def parse(spec: str) -> RateProfile:
    """Parse and check a profile string; ProfileError names what to fix."""
    text = spec.strip()
    name, _, rest = text.partition(":")
    name = name.strip()
    if name not in _FIELDS:
        raise ProfileError(
            f"rate profile {name!r}: unknown, use one of {', '.join(_FIELDS)} (e.g. constant:rate=1000,for=60)"
        )
    required, optional = _FIELDS[name]
    values: dict[str, float] = dict(optional)
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, raw = part.partition("=")
        key = key.strip()
        if not eq:
            raise ProfileError(f"rate profile {name}: {part!r} is not key=value")
        if key not in required and key not in optional:
            raise ProfileError(
                f"rate profile {name}: unknown field {key!r} (fields: {', '.join(required + tuple(optional))})"
            )
        try:
            value = float(raw.rstrip("s")) if key in ("for", "over", "every", "at", "length") else float(raw)
        except ValueError:
            raise ProfileError(f"rate profile {name}: {key}={raw!r} is not a number") from None
        if value < 0:
            raise ProfileError(f"rate profile {name}: {key}={raw} is negative")
        values[key] = value
    missing = [k for k in required if k not in values]
    if missing:
        raise ProfileError(f"rate profile {name}: missing {', '.join(missing)}")
    end = values["for"]
    if end <= 0:
        raise ProfileError(f"rate profile {name}: for= must be > 0 seconds")
    return RateProfile(name, end, _builders[name](values, end), text)


def _constant(v: dict[str, float], end: float) -> Callable[[float], float]:
    if v["rate"] <= 0:
        raise ProfileError("rate profile constant: rate must be > 0")
    rate = v["rate"]
    return lambda t: rate


def _step(v: dict[str, float], end: float) -> Callable[[float], float]:
    start, by, every, cap = v["from"], v["by"], v["every"], v["max"]
    if every <= 0:
        raise ProfileError("rate profile step: every must be > 0 seconds")
    if every >= end:
        raise ProfileError(f"rate profile step: the first step (at {every:g} s) comes after its end (for={end:g})")
    if start <= 0 and by <= 0:
        raise ProfileError("rate profile step: from or by must be > 0")
    return lambda t: min(start + by * int(t // every), cap)


def _ramp(v: dict[str, float], end: float) -> Callable[[float], float]:
    lo, hi, over = v["from"], v["to"], v["over"]
    if over <= 0:
        raise ProfileError("rate profile ramp: over must be > 0 seconds")
    if over > end:
        raise ProfileError(f"rate profile ramp: the ramp (over={over:g}) runs past its end (for={end:g})")
    if hi <= 0 and lo <= 0:
        raise ProfileError("rate profile ramp: from or to must be > 0")
    return lambda t: lo + (hi - lo) * min(t / over, 1.0)


def _spike(v: dict[str, float], end: float) -> Callable[[float], float]:
    base, peak, at, length = v["base"], v["peak"], v["at"], v["length"]
    if length <= 0:
        raise ProfileError("rate profile spike: length must be > 0 seconds")
    if at + length > end:
        raise ProfileError(
            f"rate profile spike: the spike (at={at:g}, length={length:g}) runs past its end (for={end:g})"
        )
    if peak <= 0:
        raise ProfileError("rate profile spike: peak must be > 0")
    return lambda t: peak if at <= t < at + length else base


_builders: dict[str, Callable[[dict[str, float], float], Callable[[float], float]]] = {
    "constant": _constant,
    "step": _step,
    "ramp": _ramp,
    "spike": _spike,
}
