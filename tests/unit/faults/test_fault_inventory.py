"""Inventory: hosts and groups from ansible-inventory's JSON, `{{ var }}` references rendered."""

from __future__ import annotations

import pytest

from kvtestbed.inventory import Inventory, InventoryError, render_vars

LISTING = {
    "_meta": {"hostvars": {
        "pi-1": {"ansible_host": "198.18.0.11", "lab_name": "kvfx", "lab_profile": "pi4b",
                 "ansible_user": "root", "ansible_port": 2222,
                 "ansible_ssh_private_key_file": "/var/lib/kvtestbed/lab/{{ lab_name }}/ssh/id_ed25519",
                 "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o 'UserKnownHostsFile=/dev/null'",
                 "testbed_subnet": "{{ lab_subnet }}", "lab_subnet": "198.18.0.0/24",
                 "secret": "{{ lookup('ansible.builtin.password', '/x') }}",
                 "nested": {"paths": ["{{ lab_name }}-a", 3]}},
        "pc-1": {"ansible_host": "198.18.0.21"},
    }},
    "all": {"children": ["ungrouped", "lab", "redis"]},
    "lab": {"children": ["pis", "pcs"]},
    "pis": {"hosts": ["pi-1"]},
    "pcs": {"hosts": ["pc-1"]},
    "redis": {"hosts": ["pi-1"]},
}


def test_template_references_to_other_vars_are_rendered():
    host = Inventory.from_listing("inv", LISTING).host("pi-1")
    assert host.key_file == "/var/lib/kvtestbed/lab/kvfx/ssh/id_ed25519"
    assert host.vars["testbed_subnet"] == "198.18.0.0/24"
    assert host.vars["nested"] == {"paths": ["kvfx-a", 3]}


def test_what_needs_ansible_itself_is_left_as_written():
    host = Inventory.from_listing("inv", LISTING).host("pi-1")
    assert host.vars["secret"] == "{{ lookup('ansible.builtin.password', '/x') }}"


def test_chains_of_references_settle_and_cycles_stop():
    assert render_vars({"a": "{{ b }}", "b": "{{ c }}", "c": "x"})["a"] == "x"
    looped = render_vars({"a": "{{ b }}", "b": "{{ a }}"})
    assert set(looped) == {"a", "b"}  # bounded passes, no hang


def test_ssh_settings_and_groups_with_children():
    inventory = Inventory.from_listing("inv", LISTING)
    host = inventory.host("pi-1")
    assert (host.address, host.user, host.port) == ("198.18.0.11", "root", 2222)
    assert host.ssh_args == ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
    assert [h.name for h in inventory.group("lab")] == ["pi-1", "pc-1"]
    assert host.groups == ["lab", "pis", "redis"]
    assert host.in_lab and not inventory.host("pc-1").in_lab


def test_unknown_group_and_host_are_one_line_errors():
    inventory = Inventory.from_listing("inventory/lab", LISTING)
    with pytest.raises(InventoryError, match=r"^inventory inventory/lab: group 'foo' not found$"):
        inventory.group("foo")
    with pytest.raises(InventoryError, match=r"^host 'pi-9' is not in inventory inventory/lab$"):
        inventory.host("pi-9")


def test_load_of_a_missing_path_names_it(tmp_path):
    with pytest.raises(InventoryError, match="does not exist"):
        Inventory.load(tmp_path / "nope")


def test_load_runs_ansible_inventory(tmp_path):
    (tmp_path / "hosts.yml").write_text(
        "all:\n  hosts:\n    h1: {ansible_host: 198.18.9.11, lab_name: x, ansible_ssh_private_key_file: "
        "'/k/{{ lab_name }}'}\n  children:\n    g:\n      hosts: {h1: }\n")
    inventory = Inventory.load(tmp_path / "hosts.yml")
    assert inventory.host("h1").key_file == "/k/x"
    assert [h.name for h in inventory.group("g")] == ["h1"]
