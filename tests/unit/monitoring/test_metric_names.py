"""tests/support/metric_names.py reads metric families from source: names spelled out, names made in a loop over a
module-level table (exactly the table's names, as the NATS collector declares its JetStream families), names made
from anything else (guessed from the module's constants), and label lists given by name."""

from __future__ import annotations

from pathlib import Path

from tests.support.metric_names import EXPORTERS, families_in_source

PLANTED = """
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

BASE_LABELS = ("server_id", "server_name")
STREAM_LABELS = (*BASE_LABELS, "stream_name")
GAUGES = (
    ("total_messages", "help", lambda s: s["messages"]),
    ("total_bytes", "help", lambda s: s["bytes"]),
)
OTHER = (("first_seq", "help"),)


def families(streams, fields):
    for suffix, help_text, figure in GAUGES:
        yield GaugeMetricFamily(f"demo_stream_{suffix}", help_text, labels=STREAM_LABELS)
    for suffix, help_text in OTHER:
        yield GaugeMetricFamily(f"demo_other_{suffix}", help_text, labels=["x"])
    for name in fields:
        yield CounterMetricFamily(f"demo_varz_{name}", "from the server", labels=BASE_LABELS)
    yield GaugeMetricFamily("demo_up", "up")
"""


def test_loop_tables_are_read_exactly_and_other_names_guessed(tmp_path: Path) -> None:
    (tmp_path / "demo.py").write_text(PLANTED)
    found = families_in_source(tmp_path)
    # a loop over GAUGES makes exactly its two names: never demo_stream_first_seq (OTHER's) nor a constant's
    assert {n for n in found if n.startswith("demo_stream_")} == {
        "demo_stream_total_messages",
        "demo_stream_total_bytes",
    }
    assert {n for n in found if n.startswith("demo_other_")} == {"demo_other_first_seq"}
    assert found["demo_stream_total_bytes"].labels == ("server_id", "server_name", "stream_name")
    assert found["demo_up"].kind == "gauge"
    # `fields` is no module table: every identifier-like constant of the module is a possible tail
    assert {"demo_varz_server_id", "demo_varz_total_messages"} <= set(found)
    assert found["demo_varz_server_id"].kind == "counter" and found["demo_varz_server_id"].labels == (
        "server_id",
        "server_name",
    )


def test_the_exporters_are_where_the_list_says() -> None:
    for name, root in EXPORTERS.items():
        assert root.is_dir() and list(root.rglob("*.py")), name
    nats = families_in_source(EXPORTERS["nats"])
    assert "jetstream_consumer_num_pending" in nats and "gnatsd_varz_in_msgs" in nats
    # the JetStream names are read from the collector's tables: exactly upstream's 33, no guesses
    assert len([n for n in nats if n.startswith("jetstream_")]) == 33
