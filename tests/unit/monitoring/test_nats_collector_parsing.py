"""The NATS collector (agents/kvagent/exporters/nats.py) turns real nats-server answers into the upstream
prometheus-nats-exporter's metric names and labels.

The JSON is what real servers answered (tests/unit/monitoring/data/README.md): a 2.15 cluster node, a 2.15
standalone server with a mirror and a sourced stream, a server without JetStream, Debian's 2.9. Every family goes
through prometheus_client's exposition and is parsed back, as Prometheus would read the page. The live comparison
with the servers' own figures is tests/integration/monitoring/test_nats_collector.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from kvagent.exporters import nats as collector
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from tests.support.metric_names import families_in_source

ROOT = Path(__file__).resolve().parents[3]
DATA = Path(__file__).parent / "data"
SCRIPT = ROOT / "agents" / "kvagent" / "exporters" / "nats.py"
N0 = "NATDSB4BLCCUGM5F5PIYGTAJD7AJE2T4OMTRDQX67GCUOVAG3T7C4JUK"  # server_id of the cluster node n0

Sample = tuple[str, frozenset[tuple[str, str]]]


def load(name: str) -> dict[str, Any]:
    data = json.loads((DATA / name).read_text())
    assert isinstance(data, dict)
    return data


class _Fixed(Collector):
    def __init__(self, metrics: list[Any]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Any]:
        return self.metrics


def exposed(reading: collector.Reading, last_server_id: str = "") -> dict[Sample, float]:
    """What Prometheus reads from the page the collector serves for a reading: {(name, labels): value}."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(collector.families(reading, last_server_id)))
    page = generate_latest(registry).decode()
    out: dict[Sample, float] = {}
    for family in text_string_to_metric_families(page):
        assert family.type == "gauge", family.name  # upstream's are all gauges: no _total, no _created
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in out, f"{key} served twice"
            out[key] = sample.value
    return out


def value(samples: dict[Sample, float], name: str, **labels: str) -> float:
    """The one sample of `name` whose labels include `labels`."""
    found = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def labels_of(samples: dict[Sample, float], name: str) -> list[dict[str, str]]:
    return [dict(ls) for (n, ls) in samples if n == name]


def names(samples: dict[Sample, float]) -> set[str]:
    return {n for n, _ in samples}


def cluster_reading() -> collector.Reading:
    return collector.Reading(
        load("nats-2.15-cluster-varz.json"),
        healthz={"status": "ok"},
        jsz=load("nats-2.15-cluster-jsz.json"),
        routez=load("nats-2.15-cluster-routez.json"),
    )


# -- /varz ---------------------------------------------------------------------------------------------------------
def test_varz_fields_under_upstreams_names_with_the_server_id() -> None:
    varz = load("nats-2.15-cluster-varz.json")
    samples = exposed(cluster_reading())
    assert value(samples, "gnatsd_up") == 1
    for field in ("connections", "total_connections", "in_msgs", "out_msgs", "in_bytes", "out_bytes", "mem", "cpu",
                  "slow_consumers", "subscriptions", "routes", "remotes"):  # fmt: skip
        assert samples[(f"gnatsd_varz_{field}", frozenset({("server_id", N0)}))] == varz[field], field
    # nested objects joined with "_", as the upstream JetStream dashboard reads them
    assert value(samples, "gnatsd_varz_jetstream_stats_storage") == varz["jetstream"]["stats"]["storage"] == 1380
    assert value(samples, "gnatsd_varz_jetstream_config_max_memory") == varz["jetstream"]["config"]["max_memory"]
    # "/varz" in http_req_stats: "/" as "_", no doubled "_"
    assert value(samples, "gnatsd_varz_http_req_stats_varz") == varz["http_req_stats"]["/varz"]


def test_varz_strings_become_a_value_label_or_a_time() -> None:
    samples = exposed(cluster_reading())
    assert value(samples, "gnatsd_varz_server_name", server_id=N0, value="n0") == 1
    assert value(samples, "gnatsd_varz_version", value="2.15.1") == 1
    assert value(samples, "gnatsd_varz_cluster_name", value="kvt") == 1
    assert value(samples, "gnatsd_varz_jetstream_meta_leader", value="n2") == 1
    # start: 2026-12-02T00:25:38.469785587Z in Unix milliseconds (upstream's parseDateString)
    assert value(samples, "gnatsd_varz_start") == 1796171138470
    assert value(samples, "gnatsd_varz_config_load_time") == 1796171138470


