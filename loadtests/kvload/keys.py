"""Which key a request uses: uniform over the key space, or Zipf-distributed hot keys.

    chooser = parse_distribution("zipf:0.99", 100_000)
    index = chooser.choose(rng.random)          # 0 .. keys-1; rank 0 is the hottest key under zipf

Zipf with exponent S: key of rank r (1-based) is chosen with probability r**-S / H(n, S). The chooser keeps the
cumulative distribution in a list once (100,000 keys: ~20 ms and 0.8 MB per process, shared by every user through
`chooser_for`) and draws with bisect, a C-level binary search: one random number and ~17 float comparisons per draw.

A pipeline's keys (choose_many) come from a stream of STREAM_LENGTH draws made once per chooser, read from a random
offset: one random number and one C-level slice per pipeline instead of a Python-level draw per key. Drawing per key
was the largest item in a depth-16 GET run's profile (12 % of the Locust process's time); every key is still a draw
from the distribution, and the stream is long enough that two pipelines rarely share a run of keys.
"""

from __future__ import annotations

import bisect
import itertools
import random as _random
from collections.abc import Callable
from typing import Any


class KeyDistributionError(ValueError):
    """A --kvt-key-dist that cannot be used; the message names the option and what to fix."""


STREAM_LENGTH = 1 << 16


class _Streamed:
    """choose_many from a precomputed stream of draws (see the module's docstring)."""

    _stream: list[int]

    def _fill_stream(self) -> None:
        rng = _random.Random()
        self._stream = [self.choose(rng.random) for _ in range(STREAM_LENGTH)]

    def choose(self, random: Callable[[], float]) -> int:
        raise NotImplementedError

    def choose_many(self, random: Callable[[], float], count: int) -> list[int]:
        if count > STREAM_LENGTH // 2:
            return [self.choose(random) for _ in range(count)]
        start = int(random() * (STREAM_LENGTH - count))
        return self._stream[start : start + count]


class Uniform(_Streamed):
    def __init__(self, keys: int) -> None:
        self.keys = keys
        self._fill_stream()

    def choose(self, random: Callable[[], float]) -> int:
        return int(random() * self.keys)


class Zipf(_Streamed):
    def __init__(self, keys: int, s: float) -> None:
        self.keys = keys
        self.s = s
        weights = (r**-s for r in range(1, keys + 1))
        cdf = list(itertools.accumulate(weights))
        total = cdf[-1]
        self._cdf = [c / total for c in cdf]
        self._cdf[-1] = 1.0  # rounding must never leave a draw of 0.9999999 past the last key
        self._fill_stream()

    def choose(self, random: Callable[[], float]) -> int:
        return bisect.bisect_right(self._cdf, random())

    def share(self, top: int) -> float:
        """The probability that a draw is one of the `top` hottest keys (for tests and reports)."""
        return self._cdf[top - 1] if top > 0 else 0.0


KeyChooser = Uniform | Zipf


def parse_distribution(spec: str, keys: int) -> KeyChooser:
    """`uniform` or `zipf:S` (S > 0) over `keys` keys; KeyDistributionError names what to fix."""
    if keys < 1:
        raise KeyDistributionError(f"--kvt-keys {keys}: must be >= 1")
    text = spec.strip().lower()
    if text == "uniform":
        return Uniform(keys)
    name, sep, raw = text.partition(":")
    if name == "zipf":
        try:
            s = float(raw) if sep else float("nan")
        except ValueError:
            s = float("nan")
        if not s > 0 or s == float("inf"):
            raise KeyDistributionError(f"--kvt-key-dist {spec}: zipf needs an exponent > 0, e.g. zipf:0.99")
        return Zipf(keys, s)
    raise KeyDistributionError(f"--kvt-key-dist {spec}: unknown, use uniform or zipf:S (e.g. zipf:0.99)")


def chooser_for(environment: Any, spec: str, keys: int) -> KeyChooser:
    """One chooser per process and (distribution, key count), kept on the Locust environment: every user shares
    the Zipf table instead of building its own."""
    cache: dict[tuple[str, int], KeyChooser] | None = getattr(environment, "kvt_key_choosers", None)
    if cache is None:
        cache = {}
        environment.kvt_key_choosers = cache
    chooser = cache.get((spec, keys))
    if chooser is None:
        chooser = cache[(spec, keys)] = parse_distribution(spec, keys)
    return chooser
