"""kvstore on one host: Redis (two instances) and Valkey side by side, hardened units, ACLs, knobs."""

from __future__ import annotations

from tests.support.molecule_kv import assert_secrets_private, cli, secret

INSTANCES = [("redis", 6379, "standalone_redis"), ("redis", 6389, "standalone_redis"),
             ("valkey", 6380, "standalone_valkey")]


def test_instances_run_and_listen(host):
    address = host.ansible.get_variables()["ansible_host"]
    for engine, port, _ in INSTANCES:
        service = host.service(f"{engine}@{port}")
        assert service.is_running and service.is_enabled
        assert host.socket(f"tcp://127.0.0.1:{port}").is_listening
        assert host.socket(f"tcp://{address}:{port}").is_listening
        assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening


def test_packaged_units_masked(host):
    for unit in ("redis-server", "valkey-server"):
        assert host.file(f"/etc/systemd/system/{unit}.service").linked_to == "/dev/null"


def test_units_are_hardened(host):
    for engine, port, _ in INSTANCES:
        props = host.check_output(f"systemctl show {engine}@{port} -p User -p ProtectSystem -p LimitNOFILE -p Restart "
                                  "-p NoNewPrivileges -p ReadWritePaths")
        assert f"User={engine}" in props and "ProtectSystem=strict" in props and "LimitNOFILE=65536" in props
        assert "Restart=always" in props and "NoNewPrivileges=yes" in props
        assert f"/var/lib/{engine}/{engine}-{port}" in props and f"/etc/{engine}" in props


def test_config_carries_the_knobs(host):
    conf = host.file("/etc/redis/redis-6379.conf")
    assert conf.user == "redis" and conf.mode == 0o640
    text = conf.content_string
    assert text.startswith("#") and "Ansible managed" in text
    for line in ('notify-keyspace-events "K$Ex"', "hz 50", "appendonly yes", "appendfsync everysec",
                 "maxmemory 64mb", "maxmemory-policy allkeys-lru", "latency-monitor-threshold 25",
                 "user default off", "protected-mode yes", "dir /var/lib/redis/redis-6379"):
        assert line in text, line
    assert secret("standalone_redis-admin") not in text, "passwords are stored hashed"
    valkey = host.file("/etc/valkey/valkey-6380.conf").content_string
    assert "io-threads 2" in valkey and 'save ""' in valkey


def test_runtime_matches_config(host):
    assert cli(host, 6379, "CONFIG", "GET", "hz", deployment="standalone_redis").split() == ["hz", "50"]
    events = cli(host, 6379, "CONFIG", "GET", "notify-keyspace-events", deployment="standalone_redis").split()[-1]
    assert set(events) == set("K$Ex")
    assert cli(host, 6380, "INFO", "server", deployment="standalone_valkey", engine="valkey").count("valkey_version:8.0")


def test_no_anonymous_access(host):
    for engine, port, _ in INSTANCES:
        out = host.run(f"{engine}-cli -p {port} PING")
        assert "NOAUTH" in out.stdout + out.stderr


def test_acl_users(host):
    agent = f"REDISCLI_AUTH={secret('standalone_redis-agent')} redis-cli --user agent --no-auth-warning -p 6379"
    assert host.check_output(f"{agent} SET k v") == "OK"
    assert "NOPERM" in host.run(f"{agent} SHUTDOWN").stdout
    exporter = f"REDISCLI_AUTH={secret('standalone_redis-exporter')} redis-cli --user exporter --no-auth-warning -p 6379"
    assert "redis_version" in host.check_output(f"{exporter} INFO server")
    assert "NOPERM" in host.run(f"{exporter} SET k v").stdout


def test_agent_cannot_reconfigure_the_server(host):
    """The agents read the config but never change the system under test; keyspace events come from the role."""
    agent = f"REDISCLI_AUTH={secret('standalone_redis-agent')} redis-cli --user agent --no-auth-warning -p 6379"
    for flags in ("", "KEA"):
        out = host.run(f"{agent} CONFIG SET notify-keyspace-events '{flags}'")
        assert "NOPERM" in out.stdout + out.stderr, out
    assert "NOPERM" in host.run(f"{agent} CONFIG SET maxmemory 1").stdout
    # what the agents check instead, and what the role configured, unchanged by the attempts above
    assert host.check_output(f"{agent} CONFIG GET notify-keyspace-events").split()[0] == "notify-keyspace-events"
    for port in (6379, 6389):
        events = cli(host, port, "CONFIG", "GET", "notify-keyspace-events", deployment="standalone_redis").split()[-1]
        assert set(events) == set("K$Ex"), (port, events)


def test_keyspace_events_are_live(host):
    """A write publishes the configured events: a keyspace event (K$) and, for a key with a TTL, expired (Ex)."""
    auth = f"REDISCLI_AUTH={secret('standalone_redis-agent')}"
    agent = f"{auth} redis-cli --user agent --no-auth-warning -p 6379"
    subscriber = f"{auth} timeout 5 redis-cli --user agent --no-auth-warning -p 6379"
    # the write happens once the server counts both pattern subscriptions (polled, bounded to 5 s)
    out = host.run(f"{subscriber} PSUBSCRIBE '__keyspace@0__:kvt:ev' '__keyevent@0__:expired' > /tmp/kvt-ev.out & "
                   f"for i in $(seq 50); do [ \"$({agent} PUBSUB NUMPAT)\" -ge 2 ] && break; sleep 0.1; done; "
                   f"{agent} SET kvt:ev 1 PX 100 >/dev/null; wait; cat /tmp/kvt-ev.out")
    lines = out.stdout.split()
    assert "__keyspace@0__:kvt:ev" in lines and "set" in lines, lines
    assert "__keyevent@0__:expired" in lines and "kvt:ev" in lines, lines


def test_secrets_are_private():
    """Every password the roles generated into the scenario's secrets dir is 0600, the dir 0700."""
    assert_secrets_private()
