"""roles/grafana without Grafana: playbooks/monitoring.yml run on this controller in check mode, with only the
Grafana role's tags (tests/ansible/playbooks/grafana_check.yml). Grafana's package cannot be fetched here (as in the
lab), so check mode skips the key and the package and shows what every other task would write: --diff carries each
template's rendered text, which the tests parse (grafana.ini, the datasource, the dashboard provider, the apt
source, the unit's drop-in). Nothing is written but the controller's secrets dir; no host is contacted.

Also: the Grafana play targets a `grafana` group when the inventory has one, else the monitoring hosts; it skips a
host with grafana_deploy: false (the lab) before the role; and the preflight refuses bad input in one line.
"""

from __future__ import annotations

import configparser
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.binaries import unavailable

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
WRAPPER = ROOT / "tests" / "ansible" / "playbooks" / "grafana_check.yml"
DASHBOARDS = sorted(p.name for p in (ROOT / "dashboards").glob("*.json"))
PROVISIONED_DIR = "/etc/grafana/dashboards/kvtestbed"

# every host runs on this controller (connection local); sudo is not needed (and may not exist) in check mode
COMMON = {
    "ansible_connection": "local",
    "ansible_python_interpreter": sys.executable,
    "ansible_become": False,
}


def run(tmp_path: Path, inventory: dict[str, Any], tags: str) -> tuple[int, dict[str, Any], str]:
    """The wrapper with --check --diff and `tags` against `inventory`; secrets go to tmp_path/secrets. Returns the
    exit code, the JSON callback's report and the raw output (to look for secrets in)."""
    playbook = BIN / "ansible-playbook"
    if not playbook.exists():
        unavailable("ansible-playbook is not installed in this environment (pip install -e '.[controller]')")
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
        "PATH": f"{BIN}:{os.environ['PATH']}",
    }
    argv = [str(playbook), "-i", str(tmp_path / "hosts.yml"), str(WRAPPER), "--check", "--diff", "--tags", tags,
            "-e", f"testbed_secrets_dir={tmp_path / 'secrets'}"]  # fmt: skip
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    try:
        report: dict[str, Any] = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"no JSON report (rc {proc.returncode}): {proc.stderr[-3000:]}") from None
    return proc.returncode, report, proc.stdout + proc.stderr


