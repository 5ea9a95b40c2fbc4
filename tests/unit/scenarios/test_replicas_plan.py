"""`replicas: {group: N}` (scenarios/replicas.py): which replicas a run stops so that N stay attached. The stops
themselves are real `stop` faults; tests/lab/test_scenarios_lab.py runs them on lab hosts."""

from __future__ import annotations

import random

import pytest

from kvtestbed.faults.errors import FaultError
from kvtestbed.inventory import Inventory
from kvtestbed.scenarios.replicas import _fault_id, plan


def _inventory(names: list[str]) -> Inventory:
    hostvars = {name: {"ansible_host": f"198.18.9.{10 + i}"} for i, name in enumerate(names, start=1)}
    return Inventory.from_listing("inv", {"_meta": {"hostvars": hostvars}, "all": {"children": ["redis"]},
                                          "redis": {"hosts": names}})


@pytest.mark.parametrize(("keep", "stopped"), [(4, 0), (3, 1), (1, 3), (0, 4)])
def test_the_primary_is_never_stopped_and_exactly_the_rest_beyond_n_are(keep, stopped):
    inventory = _inventory(["h1", "h2", "h3", "h4", "h5"])
    for seed in range(20):
        detached = plan(inventory, "redis", keep, "h3", random.Random(seed))
        assert "h3" not in detached.stopped
        assert len(detached.stopped) == len(set(detached.stopped)) == stopped
        assert detached.stopped == sorted(detached.stopped)  # in the inventory's order
        assert detached.describe() == {"replicas_attached": keep, "replicas_stopped": detached.stopped,
                                       "primary": "h3"}


def test_a_seed_picks_the_same_replicas_again_and_another_seed_may_not():
    inventory = _inventory(["h1", "h2", "h3", "h4", "h5"])
    picks = {tuple(plan(inventory, "redis", 2, "h1", random.Random(seed)).stopped) for seed in range(30)}
    assert plan(inventory, "redis", 2, "h1", random.Random(7)).stopped == \
        plan(inventory, "redis", 2, "h1", random.Random(7)).stopped
    assert len(picks) > 1


def test_more_replicas_than_the_group_has_is_one_line():
    with pytest.raises(FaultError, match=r"^replicas redis: 3 wanted, the group has 2 besides h1$"):
        plan(_inventory(["h1", "h2", "h3"]), "redis", 3, "h1", random.Random(0))


def test_fault_ids_are_safe_for_units_and_files():
    assert _fault_id("redis", "pi-2") == "replicas-redis-pi-2"
    assert _fault_id("redis_main", "Pi2.lab.example") == "replicas-redis-main-pi2-lab-example"
    assert len(_fault_id("g" * 80, "h")) <= 63
