"""The process shell around an agent: event loop, HTTP endpoints, signals, logging and the final dump."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from kvagent.service.config import ConfigError, ServiceConfig
from kvagent.service.httpserver import HttpServer, Request, Response
from kvagent.service.metrics import ProcessMetrics

log = logging.getLogger("kvtestbed.agents")

# How long run() may take to finish after stop is set before it is cancelled: long enough to
# flush counters, short enough that systemd's stop timeout (90 s default) never fires first.
STOP_GRACE_S = 15.0


class AgentBase(abc.ABC):
    """An agent: owns its Prometheus registry, runs until ``stop`` is set, then reports.

    Subclasses call ``super().__init__()`` first so ``self.registry`` exists before they create metrics.
    """

    kind: str = "agent"

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.process_metrics = ProcessMetrics(self.registry)

    async def check(self) -> None:  # noqa: B027 - optional hook, default does nothing
        """Startup checks (connect, authenticate); raise ConfigError or ConnectError to exit 2."""

    @abc.abstractmethod
    async def run(self, stop: asyncio.Event) -> None:
        """Do the work until ``stop`` is set; must return promptly afterwards (flushing what it holds)."""

    @abc.abstractmethod
    def summary(self) -> dict[str, Any]:
        """Counters for /hdr and the final dump (JSON-serialisable)."""

    @abc.abstractmethod
    def histograms(self) -> dict[str, dict[str, str]]:
        """Metric name -> LatencyMetric.encoded() (label-set key -> base64 HdrHistogram)."""


def configure_logging(level: str) -> None:
    """Plain lines on stdout: journald captures stdout of a unit and adds its own timestamps."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _new_loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:  # not on every platform; the stdlib loop is only slower
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def dump_payload(agent: AgentBase, started: float, stopped: float | None) -> dict[str, Any]:
    return {
        "kind": agent.kind,
        "pid": os.getpid(),
        "started": started,
        "stopped": stopped,
        "summary": agent.summary(),
        "histograms": agent.histograms(),
    }


def write_dump(path: str, payload: dict[str, Any]) -> None:
    """Write atomically (temp file + rename) so a reader never sees half a dump."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, target)


class _Endpoints:
    """/metrics, /healthz, /hdr for one agent."""

    def __init__(self, agent: AgentBase, started: float) -> None:
        self.agent = agent
        self.started = started
        self.running = False

    async def handle(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return Response(405, b"method not allowed\n")
        if request.path == "/metrics":
            return Response(200, generate_latest(self.agent.registry), CONTENT_TYPE_LATEST)
        if request.path == "/healthz":
            body = {
                "status": "ok" if self.running else "starting",
                "kind": self.agent.kind,
                "pid": os.getpid(),
            }
            return Response(200 if self.running else 503, json.dumps(body).encode(), "application/json")
        if request.path == "/hdr":
            payload = dump_payload(self.agent, self.started, None)
            return Response(200, json.dumps(payload).encode(), "application/json")
        return Response(404, b"not found\n")


async def _serve(agent: AgentBase, service: ServiceConfig) -> None:
    started = time.time()
    endpoints = _Endpoints(agent, started)
    server = HttpServer(endpoints.handle, service.metrics_host, service.metrics_port)
    try:
        await server.start()
    except OSError as exc:
        raise ConfigError(
            f"service.metrics_port: cannot listen on {service.metrics_host}:{service.metrics_port} "
            f"({exc.strerror or exc})"
        ) from None
    ran = False
    try:
        await agent.check()
        ran = True
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if service.dump_path:
            # SIGUSR1: dump now without stopping, for long runs that want intermediate snapshots.
            dump_path = service.dump_path
            loop.add_signal_handler(
                signal.SIGUSR1, lambda: write_dump(dump_path, dump_payload(agent, started, None))
            )
        log.info(
            "%s agent running; http on %s:%d (pid %d)",
            agent.kind,
            service.metrics_host,
            server.port,
            os.getpid(),
        )
        endpoints.running = True
        task = asyncio.create_task(agent.run(stop), name=f"{agent.kind}-run")
        stop_wait = asyncio.create_task(stop.wait())
        await asyncio.wait({task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            log.info("stopping: waiting up to %.0f s for %s to flush", STOP_GRACE_S, agent.kind)
            try:
                await asyncio.wait_for(asyncio.shield(task), STOP_GRACE_S)
            except TimeoutError:
                log.warning("%s did not stop within %.0f s; cancelling", agent.kind, STOP_GRACE_S)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        stop_wait.cancel()
        task.result()  # re-raise a crash of run() so the exit code shows it
    finally:
        endpoints.running = False
        stopped = time.time()
        if ran and service.dump_path:
            write_dump(service.dump_path, dump_payload(agent, started, stopped))
            log.info("final dump written to %s", service.dump_path)
        if ran:
            log.info("summary %s", json.dumps(agent.summary(), sort_keys=True))
        await server.close()


def run_agent(agent: AgentBase, service: ServiceConfig) -> int:
    """Run ``agent`` until SIGTERM/SIGINT (or until run() returns); 0 on a clean stop.

    ConfigError/ConnectError from startup propagate to the caller (agent_main turns them into exit 2).
    """
    configure_logging(service.log_level)
    with asyncio.Runner(loop_factory=_new_loop_factory()) as runner:
        runner.run(_serve(agent, service))
    return 0