def test_varz_leaves_out_what_upstream_leaves_out() -> None:
    got = names(exposed(cluster_reading()))
    # booleans (jetstream.config.strict, feature_flags.*), lists (connect_urls, cluster.urls), strings that are no
    # label (host, uptime, go), the skipped cluster port and timeouts, the leaf object
    for left_out in ("gnatsd_varz_jetstream_config_strict", "gnatsd_varz_feature_flags_js_raft_delete_range",
                     "gnatsd_varz_connect_urls", "gnatsd_varz_cluster_urls", "gnatsd_varz_host", "gnatsd_varz_uptime",
                     "gnatsd_varz_go", "gnatsd_varz_cluster_cluster_port", "gnatsd_varz_cluster_tls_timeout",
                     "gnatsd_varz_cluster_auth_timeout", "gnatsd_varz_now"):  # fmt: skip
        assert left_out not in got, left_out
    assert not [n for n in got if n.startswith("gnatsd_varz_leaf_")]
    assert "gnatsd_varz_cluster_pool_size" in got  # the rest of the cluster object is kept


def test_every_help_text_names_a_real_field() -> None:
    """The named fields (the dashboards read them) are fields a cluster node's /varz and /routez really have."""
    fields = {f.name for f in collector.flatten(load("nats-2.15-cluster-varz.json"))}
    assert set(collector.VARZ_HELP) - fields == set()
    routez_fields = {f.name for f in collector.flatten(load("nats-2.15-cluster-routez.json"))}
    assert set(collector.ROUTEZ_HELP) - routez_fields == set()


def test_a_key_that_is_no_metric_name_is_left_out() -> None:
    varz = {**load("nats-2.9-standalone-varz.json"), "odd.key": 1, "odd-key": 2, "8ball": 3}
    got = names(exposed(collector.Reading(varz)))
    assert not [n for n in got if "odd" in n or "8ball" in n]
    assert "gnatsd_varz_connections" in got


def test_debians_older_server_too() -> None:
    varz = load("nats-2.9-standalone-varz.json")
    samples = exposed(collector.Reading(varz, healthz={"status": "ok"}, jsz=load("nats-2.9-standalone-jsz.json")))
    assert value(samples, "gnatsd_varz_in_msgs") == varz["in_msgs"]
    assert value(samples, "gnatsd_varz_version", value="2.9.10") == 1
    assert value(samples, "jetstream_stream_total_messages", stream_name="ORDERS", is_stream_leader="true") == 5
    # a 2.9 consumer has no report time: no "seconds since" figures rather than wrong ones
    assert value(samples, "jetstream_consumer_num_pending", consumer_name="worker") == 5
    assert "jetstream_consumer_last_delivery_seconds" not in names(samples)


# -- /routez and /healthz ------------------------------------------------------------------------------------------
def test_routez_number_of_routes() -> None:
    samples = exposed(cluster_reading())
    assert value(samples, "gnatsd_routez_num_routes", server_id=N0) == 8
    assert value(samples, "gnatsd_routez_server_name", value="n0") == 1


def test_healthz_ok_unavailable_and_unreachable() -> None:
    ok = exposed(cluster_reading())
    assert value(ok, "gnatsd_healthz_status", server_id=N0) == 0  # upstream: 0 is healthy
    assert value(ok, "gnatsd_healthz_status_value", server_id=N0, value="ok") == 1

    unavailable = exposed(
        collector.Reading(load("nats-2.15-cluster-varz.json"), healthz=load("nats-2.15-unavailable-healthz.json"))
    )
    assert value(unavailable, "gnatsd_healthz_status") == 1
    assert value(unavailable, "gnatsd_healthz_status_value", value="unavailable") == 0

    unanswered = exposed(collector.Reading(load("nats-2.15-cluster-varz.json"), healthz=None))
    assert "gnatsd_healthz_status" not in names(unanswered)
    assert value(unanswered, "gnatsd_healthz_status_value", value="unreachable") == 0


def test_a_server_that_does_not_answer_gives_up_0_and_no_stale_figure() -> None:
    samples = exposed(collector.Reading(None), last_server_id=N0)
    assert samples == {
        ("gnatsd_up", frozenset()): 0.0,
        ("gnatsd_healthz_status_value", frozenset({("server_id", N0), ("value", "unreachable")})): 0.0,
    }


