"""observer value encoding, notification flags and config defaults."""

from __future__ import annotations

import pytest
from kvtestbed.agents.config import ConfigError, RedisEndpoint
from kvtestbed.agents.observer import (
    ListenerConfig,
    ObserverConfig,
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
