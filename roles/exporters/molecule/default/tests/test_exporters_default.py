"""Exporters on one host with a Redis server, a Sentinel and a NATS server: units, ports, the figures they serve, no
password leaks."""

from __future__ import annotations

import json
import shlex
import urllib.request
from pathlib import Path

from tests.support.molecule_kv import assert_no_secret_on_command_lines, cli, secret
from tests.support.wait import settle

NODE_PORT = 9100
REDIS_UNIT = "prometheus-redis-exporter@redis-6379"
SENTINEL_UNIT = "prometheus-redis-exporter@sentinel-26379"
ENV_DIR = "/etc/kvtestbed/exporters"
FOREIGN_PORT = 16400
FOREIGN_LOG = "/tmp/kvt-foreign-target.bin"
NATS_UNIT = "prometheus-nats-collector"
NATS_PORT = 7777
COLLECTOR = Path(__file__).resolve().parents[5] / "agents" / "kvagent" / "exporters" / "nats.py"


def metrics(host, port: int) -> str:
    return host.check_output(f"curl -fsS --max-time 10 http://127.0.0.1:{port}/metrics")


def sample(text: str, name: str) -> float:
    """The value of the first sample of metric `name` (with or without labels) in a Prometheus text page."""
    for line in text.splitlines():
        if line.startswith((name + " ", name + "{")):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in the page")


def test_node_exporter_runs_hardened(host):
    service = host.service("prometheus-node-exporter")
    assert service.is_running and service.is_enabled
    assert host.socket(f"tcp://{NODE_PORT}").is_listening
    assert (
        f'ARGS="--web.listen-address=:{NODE_PORT}"' in host.file("/etc/default/prometheus-node-exporter").content_string
    )
    props = host.check_output(
        "systemctl show prometheus-node-exporter -p User -p NoNewPrivileges -p ProtectSystem -p Restart"
    )
    assert "User=prometheus" in props and "NoNewPrivileges=yes" in props and "ProtectSystem=strict" in props, props
    assert "Restart=always" in props, props


def test_node_exporter_answers(host):
    page = metrics(host, NODE_PORT)
    assert sample(page, "node_cpu_seconds_total") > 0


def test_redis_exporter_runs_hardened(host):
    service = host.service(REDIS_UNIT)
    assert service.is_running and service.is_enabled
    assert host.socket("tcp://36379").is_listening
    props = host.check_output(
        f"systemctl show {REDIS_UNIT} -p User -p NoNewPrivileges -p ProtectSystem -p PrivateTmp "
        "-p ProtectHome -p CapabilityBoundingSet"
    )
    for wanted in (
        "User=prometheus",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "CapabilityBoundingSet=\n",
    ):
        assert wanted in props + "\n", props


def test_redis_exporter_scrapes_the_server(host):
    page = metrics(host, 36379)
    assert sample(page, "redis_up") == 1
    assert sample(page, "redis_exporter_last_scrape_error") == 0
    # INFO answered: the exporter logged in (as the `exporter` ACL user of its environment file; the default user
    # is off) and reads the server's own figures
    assert 'role="master"' in page and 'redis_mode="standalone"' in page


def _clients(host) -> tuple[float, int]:
    exported = sample(metrics(host, 36379), "redis_connected_clients")
    info = dict(line.split(":", 1) for line in cli(host, 6379, "INFO", "clients").splitlines() if ":" in line)
    return exported, int(info["connected_clients"])


def test_exported_clients_match_the_servers_info(host):
    """Each count includes its own reader (the exporter's connection, then redis-cli's): the same figure, give or take
    a Sentinel reconnecting between the two reads."""
    exported, served = settle(
        lambda: _clients(host), lambda pair: abs(pair[0] - pair[1]) <= 1, timeout_s=20, interval_s=0.5
    )
    assert abs(exported - served) <= 1, (exported, served)
    assert served >= 2  # the Sentinel's connections and the reader: the figure is not trivially zero


def test_sentinel_exporter_scrapes_the_sentinel(host):
    service = host.service(SENTINEL_UNIT)
    assert service.is_running and service.is_enabled
    page = metrics(host, 56379)
    assert sample(page, "redis_up") == 1
    assert sample(page, "redis_sentinel_masters") == 1


