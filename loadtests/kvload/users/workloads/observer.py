"""ObserverWriteUser: overwrites the keys observer listeners watch, in the observer writer's value format
(seq:wall_ns:offset_ns:run_id:history:payload), so the listeners time Locust's writes (one-way latency, missed,
coalesced). One user in the whole run (fixed_count = 1): a listener needs one increasing sequence per key.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import redis
from locust import events, task
from locust.env import Environment

from kvload.pacing import Pacer
from kvload.plugin import PreflightError, run_profile, run_t0_ns
from kvload.timer import for_environment
from kvload.users.base import KvtUser
from kvload.users.workloads.common import (
    at_least,
    connect,
    host_url,
    one_line,
    probe,
)

__all__ = ["ObserverWriteUser"]

log = logging.getLogger(__name__)


@events.init_command_line_parser.add_listener
def _observer_options(parser: Any) -> None:
    add = parser.add_argument
    add(
        "--kvt-observer-keys",
        default="kvt:observer",
        help="ObserverWriteUser: the keys observer listeners watch (their config's key), comma-separated",
    )
    add("--kvt-observer-payload-bytes", type=int, default=64, help="ObserverWriteUser: payload bytes per value")


# ------------------------------------------------------------------------------------------------- observer

HISTORY = 32  # earlier write times each value carries (the observer's HISTORY): listeners time coalesced writes too


class ObserverValues:
    """The observer writer's values for one key: ``seq:wall_ns:offset_ns:run_id:d1,d2,..:payload``.

    The same layout as kvagent's ValueEncoder (history newest first, d1 = wall - previous write's wall, each next gap
    relative to the write after it), built so that only the newest gap is formatted after the time stamp.
    """

    def __init__(self, key: str, run_id: str, payload: bytes) -> None:
        self.key = key
        self.run_id = run_id.encode()
        self.payload = payload
        self.seq = 0  # the last seq written; a failed write is retried with the same seq
        self._newest: int | None = None
        self._gaps: list[bytes] = []
        self._tail = b""

    def encode(self, wall_ns: int, offset_ns: int) -> bytes:
        deltas = b"" if self._newest is None else b"%d%s" % (wall_ns - self._newest, self._tail)
        return b"%d:%d:%d:%s:%s:%s" % (self.seq + 1, wall_ns, offset_ns, self.run_id, deltas, self.payload)

    def commit(self, wall_ns: int) -> None:
        self.seq += 1
        if self._newest is not None:
            self._gaps.insert(0, b"%d" % (wall_ns - self._newest))
            del self._gaps[HISTORY - 1 :]
        self._newest = wall_ns
        self._tail = b"".join(b"," + gap for gap in self._gaps)


def clock_offset_ns(client: redis.Redis, samples: int = 8) -> int:
    """This host's wall clock minus the server's (TIME), from the sample with the shortest round trip, as the
    observer's writer measures it; listeners subtract it from their own offset to the same server."""
    best: tuple[int, int] | None = None
    for _ in range(samples):
        t0 = time.time_ns()
        seconds, micros = client.time()
        t1 = time.time_ns()
        sample = ((t0 + t1) // 2 - (int(seconds) * 1_000_000_000 + int(micros) * 1000), t1 - t0)
        if best is None or sample[1] < best[1]:
            best = sample
    return best[0] if best is not None else 0


def observer_keys(options: Any) -> list[str]:
    keys = [k.strip() for k in (getattr(options, "kvt_observer_keys", "") or "").split(",") if k.strip()]
    if not keys or any(" " in k for k in keys):
        raise PreflightError("--kvt-observer-keys: give one or more key names, comma-separated, without spaces")
    return keys


class ObserverWriteUser(KvtUser):
    """The observer's writer played by Locust: SETs the watched keys in its value format; the listeners time them.

    One writer for all the watched keys (fixed_count = 1 across every worker), because a listener's accounting needs
    one increasing seq per key; with several keys it writes them in turn, each at the rate's share. With --kvt-rate
    the profile's whole rate is this writer's. Each Locust run is a new writer run (a fresh run id), which the
    listeners account separately.

    Recorded: "SET observer", the SET's round trip. The one-way latency (write to keyspace notification) is the
    listeners' figure, in the observer agents' /hdr and /metrics.
    """

    fixed_count = 1

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        profile = run_profile(environment)
        if profile is not None:
            # the profile's whole rate is this one user's, however many users -u asks for
            self.pacer = Pacer(profile, run_t0_ns(environment), 1, 0.0, for_environment(environment))
        self.client: redis.Redis | None = None
        self.writers: list[ObserverValues] = []
        self.offset_ns = 0
        self._turn = 0

    @classmethod
    def preflight(cls, environment: Environment) -> None:
        options = environment.parsed_options
        observer_keys(options)
        at_least(options.kvt_observer_payload_bytes, "--kvt-observer-payload-bytes", 0)
        probe(environment, host_url(environment), "--host")

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.client = connect(self.environment, self.host or host_url(self.environment), "--host")
        payload = b"x" * options.kvt_observer_payload_bytes
        self.writers = [ObserverValues(key, uuid.uuid4().hex[:8], payload) for key in observer_keys(options)]
        try:
            self.offset_ns = clock_offset_ns(self.client)
        except (redis.RedisError, OSError):
            self.offset_ns = 0  # the listeners then report the raw offset; the writes still count

    def on_stop(self) -> None:
        if self.client is not None:
            self.client.close()

    @task
    def write(self) -> None:
        assert self.client is not None
        writer = self.writers[self._turn % len(self.writers)]
        started = self.begin("SET", "observer")
        wall = time.time_ns()  # the listeners' one-way latency counts from this stamp: nothing slow after it
        try:
            self.client.set(writer.key, writer.encode(wall, self.offset_ns))
        except (redis.RedisError, OSError) as exc:
            self.failed("SET", "observer", started, one_line(exc))
            return  # the same seq goes again: a failed write must not look like a lost notification
        writer.commit(wall)
        self._turn += 1
        self.ok("SET", "observer", started)