# -- /jsz ----------------------------------------------------------------------------------------------------------
SERVER_LABELS = {"server_id": N0, "server_name": "n0", "cluster": "kvt", "domain": "", "meta_leader": "n2",
                 "is_meta_leader": "false"}  # fmt: skip
STREAM_LABELS = {**SERVER_LABELS, "account": "$G", "account_name": "$G", "account_id": "$G", "stream_name": "ORDERS",
                 "stream_leader": "n1", "is_stream_leader": "false", "stream_raft_group": "S-R3F-Kn8bYGrG"}  # fmt: skip
CONSUMER_LABELS = {**STREAM_LABELS, "consumer_name": "worker", "consumer_leader": "n1", "is_consumer_leader": "false",
                   "consumer_desc": "the workers"}  # fmt: skip


def test_jetstream_server_figures_with_upstreams_labels() -> None:
    samples = exposed(cluster_reading())
    assert labels_of(samples, "jetstream_server_total_streams") == [SERVER_LABELS]
    assert value(samples, "jetstream_server_total_streams") == 1
    assert value(samples, "jetstream_server_total_consumers") == 1
    assert value(samples, "jetstream_server_total_messages") == 10
    assert value(samples, "jetstream_server_total_message_bytes") == 1380
    assert value(samples, "jetstream_server_jetstream_disabled") == 0
    assert value(samples, "jetstream_account_storage_used", account="$G") == 4140


def test_jetstream_streams_and_consumers_with_their_leaders() -> None:
    """n0 follows: the stream and the consumer are led by n1, the meta group by n2 (upstream's label values)."""
    samples = exposed(cluster_reading())
    assert labels_of(samples, "jetstream_stream_total_messages") == [STREAM_LABELS]
    expected_stream = {"total_messages": 10, "total_bytes": 1380, "first_seq": 1, "last_seq": 10, "consumer_count": 1,
                       "subject_count": 3, "limit_bytes": -1, "limit_messages": -1}  # fmt: skip
    for field, expected in expected_stream.items():
        assert value(samples, f"jetstream_stream_{field}") == expected, field
    assert labels_of(samples, "jetstream_consumer_num_pending") == [CONSUMER_LABELS]
    expected_consumer = {"delivered_consumer_seq": 4, "delivered_stream_seq": 4, "num_ack_pending": 2,
                         "num_redelivered": 0, "num_waiting": 0, "num_pending": 0, "ack_floor_stream_seq": 2,
                         "ack_floor_consumer_seq": 2}  # fmt: skip
    for field, expected in expected_consumer.items():
        assert value(samples, f"jetstream_consumer_{field}") == expected, field
    # the consumer's report time (ts 00:25:40.096282368) less its last delivery (00:25:39.085915927)
    assert value(samples, "jetstream_consumer_last_delivery_seconds") == pytest.approx(1.010366441, abs=1e-6)
    assert value(samples, "jetstream_consumer_last_ack_seconds") == pytest.approx(1.009242877, abs=1e-6)


def test_standalone_server_leads_everything_and_mirrors_and_sources_lag() -> None:
    varz, jsz = load("nats-2.15-standalone-varz.json"), load("nats-2.15-standalone-jsz.json")
    samples = exposed(collector.Reading(varz, jsz=jsz))
    # no meta group: upstream calls the server its meta leader; each stream's cluster names it as leader
    assert value(samples, "jetstream_server_total_streams", is_meta_leader="true", cluster="", meta_leader="") == 3
    for stream in ("ORDERS", "BACKUP", "ALL"):
        assert value(samples, "jetstream_stream_total_messages", stream_name=stream, is_stream_leader="true") == 5
    assert value(samples, "jetstream_stream_limit_messages", stream_name="ORDERS") == 1000
    assert value(samples, "jetstream_stream_limit_bytes", stream_name="ORDERS") == 1048576
    assert value(samples, "jetstream_stream_mirror_lag", stream_name="BACKUP", mirror_name="ORDERS") == 0
    assert value(samples, "jetstream_stream_mirror_active_duration_ns", stream_name="BACKUP") == 97564365
    assert value(samples, "jetstream_stream_source_lag", stream_name="ALL", source_name="ORDERS", source_api="") == 0
    assert value(samples, "jetstream_consumer_num_ack_pending", consumer_name="worker", is_consumer_leader="true") == 2
    assert value(samples, "jetstream_consumer_num_pending", consumer_name="worker") == 2


