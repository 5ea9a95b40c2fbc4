"""How evenly work is spread: max/min ratio, max/mean imbalance and coefficient of variation."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Evenness:
    n: int
    total: int
    min: int
    max: int
    mean: float
    # max/min; inf when some member got nothing (a starved worker is the worst unevenness).
    max_min: float
    # max/mean: 1.0 is perfect, n means one member took everything (used for node imbalance).
    imbalance: float
    # population standard deviation / mean.
    cv: float

    def as_dict(self) -> dict[str, float | int | None]:
        # JSON has no infinity: report an unbounded ratio as None.
        return {k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in asdict(self).items()}


def evenness(counts: Mapping[str, int] | list[int]) -> Evenness:
    values = list(counts.values()) if isinstance(counts, Mapping) else list(counts)
    if not values:
        return Evenness(0, 0, 0, 0, 0.0, math.inf, math.inf, math.inf)
    total = sum(values)
    lo, hi = min(values), max(values)
    mean = total / len(values)
    if mean == 0:
        return Evenness(len(values), 0, 0, 0, 0.0, math.inf, math.inf, math.inf)
    var = sum((v - mean) ** 2 for v in values) / len(values)
    return Evenness(
        n=len(values),
        total=total,
        min=lo,
        max=hi,
        mean=mean,
        max_min=(hi / lo) if lo > 0 else math.inf,
        imbalance=hi / mean,
        cv=math.sqrt(var) / mean,
    )
