"""The layout stays what docs/architecture.md says, and the test harness runs what it claims to.

- agents/kvagent (the code every agent host runs) imports nothing from the controller (kvtestbed), Ansible,
  Locust or tests/, and its wheel holds kvagent/ and nothing else; loadtests/kvload (the loadgen hosts' code)
  imports nothing from the controller, the agents or tests/;
- no test edits sys.path (tests import their helpers as tests.support, pyproject's pythonpath);
- `make test` runs unit, ansible and integration tests and lints src/, and a pytest that collects nothing
  (exit 5) fails it, and fails tools/molecule-all.sh's lab jobs.

Each checker is first shown a planted violation, so a checker that finds nothing cannot pass.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
AGENT_PACKAGE = ROOT / "agents" / "kvagent"
# top-level modules agent host code must not import: the controller, controller-only tools, the tests
FORBIDDEN_IN_AGENTS = {"kvtestbed", "ansible", "ansible_collections", "ansible_runner", "locust", "tests"}
LOAD_PACKAGE = ROOT / "loadtests" / "kvload"
# the load generator runs on loadgen hosts: Locust yes, but nothing of the controller, the agents or the tests
FORBIDDEN_IN_LOAD = {"kvtestbed", "kvagent", "ansible", "ansible_collections", "ansible_runner", "tests"}


# --- agents/kvagent imports ----------------------------------------------------------------------------------


def imported_modules(source: str) -> set[str]:
    """Every absolute module name a file imports: import/from statements, importlib.import_module("...") and
    __import__("...") with a literal name."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                found.add(node.args[0].value)
    return found


def forbidden_imports(package: Path, forbidden: set[str] = FORBIDDEN_IN_AGENTS) -> list[str]:
    out = []
    for path in sorted(package.rglob("*.py")):
        for module in sorted(imported_modules(path.read_text())):
            if module.split(".")[0] in forbidden:
                out.append(f"{path.relative_to(package.parent)}: imports {module}")
    return out


def test_import_checker_finds_planted_imports(tmp_path: Path) -> None:
    package = tmp_path / "kvagent"
    (package / "workloads").mkdir(parents=True)
    (package / "__init__.py").write_text("from .main import main\nimport os\n")
    (package / "workloads" / "a.py").write_text(
        "import kvtestbed.cli\nfrom ansible.module_utils.basic import AnsibleModule\n"
        "def f():\n    import importlib\n    return importlib.import_module('locust.env')\n"
    )
    (package / "workloads" / "b.py").write_text("from tests.support.servers import free_port\nimport redis\n")
    assert forbidden_imports(package) == [
        "kvagent/workloads/a.py: imports ansible.module_utils.basic",
        "kvagent/workloads/a.py: imports kvtestbed.cli",
        "kvagent/workloads/a.py: imports locust.env",
        "kvagent/workloads/b.py: imports tests.support.servers",
    ]


def test_agent_code_imports_nothing_from_the_controller() -> None:
    assert len(list(AGENT_PACKAGE.rglob("*.py"))) >= 10, "agents/kvagent moved? this test would check nothing"
    assert forbidden_imports(AGENT_PACKAGE) == []


def test_load_code_imports_nothing_from_the_controller_or_the_agents() -> None:
    assert len(list(LOAD_PACKAGE.rglob("*.py"))) >= 8, "loadtests/kvload moved? this test would check nothing"
    assert forbidden_imports(LOAD_PACKAGE, FORBIDDEN_IN_LOAD) == []


def test_agent_wheel_holds_only_kvagent(tmp_path: Path) -> None:
    # built from a copy: an in-tree build would write build/ and *.egg-info into the shared checkout
    source = tmp_path / "agents"
    shutil.copytree(ROOT / "agents", source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    wheels = tmp_path / "wheels"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels),
         str(source)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    [wheel] = wheels.glob("kvtestbed_agent-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    tops = {name.split("/")[0] for name in names}
    dist_info = {t for t in tops if t.startswith("kvtestbed_agent-") and t.endswith(".dist-info")}
    assert tops - dist_info == {"kvagent"}, sorted(tops)
    assert "kvagent/main.py" in names and "kvagent/__init__.py" in names
    assert not [n for n in names if "/tests/" in n or n.split("/")[-1].startswith("test_")], names


# --- tests do not edit sys.path --------------------------------------------------------------------------------


def sys_path_edits(source: str) -> list[int]:
    """Lines that change sys.path: sys.path.insert/append/extend/..., sys.path = / += / [...] = ."""
    def is_sys_path(node: ast.AST) -> bool:
        return (isinstance(node, ast.Attribute) and node.attr == "path"
                and isinstance(node.value, ast.Name) and node.value.id == "sys")

    lines = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and is_sys_path(node.func.value)
                and node.func.attr in ("insert", "append", "extend", "remove", "pop", "clear")):
            lines.append(node.lineno)
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, ast.AugAssign | ast.AnnAssign) else []
        for target in targets:
            if is_sys_path(target) or (isinstance(target, ast.Subscript) and is_sys_path(target.value)):
                lines.append(node.lineno)
    return sorted(lines)


