"""ExpiryKeysUser, seed 000's workload: keys with a TTL (SET PX) named PREFIX:RUN:DEADLINE_MS:INDEX, each deadline
recorded in the expiry agents' ledger (ZADD kvt:ledger:{RUN}:deadlines) once the key exists, exactly as the expiry
generator does; the agents' consumers and workers expire, deduplicate and process them, and the ledger's audit
counts Locust's keys.

    locust -f loadtests/locustfile.py --host redis://127.0.0.1:6379 ExpiryKeysUser --kvt-expiry-keys 10000 \\
        --kvt-expiry-ttl-ms 5000 --kvt-expiry-run-id seed000 --kvt-expiry-ledger redis://127.0.0.1:6390 \\
        --kvt-agents http://127.0.0.1:9401,http://127.0.0.1:9402

Expiry runs, end to end. The master (or the local runner) owns the run: at test_start it picks a token (the start
time in ms) that reaches every worker in Locust's spawn message, and the users take tickets 1..N from a counter in
the ledger (INCR kvt:ledger:{RUN}:locust:TOKEN:tickets), so N keys are set in total however many users and workers
share them, and every key name is unique (INDEX = TOKEN * 10^9 + ticket). A user whose ticket is past N idles.
Once Locust has counted N outcomes, the master audits the ledger the way the expiry generator does (same figures:
generated, processed_keys, processed_twice, lost, pending, per_worker, ...), restricted to this run's keys, every
second, until nothing is pending or the last deadline + grace has passed; then it logs the final audit as one line
("expiry audit (final): {json}"), stores it at kvt:ledger:{RUN}:locust:TOKEN:audit and ends the run (quit when
headless, stop in the web UI, where the Workload tab keeps the figures). The audit is Locust's because Locust is
the generator of such a run: the agents' generator is the only role that audits, and it would generate keys of
its own. The code mirrors kvagent's Ledger.audit (kvload imports nothing from the agents); the integration test
checks that both give the same figures on the same ledger.

The duplicate window (--kvt-expiry-dedup-window-s) cannot be set from here: it is each expiry consumer's
stream.duplicate_window_s (the PX of its SET NX claim in store mode, the stream's duplicate window in jetstream
mode), fixed when the consumer starts. The option records what the run assumes and the Workload tab shows it
beside the duplicate counts; 0 means "as the consumers are configured".
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import gevent
import gevent.lock
import redis
from locust import events, task
from locust.env import Environment
from locust.runners import WorkerRunner

from kvload.plugin import PreflightError
from kvload.users.base import KvtUser
from kvload.users.workloads.common import (
    IDLE_S,
    at_least,
    connect,
    host_url,
    one_line,
    parse_redis_url,
    probe,
)

__all__ = ["ExpiryKeysUser"]

log = logging.getLogger(__name__)

TICKET_SPAN = 10**9  # key index = token * TICKET_SPAN + ticket
LEDGER_KEEP_S = 7 * 24 * 3600  # Locust's own ledger keys (tickets, audit) expire after a week
AUDIT_CHUNK = 1000  # as the agents' ledger: the audit streams the ledger in chunks, memory stays flat
AUDIT_INTERVAL_S = 1.0
# consumer counters the agents publish to the ledger that grow (a run's share is the difference); the rest are gauges
CONSUMER_COUNTERS = ("received", "foreign", "published", "suppressed", "early", "unpublished")


@events.init_command_line_parser.add_listener
def _expiry_options(parser: Any) -> None:
    add = parser.add_argument
    add("--kvt-expiry-keys", type=int, default=1000, help="ExpiryKeysUser: keys per run, all users together")
    add(
        "--kvt-expiry-delay-ms",
        type=float,
        default=10.0,
        help="ExpiryKeysUser: pause between keys, per user (0 with --kvt-rate, which then sets the pace)",
    )
    add("--kvt-expiry-ttl-ms", type=int, default=5000, help="ExpiryKeysUser: TTL of each key (SET PX)")
    add(
        "--kvt-expiry-dedup-window-s",
        type=float,
        default=0.0,
        help="ExpiryKeysUser: the consumers' duplicate window (stream.duplicate_window_s); shown, not set: "
        "the consumers fix it at start (0: as they are configured)",
    )
    add("--kvt-expiry-run-id", default="default", help="ExpiryKeysUser: the expiry agents' run_id")
    add("--kvt-expiry-key-prefix", default="kvt:exp", help="ExpiryKeysUser: the expiry agents' key_prefix")
    add(
        "--kvt-expiry-ledger",
        default="",
        help="ExpiryKeysUser: the expiry agents' ledger store, redis://host:port (empty: the --host server)",
    )
    add(
        "--kvt-expiry-grace-ms",
        type=int,
        default=30_000,
        help="ExpiryKeysUser: a key not processed by its deadline + this is lost (the generator's grace_ms)",
    )


# ------------------------------------------------------------------------------------------------- expiry


@dataclass(frozen=True)
class ExpirySettings:
    keys: int
    delay_ms: float
    ttl_ms: int
    grace_ms: int
    dedup_window_s: float
    run_id: str
    key_prefix: str
    ledger_url: str

    @classmethod
    def from_options(cls, options: Any, host: str) -> ExpirySettings:
        """The run's expiry parameters, checked; PreflightError names the option to fix."""
        keys = options.kvt_expiry_keys
        if not isinstance(keys, int) or not 1 <= keys < TICKET_SPAN:
            raise PreflightError(f"--kvt-expiry-keys {keys}: must be a whole number 1..{TICKET_SPAN - 1}")
        at_least(options.kvt_expiry_delay_ms, "--kvt-expiry-delay-ms", 0)
        if options.kvt_expiry_delay_ms > 0 and (getattr(options, "kvt_rate", "") or "").strip():
            raise PreflightError(
                f"--kvt-expiry-delay-ms {options.kvt_expiry_delay_ms:g}: set it to 0 when --kvt-rate paces the run"
            )
        at_least(options.kvt_expiry_ttl_ms, "--kvt-expiry-ttl-ms")
        at_least(options.kvt_expiry_grace_ms, "--kvt-expiry-grace-ms", 0)
        at_least(options.kvt_expiry_dedup_window_s, "--kvt-expiry-dedup-window-s", 0)
        run_id = (options.kvt_expiry_run_id or "").strip()
        # the agents' own rule for run_id and key_prefix (ExpiryConfig), and no glob characters: the audit matches
        if not run_id or any(c in run_id for c in " :{}*?[]\\"):
            raise PreflightError(
                "--kvt-expiry-run-id: the expiry agents' run_id, non-empty, without spaces or any of : { } * ? [ ] \\"
            )
        prefix = (options.kvt_expiry_key_prefix or "").strip()
        if not prefix or any(c in prefix for c in "{}*?[]\\ "):
            raise PreflightError("--kvt-expiry-key-prefix: the agents' key_prefix, non-empty, without braces, * ? [ ]")
        ledger = (options.kvt_expiry_ledger or "").strip() or host
        parse_redis_url(ledger, "--kvt-expiry-ledger" if options.kvt_expiry_ledger else "--host")
        return cls(
            keys,
            float(options.kvt_expiry_delay_ms),
            int(options.kvt_expiry_ttl_ms),
            int(options.kvt_expiry_grace_ms),
            float(options.kvt_expiry_dedup_window_s),
            run_id,
            prefix,
            ledger,
        )


