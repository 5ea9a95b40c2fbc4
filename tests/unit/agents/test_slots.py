"""CRC16 hash slots: known vectors from the Redis Cluster specification and hash-tag rules."""

from kvagent.workloads.hotkeys.slots import crc16, hash_tag, key_slot


def test_crc16_reference_vector() -> None:
    # The Redis Cluster spec gives CRC16("123456789") == 0x31C3 for the XMODEM variant.
    assert crc16(b"123456789") == 0x31C3


def test_known_slots() -> None:
    # Values from CLUSTER KEYSLOT on redis 7.0 (also checked live in the integration tests).
    assert key_slot("foo") == 12182
    assert key_slot("bar") == 5061
    assert key_slot("") == 0


def test_hash_tag_rules() -> None:
    assert hash_tag(b"{user1000}.following") == b"user1000"
    assert hash_tag(b"foo{}{bar}") == b"foo{}{bar}"  # empty first tag: whole key
    assert hash_tag(b"foo{{bar}}zap") == b"{bar"
    assert hash_tag(b"foo{bar}{zap}") == b"bar"
    assert hash_tag(b"no-closing{brace") == b"no-closing{brace"
    assert key_slot("key:{3}") == key_slot("3")
    assert key_slot(b"{user1000}.followers") == key_slot("{user1000}.following")