def results(report: dict[str, Any], play: str = "Grafana") -> dict[str, dict[str, dict[str, Any]]]:
    """{task name: {host: result}} of one play."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for entry in report["plays"]:
        if entry["play"]["name"] == play:
            for task in entry["tasks"]:
                out.setdefault(task["task"]["name"], {}).update(task["hosts"])
    return out


def rendered(result: dict[str, Any]) -> str:
    """What a template task would write, from its --diff."""
    diffs = result["diff"] if isinstance(result["diff"], list) else [result["diff"]]
    return str(next(d["after"] for d in diffs if "after" in d))


def collection_defaults() -> dict[str, Any]:
    """The grafana.grafana collection's grafana role defaults, found by ansible-galaxy (not by the role's plugin)."""
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
    argv = [str(BIN / "ansible-galaxy"), "collection", "list", "grafana.grafana", "--format", "json"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    listing = json.loads(proc.stdout or "{}")
    paths = [Path(base) / "grafana" / "grafana" for base, found in listing.items() if "grafana.grafana" in found]
    if not paths:
        unavailable("the grafana.grafana collection is not installed (it comes with the `ansible` package)")
    return yaml.safe_load((paths[0] / "roles" / "grafana" / "defaults" / "main.yml").read_text())


# --- the role in check mode ----------------------------------------------------------------------------------------

MAIN_INVENTORY = {
    "all": {
        "vars": COMMON,
        "hosts": {
            "gf-1": {
                "ansible_host": "127.0.0.31",
                "prometheus_scrape_interval": "5s",
                "grafana_extra_config": {
                    "server": {"root_url": "http://grafana.test:3000/"},
                    "auth.anonymous": {"enabled": True},
                },
            },
            "prom-2": {"ansible_host": "127.0.0.32", "prometheus_port": 9091},
        },
        "children": {
            # Prometheus on both, Grafana (a group of its own) on gf-1 only
            "monitoring": {"hosts": {"prom-2": None, "gf-1": None}},
            "grafana": {"hosts": {"gf-1": None}},
        },
    }
}


@pytest.fixture(scope="module")
def check_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, dict[str, Any], str]:
    tmp_path = tmp_path_factory.mktemp("grafana-check")
    existed = {p: Path(p).exists() for p in ("/etc/grafana", "/etc/apt/sources.list.d/grafana.sources")}
    code, report, output = run(tmp_path, MAIN_INVENTORY, "grafana")
    # check mode wrote nothing on this machine
    for path, was_there in existed.items():
        assert Path(path).exists() == was_there, f"check mode changed {path}"
    return tmp_path, code, report, output


@pytest.fixture(scope="module")
def tasks(check_run) -> dict[str, dict[str, dict[str, Any]]]:
    _, code, report, output = check_run
    assert code == 0, output[-4000:]
    return results(report)


def test_the_grafana_group_wins_over_monitoring(tasks) -> None:
    hosts = {host for by_host in tasks.values() for host in by_host}
    assert hosts == {"gf-1"}


def test_check_mode_skips_what_needs_the_network_and_a_running_grafana(tasks) -> None:
    for name in (
        "Fetch Grafana's repository key",
        "Install Grafana 12.*",
        "Start and enable Grafana",
        "Wait for Grafana to be ready",
        "Set the admin password in Grafana's database",
    ):
        assert tasks[f"grafana : {name}"]["gf-1"].get("skipped"), name


def test_grafana_ini_reads_the_password_from_a_file_and_merges_the_extra_config(tasks) -> None:
    text = rendered(tasks["grafana : Write grafana.ini"]["gf-1"])
    assert "Ansible managed" in text
    ini = configparser.ConfigParser(interpolation=None, comment_prefixes=("#", ";"))
    ini.read_string(text)
    assert ini["security"]["admin_user"] == "admin"
    assert ini["security"]["admin_password"] == "$__file{/etc/grafana/admin-password}"
    assert ini["server"]["http_port"] == "3000"
    assert ini["paths"]["provisioning"] == "/etc/grafana/provisioning"
    assert ini["users"]["allow_sign_up"] == "false"
    assert ini["analytics"]["reporting_enabled"] == "false"
    # grafana_extra_config: a new key and an override of the role's own, booleans as Grafana writes them
    assert ini["server"]["root_url"] == "http://grafana.test:3000/"
    assert ini["auth.anonymous"]["enabled"] == "true"
    assert ini["dashboards"]["default_home_dashboard_path"] == f"{PROVISIONED_DIR}/kvtestbed-run.json"


def test_the_datasource_is_the_testbeds_prometheus_with_a_fixed_uid(tasks) -> None:
    text = rendered(tasks["grafana : Provision the testbed's Prometheus as the default datasource"]["gf-1"])
    sources = yaml.safe_load(text)["datasources"]
    # the Prometheus on Grafana's own host first (the default), then the group's others
    assert [(s["uid"], s["url"], s["isDefault"], s["jsonData"]["timeInterval"]) for s in sources] == [
        ("kvtestbed-prometheus", "http://127.0.0.31:9090", True, "5s"),
        ("kvtestbed-prometheus-prom-2", "http://127.0.0.32:9091", False, "15s"),
    ]
    assert {(s["type"], s["access"], s["editable"]) for s in sources} == {("prometheus", "proxy", False)}


def test_the_dashboards_find_the_datasource(tasks) -> None:
    """Every dashboard's `datasource` variable lists Prometheus datasources and preselects the default one (the
    provisioned one, isDefault); no dashboard names a datasource uid other than the variable or the fixed uid."""
    text = rendered(tasks["grafana : Provision the testbed's Prometheus as the default datasource"]["gf-1"])
    default = next(s for s in yaml.safe_load(text)["datasources"] if s["isDefault"])

    def datasource_uids(node: Any) -> list[str]:
        if isinstance(node, dict):
            own = [str(node["datasource"].get("uid"))] if isinstance(node.get("datasource"), dict) else []
            return own + [uid for value in node.values() for uid in datasource_uids(value)]
        if isinstance(node, list):
            return [uid for item in node for uid in datasource_uids(item)]
        return []

    for name in DASHBOARDS:
        board = json.loads((ROOT / "dashboards" / name).read_text())
        variable = next(v for v in board["templating"]["list"] if v["name"] == "datasource")
        assert (variable["type"], variable["query"]) == ("datasource", default["type"]), name
        assert variable.get("current", {}).get("value") in (None, default["uid"]), name
        assert set(datasource_uids(board)) <= {"${datasource}", default["uid"]}, name


def test_every_dashboard_is_provisioned(tasks) -> None:
    provider = yaml.safe_load(rendered(tasks["grafana : Provision the dashboards directory"]["gf-1"]))["providers"]
    assert len(provider) == 1 and provider[0]["type"] == "file"
    assert provider[0]["options"]["path"] == PROVISIONED_DIR
    assert provider[0]["allowUiUpdates"] is False
    copies = tasks["grafana : Copy the repo's dashboards"]["gf-1"]["results"]
    assert sorted(Path(c["item"]).name for c in copies) == DASHBOARDS and DASHBOARDS
    # from the repo's dashboards/ (the role's default, relative to playbooks/)
    assert {Path(c["item"]).resolve().parent for c in copies} == {ROOT / "dashboards"}


def test_the_apt_source_is_the_collections_repository(tasks) -> None:
    defaults = collection_defaults()
    text = rendered(tasks["grafana : Add Grafana's apt repository"]["gf-1"])
    fields = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line and not line.startswith("#"))
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout
    assert fields == {
        "Types": "deb",
        "URIs": defaults["grafana_apt_repo_uri"],
        "Suites": "stable",
        "Components": "main",
        "Architectures": arch.strip(),
        "Signed-By": "/etc/apt/keyrings/grafana.asc",
    }


def test_the_unit_is_hardened_and_the_firewall_left_alone(tasks) -> None:
    lines = set(rendered(tasks["grafana : Harden Grafana's unit"]["gf-1"]).splitlines())
    assert {
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/grafana /var/log/grafana",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "PrivateTmp=yes",
    } <= lines
    # no common role's firewall here: nothing to open
    if not Path("/etc/kvtestbed/firewall.d").exists():
        assert tasks["grafana : Open the Grafana port to the testbed subnet"]["gf-1"].get("skipped")


def test_admin_password_is_generated_once_private_and_never_printed(check_run, tmp_path: Path) -> None:
    first_dir, _, _, output = check_run
    secret = first_dir / "secrets" / "grafana-admin-password"
    password = secret.read_text().strip()
    assert len(password) == 32 and password.isalnum()
    assert secret.stat().st_mode & 0o777 == 0o600 and secret.parent.stat().st_mode & 0o777 == 0o700
    assert password not in output
    # a second run (another deploy against the same secrets dir) reuses it, and prints it nowhere either
    code, _, again = run(first_dir, MAIN_INVENTORY, "grafana")
    assert code == 0, again[-3000:]
    assert secret.read_text().strip() == password and password not in again


# --- the play's switch ---------------------------------------------------------------------------------------------


def test_grafana_deploy_false_skips_the_role_with_a_line(tmp_path: Path) -> None:
    """The lab's case: monitoring hosts (no grafana group) with grafana_deploy: false get no task of the role."""
    inventory = {"all": {"vars": COMMON, "hosts": {"m-1": {"ansible_host": "127.0.0.41", "grafana_deploy": False}},
                         "children": {"monitoring": {"hosts": {"m-1": None}}}}}  # fmt: skip
    code, report, output = run(tmp_path, inventory, "grafana")
    assert code == 0, output[-3000:]
    tasks = results(report)
    assert tasks["Say why Grafana is skipped"]["m-1"]["msg"].startswith("skipped: grafana_deploy is false")
    assert [name for name in tasks if name.startswith("grafana : ")] == []
    assert not (tmp_path / "secrets").exists()


