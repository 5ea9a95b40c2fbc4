"""The server fixtures themselves: each starts, answers, and (where tests need it) restarts on its port."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_kv_server_restart_keeps_port(kv_server) -> None:
    with kv_server.client() as c:
        assert c.ping()
    port = kv_server.port
    kv_server.restart()
    assert kv_server.port == port
    with kv_server.client() as c:
        assert c.ping()


def test_password_server_rejects_no_auth(server_factory) -> None:
    import redis

    server = server_factory("redis", password="s3cret")
    with server.client() as c:
        assert c.ping()
    with redis.Redis(port=server.port) as c, pytest.raises(redis.AuthenticationError):
        c.ping()


def test_nats_jetstream_up(nats_server) -> None:
    import json
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{nats_server.monitor_port}/jsz", timeout=2) as resp:
        assert "config" in json.loads(resp.read())


def test_redis_cluster_has_three_masters(redis_cluster) -> None:
    with redis_cluster.nodes[0].client() as c:
        nodes = c.execute_command("CLUSTER", "NODES").decode()
    flags = [line.split()[2].split(",") for line in nodes.splitlines() if line.strip()]
    assert sum("master" in f for f in flags) == 3
    assert sum("slave" in f for f in flags) == 3


def test_nats_cluster_forms(nats_cluster_servers) -> None:
    import json
    import urllib.request

    first = nats_cluster_servers[0]
    with urllib.request.urlopen(f"http://127.0.0.1:{first.monitor_port}/routez", timeout=2) as resp:
        assert json.loads(resp.read())["num_routes"] >= 2


# --- a missing server binary: skipped on a developer's machine, a failure in CI (tests/support/binaries.py) ---

ROOT = Path(__file__).resolve().parents[2]
TINY = """
import shutil

from tests.support.binaries import require


def test_needs_a_server():
    require(shutil.which("kvtb-no-such-server"), "kvtb-no-such-server")
"""


def _pytest(args: list[str], cwd: Path, ci: str | None, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    env["PYTHONPATH"] = str(ROOT)  # `tests.support` for a test file outside the checkout
    if ci is not None:
        env["CI"] = ci
    if path is not None:
        env["PATH"] = path
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("ci", ["true", "1"])
def test_missing_binary_fails_under_ci(tmp_path: Path, ci: str) -> None:
    (tmp_path / "test_tiny.py").write_text(TINY)
    proc = _pytest(["test_tiny.py"], tmp_path, ci=ci)
    assert proc.returncode == 1, proc.stdout
    assert "1 failed" in proc.stdout and "kvtb-no-such-server is not installed" in proc.stdout, proc.stdout


@pytest.mark.parametrize("ci", [None, "false"])
def test_missing_binary_skips_outside_ci(tmp_path: Path, ci: str | None) -> None:
    (tmp_path / "test_tiny.py").write_text(TINY)
    proc = _pytest(["test_tiny.py"], tmp_path, ci=ci)
    assert proc.returncode == 0, proc.stdout
    assert "1 skipped" in proc.stdout, proc.stdout
    assert "kvtb-no-such-server is not installed (make deps installs it)" in proc.stdout, proc.stdout


@pytest.mark.parametrize(("ci", "returncode", "outcome"), [("true", 1, "1 failed"), (None, 0, "1 skipped")])
def test_server_fixture_without_redis_server(ci: str | None, returncode: int, outcome: str) -> None:
    """The real fixtures (conftest.py) go through the same helper: with redis-server off PATH, a test that
    needs one fails in CI and is skipped elsewhere."""
    path = str(Path(sys.executable).parent)  # the venv's bin: no redis-server there
    proc = _pytest([f"{Path(__file__).relative_to(ROOT)}::test_password_server_rejects_no_auth"], ROOT, ci, path)
    assert proc.returncode == returncode, proc.stdout
    assert outcome in proc.stdout and "redis-server is not installed" in proc.stdout, proc.stdout
