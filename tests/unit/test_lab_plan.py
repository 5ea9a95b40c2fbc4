"""The lab inventory check: every bad input is one line that names the host and the variable."""

from __future__ import annotations

import pytest

from kvtestbed.lab import plan as lab_plan

PROFILES = {"pi4b": {"memory_mb": 4096, "cpu_quota_percent": 100, "link_mbit": 1000, "emulates": "aarch64"},
            "pc": {"memory_mb": 8192, "cpu_quota_percent": 200, "link_mbit": 1000}}
SUBNET = "198.18.0.0/24"


def hosts(*specs: tuple[str, str, str]) -> list[dict]:
    return [{"name": n, "address": a, "profile": p} for n, a, p in specs]


def plan(host_list: list[dict], **kw):
    return lab_plan.build_plan(host_list, kw.pop("subnet", SUBNET), kw.pop("gateway", ""), PROFILES, **kw)


def test_resolves_profiles_and_gateway():
    result = plan(hosts(("pi-1", "198.18.0.11", "pi4b"), ("pc-1", "198.18.0.21", "pc")))
    assert result["gateway"] == "198.18.0.1" and result["prefix"] == 24
    assert [(h["name"], h["memory_mb"], h["cpu_quota_percent"]) for h in result["hosts"]] == [
        ("pi-1", 4096, 100), ("pc-1", 8192, 200)]


@pytest.mark.parametrize(("host_list", "expected"), [
    (hosts(("pi-1", "", "pi4b")), "host pi-1: no address; set ansible_host"),
    (hosts(("pi-1", "pi-1", "pi4b")), "host pi-1: no address"),
    (hosts(("pi-1", "198.18.0.11", "pi4b"), ("pi-2", "198.18.0.11", "pi4b")),
     "hosts pi-1 and pi-2 share ansible_host 198.18.0.11"),
    (hosts(("pi-1", "10.0.0.5", "pi4b")), "host pi-1: ansible_host 10.0.0.5 is outside lab_subnet 198.18.0.0/24"),
    (hosts(("pi-1", "198.18.0.11", "pi5")), "host pi-1: unknown lab_profile 'pi5'; known: pc, pi4b"),
    (hosts(("pi-1", "198.18.0.1", "pi4b")), "is the subnet's network, broadcast or gateway address"),
    (hosts(("pi-1", "banana", "pi4b")), "ansible_host 'banana' is not an IPv4 address"),
    (hosts(("PI_1", "198.18.0.11", "pi4b")), "lab host names are lowercase"),
    (hosts(("a-very-long-hostname", "198.18.0.11", "pi4b")), "at most 12 characters"),
    ([], "the lab inventory has no hosts"),
])
def test_bad_inventories_fail_with_one_line(host_list, expected):
    with pytest.raises(lab_plan.PlanError) as caught:
        plan(host_list)
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message


def test_not_root():
    with pytest.raises(lab_plan.PlanError, match="needs root"):
        plan(hosts(("pi-1", "198.18.0.11", "pi4b")), is_root=False)


@pytest.mark.parametrize(("subnet", "gateway", "expected"), [
    ("198.18.0.0/33", "", "is not a network in CIDR form"),
    ("2001:db8::/64", "", "must be an IPv4 network"),
    (SUBNET, "banana", "lab_gateway 'banana' is not an IPv4 address"),
    ("198.18.0.5/24", "", "is not a network in CIDR form"),
    ("198.18.0.0/30", "", "/29 or larger"),
    (SUBNET, "198.19.0.1", "lab_gateway 198.19.0.1 is outside lab_subnet"),
])
def test_bad_lab_network(subnet, gateway, expected):
    with pytest.raises(lab_plan.PlanError, match=expected):
        plan(hosts(("pi-1", "198.18.0.11", "pi4b")), subnet=subnet, gateway=gateway)


def test_bad_lab_name():
    with pytest.raises(lab_plan.PlanError, match="lab_name 'my-lab'"):
        plan(hosts(("pi-1", "198.18.0.11", "pi4b")), lab_name="my-lab")


def test_bad_profile_values():
    with pytest.raises(lab_plan.PlanError, match=r"lab_hardware_profiles.bad.memory_mb"):
        lab_plan.build_plan(hosts(("pi-1", "198.18.0.11", "bad")), SUBNET, "", {"bad": {"memory_mb": -1}})


def test_down_skips_host_checks():
    result = plan(hosts(("pi-1", "", "nope")), validate_hosts=False)
    assert result["hosts"] == []


def test_a_profiles_userland_is_carried_and_checked():
    profiles = {**PROFILES, "pi4b-arm64": {**PROFILES["pi4b"], "userland": "arm64"}}
    result = lab_plan.build_plan(hosts(("pi-1", "198.18.0.11", "pi4b"), ("a64-1", "198.18.0.12", "pi4b-arm64")),
                                 SUBNET, "", profiles)
    assert [(h["name"], h["userland"]) for h in result["hosts"]] == [("pi-1", ""), ("a64-1", "arm64")]
    with pytest.raises(lab_plan.PlanError, match=r"^lab_hardware_profiles.odd.userland 'sparc': use one of arm64, "):
        lab_plan.build_plan(hosts(("pi-1", "198.18.0.11", "odd")), SUBNET, "", {"odd": {"userland": "sparc"}})
