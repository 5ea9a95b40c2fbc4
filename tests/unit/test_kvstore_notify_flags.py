"""roles/kvstore's kvstore_notify filter: the notify-keyspace-events flags the agents pointing at a deployment
need (the agents' ACL user may not CONFIG SET them)."""

from __future__ import annotations

from typing import Any

from tests.support.plugins import load_plugin

plugin = load_plugin("roles/kvstore/filter_plugins/kvstore_notify.py", "kvstore_notify_plugin")


def flags_for(instances: list[dict[str, Any]], *deployment: Any) -> str:
    """What the role does: the needs worked out on the agents' host, then matched against one deployment."""
    return str(plugin.kvstore_agent_notify_flags(plugin.kvstore_agent_notify_needs(instances), *deployment))

union = plugin.kvstore_notify_union
merge = plugin.kvstore_notify_merge

REDIS = (["10.0.0.1", "10.0.0.2"], [6379])


def _observer(listener_host: str, port: int = 6379, sentinel: str | None = None) -> dict[str, Any]:
    writer: dict[str, Any] = {"endpoint": {"host": "10.9.9.9", "port": 1}}
    if sentinel:
        writer["sentinel"] = {"master_name": sentinel, "sentinels": []}
    return {"kind": "observer",
            "config": {"writer": writer, "listeners": [{"mode": "async", "endpoint": {"host": listener_host,
                                                                                       "port": port}}]}}  # fmt: skip


def _expiry(role: str, target: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "expiry", "config": {"role": role, "target": target}}


def test_an_observer_listening_on_an_instance_needs_keyspace_events_of_strings() -> None:
    assert flags_for([_observer("10.0.0.2")], *REDIS) == "K$"


def test_an_observer_on_another_port_or_host_needs_nothing_here() -> None:
    assert flags_for([_observer("10.0.0.2", port=6380), _observer("10.0.0.7")], *REDIS) == ""


def test_an_observer_following_the_sentinel_name_of_this_group_needs_keyspace_events() -> None:
    assert flags_for([_observer("10.0.0.7", sentinel="redis")], *REDIS, ["redis"]) == "K$"
    assert flags_for([_observer("10.0.0.7", sentinel="other")], *REDIS, ["redis"]) == ""


def test_an_expiry_consumer_needs_expired_keyevents_by_nodes_or_by_sentinel_name() -> None:
    by_nodes = _expiry("consumer", {"mode": "cluster", "nodes": [{"host": "10.0.0.1", "port": 6379}]})
    by_name = _expiry("consumer", {"mode": "sentinel", "master_name": "redis", "sentinels": []})
    assert flags_for([by_nodes], *REDIS) == "Ex"
    assert flags_for([by_name], *REDIS, ["redis"]) == "Ex"
    assert flags_for([by_name], *REDIS, []) == ""


def test_generators_workers_and_other_kinds_need_nothing() -> None:
    nodes = {"mode": "nodes", "nodes": [{"host": "10.0.0.1", "port": 6379}]}
    others = [_expiry("generator", nodes), _expiry("worker", nodes),
              {"kind": "hotkeys", "config": {"target": nodes}}, {"kind": "streams", "config": {}}]  # fmt: skip
    assert flags_for(others, *REDIS) == ""


def test_flags_of_several_agents_are_one_value_in_redis_order() -> None:
    agents = [_expiry("consumer", {"mode": "nodes", "nodes": [{"host": "10.0.0.2", "port": 6379}]}),
              _observer("10.0.0.1")]  # fmt: skip
    assert flags_for(agents, *REDIS) == "K$Ex"


def test_given_flags_come_first_and_are_never_dropped() -> None:
    assert union("", "K$Ex") == "K$Ex"
    assert union("Ex", "K$Ex") == "ExK$"
    assert union("KEA", "K$Ex") == "KEA"  # A covers $ and x
    assert union("Kg", "") == "Kg"


def test_needs_name_endpoints_and_flags_but_never_a_password() -> None:
    observer = _observer("10.0.0.2", sentinel="redis")
    observer["name"] = "observer-1"
    observer["config"]["listeners"][0]["endpoint"]["password"] = "s3cret-value"
    (need,) = plugin.kvstore_agent_notify_needs([observer, {"kind": "streams", "name": "s", "config": {}}])
    assert need == {"agent": "observer-1", "endpoints": [["10.9.9.9", 1], ["10.0.0.2", 6379]], "masters": ["redis"],
                    "flags": "K$"}  # fmt: skip
    assert "s3cret" not in repr(need)


def test_merge_folds_the_settings_the_agents_and_the_running_flags_into_one_value() -> None:
    assert merge(["", "K$", "Ex"]) == "K$Ex"
    assert merge(["Kg", "K$Ex", "K$"]) == "Kg$Ex"
    assert merge([]) == ""
