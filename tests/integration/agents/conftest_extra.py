"""Run agents the way they are deployed: one subprocess each (`python -m kvtestbed.agents.main`).

A config dict becomes a YAML file; the agent gets a free loopback metrics port and a dump path; the
helper waits for /healthz, reads /hdr and RSS while it runs, and SIGTERMs it to collect the final dump.
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
from pathlib import Path
from typing import Any

import psutil
import yaml
from servers import LOOPBACK, free_port

RSS_LIMIT_BYTES = 60 * 1024 * 1024


class AgentProcess:
    def __init__(self, kind: str, name: str, config: dict[str, Any], workdir: Path) -> None:
        self.kind = kind
        self.name = name
        self.port = free_port()
        self.dump = workdir / f"{name}.dump.json"
        self.config = {
            **config,
            "service": {"metrics_host": LOOPBACK, "metrics_port": self.port, "dump_path": str(self.dump)},
        }
        self.config_path = workdir / f"{name}.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config))
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.max_rss = 0

    def start(self) -> AgentProcess:
        log = open(self.log_path, "wb")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kvtestbed.agents.main", self.kind, "--config", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        return self

    def wait_healthy(self, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited {self.proc.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://{LOOPBACK}:{self.port}/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"{self.name} not healthy after {timeout_s} s: {self.log_tail()}")

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{self.port}{path}", timeout=5) as resp:
            body = resp.read()
        return json.loads(body) if path != "/metrics" else body.decode()

    def summary(self) -> dict[str, Any]:
        return self.get("/hdr")["summary"]

    def sample_rss(self) -> int:
        assert self.proc is not None
        try:
            rss = psutil.Process(self.proc.pid).memory_info().rss
        except psutil.Error:
            return self.max_rss
        self.max_rss = max(self.max_rss, rss)
        return rss

    def stop(self, timeout_s: float = 25.0) -> dict[str, Any]:
        """SIGTERM, wait, return the final dump."""
        assert self.proc is not None
        self.sample_rss()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise AssertionError(f"{self.name} ignored SIGTERM: {self.log_tail()}") from None
        assert self.proc.returncode == 0, f"{self.name} exit {self.proc.returncode}: {self.log_tail()}"
        assert "Traceback" not in self.log_path.read_text(errors="replace"), self.log_tail(60)
        return json.loads(self.dump.read_text())

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def run_bad_config(
    kind: str, config: dict[str, Any], workdir: Path, timeout_s: float = 30.0
) -> tuple[int, str]:
    """Start an agent with a bad config; (exit code, stderr) — it must fail fast with one line."""
    path = workdir / f"bad-{kind}-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.run(
        [sys.executable, "-m", "kvtestbed.agents.main", kind, "--config", str(path)],
        capture_output=True,
        timeout=timeout_s,
        text=True,
    )
    return proc.returncode, proc.stderr


def wait_until(predicate: Any, timeout_s: float, interval_s: float = 0.25, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)
