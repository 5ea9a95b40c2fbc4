"""kvagent.clients.jetstream.ensure_stream against a real 3-server JetStream cluster: a stream that exists with
fewer replicas than asked is brought to the count asked (a run measuring an R3 stream must not measure an earlier
R1 one), and one with another retention is refused in one line."""

from __future__ import annotations

import asyncio

import nats
import pytest
from kvagent.clients.connect import ConnectError
from kvagent.clients.jetstream import StreamSettings, ensure_stream
from nats.js.api import RetentionPolicy

from tests.support.servers import NatsServer
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration


async def _ensure_and_describe(url: str, settings: StreamSettings, retention: RetentionPolicy) -> tuple[int, int]:
    client = await nats.connect(url)
    try:
        js = client.jetstream(timeout=10)
        await ensure_stream(js, settings, retention)
        info = await js.stream_info(settings.name)
        peers = len(info.cluster.replicas or []) + 1 if info.cluster and info.cluster.leader else 0
        return info.config.num_replicas or 1, peers
    finally:
        await client.close()


def test_an_r1_stream_becomes_r3_when_r3_is_asked(nats_cluster_servers: list[NatsServer]) -> None:
    url = nats_cluster_servers[0].url
    r1 = StreamSettings(name="ENSURE_R", subject="ensure.r", replicas=1)
    assert asyncio.run(_ensure_and_describe(url, r1, RetentionPolicy.LIMITS))[0] == 1
    r3 = StreamSettings(name="ENSURE_R", subject="ensure.r", replicas=3)
    assert asyncio.run(_ensure_and_describe(url, r3, RetentionPolicy.LIMITS))[0] == 3
    # the new peers join in the background: poll (bounded) until the stream reports a leader and two replicas
    wait_until(lambda: asyncio.run(_ensure_and_describe(url, r3, RetentionPolicy.LIMITS)) == (3, 3), 20, 0.2,
               "an R3 stream with a leader and two replicas")  # fmt: skip


def test_another_retention_is_refused(nats_cluster_servers: list[NatsServer]) -> None:
    url = nats_cluster_servers[0].url
    asyncio.run(_ensure_and_describe(url, StreamSettings(name="ENSURE_WQ", subject="ensure.wq"),
                                     RetentionPolicy.LIMITS))  # fmt: skip
    with pytest.raises(ConnectError, match=r"^stream ENSURE_WQ exists with retention"):
        asyncio.run(_ensure_and_describe(url, StreamSettings(name="ENSURE_WQ", subject="ensure.wq"),
                                         RetentionPolicy.WORK_QUEUE))  # fmt: skip
