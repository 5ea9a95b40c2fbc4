"""prometheus-nats-collector: one nats-server's monitoring endpoint as Prometheus metrics, read at each scrape.

    python3 nats.py --url http://198.18.0.21:8222 --listen :7777

nats-server has no Prometheus endpoint and nats-io/prometheus-nats-exporter (Go) is in no registry the hosts
reach. This script serves the upstream exporter's metric names and labels, so that its dashboards' queries work
here too. Followed (names, labels and the rules that make them; no code): nats-io/prometheus-nats-exporter at
commit 2fdbfd7, collector/collector.go (objectToMetrics, fqName), healthz.go, jsz.go and connz.go
(parseDateString), as the exporter runs with `-varz -healthz -routez -jsz=all`:

- /varz -> `gnatsd_varz_<field>{server_id}`: every numeric field, nested objects joined with "_"
  (jetstream.stats.memory -> gnatsd_varz_jetstream_stats_memory); the string fields of LABEL_FIELDS as
  `{server_id, value="<text>"} 1`, or, when they hold a time, as Unix milliseconds; lists, booleans and the
  fields of SKIPPED are left out. All gauges, as upstream (so in_msgs has no _total).
- /routez -> `gnatsd_routez_<field>` by the same rules (num_routes).
- /healthz -> `gnatsd_healthz_status{server_id}` (0 when "ok", 1 otherwise: upstream's inverted sense) and
  `gnatsd_healthz_status_value{server_id,value}` (1 when ok; value "unreachable" when the server did not answer).
- /jsz?accounts&streams&consumers&config&raft -> jetstream_server_*, jetstream_account_*, jetstream_stream_*,
  jetstream_consumer_* with upstream's labels (server_id, server_name, cluster, ..., stream_name, is_stream_leader,
  consumer_name, is_consumer_leader, ...).

On purpose unlike upstream:
- `gnatsd_up` (ours; upstream has none): 1 when /varz answered this scrape. When it did not, the scrape still
  succeeds with `gnatsd_up 0` and the "unreachable" health value, and no other figure: nothing is kept between
  scrapes, so no figure goes stale (upstream's gauges keep the last value of a field that disappears).
- server_id is the server's own id from /varz at each scrape (upstream's -use_internal_server_id reads it once).

The standard library and prometheus_client only (the hosts run it with Debian's python3-prometheus-client 0.16).
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from socketserver import ThreadingMixIn
from typing import Any, NoReturn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

PROG = "prometheus-nats-collector"
DEFAULT_URL = "http://127.0.0.1:8222"
# upstream's default port
DEFAULT_LISTEN = ":7777"
# one scrape's reads together; below Prometheus's scrape timeout (the lab scrapes every 5 s)
DEFAULT_TIMEOUT_S = 4.0
# upstream's -jsz=all asks consumers, config and raft; accounts and streams are implied, named for old servers
JSZ_PATH = "/jsz?accounts=true&streams=true&consumers=true&config=true&raft=true"

Json = Mapping[str, Any]

# -- /varz and /routez: every field, flattened (collector.go objectToMetrics) --------------------------------------
# flattened names upstream never exports
SKIPPED = frozenset(
    {
        "leaf",
        "trusted_operators_claim",
        "cluster_tls_timeout",
        "cluster_cluster_port",
        "cluster_auth_timeout",
        "gateway_port",
        "gateway_auth_timeout",
        "gateway_tls_timeout",
        "gateway_connect_retries",
    }
)
# string fields (by their own key, at any depth) exported as a {value} label, or as a time
LABEL_FIELDS = frozenset(
    {"server_id", "server_name", "version", "domain", "leader", "name", "start", "config_load_time"}
)
# a help text for the fields the dashboards read; any other field is exported too, its name as its help (upstream)
VARZ_HELP = {
    "connections": "Client connections open now",
    "total_connections": "Client connections accepted since the server started",
    "in_msgs": "Messages received since the server started (clients, routes, leaf nodes, gateways)",
    "out_msgs": "Messages sent since the server started",
    "in_bytes": "Bytes received since the server started",
    "out_bytes": "Bytes sent since the server started",
    "slow_consumers": "Connections closed or dropped as slow consumers since the server started",
    "subscriptions": "Subscriptions now",
    "mem": "Resident memory of the server process, bytes",
    "cpu": "CPU use of the server process, percent of one core",
    "cores": "CPU cores the server sees",
    "routes": "Route connections to other servers of the cluster (a pool of several per peer)",
    "remotes": "Other servers of the cluster this server has routes to",
    "start": "When the server started, Unix milliseconds",
    "server_name": "The server's name (label value)",
    "version": "The server's version (label value)",
    "cluster_name": "The cluster's name (label value)",
    "jetstream_config_max_memory": "JetStream memory store limit, bytes",
    "jetstream_config_max_storage": "JetStream file store limit, bytes",
    "jetstream_stats_memory": "JetStream memory store in use, bytes",
    "jetstream_stats_storage": "JetStream file store in use, bytes",
    "jetstream_stats_accounts": "Accounts with JetStream",
    "jetstream_stats_ha_assets": "Replicated streams and consumers (RAFT groups) on this server",
    "jetstream_stats_api_total": "JetStream API requests since the server started",
    "jetstream_stats_api_errors": "JetStream API requests answered with an error",
    "jetstream_meta_leader": "The JetStream meta leader as this server sees it (label value)",
    "jetstream_meta_cluster_size": "Servers of the JetStream meta group",
}
ROUTEZ_HELP = {"num_routes": "Route connections to other servers of the cluster (a pool of several per peer)"}
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
# RFC 3339 as Go writes time.Time: nanoseconds and Z or an offset
_TIME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)")


@dataclass(frozen=True)
class Field:
    name: str  # flattened: jetstream_stats_memory
    value: float
    label: str | None = None  # a string field: the sample is 1 with value="<label>"


def fq_name(path: Sequence[str]) -> str:
    """upstream's fqName: the path joined with "_", "/" as "_", no leading, trailing or doubled "_"."""
    name = "_".join(path).replace("/", "_").strip("_")
    while "__" in name:
        name = name.replace("__", "_")
    return name


