"""Avro codec: Confluent framing, schema evolution in both directions, and every kind of undecodable input."""

from __future__ import annotations

import io
import json
import shutil
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from aml_screener.screener.codec import (
    HEADER,
    EventEncoder,
    FramedReader,
    RecordEncoder,
    WithdrawalDecoder,
    amount_of,
    usd_value_of,
)
from aml_screener.screener.errors import DeadLetterReason, DecodeError
from aml_screener.screener.schemas import (
    SCREENING_DECISION,
    WITHDRAWAL_FLAGGED,
    WITHDRAWAL_REQUESTED,
    LocalSchemaRepository,
    SchemaCatalog,
    default_schema_dir,
)

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "schemas"
OLDER, NEWER, NO_EVENT_ID, AMOUNT_STRING = 101, 102, 103, 104


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> SchemaCatalog:
    """The bundled schemas plus test writer schemas under extra ids (a local id-to-file mapping)."""
    directory = tmp_path_factory.mktemp("schemas")
    for file in default_schema_dir().iterdir():
        shutil.copy(file, directory / file.name)
    registry = json.loads((directory / "registry.json").read_text())
    for schema_id, name in [
        (OLDER, "withdrawal_requested.older.avsc"),
        (NEWER, "withdrawal_requested.newer.avsc"),
        (NO_EVENT_ID, "withdrawal_requested.no_event_id.avsc"),
        (AMOUNT_STRING, "withdrawal_requested.amount_string.avsc"),
    ]:
        shutil.copy(FIXTURES / name, directory / name)
        registry["schemas"][str(schema_id)] = name
    (directory / "registry.json").write_text(json.dumps(registry))
    return SchemaCatalog(directory)


@pytest.fixture(scope="module")
def decoder(catalog: SchemaCatalog) -> WithdrawalDecoder:
    return WithdrawalDecoder(LocalSchemaRepository(catalog), catalog, max_message_bytes=4096)


def event(**overrides: object) -> dict:
    base: dict[str, object] = {
        "event_id": "e-1",
        "exchange_id": "bithumb-kr",
        "account_id": "acct-1",
        "asset": "USDT",
        "network": "tron",
        "destination_address": "TUCsTq7TofTCJRRoHk6RvhMoS2mJLm5Yzq",
        "destination_tag": None,
        "amount": Decimal("1234.5"),
        "usd_value": Decimal("1234.50"),
        "requested_at": 1_727_000_000_123,
        "metadata": {"channel": "app"},
    }
    base.update(overrides)
    return base


def encode_with(catalog: SchemaCatalog, schema_id: int, record: dict) -> bytes:
    """Encode as a producer using writer schema `schema_id` would (full logical types)."""
    schema = parse_schema(catalog.by_id(schema_id).schema, {})
    stream = io.BytesIO()
    stream.write(HEADER.pack(0, schema_id))
    schemaless_writer(stream, schema, record)
    return stream.getvalue()


def current_encoder(catalog: SchemaCatalog) -> EventEncoder:
    entry = catalog.current(WITHDRAWAL_REQUESTED)
    return EventEncoder(entry.schema, entry.schema_id)


def test_round_trip_current_schema_keeps_every_field(catalog, decoder):
    value = current_encoder(catalog).encode(event())
    assert value[:5] == HEADER.pack(0, 1), "Confluent framing: magic 0 + 4-byte big-endian schema id"
    schema_id, decoded = decoder.decode(value)
    assert schema_id == 1
    assert decoded["event_id"] == "e-1"
    assert decoded["destination_address"] == "TUCsTq7TofTCJRRoHk6RvhMoS2mJLm5Yzq"
    assert amount_of(decoded) == Decimal("1234.5")
    assert usd_value_of(decoded) == Decimal("1234.50")
    assert decoded["requested_at"] == 1_727_000_000_123
    assert decoded["metadata"] == {"channel": "app"}


def test_older_writer_decodes_into_current_reader_with_defaults(catalog, decoder):
    older = {k: v for k, v in event().items() if k not in ("destination_tag", "usd_value", "metadata")}
    schema_id, decoded = decoder.decode(encode_with(catalog, OLDER, older))
    assert schema_id == OLDER
    assert decoded["event_id"] == "e-1"
    assert decoded["destination_tag"] is None
    assert decoded["usd_value"] is None
    assert decoded["metadata"] is None
    assert amount_of(decoded) == Decimal("1234.5")


