"""Which master `load.from: hosts` drives, and the secrets files its workers read (their own copies), from the
inventory alone; anything the inventory cannot give is one line naming the variable to set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kvtestbed.inventory import Inventory
from kvtestbed.load.master import master_of, on_the_hosts, workload_figures
from kvtestbed.load.runner import LoadInputError, LoadSpec

SECRETS = Path("/srv/testbed/secrets")


def inventory(master_vars: dict[str, Any], *, second_master: bool = False) -> Inventory:
    hostvars: dict[str, Any] = {
        "pc-1": {"ansible_host": "10.0.0.11"},
        "pc-2": {"ansible_host": "10.0.0.12", **master_vars},
    }
    if second_master:
        hostvars["pc-1"]["locust_role"] = "master"
    listing = {"_meta": {"hostvars": hostvars}, "all": {"children": ["loadgen", "ungrouped"]},
               "loadgen": {"hosts": ["pc-2"]}, "ungrouped": {"hosts": ["pc-1"]}}  # fmt: skip
    return Inventory.from_listing("inv", listing)


def spec(**changes: Any) -> LoadSpec:
    base = LoadSpec(user_classes=["KvGetUser"], target="redis+sentinel://agent@10.0.0.11:26379/redis", users=4,
                    run_time_s=10, password_file=str(SECRETS / "redis-agent"),
                    options={"keys": "100", "sentinel-password-file": str(SECRETS / "sentinel-admin")})  # fmt: skip
    for key, value in changes.items():
        setattr(base, key, value)
    return base


def test_the_master_is_the_host_with_locust_role_master_on_the_roles_defaults() -> None:
    endpoint = master_of(inventory({"locust_role": "master"}), SECRETS)
    assert (endpoint.host, endpoint.url, endpoint.user) == ("pc-2", "http://10.0.0.12:8089", "admin")
    assert endpoint.password_file == SECRETS / "locust-web-password"
    assert endpoint.workers_expected == 0  # no host says locust_workers: at least one will do


def test_the_expected_workers_are_the_inventorys_locust_workers() -> None:
    inv = inventory({"locust_role": "master", "locust_workers": 2})
    inv.host("pc-1").vars["locust_workers"] = "3"
    assert master_of(inv, SECRETS).workers_expected == 5


def test_the_inventorys_port_user_and_web_address_win() -> None:
    endpoint = master_of(inventory({"locust_role": "master", "locust_web_port": 18089, "locust_web_user": "ops",
                                    "locust_web_host": "192.168.1.5"}), SECRETS)  # fmt: skip
    assert (endpoint.url, endpoint.user) == ("http://192.168.1.5:18089", "ops")


@pytest.mark.parametrize(("master_vars", "second", "found"), [({}, False, "none"),
                                                              ({"locust_role": "master"}, True, "pc-1, pc-2")])
def test_none_or_two_masters_is_one_line(master_vars: dict[str, Any], second: bool, found: str) -> None:
    with pytest.raises(LoadInputError) as caught:
        master_of(inventory(master_vars, second_master=second), SECRETS)
    expected = f"load.from hosts needs one host with locust_role: master in the inventory (found {found})"
    assert str(caught.value) == expected


def test_secrets_files_become_the_hosts_copies() -> None:
    inv = inventory({"locust_role": "master", "locust_password_files": ["redis-agent", "sentinel-admin"]})
    remote = on_the_hosts(spec(), inv, SECRETS)
    assert remote.password_file == "/etc/kvtestbed/locust/secrets/redis-agent"
    assert remote.options == {"keys": "100", "sentinel-password-file": "/etc/kvtestbed/locust/secrets/sentinel-admin"}
    # a file outside the secrets dir is the user's own path on the hosts: left as given
    assert on_the_hosts(spec(password_file="/opt/pw"), inv, SECRETS).password_file == "/opt/pw"


def test_a_secret_the_hosts_do_not_have_names_the_variable_to_set() -> None:
    inv = inventory({"locust_role": "master", "locust_password_files": ["redis-agent"]})
    with pytest.raises(LoadInputError) as caught:
        on_the_hosts(spec(), inv, SECRETS)
    assert str(caught.value) == ("load: option sentinel-password-file: sentinel-admin is not on the loadgen hosts: add "
                                 "it to locust_password_files (host pc-2) and deploy")  # fmt: skip


def test_the_workload_tabs_numeric_cells_become_figures() -> None:
    rows = [
        {"section": "ledger audit", "figure": "lost", "run": "0", "total": "0"},
        {"section": "ledger audit", "figure": "processed twice (keys)", "run": "2", "total": ""},
        {"section": "expiry run", "figure": "keys requested", "run": "3,000"},
        {"section": "expiry run", "figure": "run id / key prefix", "run": "ldlab / kvt:exp"},
        {"section": "worker w1", "figure": "processed", "run": "1512"},
        {"section": "expiry run", "figure": "lag", "run": "nan"},
    ]
    assert workload_figures(rows) == {
        "workload.ledger_audit.lost": 0.0,
        "workload.ledger_audit.processed_twice_keys": 2.0,
        "workload.expiry_run.keys_requested": 3000.0,
        "workload.worker_w1.processed": 1512.0,
    }