def unix_seconds(text: str) -> float | None:
    """A Go time.Time as JSON (2026-12-02T00:25:38.469785587Z) in Unix seconds; None when it is not one."""
    match = _TIME.fullmatch(text)
    if not match:
        return None
    stamp, fraction, zone = match.groups()
    try:
        moment = datetime.fromisoformat(stamp + ("+00:00" if zone == "Z" else zone))
    except ValueError:
        return None
    return moment.timestamp() + (float("0." + fraction) if fraction else 0.0)


def flatten(obj: Json, prefix: tuple[str, ...] = ()) -> Iterator[Field]:
    """The fields upstream exports from one endpoint's JSON object."""
    for key, value in obj.items():
        path = (*prefix, str(key))
        name = fq_name(path)
        if name in SKIPPED:
            continue
        if isinstance(value, bool):
            continue  # a JSON boolean is no number to Go's decoder: upstream skips it
        if isinstance(value, (int, float)):
            yield Field(name, float(value))
        elif isinstance(value, str) and key in LABEL_FIELDS:
            seconds = unix_seconds(value)
            # parseDateString: a time in Unix milliseconds
            yield Field(name, 1.0, label=value) if seconds is None else Field(name, float(round(seconds * 1000)))
        elif isinstance(value, Mapping):
            yield from flatten(value, path)


def _unique_valid(fields: Iterable[Field]) -> Iterator[Field]:
    """Fields whose name is a metric name, each name once (a key upstream could not register is left out)."""
    seen: set[str] = set()
    for item in fields:
        if item.name not in seen and _METRIC_NAME.fullmatch(item.name):
            seen.add(item.name)
            yield item


def _add_field(family: GaugeMetricFamily, item: Field, server_id: str) -> GaugeMetricFamily:
    family.add_metric([server_id] if item.label is None else [server_id, item.label], item.value)
    return family


def _field_labels(item: Field) -> list[str]:
    return ["server_id"] if item.label is None else ["server_id", "value"]


def varz_families(varz: Json, server_id: str) -> list[Metric]:
    return [
        _add_field(
            GaugeMetricFamily(
                f"gnatsd_varz_{item.name}", VARZ_HELP.get(item.name, item.name), labels=_field_labels(item)
            ),
            item,
            server_id,
        )
        for item in _unique_valid(flatten(varz))
    ]


