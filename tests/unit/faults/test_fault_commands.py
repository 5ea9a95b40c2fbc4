"""The shell text a fault sends to hosts: the dead-man, nft rules, the qdisc restore."""

from __future__ import annotations

import json
import shlex

import pytest

from kvtestbed.faults import deadman
from kvtestbed.faults.network import nft_rules, nft_undo, restore_tbf


def test_arm_records_the_intent_before_it_starts_the_timer():
    command = deadman.arm_command("pause-1a2b", 25.5, "systemctl kill --signal=CONT redis@6379.service",
                                  {"kind": "pause", "units": ["redis@6379.service"]})
    record_part, timer_part = command.split(" && systemd-run ", 1)
    words = shlex.split("systemd-run " + timer_part)
    assert words[:4] == ["systemd-run", "--quiet", "--collect", "--unit"]
    assert words[4] == "kvt-heal-pause-1a2b"
    assert "--on-active=25500ms" in words
    assert "--timer-property=AccuracySec=100ms" in words
    assert words[-3:-1] == ["/bin/sh", "-c"]
    assert words[-1] == ("( systemctl kill --signal=CONT redis@6379.service ) && "
                         "rm -f /run/kvtestbed-faults/pause-1a2b.json")
    printed = shlex.split(record_part.split("&&", 1)[1])
    intent = json.loads(printed[2])
    assert intent["unit"] == "kvt-heal-pause-1a2b" and intent["heal"] == words[-1]
    assert printed[-1] == "/run/kvtestbed-faults/pause-1a2b.json"


def test_a_normal_heal_undoes_first_and_disarms_only_then():
    command = deadman.heal_and_disarm("stop-9", "systemctl start redis@6379.service")
    undo, disarm = command.split(" && { ", 1)
    assert undo.startswith("( systemctl start redis@6379.service )")
    assert "systemctl stop kvt-heal-stop-9.timer" in disarm


def test_ids_are_safe_for_units_and_chains():
    with pytest.raises(ValueError):
        deadman.check_id("x;reboot")
    assert deadman.check_id("partition-0a1b2c3d") == "partition-0a1b2c3d"


def test_nft_rules_drop_both_ways_in_our_table_only():
    rules = nft_rules("partition-ab", ["198.18.9.12", "198.18.9.13"], ["198.18.9.12"])
    assert rules.startswith("table inet kvtestbed_fault {")
    assert "chain in_partition_ab {" in rules and "chain out_partition_ab {" in rules
    assert "type filter hook input priority -150; policy accept;" in rules
    assert "ip saddr { 198.18.9.12, 198.18.9.13 } drop" in rules
    assert "ip daddr { 198.18.9.12 } drop" in rules
    one_way = nft_rules("p-1", ["198.18.9.12", "2001:db8::1"], [])
    assert "chain out_" not in one_way and "ip6 saddr { 2001:db8::1 } drop" in one_way
    undo = nft_undo("partition-ab")
    assert "delete chain inet kvtestbed_fault in_partition_ab" in undo
    assert "delete table inet kvtestbed_fault" in undo and "flush ruleset" not in undo


def test_the_labs_tbf_is_put_back_as_it_was():
    lab_tbf = {"kind": "tbf", "handle": "82d5:", "root": True,
               "options": {"rate": 125000000, "burst": "262125b/1", "mpu": 0, "lat": 50000,
                           "linklayer": "ethernet"}}
    assert restore_tbf("host0", lab_tbf) == ("tc qdisc replace dev host0 root handle 82d5: tbf rate 1000000000bit "
                                             "burst 262125b latency 50000us")
    assert restore_tbf("eth0", {"kind": "htb", "handle": "1:", "options": {}}) is None
    assert restore_tbf("eth0", dict(lab_tbf, options=dict(lab_tbf["options"], peakrate=1))) is None


def test_heal_sweeps_only_a_root_qdisc_with_our_handle():
    from kvtestbed.faults.heal import _OUR_QDISC

    assert _OUR_QDISC.match("qdisc tbf fa17: dev host0 root refcnt 2 rate 1Mbit burst 4Kb lat 50ms").group(1) == "host0"
    assert not _OUR_QDISC.match("qdisc tbf 82d5: dev host0 root refcnt 3 rate 1Gbit burst 262125b lat 50ms")
    assert not _OUR_QDISC.match("qdisc noqueue 0: dev lo root refcnt 2")
