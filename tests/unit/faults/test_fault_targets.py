"""Target resolution: the arithmetic of minority and majority, primary/replica through the caller's resolver."""

from __future__ import annotations

import random

import pytest

from kvtestbed.faults.errors import FaultError, FaultSpecError
from kvtestbed.faults.targets import majority_size, minority_size, resolve
from kvtestbed.inventory import Inventory


def _inventory(n: int) -> Inventory:
    names = [f"h{i}" for i in range(1, n + 1)]
    hostvars = {name: {"ansible_host": f"198.18.9.{10 + i}"} for i, name in enumerate(names, start=1)}
    return Inventory.from_listing("inv", {"_meta": {"hostvars": hostvars}, "all": {"children": ["g"]},
                                          "g": {"hosts": names}})


@pytest.mark.parametrize(("n", "minority", "majority"), [(1, 0, 1), (2, 0, 2), (3, 1, 2), (4, 1, 3), (5, 2, 3),
                                                          (6, 2, 4), (7, 3, 4)])
def test_largest_minority_and_smallest_majority(n, minority, majority):
    assert (minority_size(n), majority_size(n)) == (minority, majority)
    assert minority + majority <= n


def test_minority_and_majority_pick_that_many_distinct_hosts():
    inventory = _inventory(5)
    rng = random.Random(1)
    assert len({h.name for h in resolve(inventory, "g", "minority", rng)}) == 2
    assert len({h.name for h in resolve(inventory, "g", "majority", rng)}) == 3
    assert [h.name for h in resolve(inventory, "g", "all", rng)] == ["h1", "h2", "h3", "h4", "h5"]


def test_no_minority_in_a_group_of_one_or_two():
    with pytest.raises(FaultSpecError, match="no minority"):
        resolve(_inventory(2), "g", "minority", random.Random(0))


def test_seeded_picks_repeat():
    first = [resolve(_inventory(5), "g", "one", random.Random(7))[0].name for _ in range(3)]
    assert len(set(first)) == 1


def test_primary_and_replica_follow_the_callers_resolver():
    inventory = _inventory(3)
    rng = random.Random(0)
    assert [h.name for h in resolve(inventory, "g", "primary", rng, primary_of=lambda group: "h2")] == ["h2"]
    for _ in range(10):
        assert resolve(inventory, "g", "replica", rng, primary_of=lambda group: "h2")[0].name != "h2"
    with pytest.raises(FaultError, match="not one of its hosts"):
        resolve(inventory, "g", "primary", rng, primary_of=lambda group: "elsewhere")


def test_a_named_host_and_bad_targets():
    inventory = _inventory(3)
    assert resolve(inventory, "g", "h3", random.Random(0))[0].name == "h3"
    with pytest.raises(FaultSpecError, match="target 'h9': not one of"):
        resolve(inventory, "g", "h9", random.Random(0))
    with pytest.raises(FaultSpecError, match="group 'nope' not found"):
        resolve(inventory, "nope", "one", random.Random(0))


def test_primary_of_a_group_nobody_manages_is_a_spec_error():
    with pytest.raises(FaultSpecError, match="needs a Sentinel-managed, replication or nats group"):
        resolve(_inventory(3), "g", "primary", random.Random(0))