class LedgerKeys:
    """The expiry agents' ledger layout (kvagent.workloads.expiry.ledger), and Locust's own keys beside it."""

    def __init__(self, run_id: str, token: int) -> None:
        ns = f"kvt:ledger:{{{run_id}}}"
        self.deadlines = f"{ns}:deadlines"
        self.processed = f"{ns}:processed"
        self.workers = f"{ns}:workers"
        self.consumers = f"{ns}:consumers"
        self.tickets = f"{ns}:locust:{token}:tickets"
        self.audit = f"{ns}:locust:{token}:audit"


def run_keys_pattern(settings: ExpirySettings, token: int) -> str:
    """MATCH pattern of this run's key names: PREFIX:RUN:DEADLINE:<token><9 digits>."""
    return f"{settings.key_prefix}:{settings.run_id}:*:{token}" + "?" * len(str(TICKET_SPAN - 1))


def key_name(settings: ExpirySettings, deadline_ms: int, token: int, ticket: int) -> str:
    # the generator's PREFIX:RUN:DEADLINE_MS:I; consumers parse the deadline from it and need I to be digits
    return f"{settings.key_prefix}:{settings.run_id}:{deadline_ms}:{token * TICKET_SPAN + ticket}"


def expiry_run_token(options: Any) -> int:
    return int(getattr(options, "kvt_expiry_token", 0) or 0)


