"""Where a benchmark's processes run: the server on one CPU, every client on another (see Placement)."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator


class Placement:
    """Where the latency benchmark's processes run: the server on one CPU, every client on another.

    That is the deployed shape (server and clients on different hosts), and it gives the reference and
    the observer the same two cross-CPU hops per operation. Left to the scheduler, on a 2-vCPU VM the
    reference alone swings from ~20 us (client and server happen to share a vCPU) to ~850 us (they do
    not, and each vCPU halts between requests), so a ratio against it would be a coin toss.
    KVTESTBED_BENCH_PLACEMENT=none turns pinning off.
    """

    def __init__(self) -> None:
        cpus = sorted(os.sched_getaffinity(0))
        wanted = os.environ.get("KVTESTBED_BENCH_PLACEMENT", "split")
        self.split = wanted == "split" and len(cpus) >= 2 and shutil.which("taskset") is not None
        self.server: set[int] | None = {cpus[0]} if self.split else None
        self.clients: set[int] | None = {cpus[1]} if self.split else None

    def describe(self) -> str:
        if not self.split:
            return "placement: left to the scheduler"
        return f"placement: server on CPU {min(self.server or ())}, clients on CPU {min(self.clients or ())}"

    def server_argv(self, argv: list[str]) -> list[str]:
        return ["taskset", "-c", str(min(self.server))] + argv if self.server else argv

    def client_argv(self, argv: list[str]) -> list[str]:
        return ["taskset", "-c", str(min(self.clients))] + argv if self.clients else argv

    @contextlib.contextmanager
    def as_client(self) -> Iterator[None]:
        """Run this thread on the clients' CPU for the block (for in-process references)."""
        before = os.sched_getaffinity(0)
        if self.clients:
            os.sched_setaffinity(0, self.clients)
        try:
            yield
        finally:
            os.sched_setaffinity(0, before)