def routez_families(routez: Json, server_id: str) -> list[Metric]:
    return [
        _add_field(
            GaugeMetricFamily(
                f"gnatsd_routez_{item.name}", ROUTEZ_HELP.get(item.name, item.name), labels=_field_labels(item)
            ),
            item,
            server_id,
        )
        for item in _unique_valid(flatten(routez))
    ]


# -- /healthz (healthz.go) ---------------------------------------------------------------------------------------
def healthz_families(healthz: Json | None, server_id: str) -> list[Metric]:
    value = GaugeMetricFamily(
        "gnatsd_healthz_status_value",
        "1 when /healthz says ok; the status as the label value",
        labels=["server_id", "value"],
    )
    if healthz is None:
        value.add_metric([server_id, "unreachable"], 0.0)
        return [value]
    status_text = str(healthz.get("status", ""))
    ok = status_text == "ok"
    status = GaugeMetricFamily(
        "gnatsd_healthz_status", "0 when /healthz says ok, 1 when not (upstream's sense)", labels=["server_id"]
    )
    status.add_metric([server_id], 0.0 if ok else 1.0)
    value.add_metric([server_id, status_text], 1.0 if ok else 0.0)
    return [status, value]


# -- /jsz (jsz.go) -----------------------------------------------------------------------------------------------
SERVER_LABELS = ("server_id", "server_name", "cluster", "domain", "meta_leader", "is_meta_leader")
ACCOUNT_LABELS = (*SERVER_LABELS, "account", "account_name", "account_id")
STREAM_LABELS = (*ACCOUNT_LABELS, "stream_name", "stream_leader", "is_stream_leader", "stream_raft_group")
CONSUMER_LABELS = (*STREAM_LABELS, "consumer_name", "consumer_leader", "is_consumer_leader", "consumer_desc")
SOURCE_LABELS = (*STREAM_LABELS, "source_name", "source_api", "source_deliver")
MIRROR_LABELS = (*STREAM_LABELS, "mirror_name", "mirror_api", "mirror_deliver")

Figure = Callable[[Json], float]


def number(obj: Any, *path: str) -> float:
    """The number at path, 0 when absent (upstream decodes into Go structs: a missing field is zero)."""
    for key in path:
        obj = obj.get(key) if isinstance(obj, Mapping) else None
    return float(obj) if isinstance(obj, (int, float)) and not isinstance(obj, bool) else 0.0


def text(obj: Any, *path: str) -> str:
    for key in path:
        obj = obj.get(key) if isinstance(obj, Mapping) else None
    return obj if isinstance(obj, str) else ""


def _objects(value: Any) -> list[Json]:
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list) else []


