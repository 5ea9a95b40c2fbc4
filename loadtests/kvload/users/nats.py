"""Locust users for NATS: core publish, request/reply, JetStream publish, and the pipeline workload's events.

    locust -f loadtests/locustfile.py --host nats://127.0.0.1:4222 --headless -u 50 -t 30s NatsPublishUser
    locust -f loadtests/locustfile.py --host tls://kvt@nats-1:4222,nats-2:4222 --kvt-tls-ca ca.crt \\
        --kvt-password-file secrets/nats-kvt JetStreamPublishUser

--host: nats://host:port[,host:port...] or tls://... (CA from --kvt-tls-ca, else the system's); an ACL user may be
in the URL (nats://user@host:4222), its password only in --kvt-password-file, or a token in --kvt-nats-token-file.

All users of a Locust process share one NATS connection on one asyncio thread (kvload.natsbridge): nats-py is
asyncio-only, Locust is gevent. Request names: NATS publish, NATS request, JS publish, JS pipeline event.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import logging
import os
import random
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import gevent
import gevent.lock
from locust import events, task
from locust.env import Environment
from locust.runners import STATE_RUNNING, STATE_SPAWNING, STATE_STOPPING, WorkerRunner

from kvload.natsbridge import Bridge, NatsClient, connect_error_text, probe_options
from kvload.plugin import PreflightError, read_secret
from kvload.stats import Recorder, recorder
from kvload.users.base import KvtUser

__all__ = ["JetStreamPublishUser", "NatsPublishUser", "NatsRequestUser", "PipelineEventUser"]

log = logging.getLogger(__name__)
R = TypeVar("R")

ECHO_QUEUE = "kvt-load-echo"
CONNECT_TIMEOUT_S = 10.0
WORKERS_STOP_WAIT_S = 30.0  # how long the master waits for its workers to stop before counting the stream
RETRY_AFTER_S = 1.0  # a user whose connection failed tries again after this long (recorded as one failure)
PROBE_HEADER = "Kvt-Probe"  # preflight's one request carries it, so an external responder can leave it uncounted
# the load stream keeps at most an hour of messages: a long soak must not fill the server's disk
LOAD_STREAM_MAX_AGE_S = 3600.0
# the pipeline agents' stream settings (agents/kvagent/workloads/pipeline/agent.py, clients/jetstream.py), so that
# whoever creates KVT_PIPELINE first, the agents' ensure_stream finds the same configuration
PIPELINE_DUPLICATE_WINDOW_S = 120.0
PIPELINE_MAX_AGE_S = 3600.0


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    # Numbers are taken as strings and checked in preflight: argparse's own type errors print a usage block,
    # and bad input in kvtestbed is one line naming the option.
    parser.add_argument("--kvt-nats-subject", default="kvt.load", help="NATS: subject of core publishes")
    parser.add_argument("--kvt-payload-size", default="128", help="NATS/JS: payload bytes per message")
    parser.add_argument(
        "--kvt-nats-burst",
        default="1",
        help="NatsPublishUser: publishes handed over per task, each counted (fewer Locust task cycles per message)",
    )
    parser.add_argument(
        "--kvt-nats-request-subject", default="kvt.load.req", help="NATS request/reply: the subject requests go to"
    )
    parser.add_argument(
        "--kvt-nats-timeout-ms", default="2000", help="NATS request/reply and JetStream PubAck timeout in ms"
    )
    parser.add_argument(
        "--kvt-nats-responder",
        default="internal",
        help="NATS request/reply: 'internal' (each Locust process runs an echo responder, queue group "
        f"{ECHO_QUEUE}) or 'external' (something else answers)",
    )
    parser.add_argument(
        "--kvt-nats-token-file",
        default="",
        help="file holding a NATS token (instead of user + password)",
        include_in_web_ui=False,
    )
    parser.add_argument("--kvt-js-stream", default="KVT_LOAD", help="JetStream: stream of JS publishes")
    parser.add_argument("--kvt-js-subject", default="kvt.load.js", help="JetStream: subject of JS publishes")
    parser.add_argument(
        "--kvt-js-storage", default="file", help="JetStream: storage of a stream created by this run (file|memory)"
    )
    parser.add_argument("--kvt-js-replicas", default="1", help="JetStream: replicas of a stream created here (1..5)")
    parser.add_argument("--kvt-pipeline-stream", default="KVT_PIPELINE", help="pipeline: the agents' stream")
    parser.add_argument("--kvt-pipeline-subject", default="kvt.pipeline.events", help="pipeline: event subject")
    parser.add_argument(
        "--kvt-pipeline-run-id", default="default", help="pipeline: run_id part of every event id (as the agents')"
    )
    parser.add_argument("--kvt-pipeline-amount-min", default="0", help="pipeline: smallest event amount")
    parser.add_argument("--kvt-pipeline-amount-max", default="1000", help="pipeline: largest event amount")
    parser.add_argument(
        "--kvt-pipeline-threshold", default="500", help="pipeline: the routes' threshold (high takes amount > it)"
    )
    parser.add_argument(
        "--kvt-pipeline-high-share",
        default="",
        help="pipeline: share of events above the threshold, 0..1 (empty: amounts uniform over min..max, as the "
        "agents' producer)",
    )


# ------------------------------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class Target:
    """Where to connect and as whom; label is what messages show (no credentials, ever)."""

    servers: tuple[str, ...]
    label: str
    tls: bool
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    tls_ca: str | None = None

    @property
    def secret_hint(self) -> str:
        return "--kvt-nats-token-file" if self.token is not None else "--kvt-password-file"

    def key(self) -> tuple[Any, ...]:
        digest = hashlib.sha256(f"{self.password}\0{self.token}".encode()).hexdigest()
        return (self.servers, self.user, digest, self.tls_ca)

    def options(self, name: str) -> dict[str, Any]:
        async def quiet(_exc: Exception) -> None:  # nats-py would log every failed reconnect attempt
            return None

        options: dict[str, Any] = {
            "servers": list(self.servers),
            "name": name,
            "connect_timeout": 2,
            # after the first connection: ride through a server restart instead of failing the run
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.25,
            "error_cb": quiet,
        }
        if self.user is not None:
            options["user"] = self.user
            options["password"] = self.password or ""
        if self.token is not None:
            options["token"] = self.token
        if self.tls:
            options["tls"] = tls_context(self.tls_ca)
        return options


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    # ssl.SSLContext as it is now: in a Locust process gevent's subclass, which is what uvloop (imported after the
    # patching) checks contexts against; the original class is refused ("expected an instance of ssl.SSLContext").
    # The loop thread only uses its MemoryBIO path (wrap_bio), which gevent leaves as it is.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca_file:
        try:
            ctx.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            detail = getattr(exc, "strerror", None) or exc
            raise PreflightError(f"--kvt-tls-ca {ca_file}: cannot use it ({detail})") from None
    else:
        ctx.load_default_certs()
    return ctx


def parse_target(host: str | None, password_file: str, token_file: str, tls_ca: str) -> Target:
    if not host:
        raise PreflightError("--host: give the NATS servers, e.g. nats://127.0.0.1:4222")
    scheme: str | None = None
    user: str | None = None
    servers: list[str] = []
    labels: list[str] = []  # as servers, with the user (never a password: refused above)
    for part in (p.strip() for p in host.split(",")):
        if not part:
            continue
        if "://" not in part:
            if scheme is None:
                raise PreflightError(f"--host {part}: start with nats:// or tls://")
            part = f"{scheme}://{part}"
        try:
            url = urlsplit(part)
            port = url.port or 4222
        except ValueError:
            raise PreflightError("--host: a server has no valid host:port") from None
        if url.password is not None:
            # never echo the URL: it holds a secret
            raise PreflightError("--host: put no password in the URL; give it in --kvt-password-file")
        if url.scheme not in ("nats", "tls"):
            raise PreflightError(f"--host: scheme {url.scheme}:// is not NATS; use nats:// or tls://")
        if scheme is not None and url.scheme != scheme:
            raise PreflightError("--host: all servers take the same scheme (nats:// or tls://)")
        scheme = url.scheme
        if not url.hostname:
            raise PreflightError("--host: a server has no host name")
        if url.username:
            if user is not None and url.username != user:
                raise PreflightError("--host: one user for all servers")
            user = url.username
        hostname = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
        servers.append(f"{url.scheme}://{hostname}:{port}")
        labels.append(f"{url.scheme}://{url.username + '@' if url.username else ''}{hostname}:{port}")
    if not servers:
        raise PreflightError("--host: give the NATS servers, e.g. nats://127.0.0.1:4222")
    password = read_secret(password_file)
    token: str | None = None
    if token_file:
        try:
            with open(token_file, encoding="utf-8") as f:
                token = f.readline().rstrip("\r\n")
        except OSError as exc:
            raise PreflightError(f"--kvt-nats-token-file {token_file}: cannot read it ({exc.strerror})") from None
        if user is not None or password is not None:
            raise PreflightError("--kvt-nats-token-file: a token replaces user and password; give one or the other")
    elif password is not None and user is None:
        raise PreflightError("--kvt-password-file: name the user in --host (nats://user@host:port)")
    if tls_ca and scheme != "tls":
        raise PreflightError("--kvt-tls-ca: the servers in --host are nats://; use tls:// for TLS")
    return Target(tuple(servers), ",".join(labels), scheme == "tls", user, password, token, tls_ca or None)


def _number(options: Any, dest: str, kind: type, low: float | None = None, high: float | None = None) -> Any:
    raw = getattr(options, dest)
    flag = "--" + dest.replace("_", "-")
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        raise PreflightError(f"{flag} {raw}: not {'an integer' if kind is int else 'a number'}") from None
    if low is not None and value < low:
        raise PreflightError(f"{flag} {raw}: must be >= {low:g}")
    if high is not None and value > high:
        raise PreflightError(f"{flag} {raw}: must be <= {high:g}")
    return value


def _subject(options: Any, dest: str) -> str:
    value = str(getattr(options, dest) or "")
    tokens = value.split(".")
    if not value or any(c in value for c in " \t\r\n*>") or "" in tokens:
        raise PreflightError(f"--{dest.replace('_', '-')} {value!r}: not a NATS subject to publish to")
    return value


def _stream(options: Any, dest: str) -> str:
    value = str(getattr(options, dest) or "")
    if not value or any(c in value for c in " .*>\t\r\n/\\"):
        raise PreflightError(f"--{dest.replace('_', '-')} {value!r}: a stream name without spaces, '.', '*' or '>'")
    return value


@dataclass(frozen=True)
class Settings:
    """The NATS options of this run, checked (PreflightError names the option)."""

    subject: str
    request_subject: str
    payload_size: int
    burst: int
    timeout_s: float
    responder: str
    js_stream: str
    js_subject: str
    js_storage: str
    js_replicas: int
    pipeline_stream: str
    pipeline_subject: str
    pipeline_run_id: str
    amount_min: float
    amount_max: float
    threshold: float
    high_share: float | None

    @classmethod
    def parse(cls, options: Any) -> Settings:
        responder = str(options.kvt_nats_responder).strip()
        if responder not in ("internal", "external"):
            raise PreflightError(f"--kvt-nats-responder {responder}: must be internal or external")
        storage = str(options.kvt_js_storage).strip()
        if storage not in ("file", "memory"):
            raise PreflightError(f"--kvt-js-storage {storage}: must be file or memory")
        run_id = str(options.kvt_pipeline_run_id)
        if not run_id or any(c in run_id for c in " :{}"):
            raise PreflightError(f"--kvt-pipeline-run-id {run_id!r}: non-empty, without spaces, ':', '{{' or '}}'")
        amount_min = _number(options, "kvt_pipeline_amount_min", float)
        amount_max = _number(options, "kvt_pipeline_amount_max", float)
        if amount_max < amount_min:
            raise PreflightError(f"--kvt-pipeline-amount-max {amount_max:g}: below --kvt-pipeline-amount-min")
        threshold = _number(options, "kvt_pipeline_threshold", float)
        high_share: float | None = None
        if str(options.kvt_pipeline_high_share).strip():
            high_share = _number(options, "kvt_pipeline_high_share", float, 0, 1)
            if not amount_min <= threshold <= amount_max - 0.01:
                raise PreflightError(
                    f"--kvt-pipeline-threshold {threshold:g}: must lie in --kvt-pipeline-amount-min..max "
                    "(below max) for --kvt-pipeline-high-share"
                )
        return cls(
            subject=_subject(options, "kvt_nats_subject"),
            request_subject=_subject(options, "kvt_nats_request_subject"),
            payload_size=_number(options, "kvt_payload_size", int, 0),
            burst=_number(options, "kvt_nats_burst", int, 1, 10_000),
            timeout_s=_number(options, "kvt_nats_timeout_ms", float, 1) / 1000,
            responder=responder,
            js_stream=_stream(options, "kvt_js_stream"),
            js_subject=_subject(options, "kvt_js_subject"),
            js_storage=storage,
            js_replicas=_number(options, "kvt_js_replicas", int, 1, 5),
            pipeline_stream=_stream(options, "kvt_pipeline_stream"),
            pipeline_subject=_subject(options, "kvt_pipeline_subject"),
            pipeline_run_id=run_id,
            amount_min=amount_min,
            amount_max=amount_max,
            threshold=threshold,
            high_share=high_share,
        )


# ------------------------------------------------------------------------------------------------- session


class NatsConnectError(Exception):
    """One line: 'target <servers>: <what failed>'."""


class _RecordSink:
    """Fire-and-forget publishes' outcomes into the recorder (called in the hub, a batch at a time)."""

    def __init__(self, rec: Recorder, request_type: str, name: str) -> None:
        self.rec = rec
        self.request_type = request_type
        self.name = name

    def published(self, latencies_ns: list[int], failures: list[tuple[int, BaseException]]) -> None:
        success = self.rec.success
        for ns in latencies_ns:
            success(self.request_type, self.name, ns)
        for ns, exc in failures:
            self.rec.failure(self.request_type, self.name, ns, exc)


