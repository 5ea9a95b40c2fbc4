"""What the pipeline's sinks write to the store, and how the aggregator and the audit read it back.

Layout (one hash tag per run, so a Cluster store keeps a run in one slot and the Lua sink may touch
several keys):
  kvt:pipe:{RUN}:ids:ROUTE        SET   event ids routed to ROUTE (the exactly-once ledger), TTL
  kvt:pipe:{RUN}:s:ROUTE:SECOND   HASH  n, sum, lag_us for events stored during that second, TTL
The sink is one Lua call per event: SADD first, and only a new id bumps the series, so a JetStream
redelivery (at-least-once) never counts twice.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

SINK_LUA = """
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('HINCRBY', KEYS[2], 'n', 1)
redis.call('HINCRBYFLOAT', KEYS[2], 'sum', ARGV[2])
redis.call('HINCRBY', KEYS[2], 'lag_us', ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 1
"""


def namespace(run_id: str) -> str:
    return f"kvt:pipe:{{{run_id}}}"


def ids_key(run_id: str, route: str) -> str:
    return f"{namespace(run_id)}:ids:{route}"


def second_key(run_id: str, route: str, second: int) -> str:
    return f"{namespace(run_id)}:s:{route}:{second}"


class Sink:
    """Writes a batch of routed events in one pipelined round trip; returns 1 (new) / 0 (seen) each."""

    def __init__(
        self, client: aioredis.Redis, run_id: str, route: str, ledger_ttl_s: int, series_ttl_s: int
    ) -> None:
        self._client = client
        self._run_id = run_id
        self._route = route
        self._ledger_ttl_s = ledger_ttl_s
        self._series_ttl_s = series_ttl_s
        self._script = client.register_script(SINK_LUA)

    async def write(self, events: list[tuple[str, float, int]], second: int) -> list[int]:
        """events: (id, amount, e2e lag in us so far)."""
        if not events:
            return []
        ids = ids_key(self._run_id, self._route)
        sec = second_key(self._run_id, self._route, second)
        pipe = self._client.pipeline(transaction=False)
        for event_id, amount, lag_us in events:
            await self._script(
                keys=[ids, sec],
                args=[event_id, repr(float(amount)), self._ledger_ttl_s, self._series_ttl_s, int(lag_us)],
                client=pipe,
            )
        return [int(r) for r in await pipe.execute()]


async def read_series(
    client: aioredis.Redis, run_id: str, routes: list[str], first: int, last: int
) -> dict[str, dict[int, dict[str, float]]]:
    """route -> second -> {n, sum, mean_lag_us} for seconds first..last (missing seconds: n = 0)."""
    pipe = client.pipeline(transaction=False)
    for route in routes:
        for second in range(first, last + 1):
            pipe.hgetall(second_key(run_id, route, second))
    replies = await pipe.execute()
    out: dict[str, dict[int, dict[str, float]]] = {}
    i = 0
    for route in routes:
        series: dict[int, dict[str, float]] = {}
        for second in range(first, last + 1):
            raw = {_s(k): _s(v) for k, v in replies[i].items()}
            i += 1
            n = int(raw.get("n", 0))
            series[second] = {
                "n": n,
                "sum": float(raw.get("sum", 0.0)),
                "mean_lag_us": (int(raw.get("lag_us", 0)) / n) if n else 0.0,
            }
        out[route] = series
    return out


async def audit_routes(client: aioredis.Redis, run_id: str, routes: list[str]) -> dict[str, Any]:
    """Per-route counts and the overlap: an event in two routes' ledgers was routed twice."""
    counts = {route: int(await client.scard(ids_key(run_id, route))) for route in routes}
    both = 0
    if len(routes) == 2:
        both = int(await client.execute_command("SINTERCARD", 2, *(ids_key(run_id, r) for r in routes)))
    return {"per_route": counts, "routed_twice": both, "distinct": sum(counts.values()) - both}


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
