"""Expiry agent pieces without servers: config validation, key format, notification flags."""

from __future__ import annotations

from pathlib import Path

import pytest
from kvagent.clients.keyevents import wants_expired
from kvagent.clients.targets import parse_cluster_masters
from kvagent.service.config import ConfigError, load_config
from kvagent.workloads.expiry.agent import ExpiryConfig, make_key, parse_deadline

EXAMPLES = Path(__file__).resolve().parents[3] / "agents" / "examples"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


MINIMAL = """
role: generator
ledger: {host: 127.0.0.1, port: 6390}
target: {mode: nodes, nodes: [{host: 127.0.0.1, port: 6379}]}
"""


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("expiry*.yaml")))
def test_examples_load(name: str) -> None:
    config = load_config(EXAMPLES / name, ExpiryConfig, environ={})
    assert config.role in ("generator", "consumer", "worker")


def test_defaults_and_env_override(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), ExpiryConfig, environ={"KVT_GENERATOR__RATE": "250"})
    assert config.generator.rate == 250.0
    assert config.stream.name == "KVT_EXPIRY"
    assert config.worker.batch == 1


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ("generator: {rate: -1}", "rate"),
        ("generator: {rate: 10, delay_ms: 5}", "not both"),
        ("generator: {count: many}", "generator.count"),
        ("bogus: 1", "unknown key 'bogus'"),
        ("consumer: {dedup: maybe}", "consumer.dedup"),
        ("run_id: 'a:b'", "run_id"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, extra: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, MINIMAL + extra + "\n"), ExpiryConfig, environ={})
    message = str(err.value)
    assert needle in message and "\n" not in message


def test_roles_need_their_sections(tmp_path: Path) -> None:
    text = "role: worker\nledger: {host: 127.0.0.1, port: 6390}\n"
    with pytest.raises(ConfigError, match="nats"):
        load_config(write(tmp_path, text), ExpiryConfig, environ={})
    text = "role: consumer\nledger: {host: 127.0.0.1, port: 6390}\nnats: {servers: ['nats://x:4222']}\n"
    with pytest.raises(ConfigError, match="target"):
        load_config(write(tmp_path, text), ExpiryConfig, environ={})
    text = "role: generator\nledger: {host: 127.0.0.1, port: 6390}\ntarget: {mode: sentinel}\n"
    with pytest.raises(ConfigError, match="sentinels"):
        load_config(write(tmp_path, text), ExpiryConfig, environ={})


def test_key_carries_its_deadline() -> None:
    base = "kvt:exp:run1:"
    key = make_key(base, 1_700_000_000_123, 42)
    assert parse_deadline(key, base) == 1_700_000_000_123
    assert parse_deadline("kvt:exp:run2:1:2", base) is None  # another run
    assert parse_deadline("kvt:exp:run1:bg:7", base) is None  # background population
    assert parse_deadline("kvt:ledger:{run1}:dedup:x", base) is None


def test_notification_flags_merge() -> None:
    assert wants_expired("") == "Ex"
    assert wants_expired("Ex") is None
    assert wants_expired("KEA") is None
    assert wants_expired("Kg") == "KgEx"
    assert wants_expired("E$") == "E$x"


def test_cluster_nodes_parsing() -> None:
    text = (
        "a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460\n"
        "a2 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-10922\n"
        "a3 127.0.0.1:7002@17002 master,fail - 0 0 3 connected\n"
        "a4 127.0.0.1:7003@17003 slave a1 0 0 1 connected\n"
        "a5 :0@0 master,noaddr - 0 0 4 disconnected\n"
    )
    assert parse_cluster_masters(text) == [("127.0.0.1", 7000), ("127.0.0.1", 7001)]