class ExpiryKeysUser(KvtUser):
    """Seed 000's keys: SET PX with the generator's key names, each deadline recorded in the agents' ledger.

    Recorded: "SET expiry", the SET's round trip, counted only once the ledger has the deadline, so Locust's
    successes equal the audit's `generated`. A key the target took but the ledger did not is a failure ("ledger:
    ..."); the audit would count it as unknown_processed if a worker processed it.
    """

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.settings: ExpirySettings | None = None
        self.target: redis.Redis | None = None
        self.ledger: redis.Redis | None = None
        self.names: LedgerKeys | None = None
        self.token = 0
        self.done = False
        self.payload = b"x" * 16  # the generator's default value_size

    @classmethod
    def preflight(cls, environment: Environment) -> None:
        settings = ExpirySettings.from_options(environment.parsed_options, host_url(environment))
        probe(environment, host_url(environment), "--host")
        if settings.ledger_url != host_url(environment):
            probe(environment, settings.ledger_url, "--kvt-expiry-ledger")

    def on_start(self) -> None:
        host = self.host or host_url(self.environment)
        self.settings = ExpirySettings.from_options(self.environment.parsed_options, host)
        self.target = connect(self.environment, host, "--host")
        ledger_url = self.settings.ledger_url
        self.ledger = (
            self.target if ledger_url == host else connect(self.environment, ledger_url, "--kvt-expiry-ledger")
        )
        self.token = expiry_run_token(self.environment.parsed_options)
        self.names = LedgerKeys(self.settings.run_id, self.token)

    def on_stop(self) -> None:
        for client in {id(c): c for c in (self.target, self.ledger) if c is not None}.values():
            client.close()

    def wait_time(self) -> float:
        # The pause between keys, and the idling once this run's keys are all taken, happen here rather than inside
        # a task: Locust ends a waiting user at once when the run stops, while a running task is waited for
        # (--stop-timeout), and a web UI poll during that wait sees the state "cleanup", stops polling and keeps
        # showing it.
        if self.done:
            return IDLE_S
        return self.settings.delay_ms / 1000 if self.settings is not None else 0.0

    @task
    def key(self) -> None:
        assert self.settings is not None and self.target is not None and self.ledger is not None
        assert self.names is not None
        if self.done:
            return
        s = self.settings
        try:
            ticket = int(self.ledger.incr(self.names.tickets))
        except (redis.RedisError, OSError) as exc:
            self.recorder.failure("INCR", "expiry ledger", 0, one_line(exc))
            gevent.sleep(IDLE_S)
            return
        if ticket > s.keys:
            self.done = True  # this run's keys are all taken: idle (in wait_time) until the master ends the run
            return
        started = self.begin("SET", "expiry")
        deadline_ms = int(time.time() * 1000) + s.ttl_ms
        key = key_name(s, deadline_ms, self.token, ticket)
        try:
            self.target.set(key, self.payload, px=s.ttl_ms)
        except (redis.RedisError, OSError) as exc:
            self.failed("SET", "expiry", started, one_line(exc))
            return
        set_ns = time.perf_counter_ns() - started
        try:
            # recorded only once the key exists, as the generator does: a key never set is not "lost"
            self.ledger.zadd(self.names.deadlines, {key: deadline_ms})
        except (redis.RedisError, OSError) as exc:
            self.failed("SET", "expiry", started, f"ledger: {one_line(exc)}")
            return
        self.recorder.success("SET", "expiry", set_ns)


# -- the master's side of an expiry run --------------------------------------------------------------------


@dataclass
class ExpiryAudit:
    """kvagent's Audit figures for one Locust run's keys (plus what the run asked for)."""

    at_ms: int
    token: int
    keys_requested: int
    generated: int = 0
    processed_keys: int = 0
    processed_twice: int = 0
    extra_processings: int = 0
    lost: int = 0
    pending: int = 0
    unknown_processed: int = 0
    last_deadline_ms: int = 0
    per_worker: dict[str, int] = field(default_factory=dict)
    evenness: dict[str, float | int | None] = field(default_factory=dict)
    per_consumer: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.generated > 0 and self.pending == 0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["complete"] = self.complete
        return out


def evenness(counts: Iterable[int]) -> dict[str, float | int | None]:
    """max/min, max/mean and CV, as kvagent.service.evenness (None for an unbounded ratio)."""
    values = list(counts)
    if not values or sum(values) == 0:
        return {}
    mean = sum(values) / len(values)
    lo, hi = min(values), max(values)
    cv = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)) / mean
    return {
        "n": len(values),
        "total": sum(values),
        "min": lo,
        "max": hi,
        "max_min": round(hi / lo, 4) if lo > 0 else None,
        "imbalance": round(hi / mean, 4),
        "cv": round(cv, 4),
    }


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _number(value: Any) -> float:
    number = float(_text(value))
    return int(number) if number.is_integer() else number


