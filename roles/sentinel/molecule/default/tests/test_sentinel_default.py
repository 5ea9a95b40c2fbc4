"""One Sentinel on one host watching a standalone Redis: unit, config, fast timers, authenticated queries."""

from __future__ import annotations

from tests.support.molecule_kv import assert_no_secret_on_command_lines, secret, secrets
from tests.support.wait import settle


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


def _master_fields(host) -> dict[str, str]:
    master = sentinel(host, "SENTINEL", "MASTER", "redis_single").splitlines()
    return dict(zip(master[::2], master[1::2], strict=False))


def test_no_password_on_any_command_line(host):
    assert_no_secret_on_command_lines(host)


def test_runtime_monitor_got_its_credentials_through_stdin(host):
    """side_effect.yml made the Sentinel forget its set and applied the role again with redis-cli's argv logged."""
    lines = host.file("/var/log/kvtestbed-cli-argv.log").content_string.splitlines()
    for name, value in secrets().items():
        leaks = [line.replace(value, f"<{name}>") for line in lines if value in line]
        assert not leaks, f"password {name} on a redis-cli command line: {leaks}"
    # the role took the runtime path: MONITOR, then the credentials (the password itself read from stdin by -x)
    assert any("SENTINEL MONITOR redis_single" in line for line in lines), lines
    assert any(line.endswith("-x SENTINEL SET redis_single auth-user sentinel auth-pass") for line in lines), lines


def test_sentinel_authenticates_to_the_master(host):
    """With a wrong or missing auth-pass the master's INFO and PING fail: no info refresh, then s_down."""
    fields = settle(lambda: _master_fields(host),
                    lambda f: (f["flags"] == "master" and int(f["info-refresh"]) < 11000
                               and int(f["last-ok-ping-reply"]) < 2000), timeout_s=30, interval_s=1)
    assert fields["flags"] == "master", fields
    assert int(fields["info-refresh"]) < 11000 and int(fields["last-ok-ping-reply"]) < 2000, fields
    assert fields["role-reported"] == "master", fields