class NatsSession:
    """Per Locust process (kept on the environment): the bridge, a connection per target, the echo responder."""

    def __init__(self, environment: Environment) -> None:
        self.environment = environment
        self.bridge = Bridge()
        self.clients: dict[tuple[Any, ...], NatsClient] = {}
        self.responders: dict[tuple[Any, ...], NatsClient] = {}
        self.responder_handled = 0  # requests the internal responder answered (written in the loop thread)
        self._lock = gevent.lock.RLock()
        self._sinks: dict[tuple[str, str], _RecordSink] = {}
        self.user_numbers = itertools.count()  # pipeline producers' names: unique per process, never reused
        self.stream_base: dict[str, int] = {}  # master/local: stream last_seq when the run was checked
        self.stream_stored: dict[str, int] = {}  # ... and how many the stream stored during the run
        self._counter: gevent.Greenlet | None = None
        environment.events.test_stop.add_listener(self._on_test_stop)
        environment.events.quitting.add_listener(self._on_quitting)

    def target(self) -> Target:
        o = self.environment.parsed_options
        return parse_target(
            self.environment.host,
            getattr(o, "kvt_password_file", ""),
            getattr(o, "kvt_nats_token_file", ""),
            getattr(o, "kvt_tls_ca", ""),
        )

    def _connect(self, target: Target, role: str) -> NatsClient:
        name = f"kvload-{role}-{socket.gethostname()}-{os.getpid()}"
        errors: list[BaseException] = []
        client = NatsClient(self.bridge, target.options(name))
        self.bridge.start()
        try:
            # a connection that gives up first: nats-py's initial connect retries forever otherwise, and a wrong
            # address or password must be one clear line
            probe = NatsClient(self.bridge, probe_options(target.options(name), errors)).connect(CONNECT_TIMEOUT_S)
            probe.close()
            client.connect(CONNECT_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - every way of not connecting becomes one line
            text = connect_error_text(exc, errors)
            if text == "authorization failed":
                text += f" (check {target.secret_hint})"
            elif text.startswith("TLS failed"):
                text += " (check --kvt-tls-ca)"
            raise NatsConnectError(f"target {target.label}: {text}") from None
        return client

    def client(self, target: Target) -> NatsClient:
        """The process's connection to target (made on first use; users share it)."""
        key = target.key()
        client = self.clients.get(key)
        if client is not None and client.nc is not None:
            return client
        with self._lock:  # fifty users starting at once make one connection
            client = self.clients.get(key)
            if client is None or client.nc is None:
                client = self.clients[key] = self._connect(target, "load")
            return client

    def ensure_responder(self, target: Target, subject: str) -> None:
        """The internal echo responder (own connection, queue group kvt-load-echo), once per process."""
        key = (*target.key(), subject)
        if key in self.responders:
            return
        with self._lock:
            if key in self.responders:
                return
            client = self._connect(target, "echo")

            async def subscribe(nc: Any, _js: Any) -> None:
                async def echo(msg: Any) -> None:
                    if msg.reply:
                        await nc.publish(msg.reply, msg.data)
                        self.responder_handled += 1

                await nc.subscribe(subject, queue=ECHO_QUEUE, cb=echo)
                await nc.flush()  # the SUB is on the server before the first request

            client.call(subscribe, CONNECT_TIMEOUT_S)
            self.responders[key] = client

    def sink(self, request_type: str, name: str) -> _RecordSink:
        sink = self._sinks.get((request_type, name))
        if sink is None:
            sink = self._sinks[(request_type, name)] = _RecordSink(recorder(self.environment), request_type, name)
        return sink

    # -- run boundaries ---------------------------------------------------------------------------------------
    def _on_test_stop(self, **_: Any) -> None:
        # every publish a user handed over is written, counted and on the server before the run's figures are
        # final (Locust stopped the users before firing test_stop)
        for client in list(self.clients.values()):
            try:
                client.flush()
            except Exception as exc:  # noqa: BLE001 - the run is over either way; say why counts may differ
                log.warning("NATS flush at test stop failed: %r", exc)
        recorder(self.environment).flush()
        if self.stream_base and not isinstance(self.environment.runner, WorkerRunner):
            # not here and now: a master quitting (-t) fires test_stop before its workers have stopped publishing
            self._counter = gevent.spawn(self._count_streams_once_workers_stopped)

    def _workers_busy(self) -> bool:
        clients = getattr(self.environment.runner, "clients", None)  # a master's workers; none on a local runner
        busy = (STATE_RUNNING, STATE_SPAWNING, STATE_STOPPING)
        return bool(clients) and any(c.state in busy for c in clients.values())

    def _count_streams_once_workers_stopped(self) -> None:
        # workers leave the master's list when they quit, or report "stopped" (a stop from the web UI)
        deadline = time.monotonic() + WORKERS_STOP_WAIT_S
        while self._workers_busy() and time.monotonic() < deadline:
            gevent.sleep(0.1)
        self._count_streams()

    def _count_streams(self) -> None:
        try:
            client = self.client(self.target())
            for stream, base in self.stream_base.items():
                last = client.call(lambda _nc, js, s=stream: js.stream_info(s), 10).state.last_seq
                self.stream_stored[stream] = last - base
                log.info("JetStream stream %s stored %d messages during the run", stream, last - base)
        except Exception as exc:  # noqa: BLE001 - a figure for the log, not the run's verdict
            log.warning("JetStream stream count after the run failed: %r", exc)

    def _on_quitting(self, **_: Any) -> None:
        if self._counter is not None:
            self._counter.join(timeout=WORKERS_STOP_WAIT_S + 5)
        for client in [*self.clients.values(), *self.responders.values()]:
            client.close()
        self.clients.clear()
        self.responders.clear()
        self.bridge.close()


def session(environment: Environment) -> NatsSession:
    s: NatsSession | None = getattr(environment, "kvt_nats", None)
    if s is None:
        s = NatsSession(environment)
        environment.kvt_nats = s  # type: ignore[attr-defined]
    return s


def _connected(environment: Environment, settings: Settings) -> NatsClient:
    """Preflight's connection, with the payload checked against the server's limit."""
    s = session(environment)
    target = s.target()
    try:
        client = s.client(target)
    except NatsConnectError as exc:
        raise PreflightError(str(exc)) from None
    max_payload = int(client.nc.max_payload)
    if settings.payload_size > max_payload:
        size = settings.payload_size
        raise PreflightError(f"--kvt-payload-size {size}: above the server's max_payload {max_payload}")
    return client


def _ensure_stream(
    environment: Environment,
    client: NatsClient,
    settings: Settings,
    stream: str,
    subject: str,
    flags: str,
    **extra: Any,
) -> None:
    """The stream exists and stores subject (created here if missing); its last sequence is this run's base."""
    import nats.errors
    import nats.js.errors
    from nats.js.api import RetentionPolicy, StorageType, StreamConfig

    target = session(environment).target()

    async def ensure(_nc: Any, js: Any) -> int:
        await js.account_info()
        try:
            info = await js.stream_info(stream)
        except nats.js.errors.NotFoundError:
            config = StreamConfig(
                name=stream,
                subjects=[subject],
                retention=RetentionPolicy.LIMITS,
                storage=StorageType.FILE if settings.js_storage == "file" else StorageType.MEMORY,
                num_replicas=settings.js_replicas,
                **extra,
            )
            try:
                info = await js.add_stream(config)
            except nats.js.errors.BadRequestError as exc:
                if exc.err_code != 10058:  # 10058: someone made it meanwhile (agents race to as well)
                    raise
                info = await js.stream_info(stream)
        owner = await js.find_stream_name_by_subject(subject)
        if owner != stream:
            raise PreflightError(f"{flags}: subject {subject} is stored by stream {owner}, not {stream}")
        return int(info.state.last_seq)

    try:
        base = client.call(ensure, 15)
    except PreflightError:
        raise
    except (nats.js.errors.ServiceUnavailableError, nats.errors.NoRespondersError):
        raise PreflightError(f"target {target.label}: JetStream is not enabled on the server") from None
    except nats.js.errors.NotFoundError:
        raise PreflightError(f"{flags}: no stream stores subject {subject}") from None
    except nats.js.errors.APIError as exc:
        raise PreflightError(f"{flags}: cannot create stream {stream} ({exc.description or exc})") from None
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        detail = str(exc) or exc.__class__.__name__
        raise PreflightError(f"target {target.label}: JetStream did not answer ({detail})") from None
    session(environment).stream_base[stream] = base


# --------------------------------------------------------------------------------------------------- users


class _NatsUser(KvtUser):
    """One request per task: the connection and settings first (_ready), then the subclass's _send."""

    abstract = True
    request_type = "NATS"
    name = ""

    def on_start(self) -> None:
        self.settings: Settings | None = None
        self.client: NatsClient | None = None

    @task
    def send(self) -> None:
        ready = self._ready()
        if ready is not None:
            self._send(*ready)

    def _send(self, client: NatsClient, settings: Settings) -> None:
        raise NotImplementedError

    def _ready(self) -> tuple[NatsClient, Settings] | None:
        """The shared connection and the run's settings, or None after recording why not (then the user retries a
        little later)."""
        if self.client is not None and self.client.nc is not None:
            assert self.settings is not None  # parsed before the client was made
            return self.client, self.settings
        t0 = time.perf_counter_ns()
        try:
            settings = self.settings = Settings.parse(self.environment.parsed_options)
            s = session(self.environment)
            client = s.client(s.target())
            self._prepare(s)
            # kept only once the set-up is complete: a responder that failed to start is tried again next time
            self.client = client
            return client, settings
        except (PreflightError, NatsConnectError) as exc:
            self.failed(self.request_type, self.name, t0, str(exc))
            gevent.sleep(RETRY_AFTER_S)
            return None

    def _prepare(self, s: NatsSession) -> None:
        """Per-process set-up beyond the connection (the echo responder)."""

    @functools.cached_property
    def body(self) -> bytes:
        """This user's payload: --kvt-payload-size random bytes, made once (first used after _ready)."""
        assert self.settings is not None
        return random.randbytes(self.settings.payload_size)

    def _answer(self, t0: int, call: Callable[..., R], *args: Any, **kwargs: Any) -> R | None:
        """call(*args, **kwargs)'s answer, or None after recording what it raised as this request's failure."""
        try:
            return call(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - timeout, no responders, no stream, connection: the run's failures
            self.failed(self.request_type, self.name, t0, exc)
            return None

    def _finish(self, t0: int, length: int, problem: str = "") -> None:
        """The request answered: a success of length bytes, or a failure when its answer had a problem."""
        if problem:
            self.failed(self.request_type, self.name, t0, problem)
        else:
            self.ok(self.request_type, self.name, t0, length)

    @classmethod
    def preflight(cls, environment: Environment) -> None:
        settings = Settings.parse(environment.parsed_options)
        cls._check_server(environment, _connected(environment, settings), settings)

    @classmethod
    def _check_server(cls, environment: Environment, client: NatsClient, settings: Settings) -> None:
        """Preflight beyond the connection and the payload size: what this user needs of the server."""


class NatsPublishUser(_NatsUser):
    """Core NATS publish to --kvt-nats-subject, --kvt-payload-size bytes.

    A publish counts as done when it is handed to the NATS client: nats-py has taken it into its write buffer
    (core NATS has no acknowledgement). The user does not wait for that: it queues the message for the asyncio
    thread and goes on (no round trip per message); the recorded latency is from the send (open loop: the intended
    send) until nats-py took it, i.e. the generator's own queueing. Failures (connection closed, write buffer full
    while reconnecting) are recorded as such. The connection is flushed every second and at the run's end, so the
    server has every counted message when the run's figures are final.

    --kvt-nats-burst N hands N publishes per task (each paced by --kvt-rate and counted on its own): Locust's task
    cycle costs more than a publish, and N=8 took one process from ~0.4x to ~0.6x of a bare nats-py loop's rate.
    """

    abstract = False
    request_type = "NATS"
    name = "publish"

    @functools.cached_property
    def sink(self) -> _RecordSink:
        return session(self.environment).sink(self.request_type, self.name)

    def _send(self, client: NatsClient, settings: Settings) -> None:
        for _ in range(settings.burst):
            t0 = self.begin(self.request_type, self.name)
            client.publish_nowait(settings.subject, self.body, t0, self.sink)


class NatsRequestUser(_NatsUser):
    """Request/reply on --kvt-nats-request-subject, waiting up to --kvt-nats-timeout-ms for the reply.

    By default each Locust process runs an echo responder (its own connection, queue group kvt-load-echo) so the
    replies come from as many responders as there are generator processes; --kvt-nats-responder external leaves
    answering to something else (preflight checks that something answers). A reply must echo the request.
    """

    abstract = False
    request_type = "NATS"
    name = "request"

    def _prepare(self, s: NatsSession) -> None:
        assert self.settings is not None
        if self.settings.responder == "internal":
            s.ensure_responder(s.target(), self.settings.request_subject)

    def _send(self, client: NatsClient, settings: Settings) -> None:
        t0 = self.begin(self.request_type, self.name)
        reply = self._answer(t0, client.request, settings.request_subject, self.body, settings.timeout_s)
        if reply is not None:
            differs = settings.responder == "internal" and reply.data != self.body
            self._finish(t0, len(reply.data), "the reply differs from the request" if differs else "")

    @classmethod
    def _check_server(cls, environment: Environment, client: NatsClient, settings: Settings) -> None:
        import nats.errors

        if settings.responder == "external":
            try:
                client.request(settings.request_subject, b"", settings.timeout_s, headers={PROBE_HEADER: "1"})
            except nats.errors.NoRespondersError:
                raise PreflightError(
                    f"--kvt-nats-responder external: nothing answers requests on {settings.request_subject}"
                ) from None
            except (nats.errors.Error, TimeoutError):
                raise PreflightError(
                    f"--kvt-nats-responder external: no reply on {settings.request_subject} within "
                    f"{settings.timeout_s * 1000:g} ms"
                ) from None


class JetStreamPublishUser(_NatsUser):
    """JetStream publish to --kvt-js-subject, waiting for the PubAck (the stream has stored it).

    Preflight creates --kvt-js-stream if it is missing (--kvt-js-storage, --kvt-js-replicas, an hour's max age)
    and notes its last sequence; at the run's end the master logs how many messages the stream stored meanwhile.
    """

    abstract = False
    request_type = "JS"
    name = "publish"

    def _send(self, client: NatsClient, settings: Settings) -> None:
        t0 = self.begin(self.request_type, self.name)
        ack = self._answer(t0, client.js_publish, settings.js_subject, self.body, settings.timeout_s)
        if ack is not None:
            expected = settings.js_stream
            wrong = "" if ack.stream == expected else f"stored by stream {ack.stream}, not {expected}"
            self._finish(t0, len(self.body), wrong)

    @classmethod
    def _check_server(cls, environment: Environment, client: NatsClient, settings: Settings) -> None:
        flags = "--kvt-js-stream/--kvt-js-subject"
        stream, subject = settings.js_stream, settings.js_subject
        _ensure_stream(environment, client, settings, stream, subject, flags, max_age=LOAD_STREAM_MAX_AGE_S)


class PipelineEventUser(_NatsUser):
    """The pipeline workload's events, as its producer agent publishes them, so Locust can drive the routes.

    Same stream and subject (--kvt-pipeline-stream KVT_PIPELINE, --kvt-pipeline-subject kvt.pipeline.events),
    same body `{"id", "amount", "ts_ns"}` (id "<run_id>:<producer name>:<seq>", amount rounded to cents, ts_ns the
    wall clock in ns at publish, which the routes' end-to-end latency counts from) and the same Nats-Msg-Id header
    (the id), published to JetStream waiting for the PubAck. Each user is a producer of its own name
    (locust-<host>-<pid>-<n>), so ids never collide across users, processes and hosts.

    Amounts: uniform over --kvt-pipeline-amount-min..max (the producer's default 0..1000), or with
    --kvt-pipeline-high-share S a share S above --kvt-pipeline-threshold (the "high" route's) and the rest at or
    below it, so both routes get the traffic asked for. The rate is --kvt-rate (open loop) or -u (closed loop).
    A PubAck marked duplicate (an id the stream already had) is a failure: the routes never see that event.
    """

    abstract = False
    request_type = "JS"
    name = "pipeline event"

    def on_start(self) -> None:
        super().on_start()
        self.producer = f"locust-{socket.gethostname()}-{os.getpid()}-{next(session(self.environment).user_numbers)}"
        self.seq = 0

    def amount(self) -> float:
        s = self.settings
        assert s is not None
        rng = self.rng
        if s.high_share is None:
            return round(rng.uniform(s.amount_min, s.amount_max), 2)
        if rng.random() < s.high_share:
            # strictly above the threshold after rounding to cents (the high route takes amount > threshold)
            return max(round(rng.uniform(s.threshold, s.amount_max), 2), round(s.threshold + 0.01, 2))
        return min(round(rng.uniform(s.amount_min, s.threshold), 2), s.threshold)

    def _send(self, client: NatsClient, settings: Settings) -> None:
        t0 = self.begin(self.request_type, self.name)
        msg_id = f"{settings.pipeline_run_id}:{self.producer}:{self.seq}"
        self.seq += 1
        body = json.dumps({"id": msg_id, "amount": self.amount(), "ts_ns": time.time_ns()}).encode()
        headers = {"Nats-Msg-Id": msg_id}
        ack = self._answer(t0, client.js_publish, settings.pipeline_subject, body, settings.timeout_s, headers=headers)
        if ack is not None:
            self._finish(t0, len(body), f"the stream already had event {msg_id}" if ack.duplicate else "")

    @classmethod
    def _check_server(cls, environment: Environment, client: NatsClient, settings: Settings) -> None:
        flags = "--kvt-pipeline-stream/--kvt-pipeline-subject"
        stream, subject = settings.pipeline_stream, settings.pipeline_subject
        window, max_age = PIPELINE_DUPLICATE_WINDOW_S, PIPELINE_MAX_AGE_S
        _ensure_stream(environment, client, settings, stream, subject, flags, duplicate_window=window, max_age=max_age)
