"""roles/locust rendered by Ansible on this machine (connection local): what the units and configs say, that
Locust itself accepts the master's and workers' configs, how workers find their master without a group name, the
web UI's password generated once and private, and the preflight's one-line refusals.

The role's own task files run here (preflight, secrets) beside its templates; Molecule (roles/locust/molecule)
runs the whole role on lab hosts.
"""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
from pathlib import Path

import kvload
import pytest
import yaml

from tests.support.binaries import unavailable

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "locust"
PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
LOCUST = Path(sys.executable).parent / "locust"
RENDERED = ["locustfile.py", "master.conf", "worker.conf", "kvtestbed-locust-master.service",
            "kvtestbed-locust-worker@.service"]

PLAY = """---
- name: Render roles/locust for every host
  hosts: all
  gather_facts: true
  gather_subset: [min]
  handlers:
    - name: Stand-in for the role's restarts (nothing runs here)
      ansible.builtin.debug: {{msg: restart}}
      listen: [Restart locust, Restart locust master, Restart locust workers]
  tasks:
    - name: Preflight
      ansible.builtin.import_tasks: {role}/tasks/preflight.yml
    - name: Config dir
      ansible.builtin.file: {{path: "{{{{ locust_config_dir }}}}", state: directory, mode: "0755"}}
    - name: Secrets (master)
      ansible.builtin.include_tasks: {role}/tasks/secrets.yml
      when: _locust_is_master
    - name: Templates
      ansible.builtin.template:
        src: "{role}/templates/{{{{ item }}}}.j2"
        dest: "{{{{ locust_config_dir }}}}/{{{{ item }}}}"
        mode: "0644"
      loop: {rendered}
    - name: Facts the test reads
      ansible.builtin.copy:
        dest: "{{{{ locust_config_dir }}}}/facts.json"
        mode: "0644"
        content: "{{{{ {{'wheel': _locust_wheel, 'master_host': locust_master_host,
                       'worker_units': _locust_worker_units}} | to_json }}}}"
"""