def test_sys_path_checker_finds_planted_edits() -> None:
    source = ("import sys\nsys.path.insert(0, 'x')\nsys.path.append('y')\nsys.path += ['z']\n"
              "sys.path[:0] = ['w']\nsys.path = ['v']\nprint(sys.path[0])\n")
    assert sys_path_edits(source) == [2, 3, 4, 5, 6]


def test_no_test_edits_sys_path() -> None:
    files = sorted((ROOT / "tests").rglob("*.py"))
    assert len(files) >= 20
    edits = [f"{p.relative_to(ROOT)}:{line}" for p in files for line in sys_path_edits(p.read_text())]
    assert edits == [], "tests import helpers as tests.support (pyproject pythonpath), never via sys.path"


# --- unit tests run no playbook: those are tests/ansible, tests/lab or a role's Molecule scenario -----------------

def playbook_runs(source: str) -> list[int]:
    """Lines of string constants naming the ansible-playbook or molecule executable."""
    return sorted(node.lineno for node in ast.walk(ast.parse(source))
                  if isinstance(node, ast.Constant) and isinstance(node.value, str)
                  and re.search(r"(^|/)(ansible-playbook|molecule)$", node.value.strip()))  # fmt: skip


def test_playbook_run_checker_finds_planted_runs() -> None:
    source = ('import subprocess\nsubprocess.run(["ansible-playbook", "site.yml"])\nBIN = ROOT / "ansible-playbook"\n'
              'subprocess.run([".venv/bin/molecule", "test"])\nsubprocess.run(["ansible-inventory", "--list"])\n')
    assert playbook_runs(source) == [2, 3, 4]


def test_no_unit_test_runs_a_playbook() -> None:
    files = [p for p in sorted((ROOT / "tests" / "unit").rglob("*.py")) if p.name != "test_layout.py"]
    assert len(files) >= 20
    runs = [f"{p.relative_to(ROOT)}:{line}" for p in files for line in playbook_runs(p.read_text())]
    assert runs == [], "a test that runs ansible-playbook or molecule belongs in tests/ansible (or tests/lab, Molecule)"


# --- a missing server binary is skipped only through tests/support/binaries.py (a failure under CI=true) ------

SERVER_BINARIES = ("redis-server", "valkey-server", "nats-server", "keydb-server", "redis-cli", "redis-benchmark")


