"""Key choice for the key-value users (kvload.keys): uniform covers the key space evenly, zipf:S follows Zipf's law
(a few hot keys take most requests), and a distribution that cannot run is one line naming the option."""

from __future__ import annotations

import random
from collections import Counter
from types import SimpleNamespace

import pytest
from kvload.keys import KeyDistributionError, Uniform, Zipf, chooser_for, parse_distribution

DRAWS = 200_000


def _draws(chooser: Uniform | Zipf, n: int = DRAWS, seed: int = 11) -> Counter[int]:
    rng = random.Random(seed)
    half = n // 2  # half one at a time, half in pipeline-sized batches: both paths draw from the same law
    counts = Counter(chooser.choose(rng.random) for _ in range(half))
    for _ in range((n - half) // 16):
        counts.update(chooser.choose_many(rng.random, 16))
    return counts


def test_uniform_covers_the_whole_key_space_evenly() -> None:
    keys = 1000
    counts = _draws(parse_distribution("uniform", keys))
    assert set(counts) == set(range(keys))  # every key, and nothing outside 0..keys-1
    expected = DRAWS / keys
    # 200 draws per key: a fair die stays within +-40 % of its mean (about 5.7 sigma)
    assert min(counts.values()) > 0.6 * expected
    assert max(counts.values()) < 1.4 * expected
    top_1pct = sum(c for _, c in counts.most_common(keys // 100)) / DRAWS
    assert top_1pct < 0.02  # no hot keys


@pytest.mark.parametrize("s", [0.99, 1.2])
def test_zipf_gives_the_hot_keys_the_share_zipfs_law_predicts(s: float) -> None:
    keys = 10_000
    chooser = parse_distribution(f"zipf:{s}", keys)
    assert isinstance(chooser, Zipf)
    counts = _draws(chooser)
    assert min(counts) >= 0 and max(counts) < keys
    harmonic = [r**-s for r in range(1, keys + 1)]
    total = sum(harmonic)
    top = keys // 100
    predicted = sum(harmonic[:top]) / total  # share of the hottest 1 % under Zipf's law, computed independently
    observed = sum(counts[i] for i in range(top)) / DRAWS
    assert predicted > 0.5  # the point of zipf: 1 % of the keys take most of the load
    assert observed == pytest.approx(predicted, abs=0.01)
    assert chooser.share(top) == pytest.approx(predicted, rel=1e-9)
    # rank 1 against rank 10: frequency ratio 10**s
    assert counts[0] / counts[9] == pytest.approx(10**s, rel=0.15)
    # and the coldest half of the keys is still drawn, rarely
    assert 0 < sum(counts[i] for i in range(keys // 2, keys)) / DRAWS < 0.1


def test_draws_stay_inside_the_key_space_at_the_edges_of_random() -> None:
    z = Zipf(1000, 0.99)
    u = Uniform(1000)
    for edge in (0.0, 1e-12, 0.5, 1 - 1e-12, 0.9999999999999999):
        assert 0 <= z.choose(lambda e=edge: e) < 1000
        assert 0 <= u.choose(lambda e=edge: e) < 1000


@pytest.mark.parametrize(
    ("spec", "keys", "names"),
    [
        ("zipf", 100, "--kvt-key-dist zipf"),
        ("zipf:0", 100, "--kvt-key-dist zipf:0"),
        ("zipf:-1", 100, "--kvt-key-dist zipf:-1"),
        ("zipf:abc", 100, "--kvt-key-dist zipf:abc"),
        ("zipf:inf", 100, "--kvt-key-dist zipf:inf"),
        ("normal", 100, "--kvt-key-dist normal"),
        ("uniform", 0, "--kvt-keys 0"),
        ("uniform", -5, "--kvt-keys -5"),
    ],
)
def test_a_distribution_that_cannot_run_is_one_line_naming_the_option(spec: str, keys: int, names: str) -> None:
    with pytest.raises(KeyDistributionError) as err:
        parse_distribution(spec, keys)
    message = str(err.value)
    assert message.startswith(names)
    assert "\n" not in message


def test_one_chooser_per_environment_and_setting() -> None:
    env_a, env_b = SimpleNamespace(), SimpleNamespace()
    first = chooser_for(env_a, "zipf:0.99", 5000)
    assert chooser_for(env_a, "zipf:0.99", 5000) is first  # users of one process share the table
    assert chooser_for(env_a, "zipf:0.99", 6000) is not first
    assert chooser_for(env_b, "zipf:0.99", 5000) is not first  # no state shared across environments