def test_newer_writer_decodes_into_current_reader_ignoring_unknown_fields(catalog, decoder):
    newer = event(travel_rule_id="tr-9", risk_hints=["vip"], destination_tag="memo-1")
    _, decoded = decoder.decode(encode_with(catalog, NEWER, newer))
    assert "travel_rule_id" not in decoded
    assert "risk_hints" not in decoded
    assert decoded["destination_tag"] == "memo-1"
    assert decoded["network"] == "tron"
    assert decoded["asset"] == "USDT"


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda v: v[:-3], DeadLetterReason.TRUNCATED),
        (lambda v: v[:3], DeadLetterReason.TRUNCATED),
        (lambda v: b"\x01" + v[1:], DeadLetterReason.BAD_MAGIC),
        (lambda v: b"", DeadLetterReason.BAD_MAGIC),
        (lambda v: b'{"event_id": "json?"}', DeadLetterReason.BAD_MAGIC),
        (lambda v: HEADER.pack(0, 4242) + v[5:], DeadLetterReason.UNKNOWN_SCHEMA_ID),
        (lambda v: v + b"\x00\x00", DeadLetterReason.TRAILING_BYTES),
        (lambda v: v + b"x" * 5000, DeadLetterReason.OVERSIZE),
    ],
    ids=[
        "truncated-body",
        "truncated-header",
        "bad-magic",
        "empty",
        "json",
        "unknown-id",
        "trailing",
        "oversize",
    ],
)
def test_undecodable_payloads_raise_decode_error_with_reason(catalog, decoder, mutate, reason):
    good = current_encoder(catalog).encode(event())
    with pytest.raises(DecodeError) as caught:
        decoder.decode(mutate(good))
    assert caught.value.reason is reason
    assert caught.value.detail


def test_missing_required_field_is_named(catalog, decoder):
    record = {k: v for k, v in event().items() if k != "event_id"}
    with pytest.raises(DecodeError) as caught:
        decoder.decode(encode_with(catalog, NO_EVENT_ID, record))
    assert caught.value.reason is DeadLetterReason.MISSING_REQUIRED_FIELD
    assert "event_id" in caught.value.detail


def test_wrong_type_is_reported(catalog, decoder):
    record = {
        k: v for k, v in event(amount="12.5").items() if k in {f["name"] for f in catalog.by_id(104).schema["fields"]}
    }
    with pytest.raises(DecodeError) as caught:
        decoder.decode(encode_with(catalog, AMOUNT_STRING, record))
    assert caught.value.reason is DeadLetterReason.WRONG_TYPE


class _WriterSchemas:
    """Writer schemas by id on top of the catalog (what a registry would answer)."""

    def __init__(self, catalog: SchemaCatalog, schemas: dict[int, Any]) -> None:
        self.catalog, self.schemas = catalog, schemas

    def writer_schema(self, schema_id: int) -> Any:
        return self.schemas.get(schema_id) or self.catalog.by_id(schema_id).schema

    def output_schema_id(self, subject: str, schema: Any) -> int:
        raise NotImplementedError


def _frame(schema: Any, schema_id: int, datum: Any) -> bytes:
    stream = io.BytesIO()
    stream.write(HEADER.pack(0, schema_id))
    schemaless_writer(stream, parse_schema(schema, {}), datum)
    return stream.getvalue()


def test_writer_schemas_that_are_not_a_plain_record_are_decided_or_dead_lettered(catalog):
    """A union around the record is valid Avro the reader resolves; a primitive writer is not a withdrawal. Neither
    may raise anything but DecodeError (an AttributeError used to block the partition)."""
    record = catalog.current(WITHDRAWAL_REQUESTED).schema
    nullable, primitive = ["null", record], "string"
    decoder = WithdrawalDecoder(_WriterSchemas(catalog, {201: nullable, 202: primitive}), catalog, 4096)
    _, decoded = decoder.decode(_frame(nullable, 201, event()))
    assert decoded["event_id"] == "e-1" and amount_of(decoded) == Decimal("1234.5")
    with pytest.raises(DecodeError) as caught:
        decoder.decode(_frame(nullable, 201, None))  # the null branch: nothing to screen
    assert caught.value.reason is DeadLetterReason.WRONG_TYPE
    with pytest.raises(DecodeError) as caught:
        decoder.decode(_frame(primitive, 202, "e-1"))
    assert caught.value.reason is DeadLetterReason.WRONG_TYPE
    assert "'string', not a record" in caught.value.detail


def test_garbage_body_is_malformed_not_a_crash(catalog, decoder):
    value = HEADER.pack(0, 1) + b"\x02\xff\xfe" + b"\x00" * 10
    with pytest.raises(DecodeError) as caught:
        decoder.decode(value)
    assert caught.value.reason in (DeadLetterReason.MALFORMED_AVRO, DeadLetterReason.TRUNCATED)


def test_empty_event_id_is_invalid(catalog, decoder):
    with pytest.raises(DecodeError) as caught:
        decoder.decode(current_encoder(catalog).encode(event(event_id="")))
    assert caught.value.reason is DeadLetterReason.INVALID_FIELD