def direct_server_skips(source: str) -> list[int]:
    """Lines of pytest.skip(...) / pytest.mark.skipif(...) / pytest.importorskip(...) whose text names a server
    binary: those skip in CI too, where binaries.require would fail."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("skip", "skipif", "importorskip")):
            continue
        texts = [c.value for arg in [*node.args, *(k.value for k in node.keywords)] for c in ast.walk(arg)
                 if isinstance(c, ast.Constant) and isinstance(c.value, str)]
        if any(binary in text for text in texts for binary in SERVER_BINARIES):
            lines.append(node.lineno)
    return lines


def test_skip_checker_finds_planted_skips() -> None:
    source = ('import pytest\npytest.skip("redis-server is not installed")\n'
              '@pytest.mark.skipif(True, reason=f"{1} nats-server missing")\ndef test_a(): pass\n'
              'pytest.skip("the lab needs root")\n')
    assert direct_server_skips(source) == [2, 3]


def test_server_binary_skips_go_through_the_helper() -> None:
    helper = ROOT / "tests" / "support" / "binaries.py"
    skips = [f"{p.relative_to(ROOT)}:{line}" for p in sorted((ROOT / "tests").rglob("*.py")) if p != helper
             for line in direct_server_skips(p.read_text())]
    assert skips == [], "use tests.support.binaries.require(binary, what): it skips here and fails under CI=true"


# --- make test: what it runs, and a pytest that collects nothing fails it ------------------------------------


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS", "MAKEFLAGS", "MFLAGS")}
    env.update(extra)
    return env


def _fake_make_tree(tmp_path: Path) -> Path:
    """The real Makefile in a tree whose tools (pytest, ruff, ansible-lint, install-deps, molecule-all) only log
    their arguments; the fake pytest exits with $FAKE_PYTEST_RC."""
    tree = tmp_path / "tree"
    (tree / "agents").mkdir(parents=True)
    (tree / "loadtests").mkdir()
    (tree / "tools").mkdir()
    shutil.copy(ROOT / "Makefile", tree / "Makefile")
    for name in ("pyproject.toml", "agents/pyproject.toml", "agents/constraints.txt", "loadtests/pyproject.toml",
                 "loadtests/constraints.txt"):
        (tree / name).write_text("")
        os.utime(tree / name, (1_000_000_000, 1_000_000_000))
    bin_dir = tree / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (tree / ".venv" / ".installed").write_text("")  # newer than its prerequisites: no venv is built
    log = tree / "calls.log"
    for tool, rc in (("pytest", "${FAKE_PYTEST_RC:-0}"), ("ruff", "0"), ("ansible-lint", "0")):
        (bin_dir / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> {log}\nexit {rc}\n')
        (bin_dir / tool).chmod(0o755)
    (tree / "tools" / "install-deps.sh").write_text(f'echo "install-deps" >> {log}\n')
    (tree / "tools" / "molecule-all.sh").write_text(f'echo "molecule-all WITH_LAB_TESTS=$WITH_LAB_TESTS" >> {log}\n')
    return tree


def test_make_test_runs_every_suite_and_lints_src(tmp_path: Path) -> None:
    tree = _fake_make_tree(tmp_path)
    proc = subprocess.run(["make", "-s", "test"], cwd=tree, env=_clean_env(), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = (tree / "calls.log").read_text().splitlines()
    ruff = next(c for c in calls if c.startswith("ruff check "))
    assert {"agents", "src", "tests", "tools"} <= set(ruff.split()[2:]), ruff
    suites = {arg for c in calls if c.startswith("pytest ") for arg in c.split() if arg.startswith("tests/")}
    assert {"tests/unit", "tests/ansible", "tests/integration", "tests/load"} <= suites, calls
    # the Molecule and lab queue runs beside the pytest suites: started, and waited for
    assert "molecule-all WITH_LAB_TESTS=1" in calls, calls


def test_make_test_fails_when_pytest_collects_nothing(tmp_path: Path) -> None:
    tree = _fake_make_tree(tmp_path)
    proc = subprocess.run(["make", "-s", "test"], cwd=tree, env=_clean_env(FAKE_PYTEST_RC="5"),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Error 5" in proc.stderr, proc.stderr
    # the suites after the failed one are not run (the queue beside it is waited for, not counted as a pass)
    assert not [c for c in (tree / "calls.log").read_text().splitlines() if c == "pytest -q tests/load"]


def test_make_test_fails_when_the_queue_fails_and_pytest_passes(tmp_path: Path) -> None:
    tree = _fake_make_tree(tmp_path)
    (tree / "tools" / "molecule-all.sh").write_text("exit 3\n")
    proc = subprocess.run(["make", "-s", "test"], cwd=tree, env=_clean_env(), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0 and "Error 3" in proc.stderr, proc.stdout + proc.stderr


def test_real_pytest_exits_5_when_nothing_is_collected(tmp_path: Path) -> None:
    """What the fake pytest above stands for: a -k that selects nothing, or a module without tests."""
    (tmp_path / "test_one.py").write_text("def test_one():\n    pass\n")
    (tmp_path / "test_none.py").write_text('"""no tests here"""\n')
    run = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    opts = {"cwd": tmp_path, "env": _clean_env(), "capture_output": True, "timeout": 60}
    assert subprocess.run([*run, "-k", "no_such_test"], **opts).returncode == 5
    assert subprocess.run([*run, "test_none.py"], **opts).returncode == 5
    assert subprocess.run([*run, "test_one.py"], **opts).returncode == 0


@pytest.mark.parametrize(("module", "passes"), [("def test_ok():\n    pass\n", True), ('"""no tests"""\n', False)])
def test_molecule_all_lab_job_fails_when_pytest_collects_nothing(tmp_path: Path, module: str, passes: bool) -> None:
    """tools/molecule-all.sh with WITH_LAB_TESTS=1: each tests/lab module is a job; one that collects nothing
    (pytest exit 5) is a failed job and fails the script. molecule itself is a stub that passes."""
    tree = tmp_path / "tree"
    (tree / "tools").mkdir(parents=True)
    shutil.copy(ROOT / "tools" / "molecule-all.sh", tree / "tools" / "molecule-all.sh")
    (tree / "roles" / "stub" / "molecule" / "default").mkdir(parents=True)
    (tree / "roles" / "stub" / "molecule" / "default" / "molecule.yml").write_text("---\n")
    (tree / "tests" / "lab").mkdir(parents=True)
    (tree / "tests" / "lab" / "test_probe.py").write_text(module)
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "molecule").write_text("#!/bin/sh\nexit 0\n")
    (fake_bin / "molecule").chmod(0o755)
    path = f"{fake_bin}:{Path(sys.executable).parent}:/usr/bin:/bin"
    proc = subprocess.run(["bash", "tools/molecule-all.sh"], cwd=tree, capture_output=True, text=True, timeout=120,
                          env=_clean_env(PATH=path, WITH_LAB_TESTS="1", MOLECULE_JOBS="2"))
    out = proc.stdout + proc.stderr
    assert "molecule: stub/default passed" in out, out
    if passes:
        assert proc.returncode == 0 and "molecule: pytest/test_probe passed" in out, out
    else:
        assert proc.returncode == 1 and "molecule: pytest/test_probe FAILED" in out, out
        assert "no tests ran" in (tree / "results" / "molecule" / "pytest-test_probe.log").read_text()
