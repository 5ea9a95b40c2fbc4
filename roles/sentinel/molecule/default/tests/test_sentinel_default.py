"""One Sentinel on one host watching a standalone Redis: unit, config, fast timers, authenticated queries."""

from __future__ import annotations

from tests.support.molecule_kv import secret


def sentinel(host, *args: str) -> str:
    return host.check_output(f"REDISCLI_AUTH={secret('sentinels-admin')} redis-cli --no-auth-warning -p 26379 "
                             + " ".join(args))


def test_sentinel_runs_hardened(host):
    service = host.service("redis-sentinel@26379")
    assert service.is_running and service.is_enabled
    assert host.socket("tcp://127.0.0.1:26379").is_listening
    props = host.check_output("systemctl show redis-sentinel@26379 -p User -p ProtectSystem -p ReadWritePaths")
    assert "User=redis" in props and "ProtectSystem=strict" in props and "/etc/redis" in props


def test_sentinel_knows_the_master(host):
    address = host.ansible.get_variables()["ansible_host"]
    assert sentinel(host, "SENTINEL", "get-master-addr-by-name", "redis_single").split() == [address, "6379"]
    master = sentinel(host, "SENTINEL", "MASTER", "redis_single").splitlines()
    fields = dict(zip(master[::2], master[1::2], strict=False))
    assert fields["quorum"] == "1" and fields["down-after-milliseconds"] == "3000"
    assert fields["failover-timeout"] == "10000" and fields["flags"] == "master"


def test_sentinel_needs_a_password(host):
    out = host.run("redis-cli -p 26379 SENTINEL masters")
    assert "NOAUTH" in out.stdout + out.stderr


def test_sentinel_owns_its_config(host):
    conf = host.file("/etc/redis/sentinel-26379.conf")
    assert conf.user == "redis"
    # Sentinel rewrote it (its id), which is why the role renders it only once
    assert "sentinel myid" in conf.content_string