# (name after jetstream_<level>_, help, the figure): upstream's names and help texts
SERVER_GAUGES: tuple[tuple[str, str, Figure], ...] = (
    ("jetstream_disabled", "JetStream disabled or not", lambda j: 1.0 if j.get("disabled") is True else 0.0),
    ("max_memory", "JetStream Max Memory", lambda j: number(j, "config", "max_memory")),
    ("max_storage", "JetStream Max Storage", lambda j: number(j, "config", "max_storage")),
    ("total_streams", "Total number of streams in JetStream", lambda j: number(j, "streams")),
    ("total_consumers", "Total number of consumers in JetStream", lambda j: number(j, "consumers")),
    ("total_messages", "Total number of stored messages in JetStream", lambda j: number(j, "messages")),
    ("total_message_bytes", "Total number of bytes stored in JetStream", lambda j: number(j, "bytes")),
)
ACCOUNT_GAUGES: tuple[tuple[str, str, Figure], ...] = (
    ("max_storage", "JetStream Account Max Storage in bytes", lambda a: number(a, "reserved_storage")),
    ("max_memory", "JetStream Account Max Memory in bytes", lambda a: number(a, "reserved_memory")),
    ("storage_used", "Total number of bytes used by JetStream storage", lambda a: number(a, "storage")),
    ("memory_used", "Total number of bytes used by JetStream memory", lambda a: number(a, "memory")),
)
STREAM_GAUGES: tuple[tuple[str, str, Figure], ...] = (
    ("total_messages", "Total number of messages from a stream", lambda s: number(s, "state", "messages")),
    ("total_bytes", "Total stored bytes from a stream", lambda s: number(s, "state", "bytes")),
    ("first_seq", "First sequence from a stream", lambda s: number(s, "state", "first_seq")),
    ("last_seq", "Last sequence from a stream", lambda s: number(s, "state", "last_seq")),
    ("consumer_count", "Total number of consumers from a stream", lambda s: number(s, "state", "consumer_count")),
    ("subject_count", "Total number of subjects in a stream", lambda s: number(s, "state", "num_subjects")),
)
# only when /jsz gives the stream's config
STREAM_CONFIG_GAUGES: tuple[tuple[str, str, Figure], ...] = (
    ("limit_bytes", "The maximum configured storage limit (in bytes) for a JetStream stream. A value of -1 "
     "indicates no limit.", lambda s: number(s, "config", "max_bytes")),
    ("limit_messages", "The maximum number of messages allowed in a JetStream stream as per its configuration. A "
     "value of -1 indicates no limit.", lambda s: number(s, "config", "max_msgs")),
)  # fmt: skip
CONSUMER_GAUGES: tuple[tuple[str, str, Figure], ...] = (
    ("delivered_consumer_seq", "Latest sequence number of a stream consumer",
     lambda c: number(c, "delivered", "consumer_seq")),
    ("delivered_stream_seq", "Latest sequence number of a stream", lambda c: number(c, "delivered", "stream_seq")),
    ("num_ack_pending", "Number of pending acks from a consumer", lambda c: number(c, "num_ack_pending")),
    ("num_redelivered", "Number of redelivered messages from a consumer", lambda c: number(c, "num_redelivered")),
    ("num_waiting", "Number of inflight fetch requests from a pull consumer", lambda c: number(c, "num_waiting")),
    ("num_pending", "Number of pending messages from a consumer", lambda c: number(c, "num_pending")),
    ("ack_floor_stream_seq", "Number of ack floor stream seq from a consumer",
     lambda c: number(c, "ack_floor", "stream_seq")),
    ("ack_floor_consumer_seq", "Number of ack floor consumer seq from a consumer",
     lambda c: number(c, "ack_floor", "consumer_seq")),
)  # fmt: skip
# seconds from a sequence's last activity to the consumer's report time, when there was any
CONSUMER_AGES: tuple[tuple[str, str, str], ...] = (
    ("last_delivery_seconds", "Seconds since last message delivery to consumer", "delivered"),
    ("last_ack_seconds", "Seconds since last ack from consumer", "ack_floor"),
)
# a stream's sources and its mirror: (kind, name after jetstream_stream_, help, the JSON field)
REPLICATION_GAUGES: tuple[tuple[str, str, str, str], ...] = (
    ("source", "source_lag", "Number of messages a stream source is behind", "lag"),
    ("source", "source_active_duration_ns", "Stream source active duration in nanoseconds (-1 indicates inactive)",
     "active"),
    ("mirror", "mirror_lag", "Number of messages a stream mirror is behind", "lag"),
    ("mirror", "mirror_active_duration_ns", "Stream mirror active duration in nanoseconds (-1 indicates inactive)",
     "active"),
)  # fmt: skip


def _leader(obj: Json, server_name: str) -> tuple[str, str]:
    """(leader, is_leader) of a stream or consumer as upstream labels them: no cluster info -> ("", "true")."""
    cluster = obj.get("cluster")
    if not isinstance(cluster, Mapping):
        return "", "true"
    leader = text(cluster, "leader")
    return leader, "true" if leader == server_name else "false"


def _age(consumer: Json, key: str) -> float | None:
    last = unix_seconds(text(consumer, key, "last_active"))
    now = unix_seconds(text(consumer, "ts"))
    return None if last is None or now is None else now - last


class _Families:
    """Families by name in the order first used; only those with a sample are served."""

    def __init__(self) -> None:
        self.by_name: dict[str, GaugeMetricFamily] = {}

    def add(self, family: GaugeMetricFamily, labels: Sequence[str], value: float) -> None:
        self.by_name.setdefault(family.name, family).add_metric(list(labels), value)

    def __iter__(self) -> Iterator[Metric]:
        return iter(self.by_name.values())


