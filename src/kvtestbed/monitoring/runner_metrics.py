"""What a running scenario shows Prometheus: the run, its phase, each fault while it is in place, the writers' counts.

`kvt_fault_active{id,kind,group,target}` is 0 from the run's start (every planned fault), 1 from inject to heal and
0 after: one series per fault, so the dashboards' annotation `changes(kvt_fault_active[1m]) > 0` marks both the
inject and the heal (a series born at 1 would show only the heal). The hosts a fault hit are known only at inject:
`kvt_fault_hosts_info{id,hosts}`. The report can read the same series back from Prometheus.

One registry per run, served by prometheus_client's own HTTP server in a daemon thread; a port already in
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
        self.fault_active = Gauge("kvt_fault_active", "1 while the fault is in place, 0 before and once healed",
                                  ["id", "kind", "group", "target"], registry=r)  # fmt: skip
        self.fault_started = Gauge("kvt_fault_started_timestamp_seconds", "When the fault was injected (unix time)",
                                   ["id", "kind", "group", "target"], registry=r)  # fmt: skip
        self.fault_hosts = Gauge("kvt_fault_hosts_info", "The hosts a fault hit (known at inject)", ["id", "hosts"],
                                 registry=r)  # fmt: skip
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

    def fault_planned(self, fault_id: str, kind: str, group: str, target: str) -> None:
        """The fault's series at 0 before it is injected."""
        self.fault_active.labels(fault_id, kind, group, target).set(0)

    def fault(self, fault_id: str, kind: str, group: str, target: str, hosts: list[str], active: bool) -> None:
        labels = (fault_id, kind, group, target)
        self.fault_active.labels(*labels).set(1 if active else 0)
        if active:
            self.fault_started.labels(*labels).set(time.time())
            self.fault_hosts.labels(fault_id, ",".join(hosts)).set(1)

    def writer_counts(self, client: str, ok: int, fail: int, unknown: int) -> None:
        for result, value in (("ok", ok), ("fail", fail), ("unknown", unknown)):
            self.writer_ops.labels(client, result).set(value)
