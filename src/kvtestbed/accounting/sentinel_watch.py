"""Hears the Sentinels' `+switch-master` (pub/sub on every Sentinel) and turns each into a timeline event.

Every Sentinel publishes its own `+switch-master` when it adopts the new configuration, so one failover gives up to
one event per Sentinel, each stamped with the time the controller heard it; servers_failover() in availability.py
keeps the earliest per switch. One thread per Sentinel, each bounded by get_message's timeout and a stop event.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from kvtestbed.accounting.strategies import SentinelTarget

TimelineSink = Callable[[dict[str, Any]], None]
CHANNEL = "+switch-master"


def parse_switch_master(data: str) -> dict[str, str] | None:
    """`<master name> <old ip> <old port> <new ip> <new port>` -> {master, from, to}."""
    parts = data.split()
    if len(parts) != 5:
        return None
    return {"master": parts[0], "from": f"{parts[1]}:{parts[2]}", "to": f"{parts[3]}:{parts[4]}"}


class SwitchMasterListener:
    def __init__(self, target: SentinelTarget, t0: float, sink: TimelineSink, heard_by: str) -> None:
        self.target = target
        self.t0 = t0
        self._sink = sink
        self.heard_by = heard_by
        self._stop = threading.Event()
        self._kwargs = target.sentinel_kwargs()
        self._threads = [
            threading.Thread(target=self._listen, args=(host, port), name=f"switch-{port}", daemon=True)
            for host, port in target.sentinels
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(2 + self.target.sentinel_timeout_s)

    def _listen(self, host: str, port: int) -> None:
        backoff = ExponentialBackoff(cap=1.0, base=0.05)
        failures = 0
        while not self._stop.is_set():
            client = redis.Redis(host=host, port=port, decode_responses=True, **self._kwargs)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(CHANNEL)
                failures = 0
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.2)
                    if message is not None and message.get("type") == "message":
                        self._record(f"{host}:{port}", str(message["data"]))
            except (RedisError, OSError):
                failures += 1  # the Sentinel is down or paused: subscribe again, spaced out
                self._stop.wait(backoff.compute(failures))
            finally:
                pubsub.close()
                client.close()

    def _record(self, sentinel: str, data: str) -> None:
        heard = time.monotonic() - self.t0
        detail = parse_switch_master(data)
        if detail is None or detail["master"] != self.target.service:
            return
        detail = {**detail, "sentinel": sentinel, "heard_by": self.heard_by}
        self._sink({"t": round(heard, 6), "source": "sentinel", "event": CHANNEL, "detail": detail})
