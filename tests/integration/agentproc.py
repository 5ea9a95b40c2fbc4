"""Run an agent as its own process (`python -m kvtestbed.agents.main`), as in production, for tests.

Every wait is bounded in time; the process is always reaped by stop()/kill() (tests use a fixture).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from servers import free_port


class AgentProcess:
    def __init__(self, kind: str, config: dict[str, Any], workdir: Path, name: str | None = None) -> None:
        self.kind = kind
        self.name = name or kind
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.dump_path = workdir / f"{self.name}-dump.json"
        service = dict(config.get("service", {}))
        service.setdefault("metrics_port", self.port)
        service.setdefault("dump_path", str(self.dump_path))
        self.port = service["metrics_port"]
        self.config = {**config, "service": service}
        self.config_path = workdir / f"{self.name}.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config))
        self.log_path = workdir / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(
        self, env: dict[str, str] | None = None, timeout_s: float = 15.0, cpus: set[int] | None = None
    ) -> AgentProcess:
        """cpus: pin the agent (all its threads, set before exec) to these CPUs, as benchmarks do."""
        log = open(self.log_path, "wb")  # noqa: SIM115 - closed in _reap
        self._log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kvtestbed.agents.main", self.kind, "--config", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )
        self.wait_healthy(timeout_s)
        return self

    def _get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}: {self.log_tail()}")
            try:
                status, _ = self._get("/healthz")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} not healthy after {timeout_s} s: {self.log_tail()}")

    def summary(self) -> dict[str, Any]:
        status, body = self._get("/hdr")
        assert status == 200, body
        return json.loads(body)["summary"]

    def metrics(self) -> str:
        return self._get("/metrics")[1].decode()

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout_s: float, what: str
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        summary: dict[str, Any] = {}
        while time.monotonic() < deadline:
            summary = self.summary()
            if predicate(summary):
                return summary
            time.sleep(0.1)
        raise TimeoutError(f"{self.name}: {what} not reached in {timeout_s} s; last summary {summary}")

    def stop(self, timeout_s: float = 20.0) -> dict[str, Any]:
        """SIGTERM, wait, and return the final dump written at stop."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout_s)
        finally:
            self._reap()
        assert rc == 0, f"{self.name} exited {rc}: {self.log_tail()}"
        return json.loads(self.dump_path.read_text())

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._reap()

    def _reap(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        log = getattr(self, "_log", None)
        if log is not None:
            log.close()
            self._log = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
