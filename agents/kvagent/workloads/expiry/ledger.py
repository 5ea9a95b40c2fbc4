"""The expiry run's ledger in a Redis store, and the audit that turns it into lost/duplicate counts.

Layout (one hash tag per run, so a Cluster ledger keeps everything in one slot):
  kvt:ledger:{RUN}:deadlines   ZSET  key -> deadline (ms since epoch)        written by the generator
  kvt:ledger:{RUN}:processed   HASH  key -> times processed                  HINCRBY by workers
  kvt:ledger:{RUN}:workers     HASH  worker name -> keys processed           HINCRBY by workers
  kvt:ledger:{RUN}:consumers   HASH  "<name>:<counter>" -> value             HSET by consumers (1 s)
  kvt:ledger:{RUN}:generator   HASH  counter -> value                        HSET by the generator
  kvt:ledger:{RUN}:audit       STRING the latest audit as JSON               SET by the generator
  kvt:ledger:{RUN}:dedup:KEY   STRING claim with PX = duplicate window       SET NX by consumers
The audit streams the ledger in chunks (ZSCAN/HMGET/HSCAN), so its memory does not grow with the run.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import redis.asyncio as aioredis

from kvagent.service.evenness import evenness

CHUNK = 1000


def namespace(run_id: str) -> str:
    return f"kvt:ledger:{{{run_id}}}"


@dataclass
class Audit:
    at_ms: int
    generated: int = 0
    processed_keys: int = 0
    # keys processed more than once, and the extra processings they account for
    processed_twice: int = 0
    extra_processings: int = 0
    # deadline + grace passed and never processed
    lost: int = 0
    # not processed yet, still within the grace period
    pending: int = 0
    # processed keys the generator never recorded (foreign keys, or a ledger write that failed)
    unknown_processed: int = 0
    last_deadline_ms: int = 0
    per_worker: dict[str, int] = field(default_factory=dict)
    evenness: dict[str, Any] = field(default_factory=dict)
    per_consumer: dict[str, dict[str, float]] = field(default_factory=dict)
    generator: dict[str, float] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.generated > 0 and self.pending == 0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["complete"] = self.complete
        return out


def _num(value: Any) -> float:
    text = value.decode() if isinstance(value, bytes) else str(value)
    number = float(text)
    return int(number) if number.is_integer() else number


class Ledger:
    def __init__(self, client: aioredis.Redis, run_id: str) -> None:
        self.client = client
        self.ns = namespace(run_id)
        self.deadlines = f"{self.ns}:deadlines"
        self.processed = f"{self.ns}:processed"
        self.workers = f"{self.ns}:workers"
        self.consumers = f"{self.ns}:consumers"
        self.generator = f"{self.ns}:generator"
        self.audit_key = f"{self.ns}:audit"

    async def record_deadlines(self, items: list[tuple[str, int]]) -> None:
        if items:
            await self.client.zadd(self.deadlines, {k: d for k, d in items})

    async def record_processed(self, keys: list[str], worker: str) -> list[int]:
        """Count each key processed once more; returns the new counts (2+ = processed twice)."""
        if not keys:
            return []
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.hincrby(self.processed, key, 1)
        pipe.hincrby(self.workers, worker, len(keys))
        results = await pipe.execute()
        return [int(r) for r in results[:-1]]

    async def publish_counters(self, hash_key: str, prefix: str, counters: dict[str, float]) -> None:
        if counters:
            await self.client.hset(hash_key, mapping={f"{prefix}{k}": v for k, v in counters.items()})

    async def audit(self, now_ms: int, grace_ms: int) -> Audit:
        result = Audit(at_ms=now_ms)
        cursor: int = 0
        while True:
            cursor, chunk = await self.client.zscan(self.deadlines, cursor, count=CHUNK)
            if chunk:
                keys = [k for k, _ in chunk]
                counts = await self.client.hmget(self.processed, keys)
                for (_key, deadline), count in zip(chunk, counts, strict=True):
                    result.generated += 1
                    result.last_deadline_ms = max(result.last_deadline_ms, int(deadline))
                    if count is not None and int(count) > 0:
                        result.processed_keys += 1
                    elif deadline + grace_ms < now_ms:
                        result.lost += 1
                    else:
                        result.pending += 1
            if cursor == 0:
                break
        hcursor: int = 0
        seen_processed = 0
        while True:
            hcursor, items = await self.client.hscan(self.processed, hcursor, count=CHUNK)
            for value in items.values():
                seen_processed += 1
                n = int(value)
                if n > 1:
                    result.processed_twice += 1
                    result.extra_processings += n - 1
            if hcursor == 0:
                break
        result.unknown_processed = max(0, seen_processed - result.processed_keys)
        workers = await self.client.hgetall(self.workers)
        result.per_worker = {_s(k): int(v) for k, v in workers.items()}
        result.evenness = evenness(result.per_worker).as_dict() if result.per_worker else {}
        for raw_field, value in (await self.client.hgetall(self.consumers)).items():
            name, _, counter = _s(raw_field).rpartition(":")
            result.per_consumer.setdefault(name, {})[counter] = _num(value)
        result.generator = {_s(k): _num(v) for k, v in (await self.client.hgetall(self.generator)).items()}
        return result

    async def store_audit(self, audit: Audit) -> None:
        await self.client.set(self.audit_key, json.dumps(audit.as_dict(), sort_keys=True))

    async def load_audit(self) -> dict[str, Any] | None:
        raw = await self.client.get(self.audit_key)
        return json.loads(raw) if raw else None


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