def jsz_families(jsz: Json, varz: Json) -> list[Metric]:
    server_id, server_name = text(varz, "server_id"), text(varz, "server_name")
    meta = jsz.get("meta_cluster")
    if isinstance(meta, Mapping):
        cluster, meta_leader = text(meta, "name"), text(meta, "leader")
        is_meta_leader = "true" if meta_leader == server_name else "false"
    else:
        cluster, meta_leader, is_meta_leader = "", "", "true"
    server = (server_id, server_name, cluster, text(jsz, "config", "domain"), meta_leader, is_meta_leader)
    out = _Families()
    for suffix, help_text, figure in SERVER_GAUGES:
        out.add(GaugeMetricFamily(f"jetstream_server_{suffix}", help_text, labels=SERVER_LABELS), server, figure(jsz))
    for account in _objects(jsz.get("account_details")):
        name = text(account, "name")
        account_labels = (*server, name, name, text(account, "id"))
        for suffix, help_text, figure in ACCOUNT_GAUGES:
            family = GaugeMetricFamily(f"jetstream_account_{suffix}", help_text, labels=ACCOUNT_LABELS)
            out.add(family, account_labels, figure(account))
        for stream in _objects(account.get("stream_detail")):
            _stream(out, stream, (*account_labels, text(stream, "name"), *_leader(stream, server_name),
                                  text(stream, "stream_raft_group")), server_name)  # fmt: skip
    return list(out)


def _stream(out: _Families, stream: Json, labels: tuple[str, ...], server_name: str) -> None:
    for suffix, help_text, figure in STREAM_GAUGES:
        out.add(
            GaugeMetricFamily(f"jetstream_stream_{suffix}", help_text, labels=STREAM_LABELS), labels, figure(stream)
        )
    if isinstance(stream.get("config"), Mapping):
        for suffix, help_text, figure in STREAM_CONFIG_GAUGES:
            family = GaugeMetricFamily(f"jetstream_stream_{suffix}", help_text, labels=STREAM_LABELS)
            out.add(family, labels, figure(stream))
    for source in _objects(stream.get("sources")):
        _replication(out, "source", source, labels)
    mirror = stream.get("mirror")
    if isinstance(mirror, Mapping):
        _replication(out, "mirror", mirror, labels)
    for consumer in _objects(stream.get("consumer_detail")):
        consumer_labels = (*labels, text(consumer, "name"), *_leader(consumer, server_name),
                           text(consumer, "config", "description"))  # fmt: skip
        for suffix, help_text, key in CONSUMER_AGES:
            age = _age(consumer, key)
            if age is not None:
                family = GaugeMetricFamily(f"jetstream_consumer_{suffix}", help_text, labels=CONSUMER_LABELS)
                out.add(family, consumer_labels, age)
        for suffix, help_text, figure in CONSUMER_GAUGES:
            family = GaugeMetricFamily(f"jetstream_consumer_{suffix}", help_text, labels=CONSUMER_LABELS)
            out.add(family, consumer_labels, figure(consumer))


def _replication(out: _Families, kind: str, info: Json, stream_labels: tuple[str, ...]) -> None:
    """A source's or the mirror's lag and activity (jetstream_stream_source_lag, jetstream_stream_mirror_lag, ...)."""
    labels = (*stream_labels, text(info, "name"), text(info, "external", "api"), text(info, "external", "deliver"))
    names = SOURCE_LABELS if kind == "source" else MIRROR_LABELS
    for row_kind, suffix, help_text, key in REPLICATION_GAUGES:
        if row_kind == kind:
            out.add(GaugeMetricFamily(f"jetstream_stream_{suffix}", help_text, labels=names), labels, number(info, key))


# -- one scrape --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Reading:
    """What one scrape read: each endpoint's JSON object, None where the server gave none."""

    varz: Json | None
    healthz: Json | None = None
    jsz: Json | None = None
    routez: Json | None = None


def families(reading: Reading, last_server_id: str = "") -> list[Metric]:
    """Every family of one reading. With no /varz the server counts as down: gnatsd_up 0 and the health value
    "unreachable" (labelled with the last server id seen), nothing else."""
    up = GaugeMetricFamily("gnatsd_up", "1 when the server answered /varz at this scrape, 0 when not (kvtestbed's own)")
    if reading.varz is None:
        up.add_metric([], 0.0)
        return [up, *healthz_families(None, last_server_id)]
    up.add_metric([], 1.0)
    server_id = text(reading.varz, "server_id")
    out: list[Metric] = [up, *varz_families(reading.varz, server_id), *healthz_families(reading.healthz, server_id)]
    if reading.jsz is not None:
        out += jsz_families(reading.jsz, reading.varz)
    if reading.routez is not None:
        out += routez_families(reading.routez, server_id)
    return out


