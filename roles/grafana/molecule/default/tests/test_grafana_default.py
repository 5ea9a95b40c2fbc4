"""What the grafana role writes, as converge.yml rendered it with the role's templates and vars on the controller
(Grafana itself cannot be installed here; `molecule check` ran the whole role in check mode before)."""

from __future__ import annotations

import configparser
import json
import os
from pathlib import Path

import yaml

ROLE = Path(__file__).resolve().parents[3]
DASHBOARDS = ROLE.parents[1] / "dashboards"
# prom-2 is only named in the inventory (a second Prometheus for the datasource list)
testinfra_hosts = ["ansible://grafana-local"]


def render_dir() -> str:
    return os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "render")


def read(host, name: str) -> str:
    rendered = host.file(os.path.join(render_dir(), name))
    assert rendered.exists, name
    return rendered.content_string


def test_grafana_ini_takes_the_admin_password_from_a_file(host):
    ini = configparser.ConfigParser(interpolation=None)
    ini.read_string(read(host, "grafana.ini"))
    assert ini["security"]["admin_password"] == "$__file{/etc/grafana/admin-password}"
    assert ini["server"]["http_port"] == "3000"
    assert ini["auth.anonymous"]["enabled"] == "false"


def test_the_default_datasource_is_the_local_prometheus_with_the_fixed_uid(host):
    sources = yaml.safe_load(read(host, "datasources.yml"))["datasources"]
    assert [(s["uid"], s["url"], s["isDefault"]) for s in sources] == [
        ("kvtestbed-prometheus", "http://127.0.0.1:9090", True),
        ("kvtestbed-prometheus-prom-2", "http://127.0.0.2:9091", False),
    ]
    assert sources[0]["jsonData"]["timeInterval"] == "5s"


def test_every_repo_dashboard_uses_the_datasource_variable(host):
    provider = yaml.safe_load(read(host, "dashboards.yml"))["providers"][0]
    assert provider["options"]["path"] == "/etc/grafana/dashboards/kvtestbed"
    for path in sorted(DASHBOARDS.glob("*.json")):
        variable = next(v for v in json.loads(path.read_text())["templating"]["list"] if v["name"] == "datasource")
        assert (variable["type"], variable["query"]) == ("datasource", "prometheus"), path.name


def test_unit_drop_in_source_and_firewall(host):
    assert "ProtectSystem=strict" in read(host, "grafana-server-hardening.conf").splitlines()
    assert "Signed-By: /etc/apt/keyrings/grafana.asc" in read(host, "grafana.sources").splitlines()
    assert "{ 3000 }" in read(host, "firewall.nft")


def test_the_admin_password_was_generated_private(host):
    secret = host.file(os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "secrets", "grafana-admin-password"))
    assert secret.exists and secret.mode == 0o600
