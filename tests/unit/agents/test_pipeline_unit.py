"""Pipeline agent pieces without servers: routing rule, config validation, store layout."""

from __future__ import annotations

from pathlib import Path

import pytest
from kvagent.service.config import ConfigError, load_config
from kvagent.workloads.pipeline.agent import PipelineConfig, RouteSettings
from kvagent.workloads.pipeline.store import ids_key, second_key
from redis.crc import key_slot

EXAMPLES = Path(__file__).resolve().parents[3] / "agents" / "examples"


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("pipeline*.yaml")))
def test_examples_load(name: str) -> None:
    config = load_config(EXAMPLES / name, PipelineConfig, environ={})
    assert config.role in ("producer", "route", "aggregator")


@pytest.mark.parametrize("amount", [0.0, 499.99, 500.0, 500.01, 1000.0])
def test_every_amount_goes_to_exactly_one_route(amount: float) -> None:
    high = RouteSettings(route="high", threshold=500)
    low = RouteSettings(route="low", threshold=500)
    assert high.takes(amount) != low.takes(amount)


def test_store_keys_share_one_slot() -> None:
    # The Lua sink touches the id set and the second bucket in one call: same slot in a Cluster.
    assert key_slot(ids_key("r1", "high").encode()) == key_slot(second_key("r1", "high", 1_700_000_000).encode())


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("role: producer\nnats: {servers: [nats://x:4222]}\nproducer: {rate: -5}\n", "producer.rate"),
        ("role: route\nnats: {servers: [nats://x:4222]}\n", "store"),
        ("role: aggregator\nstore: {host: h, port: 6379}\naggregator: {listen_port: 70000}\n", "listen_port"),
        ("role: router\n", "role"),
    ],
)
def test_bad_configs(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        load_config(path, PipelineConfig, environ={})


@pytest.mark.parametrize("name", ["pipeline-route-high.yaml", "pipeline-route-low.yaml"])
def test_a_routes_counters_exist_at_zero_before_any_event(name: str) -> None:
    # a run without a redelivery must still export kvt_pipeline_redelivered for the dashboards' rate
    from kvagent.workloads.pipeline.agent import PipelineRoute
    from prometheus_client import generate_latest

    config = load_config(EXAMPLES / name, PipelineConfig, environ={})
    text = generate_latest(PipelineRoute(config).registry).decode()
    for counter in ("routed", "skipped", "redelivered"):
        assert f'kvt_pipeline_{counter}_total{{route="{config.route.route}"}} 0.0' in text