def run_role(tmp_path: Path, hosts: dict[str, dict], extra: dict | None = None) -> subprocess.CompletedProcess[str]:
    if not PLAYBOOK.exists():
        unavailable("ansible is not installed in this environment (pip install -e '.[controller]')")
    out = tmp_path / "out"
    # the role's defaults and vars as the inventory's `all` vars: below host vars, as role defaults are
    role_vars = {**yaml.safe_load((ROLE / "defaults/main.yml").read_text()),
                 **yaml.safe_load((ROLE / "vars/main.yml").read_text())}
    inventory = {"all": {"vars": role_vars, "children": {
        # deliberately odd group names: the role must not care which groups hold its hosts
        "odd_group_a": {"hosts": {name: {**hostvars, "ansible_connection": "local",
                                         "ansible_python_interpreter": sys.executable}
                                  for name, hostvars in hosts.items()}}}}}
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    (tmp_path / "play.yml").write_text(PLAY.format(role=ROLE, rendered=json.dumps(RENDERED)))
    overrides = {
        "locust_project_dir": str(ROOT / "loadtests"),
        "locust_config_dir": f"{out}/{{{{ inventory_hostname }}}}",
        "locust_venv": str(Path(sys.executable).parent.parent),
        "locust_secrets_dir": str(tmp_path / "secrets"),
        "locust_user": getpass.getuser(),
        **(extra or {}),
    }
    (tmp_path / "extra.json").write_text(json.dumps(overrides))
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"), "ANSIBLE_ROLES_PATH": str(ROOT / "roles")}
    return subprocess.run([str(PLAYBOOK), "-i", str(tmp_path / "hosts.yml"), "-e", f"@{tmp_path / 'extra.json'}",
                           str(tmp_path / "play.yml")], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


HOSTS = {
    # sorted by name: lg-a (workers only), lg-b (the first master), lg-c (another master)
    "lg-b": {"ansible_host": "127.0.0.2", "locust_role": "master", "locust_workers": 1,
             "locust_user_classes": ["KvGetSetUser", "KvGetUser"]},
    "lg-a": {"ansible_host": "127.0.0.3", "locust_workers": 3},
    "lg-c": {"ansible_host": "127.0.0.4", "locust_role": "master", "locust_default_host": "redis://127.0.0.9:6379",
             "locust_class_picker": False, "locust_extra_config": "reset-stats = true\n"},
}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    tmp_path = tmp_path_factory.mktemp("locust-role")
    proc = run_role(tmp_path, HOSTS)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return tmp_path, proc


def _read(tmp_path: Path, host: str, name: str) -> str:
    return (tmp_path / "out" / host / name).read_text()


def test_workers_find_the_first_master_by_name_without_a_group(rendered) -> None:
    tmp_path, _ = rendered
    for host in HOSTS:
        facts = json.loads(_read(tmp_path, host, "facts.json"))
        assert facts["master_host"] == "127.0.0.2", host
        assert facts["wheel"] == f"kvtestbed_load-{kvload.__version__}-py3-none-any.whl"
    assert json.loads(_read(tmp_path, "lg-a", "facts.json"))["worker_units"] == [
        "kvtestbed-locust-worker@1.service", "kvtestbed-locust-worker@2.service", "kvtestbed-locust-worker@3.service"]
    worker_unit = _read(tmp_path, "lg-a", "kvtestbed-locust-worker@.service")
    assert " --worker --master-host 127.0.0.2 --master-port 5557\n" in worker_unit


def test_units_are_hardened_and_say_what_runs(rendered) -> None:
    tmp_path, _ = rendered
    master = _read(tmp_path, "lg-b", "kvtestbed-locust-master.service")
    exec_start = next(line for line in master.splitlines() if line.startswith("ExecStart="))
    assert exec_start.endswith(
        "/bin/locust --config " + str(tmp_path / "out" / "lg-b") + "/master.conf --master --web-host 127.0.0.2 "
        "--web-port 8089 --master-bind-host 127.0.0.2 --master-bind-port 5557 KvGetSetUser KvGetUser"), exec_start
    worker = _read(tmp_path, "lg-b", "kvtestbed-locust-worker@.service")
    for unit, restart in ((master, "on-failure"), (worker, "always")):
        lines = set(unit.splitlines())
        assert {f"User={getpass.getuser()}", "ProtectSystem=strict", "NoNewPrivileges=yes", "PrivateTmp=yes",
                f"Restart={restart}", "RestartPreventExitStatus=2", "MemoryMax=1G",
                "ReadWritePaths=/var/lib/kvtestbed/locust"} <= lines, unit
        assert "Ansible managed" in unit


def test_configs_pass_locusts_own_check(rendered) -> None:
    """The role's `validate:` command, run here on each rendered config: Locust parses it with kvload's options."""
    tmp_path, _ = rendered
    for host, name in (("lg-b", "master.conf"), ("lg-c", "master.conf"), ("lg-a", "worker.conf")):
        proc = subprocess.run([str(LOCUST), "--config", str(tmp_path / "out" / host / name), "--list"],
                              capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert proc.returncode == 0 and "KvGetSetUser" in proc.stdout, (host, name, proc.stderr[-2000:])
    master_b = _read(tmp_path, "lg-b", "master.conf")
    assert "class-picker = true" in master_b and "\nhost = " not in master_b
    assert f"kvt-web-password-file = {tmp_path}/out/lg-b/web-password" in master_b
    master_c = _read(tmp_path, "lg-c", "master.conf")
    assert "host = redis://127.0.0.9:6379" in master_c and "class-picker = false" in master_c
    assert "reset-stats = true" in master_c


def test_a_bad_config_is_refused_by_the_check(tmp_path: Path) -> None:
    """What `validate:` guards against: an option Locust does not know (a typo in locust_extra_config)."""
    conf = tmp_path / "master.conf"
    conf.write_text(f"locustfile = {ROOT}/loadtests/locustfile.py\nkvt-web-pasword-file = /x\n")
    proc = subprocess.run([str(LOCUST), "--config", str(conf), "--list"], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    assert proc.returncode != 0 and "kvt-web-pasword-file" in proc.stderr


def test_web_password_is_generated_once_private_and_never_printed(rendered, tmp_path: Path) -> None:
    first_dir, first = rendered
    secret = first_dir / "secrets" / "locust-web-password"
    password = secret.read_text().strip()
    assert len(password) == 32 and password.isalnum()
    assert secret.stat().st_mode & 0o777 == 0o600 and secret.parent.stat().st_mode & 0o777 == 0o700
    for master in ("lg-b", "lg-c"):
        copy = first_dir / "out" / master / "web-password"
        assert copy.read_text().strip() == password and copy.stat().st_mode & 0o777 == 0o600
    assert not (first_dir / "out" / "lg-a" / "web-password").exists()
    assert password not in first.stdout + first.stderr
    # a second deploy (here: another run against the same secrets dir) reuses it and changes nothing
    again = run_role(first_dir, HOSTS)
    assert again.returncode == 0, again.stdout[-3000:]
    assert secret.read_text().strip() == password and password not in again.stdout + again.stderr
    assert "changed=0" in again.stdout.split("PLAY RECAP")[-1], again.stdout[-2000:]


@pytest.mark.parametrize(("hosts", "message"), [
    ({"w-1": {"ansible_host": "127.0.0.5", "locust_workers": 2}}, "no host has locust_role: master"),
    ({"m-1": {"ansible_host": "127.0.0.5", "locust_role": "worker"}}, "locust_role must be master or empty"),
    ({"m-1": {"ansible_host": "127.0.0.5", "locust_workers": -1}}, "locust_workers a count >= 0"),
    ({"m-1": {"ansible_host": "127.0.0.5", "locust_role": "master", "locust_master_port": 8089}},
     "two different ports"),
    ({"m-1": {"ansible_host": "127.0.0.5", "locust_role": "master", "locust_user_classes": ["Kv GetUser"]}},
     "Python class names"),
    ({"m-1": {"ansible_host": "127.0.0.5", "locust_role": "master", "locust_password_files": ["redis-nope"]}},
     "redis-nope does not exist on the controller"),
])
def test_preflight_names_what_to_fix(tmp_path: Path, hosts: dict, message: str) -> None:
    proc = run_role(tmp_path, hosts)
    assert proc.returncode != 0
    assert " ".join(message.split()) in " ".join(proc.stdout.split()), proc.stdout[-3000:]