# no proxy from the environment: the monitoring port is the host's own
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def fetch(url: str, timeout_s: float) -> Json | None:
    """The JSON object at url, None when there is none. Any HTTP status counts, as upstream decodes any body:
    /healthz answers 503 {"status": "unavailable", ...} while JetStream has no meta leader."""
    try:
        with _OPENER.open(urllib.request.Request(url), timeout=timeout_s) as response:
            body = response.read()
    except urllib.error.HTTPError as error:
        try:
            body = error.read()
        except OSError:
            return None
    except (OSError, ValueError):  # refused, reset, timed out (URLError is an OSError)
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def read_server(base_url: str, timeout_s: float) -> Reading:
    """/varz first; the other endpoints only when it answered, all within timeout_s together."""
    deadline = time.monotonic() + timeout_s

    def get(path: str) -> Json | None:
        left = deadline - time.monotonic()
        return fetch(base_url + path, left) if left > 0 else None

    varz = get("/varz")
    if varz is None:
        return Reading(None)  # a server that does not answer /varz is down: the rest would only use up the time
    return Reading(varz, healthz=get("/healthz"), jsz=get(JSZ_PATH), routez=get("/routez"))


class NatsCollector(Collector):
    """Reads the server at every collect(): each scrape sees the server as it is then."""

    def __init__(self, base_url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._server_id = ""  # the last one seen: labels the "unreachable" health value

    def collect(self) -> Iterable[Metric]:
        reading = read_server(self.base_url, self.timeout_s)
        if reading.varz is not None:
            self._server_id = text(reading.varz, "server_id")
        return families(reading, self._server_id)

    def describe(self) -> Iterable[Metric]:
        return []  # registering must not read the server


# -- serving -----------------------------------------------------------------------------------------------------
class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # the base class's signature
        """No line per scrape."""


def serve(host: str, port: int, collector: Collector) -> WSGIServer:
    """A bound HTTP server answering /metrics (any path) with the collector's families; the caller runs it."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    server_class = _Server6 if ":" in host else _Server
    return make_server(host, port, make_wsgi_app(registry), server_class=server_class, handler_class=_QuietHandler)


# -- command line ------------------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def parse_url(value: str) -> str:
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError("give the server's monitoring URL, e.g. http://198.18.0.21:8222")
    if parts.username is not None or parts.password is not None:
        raise argparse.ArgumentTypeError("no user or password in the URL (the monitoring port has no login)")
    if parts.query or parts.fragment:
        raise argparse.ArgumentTypeError("no query or fragment: the base URL only, e.g. http://198.18.0.21:8222")
    try:
        _ = parts.port  # raises on a port out of range
    except ValueError:
        raise argparse.ArgumentTypeError("the port is not a number from 1 to 65535") from None
    return value.rstrip("/")


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not [ADDRESS]:PORT (e.g. :7777 or 127.0.0.1:7777)")
    host = host.removeprefix("[").removesuffix("]")
    return host or "0.0.0.0", int(port_text)


def positive_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds <= 300:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds above 0 (at most 300)")
    return seconds


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = _Parser(prog=PROG, description="Serve one nats-server's monitoring endpoint as Prometheus metrics "
                     "under the upstream prometheus-nats-exporter's names.")  # fmt: skip
    parser.add_argument("--url", type=parse_url, default=DEFAULT_URL, help=f"monitoring URL (default {DEFAULT_URL})")
    parser.add_argument(
        "--listen",
        type=parse_listen,
        default=parse_listen(DEFAULT_LISTEN),
        help=f"[ADDRESS]:PORT to serve /metrics on (default {DEFAULT_LISTEN}: every address)",
    )
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=DEFAULT_TIMEOUT_S,
        help=f"seconds one scrape may spend reading the server (default {DEFAULT_TIMEOUT_S:g})",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    host, port = args.listen
    try:
        server = serve(host, port, NatsCollector(args.url, args.timeout))
    except OSError as exc:
        print(f"{PROG}: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"{PROG}: serving {args.url} on {host}:{port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