def test_credential_files_are_private(host):
    assert host.file(ENV_DIR).mode == 0o700 and host.file(ENV_DIR).user == "root"
    for name, uri, user, password in (
        ("redis-6379", "redis://127.0.0.1:6379", "exporter", secret("redis-exporter")),
        ("sentinel-26379", "redis://127.0.0.1:26379", None, secret("sentinel-admin")),
    ):
        env = host.file(f"{ENV_DIR}/{name}.env")
        assert env.mode == 0o600 and env.user == "root" and env.group == "root", name
        content = env.content_string
        assert f"REDIS_ADDR={uri}\n" in content, name
        assert (f"REDIS_USER={user}\n" in content) if user else ("REDIS_USER" not in content), name
        assert password not in content and "REDIS_PASSWORD" not in content, name
        passwords = host.file(f"{ENV_DIR}/{name}.passwords.json")
        assert passwords.mode == 0o600 and passwords.user == "root" and passwords.group == "root", name
        # the password the kvstore and sentinel roles generated (not a new one), for the exporter's own target only
        assert json.loads(passwords.content_string) == {uri: password}, name


# a stand-in for a Redis server an HTTP client points an exporter at: records what each connection sends
LISTENER = f"""
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", {FOREIGN_PORT}))
s.listen(4)
s.settimeout(30)
with open("{FOREIGN_LOG}", "ab") as out:
    while True:
        c, _ = s.accept()
        c.settimeout(5)
        try:
            out.write(c.recv(4096))
            out.flush()
            c.sendall(b"-ERR not a redis server\\r\\n")
        except OSError:
            pass
        c.close()
"""


def test_scrape_endpoint_keeps_the_password_to_its_own_target(host):
    """An exporter's /scrape?target=<any> logs in to whatever server an HTTP client names: with REDIS_PASSWORD it
    sends that password there (the exporter's port is open to the testbed subnet). A password file maps the
    password to the exporter's own target only."""
    host.run(f"rm -f {FOREIGN_LOG}")
    pid = host.check_output(
        f"setsid timeout 60 python3 -c {shlex.quote(LISTENER)} </dev/null >/dev/null 2>&1 & echo $!"
    )
    try:
        assert settle(lambda: host.socket(f"tcp://127.0.0.1:{FOREIGN_PORT}").is_listening, bool, timeout_s=10)
        for port in (36379, 56379):
            host.run(f"curl -s --max-time 10 'http://127.0.0.1:{port}/scrape?target=redis://127.0.0.1:{FOREIGN_PORT}'")
        sent = settle(lambda: host.run(f"cat {FOREIGN_LOG}").stdout, lambda s: s.count("SETNAME") >= 2, timeout_s=10)
    finally:
        host.run(f"kill {pid}")
    # both exporters did talk to the foreign server, and told it nothing secret
    assert sent.count("SETNAME") >= 2, sent
    assert "AUTH" not in sent, sent
    for name in ("redis-exporter", "sentinel-admin"):
        assert secret(name) not in sent, name


def test_no_password_on_a_command_line(host):
    for unit, name in ((REDIS_UNIT, "redis-exporter"), (SENTINEL_UNIT, "sentinel-admin")):
        shown = host.check_output(f"systemctl show {unit} -p ExecStart -p Environment")
        assert "prometheus-redis-exporter" in shown and secret(name) not in shown, unit
    assert_no_secret_on_command_lines(host)


def test_packaged_unit_stays_off(host):
    assert host.run("systemctl is-active prometheus-redis-exporter.service").stdout.strip() == "inactive"
    assert host.run("systemctl is-enabled prometheus-redis-exporter.service").stdout.strip() == "masked"
    assert not host.socket("tcp://9121").is_listening


def test_no_exporter_for_a_group_turned_off(host):
    assert not host.file(f"{ENV_DIR}/keydb-6381.env").exists
    assert not host.socket("tcp://36381").is_listening


