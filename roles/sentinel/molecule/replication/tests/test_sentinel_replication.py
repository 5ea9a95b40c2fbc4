"""A Redis primary, two replicas and three Sentinels on three hosts: roles, offsets, Sentinel's view."""

from __future__ import annotations

import uuid

import pytest

from tests.support.molecule_kv import assert_no_secret_on_command_lines, cli, secret
from tests.support.wait import settle

PRIMARY = "198.18.44.11"


def replication(host) -> dict[str, str]:
    out = cli(host, 6379, "INFO", "replication")
    return dict(line.split(":", 1) for line in out.splitlines() if ":" in line)


def test_roles_and_offsets(host):
    info = replication(host)
    if host.ansible.get_variables()["ansible_host"] == PRIMARY:
        assert info["role"] == "master" and info["connected_slaves"] == "2"
        assert "min_slaves_good_slaves" in info
    else:
        assert info["role"] == "slave" and info["master_host"] == PRIMARY
        assert info["master_link_status"] == "up"


def _acked_offsets(host) -> tuple[int, dict[str, int]]:
    """One INFO snapshot of the primary: its offset and the offset each replica (by address) acknowledged."""
    info = dict(line.split(":", 1) for line in cli(host, 6379, "INFO", "replication", address=PRIMARY).splitlines()
                if ":" in line)
    acked = {}
    for key, value in info.items():
        if key.startswith("slave") and key[5:].isdigit():
            fields = dict(item.split("=", 1) for item in value.split(","))
            acked[fields["ip"]] = int(fields["offset"])
    return int(info["master_repl_offset"]), acked


def test_replica_catches_up_with_a_write(host):
    """A write on the primary reaches this replica: WAIT counts both replicas, this replica's offset reaches the
    primary's exactly and the value reads back here."""
    me = host.ansible.get_variables()["ansible_host"]
    if me == PRIMARY:
        pytest.skip("the primary is what the replicas catch up with")
    key, value = f"kvt:repl:{me}", uuid.uuid4().hex
    out = host.check_output(f"printf 'SET {key} {value}\\nWAIT 2 5000\\n' | REDISCLI_AUTH={secret('redis-admin')} "
                            f"redis-cli --user admin --no-auth-warning -h {PRIMARY} -p 6379").split()
    assert out == ["OK", "2"], out
    written, _ = _acked_offsets(host)
    # the primary's own offset moves on (Sentinel hellos, replication pings): wait for a snapshot where this
    # replica has acknowledged exactly everything the primary has
    primary_offset, acked = settle(lambda: _acked_offsets(host), lambda pa: pa[1].get(me) == pa[0], timeout_s=15,
                                   interval_s=0.2)
    assert acked.get(me) == primary_offset, (acked, primary_offset)
    assert int(replication(host)["slave_repl_offset"]) >= written
    assert cli(host, 6379, "GET", key) == value


def test_replicas_are_read_only(host):
    if host.ansible.get_variables()["ansible_host"] != PRIMARY:
        assert "READONLY" in host.run(f"REDISCLI_AUTH={secret('redis-admin')} redis-cli --user admin "
                                      "--no-auth-warning -p 6379 SET k v").stdout


def test_sentinels_agree_on_the_master(host):
    out = host.check_output(f"REDISCLI_AUTH={secret('sentinel-admin')} redis-cli --no-auth-warning -p 26379 "
                            "SENTINEL get-master-addr-by-name redis")
    assert out.split() == [PRIMARY, "6379"]
    master = host.check_output(f"REDISCLI_AUTH={secret('sentinel-admin')} redis-cli --no-auth-warning -p 26379 "
                               "SENTINEL MASTER redis").splitlines()
    fields = dict(zip(master[::2], master[1::2], strict=False))
    assert fields["num-slaves"] == "2" and fields["num-other-sentinels"] == "2" and fields["quorum"] == "2"


def test_no_password_on_any_command_line(host):
    assert_no_secret_on_command_lines(host)