def test_tombstone_is_dead_lettered(decoder):
    with pytest.raises(DecodeError) as caught:
        decoder.decode(None)
    assert caught.value.reason is DeadLetterReason.NULL_VALUE


def test_outputs_are_framed_and_decode_with_the_registry_schema(catalog):
    repository = LocalSchemaRepository(catalog)
    decision_entry = catalog.current(SCREENING_DECISION)
    encoder = RecordEncoder(decision_entry.schema, repository.output_schema_id("x-value", decision_entry.schema))
    decision = {
        "decision_id": "d",
        "event_id": "e-1",
        "exchange_id": "x",
        "asset": "ETH",
        "network": "ethereum",
        "decision": "FLAGGED",
        "reason": None,
        "chain_family": "evm",
        "address_key": "evm:0x098b716b8aaf21512996dc57eb0615e2383e2f96",
        "severity": "critical",
        "matches": [
            {
                "list": "ofac-sdn",
                "category": "sanctions",
                "source": "sdn",
                "entry_id": "27307",
                "entry_name": "Lazarus Group",
                "programs": ["DPRK3"],
                "listed_asset": "ETH",
                "listed_address": "0x098B716B8Aaf21512996dC57EB0615e2383E2f96",
                "published_at": None,
            }
        ],
        "watchlist_version": "v1",
        "source": {"topic": "t", "partition": 1, "offset": 7, "schema_id": 1},
        "timings": {
            "requested_at": 1,
            "event_timestamp": 2,
            "decided_at": 3,
            "batch_size": 1,
            "decode_us": 1,
            "normalize_us": 1,
            "lookup_us": 1,
        },
        "screener": "test",
    }
    value = encoder.encode(decision)
    schema_id, decoded = FramedReader(repository).decode(value)
    assert schema_id == decision_entry.schema_id == 8
    assert decoded["matches"][0]["entry_name"] == "Lazarus Group"
    assert decoded["decision"] == "FLAGGED"


def test_catalog_schemas_are_self_contained_and_documented():
    catalog = SchemaCatalog()
    for entry in catalog.entries():
        parse_schema(entry.schema, {})  # no outside named types needed
        assert entry.schema.get("doc")
        assert entry.file.startswith(entry.fullname) and ".v" in entry.file
        for field in entry.schema["fields"]:
            assert field.get("doc"), f"{entry.fullname}.{field['name']} lacks a doc"
    flagged = catalog.current(WITHDRAWAL_FLAGGED).schema
    withdrawal = next(f for f in flagged["fields"] if f["name"] == "withdrawal")["type"]
    assert withdrawal["name"] == WITHDRAWAL_REQUESTED, "flagged events embed the full withdrawal"


def test_decision_v2_and_v1_readers_and_writers_stay_compatible(catalog):
    """Downstream consumers of decisions on v1 keep working (v2 only adds fields with defaults), and v1 records
    still read as v2."""
    v1, v2 = (parse_schema(catalog.by_id(i).schema, {}) for i in (2, 4))
    record = {
        "decision_id": "d",
        "event_id": "e",
        "exchange_id": "x",
        "asset": "ETH",
        "network": "ethereum",
        "decision": "CLEAR",
        "matches": [],
        "source": {"topic": "t", "partition": 0, "offset": 1, "schema_id": 1},
        "timings": {
            "requested_at": 1,
            "event_timestamp": 1,
            "decided_at": 1,
            "batch_size": 1,
            "decode_us": 0,
            "normalize_us": 0,
            "lookup_us": 0,
        },
        "screener": "s",
    }
    for writer, reader in ((v2, v1), (v1, v2)):
        stream = io.BytesIO()
        schemaless_writer(stream, writer, record)
        stream.seek(0)
        decoded: Any = schemaless_reader(stream, writer, reader)
        assert decoded["decision"] == "CLEAR"
        if reader is v2:
            assert decoded["allowlisted"] == [] and decoded["overridden"] == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("destination_address", "0x" + "a" * 61_438),
        ("account_id", "acct-" + "9" * 60_000),
        ("event_id", "e" * 257),
        ("network", "tron" * 17),
        ("asset", "U" * 33),
        ("destination_tag", "m" * 257),
        ("exchange_id", "x" * 4_000),
    ],
    ids=lambda item: item if isinstance(item, str) and len(item) < 32 else f"{len(item)}-chars",
)
def test_over_long_strings_in_a_small_record_are_dead_lettered_before_screening(catalog, field, value):
    # 64 KB records are allowed in production; a 60 KB address fits in one and must still be refused by name.
    decoder = WithdrawalDecoder(LocalSchemaRepository(catalog), catalog, max_message_bytes=65_536)
    with pytest.raises(DecodeError) as caught:
        decoder.decode(current_encoder(catalog).encode(event(**{field: value})))
    assert caught.value.reason is DeadLetterReason.FIELD_TOO_LONG
    assert caught.value.detail.startswith(f"{field} has {len(value)} characters, limit ")
    assert value[:40] not in caught.value.detail, "the detail names the field, it does not echo its content"


