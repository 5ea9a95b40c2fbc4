"""The streams workload from Locust, both sides.

StreamsDirectUser   request/response over the streams workload in Redis: XADD {id, reply, t, attempt, payload}
                    to the request stream, the response read from the user's own response stream (XREAD
                    BLOCK, pipelined behind the XADD: one round trip); the streams agents' workers answer
StreamsWorkerUser   the other side: a consumer of the streams group (XREADGROUP >), answering each request on
                    its reply stream and acknowledging it (XADD + XACK, one round trip), as the agents'
                    workers do; the streams agent's ingress (direct mode) sends the requests
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import uuid
from typing import Any

import gevent
import gevent.lock
import redis
from locust import events, task
from locust.env import Environment

from kvload.users.base import KvtUser
from kvload.users.workloads.common import (
    CONNECT_TIMEOUT_S,
    IDLE_S,
    at_least,
    connect,
    host_url,
    one_line,
    probe,
)

__all__ = ["StreamsDirectUser", "StreamsWorkerUser"]

log = logging.getLogger(__name__)


@events.init_command_line_parser.add_listener
def _streams_options(parser: Any) -> None:
    add = parser.add_argument
    add("--kvt-streams-request-stream", default="kvt:streams:req", help="streams users: the request stream")
    add(
        "--kvt-streams-response-prefix",
        default="kvt:streams:resp:",
        help="StreamsDirectUser: prefix of each user's response stream",
    )
    add(
        "--kvt-streams-group", default="kvt-workers", help="StreamsWorkerUser: the consumer group of the request stream"
    )
    add("--kvt-streams-payload-bytes", type=int, default=64, help="StreamsDirectUser: payload bytes per request")
    add(
        "--kvt-streams-timeout-ms",
        type=int,
        default=2000,
        help="StreamsDirectUser: a request without a response after this long is a failure (no retry)",
    )
    add("--kvt-streams-maxlen", type=int, default=100_000, help="StreamsDirectUser: MAXLEN ~ of the request stream")
    add("--kvt-streams-batch", type=int, default=16, help="StreamsWorkerUser: requests per XREADGROUP")


# ------------------------------------------------------------------------------------------------- streams


def _instance() -> str:
    return f"locust-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class StreamsDirectUser(KvtUser):
    """Streams request/response directly in Redis: XADD the request, XREAD BLOCK its own response stream.

    Without the agent's ingress: XADD {id, reply, t, attempt, payload} to the request stream, then XREAD BLOCK this
    user's response stream until the response with its id arrives, both in one pipelined round trip (the XREAD
    blocks after the XADD on the same connection). Latency "XADD streams" = request sent to response in hand. A
    request without a response after --kvt-streams-timeout-ms is a failure and is not retried (the agent's ingress
    retries; this user measures the path as it is). A late response to an earlier request is skipped by its id.
    """

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.client: redis.Redis | None = None
        self.instance = _instance()
        self.reply = ""
        self.last_id = "0-0"
        self.seq = 0
        self.payload = b""

    @classmethod
    def preflight(cls, environment: Environment) -> None:
        o = environment.parsed_options
        at_least(o.kvt_streams_timeout_ms, "--kvt-streams-timeout-ms")
        at_least(o.kvt_streams_maxlen, "--kvt-streams-maxlen")
        at_least(o.kvt_streams_payload_bytes, "--kvt-streams-payload-bytes", 0)
        probe(environment, host_url(environment), "--host")

    def on_start(self) -> None:
        o = self.environment.parsed_options
        timeout_s = o.kvt_streams_timeout_ms / 1000 + CONNECT_TIMEOUT_S  # the socket outlasts XREAD's BLOCK
        self.client = connect(self.environment, self.host or host_url(self.environment), "--host", timeout_s)
        self.reply = f"{o.kvt_streams_response_prefix}{self.instance}"
        self.payload = b"x" * o.kvt_streams_payload_bytes

    def on_stop(self) -> None:
        if self.client is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                self.client.delete(self.reply)  # as the agent's ingress deletes its response stream at stop
            self.client.close()

    @task
    def request(self) -> None:
        assert self.client is not None
        o = self.environment.parsed_options
        self.seq += 1
        corr = f"{self.instance}-{self.seq}"
        timeout_ms = o.kvt_streams_timeout_ms
        started = self.begin("XADD", "streams")
        deadline = time.monotonic() + timeout_ms / 1000
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.xadd(
                o.kvt_streams_request_stream,
                {"id": corr, "reply": self.reply, "t": str(time.time_ns()), "attempt": "0", "payload": self.payload},
                maxlen=o.kvt_streams_maxlen,
                approximate=True,
            )
            pipe.xread({self.reply: self.last_id}, count=16, block=timeout_ms)
            reply = pipe.execute()[1]
            while not self._answered(reply, corr):
                left_ms = int((deadline - time.monotonic()) * 1000)
                if left_ms <= 0:
                    self.failed("XADD", "streams", started, f"no response within {timeout_ms} ms")
                    return
                reply = self.client.xread({self.reply: self.last_id}, count=16, block=left_ms)
        except (redis.RedisError, OSError) as exc:
            self.failed("XADD", "streams", started, one_line(exc))
            return
        self.ok("XADD", "streams", started)

    def _answered(self, reply: Any, corr: str) -> bool:
        found = False
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                self.last_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                if fields.get(b"id", b"").decode() == corr:
                    found = True
        return found


class StreamsWorkerUser(KvtUser):
    """A worker of the streams group: XREADGROUP the requests, answer each on its reply stream and XACK it.

    As the agents' workers do: XREADGROUP > (BLOCK 500 ms), then for each request XADD {id, worker, t} to its reply
    stream and XACK it, all in one pipelined round trip. It answers requests as they arrive (the streams agent's
    ingress sends them; --kvt-rate does not pace it). Recorded: "XREADGROUP streams" per request, latency = the
    request's t (the sender's wall clock) to its acknowledgement, so across hosts it includes the clock offset.
    Entries it read but could not acknowledge stay in its PEL for the agents' claimers.
    """

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.client: redis.Redis | None = None
        self.consumer = _instance()

    @classmethod
    def preflight(cls, environment: Environment) -> None:
        at_least(environment.parsed_options.kvt_streams_batch, "--kvt-streams-batch")
        probe(environment, host_url(environment), "--host")

    def on_start(self) -> None:
        o = self.environment.parsed_options
        self.client = connect(
            self.environment, self.host or host_url(self.environment), "--host", 2 + CONNECT_TIMEOUT_S
        )
        try:
            self.client.xgroup_create(o.kvt_streams_request_stream, o.kvt_streams_group, "$", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def on_stop(self) -> None:
        if self.client is None:
            return
        o = self.environment.parsed_options
        try:
            # leave no dead consumer behind, unless it still holds requests (the claimers need them in its PEL)
            if not self.client.xpending_range(
                o.kvt_streams_request_stream, o.kvt_streams_group, "-", "+", 1, consumername=self.consumer
            ):
                self.client.xgroup_delconsumer(o.kvt_streams_request_stream, o.kvt_streams_group, self.consumer)
        except (redis.RedisError, OSError):
            pass
        self.client.close()

    @task
    def answer(self) -> None:
        assert self.client is not None
        o = self.environment.parsed_options
        try:
            reply = self.client.xreadgroup(
                o.kvt_streams_group,
                self.consumer,
                {o.kvt_streams_request_stream: ">"},
                count=o.kvt_streams_batch,
                block=500,
            )
        except redis.ResponseError as exc:
            if "NOGROUP" in str(exc):  # the server lost the group (restart without persistence): as the agents do
                self.client.xgroup_create(o.kvt_streams_request_stream, o.kvt_streams_group, "0", mkstream=True)
                return
            self.recorder.failure("XREADGROUP", "streams", 0, one_line(exc))
            return
        except (redis.RedisError, OSError) as exc:
            self.recorder.failure("XREADGROUP", "streams", 0, one_line(exc))
            gevent.sleep(IDLE_S)
            return
        entries = [(eid, fields) for _stream, batch in reply or [] for eid, fields in batch if fields]
        if not entries:
            return
        pipe = self.client.pipeline(transaction=False)
        for entry_id, fields in entries:
            if fields.get(b"reply") and b"id" in fields:
                pipe.xadd(
                    fields[b"reply"],
                    {"id": fields[b"id"], "worker": self.consumer, "t": fields.get(b"t", b"0")},
                    maxlen=10_000,
                    approximate=True,
                )
            pipe.xack(o.kvt_streams_request_stream, o.kvt_streams_group, entry_id)
        try:
            pipe.execute()
        except (redis.RedisError, OSError) as exc:
            self.recorder.failure("XREADGROUP", "streams", 0, one_line(exc), count=len(entries))
            return
        now = time.time_ns()
        for _entry_id, fields in entries:
            try:
                sent = int(fields.get(b"t", b"0"))
            except ValueError:
                sent = now
            self.recorder.success("XREADGROUP", "streams", max(now - sent, 0))
