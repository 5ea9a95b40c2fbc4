"""Bad input to `python -m kvagent.main`: one clear line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.servers import free_port

pytestmark = pytest.mark.integration


def _run(kind: str, config: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kvagent.main", kind, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


def _write(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "agent.yaml"
    config.setdefault("service", {})["metrics_port"] = free_port()
    path.write_text(yaml.safe_dump(config))
    return path


def _assert_one_line(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _observer(server_port: int, **writer: Any) -> dict[str, Any]:
    return {"writer": {"endpoint": {"host": "127.0.0.1", "port": server_port}, **writer}}


@pytest.mark.parametrize(
    ("mutate", "fragments"),
    [
        (lambda c: c["writer"].update(foo=1), ("unknown key 'foo' in 'writer'",)),
        (lambda c: c["writer"].update(rate="fast"), ("'writer.rate' must be a number",)),
        (lambda c: c["writer"].update(rate=-5), ("rate must be > 0",)),
        (lambda c: c.update(bogus=True), ("unknown key 'bogus'",)),
        (lambda c: c["writer"]["endpoint"].update(port="x"), ("'writer.endpoint.port' must be an integer",)),
        (lambda c: c["writer"].pop("endpoint"), ("missing required key 'writer.endpoint'",)),
    ],
    ids=["unknown-key", "wrong-type", "negative-rate", "unknown-top-key", "wrong-port-type", "missing"],
)
def test_observer_bad_config(tmp_path: Path, mutate: Any, fragments: tuple[str, ...]) -> None:
    config = _observer(6379)
    mutate(config)
    proc = _run("observer", _write(tmp_path, config))
    _assert_one_line(proc, "kvagent observer: config", *fragments)


def test_env_override_is_validated(tmp_path: Path) -> None:
    proc = _run("observer", _write(tmp_path, _observer(6379)), env={"KVT_WRITER__RATE": "-1"})
    _assert_one_line(proc, "rate must be > 0")


def test_unreachable_server(tmp_path: Path) -> None:
    proc = _run("observer", _write(tmp_path, _observer(free_port())))
    _assert_one_line(proc, "unreachable")


def test_wrong_password(tmp_path: Path, server_factory) -> None:
    server = server_factory("redis", password="right")
    config = _observer(server.port)
    config["writer"]["endpoint"]["password"] = "wrong"
    proc = _run("observer", _write(tmp_path, config))
    _assert_one_line(proc, "authentication failed")


def test_missing_password(tmp_path: Path, server_factory) -> None:
    server = server_factory("valkey", password="right")
    proc = _run("streams", _write(tmp_path, {"redis": {"host": "127.0.0.1", "port": server.port}}))
    _assert_one_line(proc, "kvagent streams:", "authentication failed")


def test_streams_bad_config(tmp_path: Path) -> None:
    config = {"redis": {"host": "127.0.0.1", "port": 6379}, "ingress": {"mode": "carrier-pigeon"}}
    proc = _run("streams", _write(tmp_path, config))
    _assert_one_line(proc, "'ingress.mode' must be one of 'http', 'direct'")


def test_unknown_kind_and_missing_file(tmp_path: Path) -> None:
    _assert_one_line(_run("nosuch", tmp_path / "x.yaml"), "unknown agent kind 'nosuch'")
    _assert_one_line(_run("observer", tmp_path / "absent.yaml"), "cannot read")


def test_metrics_port_in_use(tmp_path: Path, redis_server) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        config = _observer(redis_server.port)
        path = _write(tmp_path, config)
        config["service"]["metrics_port"] = busy.getsockname()[1]
        path.write_text(yaml.safe_dump(config))
        _assert_one_line(_run("observer", path), "cannot listen")


SECRET_MARKER = "hunter2-MARKER-7f3a"


@pytest.mark.parametrize(
    ("mutate", "env", "fragment"),
    [
        (lambda c: c["writer"]["endpoint"].update(password=[SECRET_MARKER]), {}, "'writer.endpoint.password' must be"),
        (lambda c: c["writer"]["endpoint"].update(password={"p": SECRET_MARKER}), {}, "'writer.endpoint.password'"),
        (lambda c: None, {"KVT_WRITER__ENDPOINT__TLS": SECRET_MARKER}, "'writer.endpoint.tls' must be true or false"),
    ],
    ids=["password-list", "password-mapping", "env-bool"],
)
def test_a_mistyped_secret_stays_out_of_stderr(tmp_path: Path, mutate: Any, env: dict[str, str], fragment: str) -> None:
    config = _observer(6379)
    mutate(config)
    proc = _run("observer", _write(tmp_path, config), env=env)
    _assert_one_line(proc, "kvagent observer: config", fragment)
    assert SECRET_MARKER not in proc.stderr + proc.stdout
    assert "hunter2" not in proc.stderr + proc.stdout
