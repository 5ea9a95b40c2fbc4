"""Redis Cluster hash slots: CRC16/XMODEM of the key (or its hash tag) modulo 16384.

Must give the same answer as ``CLUSTER KEYSLOT``; the integration tests compare the two.
"""

from __future__ import annotations

SLOT_COUNT = 16384


def _make_table() -> tuple[int, ...]:
    # CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0, no reflection (Redis src/crc16.c).
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return tuple(table)


_TABLE = _make_table()


def crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _TABLE[((crc >> 8) ^ byte) & 0xFF]
    return crc


def hash_tag(key: bytes) -> bytes:
    """The part of the key that is hashed: the first non-empty ``{...}`` section, else the whole key."""
    start = key.find(b"{")
    if start == -1:
        return key
    end = key.find(b"}", start + 1)
    # "{}" (empty tag) or no closing brace: Redis hashes the whole key.
    if end == -1 or end == start + 1:
        return key
    return key[start + 1 : end]


def key_slot(key: str | bytes) -> int:
    raw = key.encode() if isinstance(key, str) else key
    return crc16(hash_tag(raw)) % SLOT_COUNT
