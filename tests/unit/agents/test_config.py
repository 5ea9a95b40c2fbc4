"""load_config: strict typing, unknown keys, env overrides, one-line errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
from kvagent.service.config import ConfigError, RedisEndpoint, ServiceConfig, load_config


@dataclass
class Writer:
    rate: float
    mode: Literal["fast", "slow"] = "fast"
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise ConfigError("rate must be > 0")


@dataclass
class Model:
    writer: Writer
    redis: RedisEndpoint
    tags: list[str] = field(default_factory=list)
    note: str | None = None
    service: ServiceConfig = field(default_factory=ServiceConfig)


BASE = "writer: {rate: 5}\nredis: {host: h, port: 6379}\n"


def _load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Model:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    return load_config(path, Model, environ=env or {})


def _error(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text, env)
    message = str(info.value)
    assert "\n" not in message and message.startswith("config ")
    return message


def test_valid_config_with_defaults(tmp_path: Path) -> None:
    cfg = _load(tmp_path, BASE)
    assert cfg.writer.rate == 5.0 and isinstance(cfg.writer.rate, float)
    assert cfg.redis == RedisEndpoint("h", 6379)
    assert cfg.service.metrics_port == 9400 and cfg.tags == [] and cfg.note is None


def test_unknown_key_names_its_section(tmp_path: Path) -> None:
    assert "unknown key 'foo' in 'writer'" in _error(tmp_path, BASE.replace("rate: 5", "rate: 5, foo: 1"))
    assert "unknown key 'bar' in the top level" in _error(tmp_path, BASE + "bar: 2\n")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (BASE.replace("rate: 5", "rate: fast"), "'writer.rate' must be a number, got str"),
        (BASE.replace("rate: 5", "rate: true"), "'writer.rate' must be a number, got bool"),
        (BASE.replace("port: 6379", "port: 1.5"), "'redis.port' must be an integer, got float"),
        (BASE.replace("rate: 5", "rate: 5, mode: medium"), "'writer.mode' must be one of 'fast', 'slow', got str"),
        (BASE + "tags: [a, 1]\n", "'tags[1]' must be a string, got int"),
        (BASE + "tags: a\n", "'tags' must be a list of a string, got str"),
    ],
)
def test_wrong_types(tmp_path: Path, text: str, expected: str) -> None:
    message = _error(tmp_path, text)
    assert message.endswith(expected), message  # the type, never the value


def test_missing_required(tmp_path: Path) -> None:
    assert "missing required key 'redis'" in _error(tmp_path, "writer: {rate: 5}\n")
    assert "missing required key 'redis.port'" in _error(tmp_path, "writer: {rate: 5}\nredis: {host: h}\n")


def test_post_init_validation_is_prefixed(tmp_path: Path) -> None:
    message = _error(tmp_path, BASE.replace("rate: 5", "rate: -1"))
    assert message.endswith("'writer': rate must be > 0")
    assert "port must be 1..65535" in _error(tmp_path, BASE.replace("6379", "70000"))


def test_env_overrides_nest_and_convert(tmp_path: Path) -> None:
    env = {
        "KVT_WRITER__RATE": "500",
        "KVT_WRITER__ENABLED": "false",
        "KVT_REDIS__PASSWORD": "12345",
        "KVT_TAGS": "[a, b]",
        "KVT_SERVICE__METRICS_PORT": "9500",
        "OTHER": "ignored",
    }
    cfg = _load(tmp_path, BASE, env)
    assert cfg.writer.rate == 500.0 and cfg.writer.enabled is False
    assert cfg.redis.password == "12345"  # stays a string although it looks like a number
    assert cfg.tags == ["a", "b"] and cfg.service.metrics_port == 9500


def test_env_override_errors(tmp_path: Path) -> None:
    assert "'writer.rate' must be a number" in _error(tmp_path, BASE, {"KVT_WRITER__RATE": "abc"})
    assert "unknown key 'nope'" in _error(tmp_path, BASE, {"KVT_NOPE": "1"})
    assert "rate must be > 0" in _error(tmp_path, BASE, {"KVT_WRITER__RATE": "-2"})


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml", Model, environ={})
    assert "invalid YAML at line" in _error(tmp_path, "writer: [1\n")
    assert "top level must be a mapping" in _error(tmp_path, "- 1\n- 2\n")


MARKER = "hunter2-MARKER-7f3a"


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        (BASE.replace("port: 6379", f"port: 6379, password: [{MARKER}]"), {}, "'redis.password' must be"),
        (BASE.replace("port: 6379", f"port: 6379, password: {{{MARKER}: 1}}"), {}, "'redis.password' must be"),
        (BASE.replace("port: 6379", f"port: {MARKER}"), {}, "'redis.port' must be an integer, got str"),
        (BASE, {"KVT_REDIS__TLS": MARKER}, "'redis.tls' must be true or false"),
        (BASE, {"KVT_REDIS__PORT": f"[{MARKER}"}, "'redis.port' cannot be parsed from the environment"),
    ],
    ids=["password-list", "password-mapping", "port-str", "env-bool", "env-yaml"],
)
def test_errors_never_echo_the_value(tmp_path: Path, text: str, env: dict[str, str], expected: str) -> None:
    # A wrong-typed secret must not end up in the journal: messages name the field and the expected
    # type, never the value given.
    message = _error(tmp_path, text, env)
    assert expected in message
    assert MARKER not in message and "hunter2" not in message


def test_tls_ca_file_needs_tls_and_a_readable_file(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    cfg = _load(tmp_path, BASE.replace("port: 6379", f"port: 6379, tls: true, tls_ca_file: {ca}"))
    assert cfg.redis.tls and cfg.redis.tls_ca_file == str(ca)
    assert "tls_ca_file is set but tls is false" in _error(
        tmp_path, BASE.replace("port: 6379", f"port: 6379, tls_ca_file: {ca}")
    )
    missing = _error(tmp_path, BASE.replace("port: 6379", f"port: 6379, tls: true, tls_ca_file: {tmp_path}/no.crt"))
    assert missing.endswith("'redis': tls_ca_file: no readable file at the path given")


def test_nats_label_drops_credentials_in_urls() -> None:
    from kvagent.service.config import NatsEndpoint

    endpoint = NatsEndpoint([f"nats://agent:{MARKER}@10.0.0.1:4222", "tls://10.0.0.2:4222"])
    assert endpoint.label() == "nats://10.0.0.1:4222,tls://10.0.0.2:4222"
