"""A fault entry is checked before anything is touched: kinds, required fields, each kind's params."""

from __future__ import annotations

import pytest

from kvtestbed.faults import FaultSpecError, make_context, make_fault
from kvtestbed.faults.host import step_seconds
from kvtestbed.faults.network import NetemFault, ShapeFault
from kvtestbed.faults.process import units_for
from kvtestbed.inventory import Inventory

LISTING = {
    "_meta": {"hostvars": {
        name: {"ansible_host": address,
               "redis_kvstore": {"engine": "redis", "topology": "replication", "ports": [6379, 6380]}}
        for name, address in (("pi-1", "198.18.9.11"), ("pi-2", "198.18.9.12"), ("pi-3", "198.18.9.13"))}},
    "all": {"children": ["redis", "nats"]},
    "redis": {"hosts": ["pi-1", "pi-2", "pi-3"]},
    "nats": {"hosts": ["pi-3"]},
}


@pytest.fixture
def inventory():
    return Inventory.from_listing("inv", LISTING)


@pytest.fixture
def context(inventory):
    ctx = make_context(inventory, seed=1)
    yield ctx
    ctx.remotes.close()


def _make(inventory, context, **entry):
    return make_fault(dict({"group": "redis", "target": "one"}, **entry), inventory, context)


@pytest.mark.parametrize(("entry", "message"), [
    ({"kind": "explode"}, "fault kind 'explode': not one of kill, stop"),
    ({"kind": "pause"}, "fault pause: `for` is required"),
    ({"kind": "kill", "for": -1}, "fault for: -1 must be more than 0 seconds"),
    ({"kind": "kill", "for": "soon"}, "fault for: 'soon' is not a number"),
    ({"kind": "kill", "group": "valkey"}, "group 'valkey' not found in inventory inv"),
    ({"kind": "kill", "when": 3}, "fault: unknown fields when"),
    ({"kind": "partition", "for": 5, "service": "kv"}, "fault partition: takes no service"),
    ({"kind": "partition", "for": 5, "params": {"shape": "thirds"}}, "params.shape 'thirds' is not one of"),
    ({"kind": "partition", "for": 5, "params": {"shape": "one-way", "direction": "up"}}, "direction 'up'"),
    ({"kind": "shape", "for": 5, "params": {}}, "shape: params.rate is required"),
    ({"kind": "shape", "for": 5, "params": {"rate": "fast"}}, "params.rate 'fast' is not like 1mbit"),
    ({"kind": "netem", "for": 5, "params": {"jitter": "5ms"}}, "jitter needs params.delay"),
    ({"kind": "netem", "for": 5, "params": {"loss": "lots"}}, "params.loss 'lots' is not like 1%"),
    ({"kind": "kill", "params": {"signal": "NOPE"}}, "params.signal 'NOPE' is not one of"),
    ({"kind": "clock", "for": 5, "params": {"step": "later"}}, "params.step 'later' is not like"),
    ({"kind": "reboot", "params": {"fast": True}}, "reboot: takes no params"),
    ({"kind": "kill", "id": "Bad ID"}, "fault id 'Bad ID'"),
])
def test_bad_entries_are_one_line_spec_errors(inventory, context, entry, message):
    with pytest.raises(FaultSpecError) as caught:
        _make(inventory, context, **entry)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_good_entries_make_their_kind(inventory, context):
    shape = _make(inventory, context, kind="shape", **{"for": 5}, params={"rate": "1mbit"})
    assert isinstance(shape, ShapeFault)
    assert shape.qdisc_args() == ["tbf", "rate", "1mbit", "burst", "32kbit", "latency", "50ms"]
    netem = _make(inventory, context, kind="netem", **{"for": 5}, params={"delay": "50ms", "jitter": "10ms",
                                                                           "loss": "1%"})
    assert isinstance(netem, NetemFault)
    assert netem.qdisc_args() == ["netem", "delay", "50ms", "10ms", "loss", "1%"]
    kill = _make(inventory, context, kind="kill", id="k-1", params={"signal": "sigterm"})
    assert (kill.id, kill.signal) == ("k-1", "TERM")
    assert kill.record()["healed"] is False and kill.record()["t_inject"] is None


def test_services_name_units(inventory):
    host = inventory.host("pi-1")
    assert units_for(inventory, "redis", None, host) == ["redis@6379.service", "redis@6380.service"]
    assert units_for(inventory, "redis", "sentinel", host) == ["redis-sentinel@26379.service"]
    assert units_for(inventory, "nats", None, host) == ["nats-server.service"]
    assert units_for(inventory, "redis", "agent:observer-1", host) == ["kvtestbed-agent@observer-1.service"]
    assert units_for(inventory, "redis", "chrony", host) == ["chrony.service"]
    with pytest.raises(FaultSpecError, match="not a unit name"):
        units_for(inventory, "redis", "x; rm -rf /", host)


@pytest.mark.parametrize(("text", "seconds"), [("+30s", 30), ("-5s", -5), ("+2m", 120), ("+1.5h", 5400), ("+7", 7)])
def test_clock_steps(text, seconds):
    assert step_seconds(text) == seconds
