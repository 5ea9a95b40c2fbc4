"""A Redis primary, two replicas and three Sentinels on three hosts: roles, offsets, Sentinel's view."""

from __future__ import annotations

import time

from tests.support.molecule_kv import cli, secret

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
        # the replica catches up with the primary's offset
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            primary_offset = int(cli(host, 6379, "INFO", "replication", address=PRIMARY)
                                 .split("master_repl_offset:")[1].split()[0])
            if int(replication(host)["slave_repl_offset"]) >= primary_offset - 1000:
                break
            time.sleep(0.5)
        assert int(replication(host)["slave_repl_offset"]) > 0


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
