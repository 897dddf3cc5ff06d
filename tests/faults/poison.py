"""Hostile payloads: strategies for hypothesis and a seeded mutator for the stream scenario. Both start from real
WithdrawalRequested records and break them the ways a buggy or hostile producer does: truncation, flipped bytes,
spliced garbage, wrong magic byte or schema id, huge length prefixes, bytes that are no Avro at all."""

from __future__ import annotations

import random
import struct
from decimal import Decimal

from hypothesis import strategies as st

from aml_screener.screener.codec import WithdrawalEncoder
from aml_screener.screener.schemas import WITHDRAWAL_REQUESTED
from tests.pipeline_support import CATALOG

_ENTRY = CATALOG.current(WITHDRAWAL_REQUESTED)
ENCODER = WithdrawalEncoder(_ENTRY.schema, _ENTRY.schema_id)


def valid_payload(event_id: str, address: str = "0x52908400098527886e0f7030069857d2e4169ee7") -> bytes:
    return ENCODER.encode(
        {
            "event_id": event_id,
            "exchange_id": "upbit-kr",
            "account_id": "acct-1",
            "asset": "USDT",
            "network": "ethereum",
            "destination_address": address,
            "destination_tag": None,
            "amount": Decimal("12.5"),
            "usd_value": Decimal("12.50"),
            "requested_at": 1_700_000_000_000,
            "metadata": {"channel": "api"},
        }
    )


def _varint(value: int) -> bytes:
    """Avro zig-zag varint (for hostile length prefixes)."""
    value = (value << 1) ^ (value >> 63)
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def mutate(payload: bytes, rng: random.Random) -> bytes:  # noqa: PLR0911 - one return per kind of damage
    kind = rng.randrange(8)
    if kind == 0:  # truncated anywhere
        return payload[: rng.randrange(len(payload))]
    if kind == 1:  # a few flipped bytes
        data = bytearray(payload)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return bytes(data)
    if kind == 2:  # garbage spliced in
        at = rng.randrange(len(payload))
        return payload[:at] + rng.randbytes(rng.randint(1, 64)) + payload[at:]
    if kind == 3:  # wrong magic byte
        return bytes([rng.randint(1, 255)]) + payload[1:]
    if kind == 4:  # unknown schema id
        return payload[:1] + struct.pack(">I", rng.randint(1000, 2**31)) + payload[5:]
    if kind == 5:  # a huge length prefix right after the header (the first field is a string)
        return payload[:5] + _varint(rng.choice([2**31, 2**40, -5])) + payload[6:]
    if kind == 6:  # trailing bytes
        return payload + rng.randbytes(rng.randint(1, 16))
    return rng.randbytes(rng.randint(0, 300))  # no Avro at all


def payloads() -> st.SearchStrategy[bytes]:
    """Anything a producer could send: raw bytes, framed garbage, and real records broken by `mutate`."""
    framed = st.builds(
        lambda sid, body: b"\x00" + struct.pack(">I", sid) + body, st.integers(0, 2**32 - 1), st.binary()
    )
    mutated = st.builds(
        lambda event_id, seed: mutate(valid_payload(event_id), random.Random(seed)),
        st.text(min_size=1, max_size=40),
        st.integers(0, 2**32),
    )
    return st.one_of(st.binary(max_size=600), framed, mutated)
