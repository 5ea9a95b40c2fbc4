"""Hot-key workload on Redis Cluster: one hot key, then the same load spread over N shard keys.

Each cycle runs two phases with the same op count: ``hot`` (every op on ``hot_key``) and ``sharded``
(round robin over ``key:{0}`` .. ``key:{N-1}``; the braces are a hash tag, so the slot depends on i).
Around each phase the agent reads INFO commandstats on every master and reports the per-node delta
of the driven command, with the imbalance (max/mean; 1.0 = even, #masters = one node took it all),
max/min and CV. It also reports each key's hash slot (computed with CRC16, checked against CLUSTER
KEYSLOT) and the node owning it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import redis.asyncio as aioredis
from prometheus_client import Counter, Gauge
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from kvagent.clients.connect import REDIS_CONNECTION_ERRORS, Backoff, ConnectError, ConnectionTracker
from kvagent.clients.targets import ClusterResolver, TargetSettings, close_quietly, cluster_client, node_client
from kvagent.service.config import ConfigError, ServiceConfig
from kvagent.service.evenness import evenness
from kvagent.service.metrics import LatencyMetric
from kvagent.service.pacing import Pacer, sleep_or_stop
from kvagent.service.shell import AgentBase

log = logging.getLogger(__name__)

PHASES = ("hot", "sharded")


@dataclass
class HotkeysSettings:
    hot_key: str = "hot"
    shard_prefix: str = "key"  # shard keys are PREFIX:{i}
    shards: int = 16
    command: Literal["incr", "get", "set"] = "incr"
    value_size: int = 16  # for set
    ops: int = 20_000  # per phase
    max_phase_s: float = 60.0  # a phase ends after this even if ops are not done
    concurrency: int = 8
    rate: float = 0.0  # ops per second per phase; 0 = closed loop, as fast as the cluster answers
    cycles: int = 1  # hot+sharded cycles; 0 = until stopped
    pause_s: float = 1.0
    exit_when_done: bool = False

    def __post_init__(self) -> None:
        if not self.hot_key or not self.shard_prefix:
            raise ConfigError("hotkeys.hot_key and hotkeys.shard_prefix must be non-empty")
        if self.shards < 1 or self.ops < 1 or self.concurrency < 1:
            raise ConfigError("hotkeys.shards, hotkeys.ops and hotkeys.concurrency must be >= 1")
        if self.rate < 0 or self.cycles < 0 or self.pause_s < 0 or self.value_size < 0:
            raise ConfigError("hotkeys.rate, cycles, pause_s and value_size must be >= 0")
        if self.max_phase_s <= 0:
            raise ConfigError("hotkeys.max_phase_s must be > 0")

    def shard_keys(self) -> list[str]:
        return [f"{self.shard_prefix}:{{{i}}}" for i in range(self.shards)]


@dataclass
class HotkeysConfig:
    target: TargetSettings
    hotkeys: HotkeysSettings = field(default_factory=HotkeysSettings)
    service: ServiceConfig = field(default_factory=ServiceConfig)

    def __post_init__(self) -> None:
        if self.target.mode != "cluster":
            raise ConfigError("target.mode must be cluster for the hotkeys agent")


def slot_owner_map(slots_reply: Any) -> list[tuple[int, int, str]]:
    """CLUSTER SLOTS -> sorted (first, last, 'host:port' of the master)."""
    ranges = []
    for entry in slots_reply:
        first, last, master = int(entry[0]), int(entry[1]), entry[2]
        host = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
        ranges.append((first, last, f"{host}:{int(master[1])}"))
    return sorted(ranges)


def owner_of(ranges: list[tuple[int, int, str]], slot: int) -> str | None:
    for first, last, node in ranges:
        if first <= slot <= last:
            return node
    return None


def command_calls(stats: dict[str, Any], command: str) -> int:
    """Calls of one command from INFO commandstats as parsed by redis-py (cmdstat_<cmd> -> {calls: n})."""
    entry = stats.get(f"cmdstat_{command}")
    if isinstance(entry, dict):
        return int(entry.get("calls", 0))
    return 0


class HotkeysAgent(AgentBase):
    kind = "hotkeys"

    def __init__(self, config: HotkeysConfig) -> None:
        super().__init__()
        self.config = config
        self.settings = config.hotkeys
        self.target = config.target
        self.resolver = ClusterResolver(config.target)
        self.tracker = ConnectionTracker(self.registry, "cluster")
        self._client: RedisCluster | None = None
        self.keys: dict[str, dict[str, Any]] = {}
        self.slot_mismatches = 0
        self.phases: list[dict[str, Any]] = []
        self.errors = 0
        self.cycles_done = 0
        r = self.registry
        self.m_ops = Counter("kvt_hotkeys_ops", "Operations completed", ["phase"], registry=r)
        self.m_errors = Counter("kvt_hotkeys_errors", "Operations failed", ["phase"], registry=r)
        for phase in PHASES:  # at 0 from the start: an error-free run still has its errors series (rate() 0)
            self.m_ops.labels(phase)
            self.m_errors.labels(phase)
        self.g_node_ops = Gauge(
            "kvt_hotkeys_node_ops", "Per-node ops in the last phase", ["phase", "node"], registry=r
        )
        self.g_imbalance = Gauge(
            "kvt_hotkeys_imbalance", "max/mean per-node ops in the last phase", ["phase"], registry=r
        )
        self.m_latency = LatencyMetric(r, "kvt_hotkeys_op", "Cluster command round trip", ["phase"])

    async def check(self) -> None:
        try:
            masters = await self.resolver.resolve()
        except ConnectionError as exc:
            raise ConnectError(f"cluster: {exc}") from None
        self._client = cluster_client(self.target)
        try:
            await self._client.initialize()
        except Exception as exc:  # noqa: BLE001 - auth and connection errors come in several kinds
            await close_quietly(self._client)
            raise ConnectError(f"redis cluster {masters[0].label()}: {exc}") from None
        await self._map_keys()

    async def _map_keys(self) -> None:
        """Slot (redis-py's, the one its cluster client routes by; checked against CLUSTER KEYSLOT) and
        owning master of every key we drive."""
        masters = await self.resolver.resolve()
        client = node_client(masters[0])
        try:
            ranges = slot_owner_map(await client.execute_command("CLUSTER", "SLOTS"))
            for key in [self.settings.hot_key, *self.settings.shard_keys()]:
                slot = key_slot(key.encode())
                server_slot = int(await client.execute_command("CLUSTER", "KEYSLOT", key))
                if server_slot != slot:
                    self.slot_mismatches += 1
                self.keys[key] = {"slot": slot, "server_slot": server_slot, "node": owner_of(ranges, slot)}
        finally:
            await client.aclose()

    async def _commandstats(self) -> dict[str, int]:
        """Calls of the driven command per master; a master that does not answer is left out."""
        out: dict[str, int] = {}
        for node in await self.resolver.resolve():
            client = node_client(node)
            try:
                stats = await client.info("commandstats")
                out[node.label()] = command_calls(stats, self.settings.command)
            except (*REDIS_CONNECTION_ERRORS, aioredis.RedisError):
                continue
            finally:
                await client.aclose()
        return out

    async def _op(self, key: str, payload: bytes) -> None:
        assert self._client is not None
        # execute_command sends exactly the named command (redis-py's incr() sends INCRBY), so the
        # commandstats entry we diff is the one we drive.
        if self.settings.command == "set":
            await self._client.execute_command("SET", key, payload)
        else:
            await self._client.execute_command(self.settings.command.upper(), key)

    async def _phase(self, stop: asyncio.Event, phase: str) -> dict[str, Any]:
        s = self.settings
        keys = [s.hot_key] if phase == "hot" else s.shard_keys()
        payload = b"v" * s.value_size
        before = await self._commandstats()
        deadline = time.monotonic() + s.max_phase_s
        pacer = Pacer(s.rate)
        issued = 0
        done = 0
        errors = 0
        backoff = Backoff(cap_s=2.0)

        async def driver() -> None:
            nonlocal issued, done, errors
            while not stop.is_set() and time.monotonic() < deadline:
                if issued >= s.ops:
                    return
                index = issued
                issued += 1
                if s.rate > 0 and await pacer.wait(stop):
                    return
                started = time.perf_counter_ns()
                try:
                    await self._op(keys[index % len(keys)], payload)
                except (*REDIS_CONNECTION_ERRORS, aioredis.RedisError) as exc:
                    errors += 1
                    self.errors += 1
                    self.m_errors.labels(phase).inc()
                    self.tracker.down()
                    log.debug("op failed: %s", exc)
                    await sleep_or_stop(stop, backoff.next_delay())
                    continue
                self.tracker.up()
                backoff.reset()
                self.m_latency.record_us((time.perf_counter_ns() - started) // 1000, phase=phase)
                self.m_ops.labels(phase).inc()
                done += 1

        started_s = time.monotonic()
        await asyncio.gather(*(driver() for _ in range(s.concurrency)))
        elapsed = time.monotonic() - started_s
        after = await self._commandstats()
        per_node = {node: after[node] - before.get(node, 0) for node in after}
        even = evenness(per_node)
        for node, n in per_node.items():
            self.g_node_ops.labels(phase, node).set(n)
        if per_node and even.total:
            self.g_imbalance.labels(phase).set(even.imbalance)
        return {
            "phase": phase,
            "keys": len(keys),
            "ops": done,
            "errors": errors,
            "seconds": round(elapsed, 3),
            "ops_per_s": round(done / elapsed, 1) if elapsed > 0 else 0.0,
            "per_node_ops": per_node,
            "evenness": even.as_dict(),
            "p50_us": self.m_latency.percentile_us(50, phase=phase),
            "p99_us": self.m_latency.percentile_us(99, phase=phase),
        }

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        try:
            while not stop.is_set() and (s.cycles == 0 or self.cycles_done < s.cycles):
                for phase in PHASES:
                    try:
                        result = await self._phase(stop, phase)
                    except (*REDIS_CONNECTION_ERRORS, aioredis.RedisError, ConnectionError) as exc:
                        # Could not even read commandstats: note it and try the next cycle later.
                        log.warning("phase %s failed: %s", phase, exc)
                        self.tracker.down()
                        await sleep_or_stop(stop, Backoff(cap_s=2.0).next_delay() + s.pause_s)
                        continue
                    self.phases.append(result)
                    # Bounded history: the latest 20 phases are enough for a report.
                    del self.phases[:-20]
                    log.info("phase %s: %s", phase, result)
                    if await sleep_or_stop(stop, s.pause_s):
                        break
                self.cycles_done += 1
            if not s.exit_when_done:
                await stop.wait()
        finally:
            await close_quietly(self._client)

    def report(self) -> dict[str, Any]:
        """Imbalance of the latest hot and sharded phases side by side."""
        latest = {p["phase"]: p for p in self.phases}
        out: dict[str, Any] = {}
        for phase in PHASES:
            if phase in latest:
                out[f"{phase}_imbalance"] = latest[phase]["evenness"].get("imbalance")
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "role": "hotkeys",
            "command": self.settings.command,
            "keys": self.keys,
            "slot_mismatches": self.slot_mismatches,
            "cycles_done": self.cycles_done,
            "errors": self.errors,
            "phases": list(self.phases),
            "report": self.report(),
            "cluster": self.tracker.summary(),
        }

    def histograms(self) -> dict[str, dict[str, str]]:
        return {self.m_latency.name: self.m_latency.encoded()}


CONFIG_MODEL = HotkeysConfig


def build(config: HotkeysConfig) -> AgentBase:
    return HotkeysAgent(config)
