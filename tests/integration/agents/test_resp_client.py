"""kvagent's RESP connection against a real redis-server: what callers may rely on about a dying connection."""

from __future__ import annotations

import asyncio

import pytest
from kvagent.clients.resp import RespConnection
from kvagent.service.config import RedisEndpoint

pytestmark = pytest.mark.integration


def test_a_closing_connection_says_closed_before_it_refuses_a_write(redis_server) -> None:
    """The observer's async listener checks `closed` before acknowledging from a callback. Between the
    transport closing and connection_lost running (one loop turn) `closed` must already be true, else
    the ack's write raises inside the callback and the agent logs a traceback (seen in CI, 2026-12-02)."""

    async def scenario() -> tuple[bool, bool, str]:
        endpoint = RedisEndpoint(redis_server.bind, redis_server.port, password=redis_server.password)
        conn = await RespConnection.open(endpoint)
        assert await conn.execute(b"PING") == b"PONG"
        conn.close()
        closed_at_once = conn.closed
        with pytest.raises(ConnectionError) as refused:
            conn.send(b"PING")
        await asyncio.wait_for(conn.lost, 2)
        return closed_at_once, conn.closed, str(refused.value)

    closed_at_once, closed_later, refusal = asyncio.run(scenario())
    assert closed_at_once, "closed was still False while the transport refused writes"
    assert closed_later
    assert "closed" in refusal