def test_exporter_of_a_gone_instance_was_removed(host):
    """side_effect.yml left an exporter of an instance the inventory does not have; the next run removed it."""
    assert not host.file(f"{ENV_DIR}/gone-6390.env").exists
    assert not host.file(f"{ENV_DIR}/gone-6390.passwords.json").exists
    service = host.service("prometheus-redis-exporter@gone-6390")
    assert not service.is_running and not service.is_enabled
    assert not host.socket("tcp://36390").is_listening


def test_nats_collector_runs_hardened_as_a_user_of_its_own(host):
    service = host.service(NATS_UNIT)
    assert service.is_running and service.is_enabled
    assert host.socket(f"tcp://0.0.0.0:{NATS_PORT}").is_listening
    props = host.check_output(
        f"systemctl show {NATS_UNIT} -p DynamicUser -p NoNewPrivileges -p ProtectSystem -p ProtectHome -p PrivateTmp "
        "-p CapabilityBoundingSet -p Restart -p ExecStart"
    )
    for wanted in ("DynamicUser=yes", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
                   "PrivateTmp=yes", "CapabilityBoundingSet=\n", "Restart=always"):  # fmt: skip
        assert wanted in props + "\n", props
    # Debian's python3 runs the repo's file, isolated; it reads the server's monitoring port on the host's address
    address = host.ansible.get_variables()["ansible_host"]
    assert f"/usr/bin/python3 -I -B /usr/local/lib/kvtestbed-exporters/nats.py --url http://{address}:8222" in props
    pid = host.check_output(f"systemctl show -p MainPID --value {NATS_UNIT}")
    uid = host.check_output(f"awk '/^Uid:/ {{print $2}}' /proc/{pid}/status")
    assert uid.strip() not in ("", "0"), uid
    script = host.file("/usr/local/lib/kvtestbed-exporters/nats.py")
    assert (script.user, script.mode) == ("root", 0o644)
    assert script.content_string == COLLECTOR.read_text()
    assert host.package("python3-prometheus-client").is_installed


def _varz(host) -> dict:
    address = host.ansible.get_variables()["ansible_host"]
    return json.loads(host.check_output(f"curl -fsS --max-time 10 http://{address}:8222/varz"))


def test_nats_collector_figures_are_the_servers_own(host):
    """Within one scrape: the server's /varz read before and after each scrape brackets the collector's counters,
    and its gauges equal them once the two readings agree."""

    def read() -> tuple[dict, str, dict]:
        before = _varz(host)
        page = metrics(host, NATS_PORT)
        return before, page, _varz(host)

    before, page, after = settle(
        read, lambda r: r[0]["subscriptions"] == r[2]["subscriptions"], timeout_s=30, interval_s=0.5
    )
    assert sample(page, "gnatsd_up") == 1
    assert sample(page, "gnatsd_varz_subscriptions") == before["subscriptions"] == after["subscriptions"] > 0
    for field in ("in_msgs", "out_msgs", "in_bytes", "total_connections"):
        assert before[field] <= sample(page, f"gnatsd_varz_{field}") <= after[field], field
    assert f'server_id="{before["server_id"]}"' in page
    assert f'gnatsd_varz_version{{server_id="{before["server_id"]}",value="{before["version"]}"}} 1.0' in page
    assert f'gnatsd_healthz_status_value{{server_id="{before["server_id"]}",value="ok"}} 1.0' in page
    assert sample(page, "jetstream_server_jetstream_disabled") == 0


def test_firewall_lets_the_testbed_subnet_scrape(host):
    """The ports are in the common role's set, and a scrape from the controller (on the testbed subnet, where
    Prometheus would be) gets through the host's firewall."""
    opened = host.check_output("nft list set inet kvtestbed_fw testbed_tcp")
    for port in (NODE_PORT, 36379, 56379, NATS_PORT):
        assert str(port) in opened, opened
    address = host.ansible.get_variables()["ansible_host"]
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # straight to the host, never a proxy
    for port, metric in ((NODE_PORT, "node_cpu_seconds_total"), (36379, "redis_up 1"), (NATS_PORT, "gnatsd_up 1")):
        with opener.open(f"http://{address}:{port}/metrics", timeout=10) as response:
            assert metric in response.read().decode(), port
