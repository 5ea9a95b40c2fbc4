"""observer value encoding, notification flags and config defaults."""

from __future__ import annotations

import pytest
from kvagent.service.config import ConfigError, RedisEndpoint
from kvagent.workloads.observer.agent import (
    ListenerConfig,
    ObserverConfig,
    ValueEncoder,
    WriterConfig,
    decode_value,
    encode_value,
    merge_notify_flags,
)


def test_value_round_trip_with_history() -> None:
    raw = encode_value(7, 1_000_000, -42, "abcd1234", b"xxxx", history=[999_000, 998_000])
    version = decode_value(raw)
    assert version is not None
    assert (version.seq, version.wall_ns, version.writer_offset_ns, version.run_id) == (
        7,
        1_000_000,
        -42,
        "abcd1234",
    )
    assert version.wall_of(7) == 1_000_000 and version.wall_of(6) == 999_000 and version.wall_of(5) == 998_000
    assert version.wall_of(4) is None and version.wall_of(8) is None


def test_incremental_encoder_matches_the_reference_encoding() -> None:
    encoder = ValueEncoder("run1", b"pp", history=4)
    walls: list[int] = []
    for seq, wall in enumerate([1_000, 2_500, 2_600, 9_000, 9_001, 12_345], start=1):
        raw = encoder.encode(seq, wall, 7)
        assert raw == encode_value(seq, wall, 7, "run1", b"pp", history=walls[:4])
        version = decode_value(raw)
        assert version is not None
        assert [version.wall_of(seq - back) for back in range(1, len(walls[:4]) + 1)] == walls[:4]
        encoder.commit(wall)
        walls.insert(0, wall)


def test_a_failed_write_leaves_the_history_alone() -> None:
    encoder = ValueEncoder("r", b"", history=3)
    encoder.encode(1, 100, 0)
    encoder.commit(100)
    encoder.encode(2, 200, 0)  # never committed: the write failed and seq 2 is retried
    assert decode_value(encoder.encode(2, 300, 0)).history == (100,)  # type: ignore[union-attr]


@pytest.mark.parametrize("raw", [None, b"", b"garbage", b"1:2:3", b"a:b:c:d::x"])
def test_foreign_values_are_unreadable(raw: bytes | None) -> None:
    assert decode_value(raw) is None


def test_payload_may_contain_colons() -> None:
    version = decode_value(encode_value(1, 5, 0, "r", b"a:b:c"))
    assert version is not None and version.seq == 1 and version.history == ()


@pytest.mark.parametrize(
    ("current", "expected"), [("", "K$"), ("Ex", "ExK$"), ("KA", None), ("K$", None), ("E$", "E$K")]
)
def test_merge_notify_flags_keeps_other_flags(current: str, expected: str | None) -> None:
    assert merge_notify_flags(current) == expected


def test_default_listeners_and_validation() -> None:
    endpoint = RedisEndpoint("127.0.0.1", 6379)
    cfg = ObserverConfig(WriterConfig(endpoint))
    assert [(lst.name, lst.mode) for lst in cfg.listeners or []] == [("sync", "sync"), ("async", "async")]
    with pytest.raises(ConfigError, match="unique"):
        ObserverConfig(WriterConfig(endpoint), [ListenerConfig("a", endpoint), ListenerConfig("a", endpoint)])
    with pytest.raises(ConfigError, match="rate must be > 0"):
        WriterConfig(endpoint, rate=0)