def audit_run(
    ledger: redis.Redis,
    settings: ExpirySettings,
    token: int,
    now_ms: int,
    base_workers: dict[str, int] | None = None,
    base_consumers: dict[str, float] | None = None,
) -> ExpiryAudit:
    """Ledger.audit (kvagent) restricted to this run's keys: ZSCAN the deadlines, HMGET their processed counts, HSCAN
    the processed hash for keys of this run the deadlines lack. Per-worker and per-consumer counters in the ledger
    are cumulative per run_id: this run's share is the difference from their values when the run started."""
    names = LedgerKeys(settings.run_id, token)
    pattern = run_keys_pattern(settings, token)
    result = ExpiryAudit(at_ms=now_ms, token=token, keys_requested=settings.keys)
    cursor = 0
    while True:
        cursor, chunk = ledger.zscan(names.deadlines, cursor, match=pattern, count=AUDIT_CHUNK)
        if chunk:
            counts = ledger.hmget(names.processed, [k for k, _ in chunk])
            for (_key, deadline), count in zip(chunk, counts, strict=True):
                result.generated += 1
                result.last_deadline_ms = max(result.last_deadline_ms, int(deadline))
                n = int(count) if count is not None else 0
                if n > 0:
                    result.processed_keys += 1
                    if n > 1:
                        result.processed_twice += 1
                        result.extra_processings += n - 1
                elif deadline + settings.grace_ms < now_ms:
                    result.lost += 1
                else:
                    result.pending += 1
        if cursor == 0:
            break
    seen = 0
    cursor = 0
    while True:
        cursor, items = ledger.hscan(names.processed, cursor, match=pattern, count=AUDIT_CHUNK)
        seen += len(items)
        if cursor == 0:
            break
    result.unknown_processed = max(0, seen - result.processed_keys)
    base_workers = base_workers or {}
    for raw, value in ledger.hgetall(names.workers).items():
        name = _text(raw)
        delta = int(value) - base_workers.get(name, 0)
        if delta > 0:
            result.per_worker[name] = delta
    result.evenness = evenness(result.per_worker.values())
    base_consumers = base_consumers or {}
    for raw, value in ledger.hgetall(names.consumers).items():
        field_name = _text(raw)
        name, _, counter = field_name.rpartition(":")
        number = _number(value)
        if counter in CONSUMER_COUNTERS:
            number -= base_consumers.get(field_name, 0)
        result.per_consumer.setdefault(name, {})[counter] = number
    return result


