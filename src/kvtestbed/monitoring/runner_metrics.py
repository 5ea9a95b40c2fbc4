"""What a running scenario shows Prometheus: the run, its phase, each fault while it is in place, the writers' counts.

`kvt_fault_active{kind,group,target}` is 1 from inject to heal and 0 after: the dashboards' run timeline draws faults
from it (an annotation on `changes(kvt_fault_active[1m]) > 0`), and the report can read the same series back from
Prometheus. One registry per run, served by prometheus_client's own HTTP server in a daemon thread; a port already in
use turns the endpoint off for that run with one line rather than failing the run (two runs at once, say).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, start_http_server

DEFAULT_PORT = 9470
PHASES = ("warmup", "measure", "checks")


class RunnerMetrics:
    def __init__(self, port: int, address: str = "0.0.0.0", say: Callable[[str], None] | None = None) -> None:
        self.port = port
        self.address = address
        self._say = say or (lambda line: None)
        self.registry = CollectorRegistry()
        self._server: Any = None
        self._lock = threading.Lock()
        r = self.registry
        self.run_info = Gauge("kvt_run_info", "1 while a scenario runs", ["scenario", "run_id"], registry=r)
        self.phase = Gauge("kvt_run_phase", "1 for the phase the run is in", ["phase"], registry=r)
        self.fault_active = Gauge("kvt_fault_active", "1 while the fault is in place, 0 once healed",
                                  ["kind", "group", "target", "hosts"], registry=r)  # fmt: skip
        self.fault_started = Gauge("kvt_fault_started_timestamp_seconds", "When the fault was injected (unix time)",
                                   ["kind", "group", "target", "hosts"], registry=r)  # fmt: skip
        self.writer_ops = Gauge("kvt_writer_ops", "The runner's writers' operations so far, by outcome",
                                ["client", "result"], registry=r)  # fmt: skip

    @property
    def serving(self) -> bool:
        return self._server is not None

    def start(self) -> bool:
        """Serve /metrics; False (and one line said) when the port cannot be bound."""
        if self.port == 0:
            return False
        try:
            self._server, _thread = start_http_server(self.port, addr=self.address, registry=self.registry)
        except OSError as exc:
            self._say(f"runner metrics: port {self.port} not available ({exc.strerror or exc}); not exported this "
                      "run (--metrics-port PORT, 0 for none)")  # fmt: skip
            return False
        return True

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def run_started(self, scenario: str, run_id: str) -> None:
        self.run_info.labels(scenario, run_id).set(1)

    def enter_phase(self, phase: str) -> None:
        with self._lock:
            for name in PHASES:
                self.phase.labels(name).set(1 if name == phase else 0)

    def fault(self, kind: str, group: str, target: str, hosts: list[str], active: bool) -> None:
        labels = (kind, group, target, ",".join(hosts))
        self.fault_active.labels(*labels).set(1 if active else 0)
        if active:
            self.fault_started.labels(*labels).set(time.time())

    def writer_counts(self, client: str, ok: int, fail: int, unknown: int) -> None:
        for result, value in (("ok", ok), ("fail", fail), ("unknown", unknown)):
            self.writer_ops.labels(client, result).set(value)