def test_strings_at_their_limit_and_real_long_addresses_still_decode(catalog):
    from aml_screener.screener.codec import FIELD_MAX_CHARS

    decoder = WithdrawalDecoder(LocalSchemaRepository(catalog), catalog, max_message_bytes=65_536)
    at_limit = {name: "a" * limit for name, limit in FIELD_MAX_CHARS.items()}
    _, decoded = decoder.decode(current_encoder(catalog).encode(event(**at_limit)))
    assert decoded["account_id"] == "a" * FIELD_MAX_CHARS["account_id"]
    # A Monero integrated address (106 characters, the longest format the screener knows) is nowhere near a limit.
    monero = "4" + "B" * 105
    assert decoder.decode(current_encoder(catalog).encode(event(network="monero", destination_address=monero)))


@pytest.mark.parametrize(
    "metadata",
    [
        {f"k{i}": "v" for i in range(65)},
        {"k" * 257: "v"},
        {"note": "v" * 1025},
    ],
    ids=["too-many-entries", "long-key", "long-value"],
)
def test_over_large_metadata_is_dead_lettered(catalog, metadata):
    decoder = WithdrawalDecoder(LocalSchemaRepository(catalog), catalog, max_message_bytes=65_536)
    with pytest.raises(DecodeError) as caught:
        decoder.decode(current_encoder(catalog).encode(event(metadata=metadata)))
    assert caught.value.reason is DeadLetterReason.FIELD_TOO_LONG
    assert caught.value.detail.startswith("metadata ")


# Python's datetime (and so fastavro's and confluent-kafka's AvroDeserializer's logical readers) spans years 1-9999.
_YEAR_10000_MS = 253_402_300_800_000
_BEFORE_YEAR_1_MS = -62_135_596_800_001


@pytest.mark.parametrize(
    ("field", "raw", "problem"),
    [
        ("requested_at", _YEAR_10000_MS, "requested_at"),
        ("requested_at", _BEFORE_YEAR_1_MS, "requested_at"),
        ("amount", (10**38).to_bytes(17, "big", signed=True), "amount"),
        ("amount", (10**38).to_bytes(16, "big", signed=True), "amount"),  # 16 bytes, but 39 digits
        ("usd_value", (10**20).to_bytes(9, "big", signed=True), "usd_value"),  # decimal(20, 2): 20 digits at most
    ],
    ids=["year-10000", "before-year-1", "amount-17-bytes", "amount-39-digits", "usd-21-digits"],
)
def test_values_a_logical_type_cannot_hold_are_dead_lettered_not_passed_on(catalog, field, raw, problem):
    """Decoding ignores logical types (fast path), but the event is copied into the outputs, where consumers read
    them with logical types: a timestamp outside datetime's range or a decimal beyond its precision would make the
    decision or flagged event undecodable downstream. Found by the poison-input property (a year-10053 timestamp)."""
    decoder = WithdrawalDecoder(LocalSchemaRepository(catalog), catalog, max_message_bytes=65_536)
    with pytest.raises(DecodeError) as caught:
        decoder.decode(current_encoder(catalog).encode(event(**{field: raw})))
    assert caught.value.reason is DeadLetterReason.INVALID_FIELD
    assert caught.value.detail.startswith(f"{problem} "), caught.value.detail


def test_values_at_the_edges_of_their_logical_types_decode(catalog):
    decoder = WithdrawalDecoder(LocalSchemaRepository(catalog), catalog, max_message_bytes=65_536)
    largest = Decimal("99999999999999999999.999999999999999999")  # 38 digits, scale 18
    edge = event(requested_at=_YEAR_10000_MS - 1, amount=largest, usd_value=Decimal("999999999999999999.99"))
    _, decoded = decoder.decode(current_encoder(catalog).encode(edge))
    assert decoded["requested_at"] == _YEAR_10000_MS - 1
    # Exact, not rounded to the default context's 28 digits (evidence and reports show this amount).
    assert amount_of(decoded) == largest and usd_value_of(decoded) == Decimal("999999999999999999.99")
    reader = FramedReader(LocalSchemaRepository(catalog))
    _, logical = reader.decode(current_encoder(catalog).encode(edge))
    assert logical["amount"] == largest and logical["requested_at"].year == 9999
