"""Store-side deduplication: the first claimant of a key within the window wins (SET NX PX).

The alternative, JetStream's ``Nats-Msg-Id`` + the stream's duplicate window, needs no code here:
the consumer sets the header and reads ``PubAck.duplicate``.
"""

from __future__ import annotations

import redis.asyncio as aioredis


class StoreDedup:
    def __init__(self, client: aioredis.Redis, namespace: str, owner: str, window_ms: int) -> None:
        self._client = client
        self._namespace = namespace
        self._owner = owner
        self._window_ms = max(1, window_ms)

    def claim_key(self, key: str) -> str:
        return f"{self._namespace}:dedup:{key}"

    async def claim(self, keys: list[str]) -> list[bool]:
        """One round trip for the batch; True where this owner is the first within the window."""
        if not keys:
            return []
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.set(self.claim_key(key), self._owner, nx=True, px=self._window_ms)
        results = await pipe.execute()
        return [bool(r) for r in results]