class ExpiryRun:
    """One expiry run on the master (or the local runner): the token, the end of the run, the audit.

    Phases: issuing (Locust has not counted N outcomes yet), auditing (all keys set; auditing every second until
    nothing is pending or the last deadline + grace has passed), final, or stopped (the run ended before that).
    """

    def __init__(self, environment: Environment, settings: ExpirySettings, token: int) -> None:
        self.environment = environment
        self.settings = settings
        self.token = token
        self.phase = "issuing"
        self.error: str | None = None
        self.audit: ExpiryAudit | None = None
        self._audited_at = 0.0
        self._audit_s = 0.0  # how long the last audit took
        self._lock = gevent.lock.Semaphore()
        self.ledger = connect(environment, settings.ledger_url, "--kvt-expiry-ledger")
        names = LedgerKeys(settings.run_id, token)
        self.base_workers: dict[str, int] = {}
        self.base_consumers: dict[str, float] = {}
        try:
            # the ticket counter expires with Locust's other ledger keys; the users INCR it from 0
            self.ledger.set(names.tickets, 0, ex=LEDGER_KEEP_S)
            self.base_workers = {_text(k): int(v) for k, v in self.ledger.hgetall(names.workers).items()}
            self.base_consumers = {_text(k): _number(v) for k, v in self.ledger.hgetall(names.consumers).items()}
        except (redis.RedisError, OSError) as exc:
            self.error = f"ledger: {one_line(exc)}"
        self.greenlet = gevent.spawn(self._watch)

    def outcomes(self) -> tuple[int, int]:
        """(SETs Locust counted, of which failed) in this run, from the master's aggregated statistics."""
        entry = self.environment.stats.entries.get(("expiry", "SET"))
        if entry is None:
            return 0, 0
        return entry.num_requests, entry.num_failures

    def current_audit(self, max_age_s: float = AUDIT_INTERVAL_S) -> ExpiryAudit | None:
        """The latest audit, refreshed when older than max_age_s (never after the final one).

        An audit reads the whole run from the ledger (one ZSCAN pass): at least 5x its own duration passes between
        two, so a large run polled by several pages does not keep the ledger busy."""
        if self.phase == "final" or time.monotonic() - self._audited_at < max(max_age_s, 5 * self._audit_s):
            return self.audit
        with self._lock:
            if self.phase != "final" and time.monotonic() - self._audited_at >= max(max_age_s, 5 * self._audit_s):
                started = time.monotonic()
                try:
                    self.audit = audit_run(
                        self.ledger,
                        self.settings,
                        self.token,
                        int(time.time() * 1000),
                        self.base_workers,
                        self.base_consumers,
                    )
                    self.error = None
                except (redis.RedisError, OSError) as exc:
                    self.error = f"ledger: {one_line(exc)}"
                self._audited_at = time.monotonic()
                self._audit_s = self._audited_at - started
        return self.audit

    def _watch(self) -> None:
        runner = self.environment.runner
        assert runner is not None
        while self.outcomes()[0] < self.settings.keys:
            gevent.sleep(0.25)
        self.phase = "auditing"
        # bounded even when the ledger stays unreachable: the last key's deadline + grace, then a few audits more
        give_up = time.monotonic() + (self.settings.ttl_ms + self.settings.grace_ms) / 1000 + 10
        while True:
            audit = self.current_audit(0)
            now_ms = int(time.time() * 1000)
            if audit is not None and (
                audit.complete or audit.generated == 0 or now_ms > audit.last_deadline_ms + self.settings.grace_ms
            ):
                break
            if time.monotonic() > give_up:
                break
            gevent.sleep(AUDIT_INTERVAL_S)
        self.phase = "final"
        body = self.audit.as_dict() if self.audit is not None else {"error": self.error}
        log.info("expiry audit (final): %s", json.dumps(body, sort_keys=True))
        try:
            self.ledger.set(LedgerKeys(self.settings.run_id, self.token).audit, json.dumps(body), ex=LEDGER_KEEP_S)
        except (redis.RedisError, OSError) as exc:
            log.warning("expiry audit not stored in the ledger: %s", one_line(exc))
        # the run's end, as the rate profile's end is handled in kvload.plugin
        if getattr(self.environment.parsed_options, "headless", False):
            runner.quit()
            return
        runner.stop()
        _forget_cached_stats(self.environment)

    def close(self) -> None:
        if self.greenlet is not gevent.getcurrent():
            self.greenlet.kill(block=False)
        if self.phase != "final":
            self.phase = "stopped"


def _forget_cached_stats(environment: Environment) -> None:
    """Locust's web UI caches /stats/requests for 2 s and stops polling on any state but spawning or running: a reply
    cached during the stop ("cleanup") would stay on the page. Dropping the cache once stopped makes the next poll
    report "stopped" (with the final figures)."""
    app = getattr(environment.web_ui, "app", None)
    view = app.view_functions.get("locust.request_stats") if app is not None else None
    clear = getattr(view, "clear_cache", None)
    if callable(clear):
        clear()


def expiry_run(environment: Environment) -> ExpiryRun | None:
    """The current (or last) expiry run of this master, for the Workload tab."""
    return getattr(environment, "kvt_expiry_run", None)


def _runs_expiry(environment: Environment) -> bool:
    return any(isinstance(c, type) and issubclass(c, ExpiryKeysUser) for c in environment.user_classes or [])


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner) or not _runs_expiry(environment):
        return
    previous = expiry_run(environment)
    if previous is not None:
        previous.close()
    options = environment.parsed_options
    try:
        settings = ExpirySettings.from_options(options, host_url(environment))
    except PreflightError:
        return  # kvload.plugin's check reports it and stops the run
    # A new token per run, in parsed_options so that Locust's spawn message carries it to every worker.
    token = int(time.time() * 1000)
    options.kvt_expiry_token = token
    environment.kvt_expiry_run = ExpiryRun(environment, settings, token)  # type: ignore[attr-defined]


@events.test_stop.add_listener
def _on_test_stop(environment: Environment, **_: Any) -> None:
    run = expiry_run(environment)
    if run is not None and not isinstance(environment.runner, WorkerRunner):
        run.close()
