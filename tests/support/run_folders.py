"""Generated run folders for the results/report tests: the shapes a Sentinel failover run writes, made up.

Generated input is fine here: the code under test reads and renders files, and what makes a renderer or a
comparison wrong is the shape of its input (two clients, a fault with a heal, a failover, ops that never
completed, a warm-up), not where the numbers came from. Accounting itself is tested against real servers in
tests/integration/accounting. Everything is seeded: the same arguments make the same folder.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kvtestbed.results.store import RunDir
from kvtestbed.results.summary import complete_summary

OLD_PRIMARY, NEW_PRIMARY = "198.18.0.11:6379", "198.18.0.12:6379"
STARTED = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)


def _ops(rng: random.Random, duration_s: float, rate: float, fault_at: float, outage_s: float, base_ms: float):
    """One client's ops: steady ok writes, a fault that leaves one op unknown and the rest failing for outage_s,
    then ok writes on the new primary."""
    ops = []
    for i in range(int(duration_s * rate)):
        t = i / rate
        node = OLD_PRIMARY if t < fault_at else NEW_PRIMARY
        latency = base_ms / 1000 * (1 + rng.expovariate(3))
        op: dict[str, Any] = {"t_intended": t, "t_start": t + 0.0001, "op": "write", "key": f"k{i}", "value": f"v{i}"}
        if fault_at <= t < fault_at + outage_s:
            if t < fault_at + 1 / rate:  # in flight when the primary died
                op.update(t_end=None, result="unknown", node=OLD_PRIMARY, error="timeout")
            else:
                op.update(t_end=t + 0.5 / rate, result="fail", node=None, error="ConnectionError")
        else:
            op.update(t_end=t + latency, result="ok", node=node, error=None)
        ops.append(op)
    return ops


def make_run(
    results_root: Path,
    scenario: str = "sentinel-kill",
    *,
    seed: int = 1,
    started: datetime = STARTED,
    duration_s: float = 60.0,
    fault_at: float = 20.0,
    clients: dict[str, float] | None = None,  # client -> outage seconds
    base_ms: float = 1.0,
    lost: int = 0,
    overrides: dict[str, Any] | None = None,
    slos: list[dict[str, Any]] | None = None,
    consumers: dict[str, int] | None = None,
    rate: float = 50.0,
    extra: dict[str, Any] | None = None,  # more top-level summary sections (accounting, benchmarks)
) -> RunDir:
    rng = random.Random(seed)
    clients = clients if clients is not None else {"sentinel-default": 6.0, "quorum": 4.25}
    run = RunDir.create(results_root, scenario, started)
    run.write_scenario(f"name: {scenario}\nduration: {duration_s}\n")
    run.append_timeline(
        {"t": 0.5, "source": "runner", "event": "primary", "detail": {"group": "redis", "host": "pi-1"}}
    )
    fault = {
        "id": "f1", "kind": "kill", "target": "primary", "hosts": ["pi-1"], "params": {"signal": "KILL"},
        "t_inject": fault_at, "t_heal": fault_at + 10, "healed": True, "verified": True,
        "deadman": "kvtestbed-heal-f1.timer", "error": None,
    }  # fmt: skip
    run.append_fault(fault)
    switch_at = fault_at + 5.1
    run.append_timeline(
        {"t": switch_at, "source": "sentinel", "event": "+switch-master",
         "detail": {"master": "redis", "from": OLD_PRIMARY, "to": NEW_PRIMARY}}
    )  # fmt: skip
    run.append_timeline({"t": switch_at + 0.3, "source": "runner", "event": "primary",
                         "detail": {"group": "redis", "host": "pi-2"}})  # fmt: skip
    entries = {}
    for n, (client, outage) in enumerate(clients.items()):
        ops = _ops(rng, duration_s, rate, fault_at, outage, base_ms * (1 + n * 0.5))
        with run.ops_path(client).open("w") as out:
            out.writelines(json.dumps(op) + "\n" for op in ops)
        ok = [op for op in ops if op["result"] == "ok"]
        latencies = sorted(int((op["t_end"] - op["t_intended"]) * 1e6) for op in ok)

        def pct(p: float, latencies: list[int] = latencies) -> int:
            return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))]

        entries[client] = {
            "strategy": "quorum" if client == "quorum" else "redis-py",
            "target": "sentinel:redis",
            "attempted": len(ops),
            "ok": len(ok),
            "fail": sum(op["result"] == "fail" for op in ops),
            "unknown": sum(op["result"] == "unknown" for op in ops),
            "lost": lost,
            "lost_sample": [f"k{i}" for i in range(min(lost, 3))],
            "unexpected": 0,
            "unknown_applied": 1,
            "unavailability_s": outage,
            "unavailability_window": [fault_at, fault_at + outage],
            "failover_s": outage,
            "failover_to": NEW_PRIMARY,
            "latency_us": {"p50": pct(50), "p90": pct(90), "p99": pct(99), "p99.9": pct(99.9), "max": latencies[-1]},
            "ops_per_s": len(ok) / duration_s,
        }
    summary: dict[str, Any] = {
        "schema": 1,
        "run": {
            "id": run.id, "scenario": scenario, "description": "SIGKILL of the Redis primary under Sentinel",
            "tags": ["failover", "sentinel"], "repeat": 0, "started": started.isoformat(),
            "ended": (started + timedelta(seconds=duration_s)).isoformat(), "t0_unix": started.timestamp(),
            "duration_s": duration_s, "status": "passed", "error": None, "overrides": overrides or {},
        },
        "inventory": {"hosts": {
            f"pi-{i}": {"address": f"198.18.0.1{i}", "profile": "pi4b", "arch": "aarch64", "groups": ["redis"]}
            for i in (1, 2, 3)
        }},
        "engines": {"redis": {"engine": "redis", "version": "7.0.15", "topology": "sentinel"}},
        "phases": {"warmup": [0.0, 5.0], "measure": [5.0, duration_s]},
        "faults": [fault],
        "clients": entries,
        "servers_failover": [{"source": "sentinel", "t": switch_at, "from": OLD_PRIMARY, "to": NEW_PRIMARY}],
        "load": {f"consumer.{name}": count for name, count in (consumers or {}).items()},
    }  # fmt: skip
    summary.update(extra or {})
    run.write_summary(complete_summary(summary, slos or []))
    return run
