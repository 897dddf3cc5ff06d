"""Hostile payloads: strategies for hypothesis and a seeded mutator for the stream scenario. Both start from real
WithdrawalRequested (or DepositReceived) records and break them the ways a buggy or hostile producer does:
truncation, flipped bytes, spliced garbage, wrong magic byte or schema id, huge length prefixes, bytes that are no
Avro at all."""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from aml_screener.screener.codec import EventEncoder
from aml_screener.screener.schemas import DEPOSIT_RECEIVED, WITHDRAWAL_REQUESTED
from tests.pipeline_support import CATALOG

_ENTRY = CATALOG.current(WITHDRAWAL_REQUESTED)
ENCODER = EventEncoder(_ENTRY.schema, _ENTRY.schema_id)
_DEPOSIT = CATALOG.current(DEPOSIT_RECEIVED)
DEPOSIT_ENCODER = EventEncoder(_DEPOSIT.schema, _DEPOSIT.schema_id)


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


def valid_deposit_payload(
    event_id: str, sources: tuple[str, ...] = ("bc1qa5wkgaew2dkv56kfvj49j0av5nml45x9ek9hz6",)
) -> bytes:
    return DEPOSIT_ENCODER.encode(
        {
            "event_id": event_id,
            "exchange_id": "upbit-kr",
            "account_id": "acct-1",
            "asset": "BTC",
            "network": "bitcoin",
            "tx_hash": "ab" * 32,
            "output_index": 1,
            "receiving_address": "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
            "source_addresses": list(sources),
            "amount": Decimal("0.25"),
            "usd_value": None,
            "observed_at": 1_700_000_000_000,
            "confirmations": 3,
            "metadata": None,
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


def payloads(*, deposits: bool = False) -> st.SearchStrategy[bytes]:
    """Anything a producer could send: raw bytes, framed garbage, and real records (withdrawals, or deposits)
    broken by `mutate`."""
    framed = st.builds(
        lambda sid, body: b"\x00" + struct.pack(">I", sid) + body, st.integers(0, 2**32 - 1), st.binary()
    )
    valid = valid_deposit_payload if deposits else valid_payload
    mutated = st.builds(
        lambda event_id, seed: mutate(valid(event_id), random.Random(seed)),
        st.text(min_size=1, max_size=40),
        st.integers(0, 2**32),
    )
    return st.one_of(st.binary(max_size=600), framed, mutated)


# --- generated writer schemas -------------------------------------------------------------------------------------
# A producer may write with any schema registered under the input subject: an older or newer version, a union
# around the record, a primitive, one whose named types live in other subjects (Confluent schema references).
# `writer_cases()` draws such a schema, a value written with it, and whether the reader schema can resolve it
# (known by construction, not by asking the code under test).

_READER = _ENTRY.schema  # WithdrawalRequested, self-contained
_PRIMITIVE_VALUES = {"null": None, "boolean": True, "int": 7, "long": 2**40, "float": 1.5, "double": 2.5}


@dataclass(frozen=True)
class WriterCase:
    """A writer schema (JSON), schemas it references by name (full name -> JSON, as a registry's `references`
    resolve), a datum written with it, and whether a WithdrawalRequested reader must decide it."""

    schema: Any
    references: dict[str, Any]
    datum: Any
    resolvable: bool
    what: str


def _base_datum(event_id: str) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "exchange_id": "upbit-kr",
        "account_id": "acct-1",
        "asset": "USDT",
        "network": "ethereum",
        "destination_address": "0x52908400098527886e0f7030069857d2e4169ee7",
        "destination_tag": None,
        "amount": Decimal("12.5"),
        "usd_value": Decimal("12.50"),
        "requested_at": 1_700_000_000_000,
        "metadata": {"channel": "api"},
    }


@st.composite
def writer_cases(draw: st.DrawFn) -> WriterCase:
    event_id = draw(st.text(min_size=1, max_size=20))
    fields = [dict(field) for field in _READER["fields"]]
    datum = _base_datum(event_id)
    resolvable = True
    what: list[str] = []
    references: dict[str, Any] = {}
    # Evolution in both directions: an older writer lacks fields the reader has defaults for; a newer one has
    # fields the reader does not know (of any type, also a named record type defined in another subject).
    for field in list(fields):
        if "default" in field and draw(st.booleans()):
            fields.remove(field)
            datum.pop(field["name"])
            what.append(f"-{field['name']}")
    if draw(st.booleans()):
        required = [field for field in fields if "default" not in field]
        dropped = draw(st.sampled_from(required))
        fields.remove(dropped)
        datum.pop(dropped["name"])
        resolvable = False
        what.append(f"-required {dropped['name']}")
    for index in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["string", "long", "array", "map", "reference", "union"]))
        name = f"extra_{index}"
        if kind == "string":
            fields.append({"name": name, "type": "string"})
            datum[name] = draw(st.text(max_size=10))
        elif kind == "long":
            fields.append({"name": name, "type": "long", "default": 0})
            datum[name] = draw(st.integers(-(2**63), 2**63 - 1))
        elif kind == "array":
            fields.append({"name": name, "type": {"type": "array", "items": "string"}})
            datum[name] = draw(st.lists(st.text(max_size=5), max_size=3))
        elif kind == "map":
            fields.append({"name": name, "type": {"type": "map", "values": "long"}})
            datum[name] = {"k": 1}
        elif kind == "reference":
            full = f"com.example.exchange.ClientInfo{index}"
            references[full] = {
                "type": "record",
                "name": full.rpartition(".")[2],
                "namespace": "com.example.exchange",
                "fields": [{"name": "ip", "type": "string"}, {"name": "device", "type": ["null", "string"]}],
            }
            fields.append({"name": name, "type": full})
            datum[name] = {"ip": "10.0.0.1", "device": None}
        else:
            fields.append({"name": name, "type": ["null", "string", "long"], "default": None})
            datum[name] = draw(st.sampled_from([None, "x", 5]))
        what.append(f"+{kind}")
    fields = draw(st.permutations(fields))  # field order is not part of resolution
    # Promotions the reader must accept (string <-> bytes is allowed by Avro, but not for logical-type fields).
    if draw(st.booleans()):
        for field in fields:
            if field["name"] == "exchange_id":
                field["type"] = "bytes"
                datum["exchange_id"] = datum["exchange_id"].encode()
                what.append("exchange_id as bytes")
    record = {
        "type": "record",
        "name": "WithdrawalRequested",
        "namespace": "aml_screener.events",
        "fields": fields,
    }
    shape = draw(st.sampled_from(["record", "nullable", "nullable-null", "union-string", "primitive"]))
    what.append(shape)
    if shape == "record":
        return WriterCase(record, references, datum, resolvable, " ".join(what))
    if shape == "nullable":  # ["null", WithdrawalRequested], the record branch written
        return WriterCase(["null", record], references, datum, resolvable, " ".join(what))
    if shape == "nullable-null":  # the same union, its null branch written: nothing to decide
        return WriterCase([record, "null"], references, None, False, " ".join(what))
    if shape == "union-string":
        return WriterCase(["string", record], references, datum, resolvable, " ".join(what))
    primitive = draw(st.sampled_from(["string", *sorted(_PRIMITIVE_VALUES)]))
    value = draw(st.text(max_size=10)) if primitive == "string" else _PRIMITIVE_VALUES[primitive]
    return WriterCase(primitive, {}, value, False, " ".join(what))
