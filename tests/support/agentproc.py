"""Run agents the way they are deployed: one subprocess each (`python -m kvagent.main`).

A config dict becomes a YAML file; the agent gets a free loopback metrics port and a dump path; the
helper waits for /healthz, reads /hdr and RSS while it runs, and SIGTERMs it to collect the final dump.
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

import psutil
import yaml

from tests.support.servers import LOOPBACK, free_port

RSS_LIMIT_BYTES = 60 * 1024 * 1024


class AgentProcess:
    def __init__(self, kind: str, config: dict[str, Any], workdir: Path, name: str | None = None) -> None:
        self.kind = kind
        self.name = name or kind
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.dump_path = workdir / f"{self.name}-dump.json"
        service = dict(config.get("service", {}))
        service.setdefault("metrics_host", LOOPBACK)
        service.setdefault("metrics_port", self.port)
        service.setdefault("dump_path", str(self.dump_path))
        self.port = service["metrics_port"]
        self.config = {**config, "service": service}
        self.config_path = workdir / f"{self.name}.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config))
        self.log_path = workdir / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.max_rss = 0

    def start(
        self,
        env: dict[str, str] | None = None,
        timeout_s: float = 15.0,
        cpus: set[int] | None = None,
        wait: bool = True,
    ) -> AgentProcess:
        """cpus: pin the agent (all its threads, set before exec) to these CPUs, as benchmarks do.
        wait=False returns at once, so that several agents can start side by side before wait_healthy()."""
        log = open(self.log_path, "wb")  # noqa: SIM115 - closed in _reap
        self._log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kvagent.main", self.kind, "--config", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )
        if wait:
            self.wait_healthy(timeout_s)
        return self

    def _get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://{LOOPBACK}:{self.port}{path}", timeout=5) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def wait_healthy(self, timeout_s: float = 20.0) -> None:
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

    def sample_rss(self) -> int:
        """The agent's RSS now; the peak of all samples is kept in max_rss."""
        assert self.proc is not None
        try:
            rss = psutil.Process(self.proc.pid).memory_info().rss
        except psutil.Error:
            return self.max_rss
        self.max_rss = max(self.max_rss, rss)
        return rss

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout_s: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        summary: dict[str, Any] = {}
        while time.monotonic() < deadline:
            summary = self.summary()
            if predicate(summary):
                return summary
            time.sleep(0.1)
        raise TimeoutError(f"{self.name}: {what} not reached in {timeout_s} s; last summary {summary}")

    def stop(self, timeout_s: float = 20.0) -> dict[str, Any]:
        """SIGTERM, wait, and return the final dump written at stop. A clean stop exits 0 and logs no traceback."""
        assert self.proc is not None
        self.sample_rss()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._reap()
                raise AssertionError(f"{self.name} ignored SIGTERM for {timeout_s} s: {self.log_tail()}") from None
        self._reap()
        rc = self.proc.returncode
        assert rc == 0, f"{self.name} exited {rc}: {self.log_tail()}"
        assert "Traceback" not in self.log_path.read_text(errors="replace"), self.log_tail(60)
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


def run_bad_config(kind: str, config: dict[str, Any], workdir: Path, timeout_s: float = 30.0) -> tuple[int, str]:
    """Start an agent with a bad config; (exit code, stderr) — it must fail fast with one line."""
    path = workdir / f"bad-{kind}-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.run(
        [sys.executable, "-m", "kvagent.main", kind, "--config", str(path)],
        capture_output=True,
        timeout=timeout_s,
        text=True,
    )
    return proc.returncode, proc.stderr