# --- preflight -----------------------------------------------------------------------------------------------------

REFUSED = {
    "no-prom": ({"grafana_prometheus_group": "nowhere"}, "inventory group 'nowhere' has no hosts"),
    "low-port": ({"grafana_port": 80}, "grafana_port must be 1024-65535"),
    "bad-user": ({"grafana_admin_user": "a b"}, "grafana_admin_user letters, digits"),
    "latest": ({"grafana_version": "latest"}, "grafana_version an apt version glob"),
    "clash": ({"prometheus_port": 3000}, "grafana_port 3000 is Prometheus's port here"),
    "extra-pw": ({"grafana_extra_config": {"security": {"admin_password": "x"}}}, "without security.admin_password"),
    "no-home": ({"grafana_home_dashboard": "nope"}, "(grafana_home_dashboard nope.json is not one of them)"),
    "mirror": ({"grafana_apt_repo_uri": "mirror.example"}, "grafana_apt_repo_uri / grafana_apt_key_url"),
    "armv6": ({"test_architecture": "armv6l"}, "Grafana's apt repository has no package for"),
}


def test_preflight_refuses_bad_input_in_one_line(tmp_path: Path) -> None:
    hosts = {name: {"ansible_host": f"127.0.0.{50 + i}", **host_vars}
             for i, (name, (host_vars, _)) in enumerate(REFUSED.items())}  # fmt: skip
    hosts["ok-1"] = {"ansible_host": "127.0.0.70"}
    hosts["prom-1"] = {"ansible_host": "127.0.0.71"}
    inventory = {"all": {"vars": COMMON, "hosts": hosts, "children": {
        "monitoring": {"hosts": {"prom-1": None, "clash": None}},
        "grafana": {"hosts": {name: None for name in [*REFUSED, "ok-1"]}},
    }}}  # fmt: skip
    code, report, output = run(tmp_path, inventory, "grafana_preflight")
    assert code != 0
    failed: dict[str, str] = {}
    for by_host in results(report).values():
        for host, result in by_host.items():
            if result.get("failed"):
                failed[host] = str(result.get("msg", ""))
    for host, (_, expected) in REFUSED.items():
        assert host in failed, f"{host}: not refused (expected: {expected})"
        message = " ".join(failed[host].split())
        assert expected in message, f"{host}: {failed[host]!r}"
        assert "\n" not in failed[host].strip(), f"{host}: not one line: {failed[host]!r}"
    assert "ok-1" not in failed, failed.get("ok-1")
    assert not (tmp_path / "secrets").exists()