def test_jetstream_off() -> None:
    samples = exposed(
        collector.Reading(load("nats-2.15-standalone-varz.json"), jsz=load("nats-2.15-no-jetstream-jsz.json"))
    )
    assert value(samples, "jetstream_server_jetstream_disabled") == 1
    assert value(samples, "jetstream_server_total_streams") == 0
    assert not [n for n in names(samples) if n.startswith(("jetstream_stream_", "jetstream_consumer_"))]


def test_every_upstream_jsz_name_is_served() -> None:
    """The names jsz.go builds (system "jetstream", subsystem, name), each served by the cluster or standalone
    readings."""
    upstream = {
        "server": ["jetstream_disabled", "total_streams", "total_consumers", "total_messages", "total_message_bytes",
                   "max_memory", "max_storage"],
        "account": ["max_memory", "max_storage", "storage_used", "memory_used"],
        "stream": ["total_messages", "limit_messages", "total_bytes", "limit_bytes", "first_seq", "last_seq",
                   "consumer_count", "subject_count", "source_lag", "source_active_duration_ns", "mirror_lag",
                   "mirror_active_duration_ns"],
        "consumer": ["delivered_consumer_seq", "delivered_stream_seq", "last_delivery_seconds", "last_ack_seconds",
                     "num_ack_pending", "num_redelivered", "num_waiting", "num_pending", "ack_floor_stream_seq",
                     "ack_floor_consumer_seq"],
    }  # fmt: skip
    served = names(exposed(cluster_reading())) | names(
        exposed(collector.Reading(load("nats-2.15-standalone-varz.json"), jsz=load("nats-2.15-standalone-jsz.json")))
    )
    wanted = {f"jetstream_{level}_{name}" for level, found in upstream.items() for name in found}
    assert wanted - served == set()


def test_the_source_scan_sees_the_names_the_dashboards_read() -> None:
    """tests/support/metric_names.py reads the collector's families from its source (dashboards' lint)."""
    scanned = families_in_source(SCRIPT.parent)
    served = names(exposed(cluster_reading()))
    for name in ("gnatsd_up", "gnatsd_healthz_status", "gnatsd_healthz_status_value",
                 "jetstream_stream_total_messages", "jetstream_consumer_num_pending",
                 "jetstream_consumer_num_ack_pending", "jetstream_server_total_streams",
                 *(f"gnatsd_varz_{field}" for field in collector.VARZ_HELP),
                 *(f"gnatsd_routez_{field}" for field in collector.ROUTEZ_HELP)):  # fmt: skip
        assert name in scanned and name in served, name


# -- reading a server, the command line ----------------------------------------------------------------------------
def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_nothing_listening_reads_as_down() -> None:
    reading = collector.read_server(f"http://127.0.0.1:{_closed_port()}", timeout_s=2)
    assert reading == collector.Reading(None)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    # as the hosts run it: the file alone, its own directory first on sys.path, no kvagent package
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=30, env=env)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--url", "ftp://host:8222"], "--url: give the server's monitoring URL"),
        (["--url", "http://host:99999"], "--url: the port is not a number from 1 to 65535"),
        (["--url", "http://host:8222/varz?x=1"], "--url: no query or fragment"),
        (["--listen", "7777"], "--listen: '7777' is not [ADDRESS]:PORT"),
        (["--listen", ":0"], "--listen: ':0' is not [ADDRESS]:PORT"),
        (["--timeout", "0"], "--timeout: '0' is not a number of seconds above 0"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_flags_say_one_line(args: list[str], says: str) -> None:
    proc = run(*args)
    assert proc.returncode == 2 and proc.stdout == "", proc
    assert len(proc.stderr.splitlines()) == 1 and says in proc.stderr, proc.stderr
    assert proc.stderr.startswith("prometheus-nats-collector: "), proc.stderr


def test_a_password_in_the_url_is_refused_without_being_repeated() -> None:
    proc = run("--url", "http://user:s3cret-Value@host:8222")
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "no user or password in the URL" in proc.stderr and "s3cret-Value" not in proc.stderr


def test_a_port_already_taken_says_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = run("--listen", f"127.0.0.1:{port}", "--url", "http://127.0.0.1:8222")
    assert proc.returncode == 1 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr and "Traceback" not in proc.stderr
