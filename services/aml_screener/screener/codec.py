"""Avro in the Confluent wire format: decode WithdrawalRequested and DepositReceived inputs, encode the outputs.

Wire format: magic byte 0, 4-byte big-endian schema id, Avro binary body. Input records may be written with
any writer schema the repository knows (older or newer versions); they are resolved into the current reader
schema. Anything that cannot be decoded raises DecodeError with a stable reason, checked *before* any Avro work
where possible (size, magic byte, header length), so hostile input costs little; string lengths are checked right
after decoding (FIELD_MAX_CHARS), before anything else is done with the record.

The hot path uses schemas without logical types (see `strip_logical_types`): decimals stay bytes and
timestamps stay integers, which is also exactly what the outputs need to carry them along unchanged.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import MAX_PREC, Context, Decimal
from typing import Any, cast

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro._read_common import SchemaResolutionError
from fastavro.schema import to_parsing_canonical_form

from aml_screener.screener.errors import DeadLetterReason, DecodeError
from aml_screener.screener.schemas import (
    DEPOSIT_RECEIVED,
    WITHDRAWAL_REQUESTED,
    Schema,
    SchemaCatalog,
    SchemaRepository,
    UnknownSchemaId,
    strip_logical_types,
)
from aml_screener.screening.addresses import MAX_UNIFIED_ADDRESS_LENGTH
from aml_screener.screening.records import DepositEvent, WithdrawalEvent

MAGIC_BYTE = 0
HEADER = struct.Struct(">bI")
HEADER_SIZE = HEADER.size

_AMOUNT_SCALE = 18
_USD_SCALE = 2
# Scaling by a power of ten is exact with enough digits; the default context (28 digits) would round an amount of
# decimal(38, 18), e.g. 12,345,678,901.123456789012345678 tokens (29 digits).
_EXACT = Context(prec=MAX_PREC)
# The range of timestamp-millis values a logical reader can turn into a datetime (Python's: years 1 to 9999; also
# confluent-kafka's AvroDeserializer, which uses fastavro).
_TIMESTAMP_MILLIS_MIN = -62_135_596_800_000  # 0001-01-01T00:00:00Z
_TIMESTAMP_MILLIS_MAX = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def frame(schema_id: int, body: bytes) -> bytes:
    return HEADER.pack(MAGIC_BYTE, schema_id) + body


def decimal_from_bytes(raw: bytes, scale: int) -> Decimal:
    """Avro decimal (big-endian two's complement unscaled integer) to Decimal."""
    return Decimal(int.from_bytes(raw, "big", signed=True)).scaleb(-scale, _EXACT)


def decimal_to_bytes(value: Decimal, scale: int) -> bytes:
    unscaled = int(value.scaleb(scale, _EXACT).to_integral_value())
    length = max(1, (unscaled.bit_length() + 8) // 8)
    return unscaled.to_bytes(length, "big", signed=True)


def amount_of(event: WithdrawalEvent | DepositEvent) -> Decimal:
    return decimal_from_bytes(event["amount"], _AMOUNT_SCALE)


def usd_value_of(event: WithdrawalEvent | DepositEvent) -> Decimal | None:
    raw = event.get("usd_value")
    return None if raw is None else decimal_from_bytes(raw, _USD_SCALE)


@dataclass(frozen=True, slots=True)
class _ReadPlan:
    writer: Any  # fastavro parsed schema
    reader: Any | None  # None when writer == reader (no resolution needed: the fast path)
    error: DecodeError | None = None  # the writer schema cannot be read as the reader schema


def _logical_signature(schema: Any) -> frozenset[tuple[str, Any]]:
    """The logical types appearing in a field type (through unions), with the decimal scale."""
    if isinstance(schema, list):
        return frozenset().union(*(_logical_signature(member) for member in schema))
    if isinstance(schema, dict) and "logicalType" in schema:
        return frozenset({(schema["logicalType"], schema.get("scale"))})
    return frozenset()


def _record_branches(writer: Any) -> list[Schema]:
    """The writer's record schemas a record reader can resolve against: the writer itself, or the record branches
    of a union (Avro resolves the branch a datum was written with). None for primitives, arrays, enums..."""
    if isinstance(writer, dict) and writer.get("type") in ("record", "error"):
        return [writer]
    if isinstance(writer, list):
        return [branch for member in writer for branch in _record_branches(member)]
    if isinstance(writer, dict) and isinstance(writer.get("type"), dict | list):
        return _record_branches(writer["type"])  # {"type": {"type": "record", ...}} wraps a schema
    return []


def _writer_kind(writer: Any) -> str:
    if isinstance(writer, dict):
        return str(writer.get("type"))
    if isinstance(writer, list):
        return "union without a record"
    return str(writer)


def _logical_mismatch(writer: Schema, reader: Schema) -> str | None:
    """Schema resolution ignores logical types (string is even promotable to bytes), so a writer sending
    `amount` as a string would be read as garbage decimal bytes. Require equal logical types per field."""
    writer_fields = {field["name"]: field["type"] for field in writer.get("fields", [])}
    for field in reader.get("fields", []):
        if field["name"] in writer_fields:
            expected = _logical_signature(field["type"])
            found = _logical_signature(writer_fields[field["name"]])
            if expected != found:
                return f"field {field['name']}: writer logical types {sorted(found)} != reader {sorted(expected)}"
    return None


_REQUIRED_NON_EMPTY = ("event_id",)

# Longest string (in characters) each field may hold; a record with a longer one is dead-lettered as
# `field_too_long` right after decoding, before normalization, the normalization cache (200,000 entries: with
# 61 KB addresses that cache alone grew by 120 MB per 2,000 records, measured) or any output. Generous: addresses
# may be Zcash unified addresses (up to MAX_UNIFIED_ADDRESS_LENGTH; others have at most 106 characters, a Monero
# integrated address), XRP/XLM/EOS tags and memos fit in 256.
FIELD_MAX_CHARS: dict[str, int] = {
    "event_id": 256,
    "exchange_id": 256,
    "account_id": 256,
    "asset": 32,
    "network": 64,
    "destination_address": MAX_UNIFIED_ADDRESS_LENGTH,
    "destination_tag": 256,
    "tx_hash": 256,
    "receiving_address": MAX_UNIFIED_ADDRESS_LENGTH,
}
# A deposit's source addresses: at most this many (a large consolidation transaction has hundreds of inputs), each
# at most an address long.
SOURCE_ADDRESSES_MAX = 2_000
# metadata (carried into flagged events for analysts): at most this many entries, keys and values this long.
METADATA_MAX_ENTRIES = 64
METADATA_KEY_MAX_CHARS = 256
METADATA_VALUE_MAX_CHARS = 1024
_LENGTH_CHECKED = tuple(FIELD_MAX_CHARS.items())


def _check_lengths(record: dict[str, Any]) -> None:
    for name, limit in _LENGTH_CHECKED:
        value = record.get(name)
        if value is not None and len(value) > limit:
            raise DecodeError(DeadLetterReason.FIELD_TOO_LONG, f"{name} has {len(value)} characters, limit {limit}")
    sources = record.get("source_addresses")
    if sources is not None:
        if not sources:
            raise DecodeError(DeadLetterReason.INVALID_FIELD, "source_addresses is empty")
        if len(sources) > SOURCE_ADDRESSES_MAX:
            detail = f"source_addresses has {len(sources)} entries, limit {SOURCE_ADDRESSES_MAX}"
            raise DecodeError(DeadLetterReason.FIELD_TOO_LONG, detail)
        longest = max(len(address) for address in sources)
        if longest > MAX_UNIFIED_ADDRESS_LENGTH:
            detail = f"a source address has {longest} characters, limit {MAX_UNIFIED_ADDRESS_LENGTH}"
            raise DecodeError(DeadLetterReason.FIELD_TOO_LONG, detail)
    metadata = record.get("metadata")
    if metadata:
        if len(metadata) > METADATA_MAX_ENTRIES:
            detail = f"metadata has {len(metadata)} entries, limit {METADATA_MAX_ENTRIES}"
            raise DecodeError(DeadLetterReason.FIELD_TOO_LONG, detail)
        for key, value in metadata.items():
            if len(key) > METADATA_KEY_MAX_CHARS or len(value) > METADATA_VALUE_MAX_CHARS:
                detail = (
                    f"metadata entry with a {len(key)}-character key and a {len(value)}-character value, limits "
                    f"{METADATA_KEY_MAX_CHARS} and {METADATA_VALUE_MAX_CHARS}"
                )
                raise DecodeError(DeadLetterReason.FIELD_TOO_LONG, detail)


@dataclass(frozen=True, slots=True)
class _LogicalCheck:
    """A top-level field of the reader schema with a logical type whose raw value may not fit it. Decoding skips
    logical types (the fast path), but the event is copied into decisions and flagged events, and their consumers
    read them with logical types: a value the type cannot hold would make those outputs undecodable downstream."""

    field: str
    logical_type: str
    precision: int = 0  # decimals

    def problem(self, value: Any) -> str | None:
        if value is None:
            return None
        if self.logical_type == "timestamp-millis":
            if _TIMESTAMP_MILLIS_MIN <= value <= _TIMESTAMP_MILLIS_MAX:
                return None
            return f"{self.field} {value} is not a time between years 1 and 9999 (timestamp-millis)"
        if abs(int.from_bytes(value, "big", signed=True)) < 10**self.precision:
            return None
        return f"{self.field} has more than {self.precision} digits (its decimal precision)"


def _logical_checks(reader: Schema) -> tuple[_LogicalCheck, ...]:
    checks = []
    for field in reader.get("fields", []):
        members = field["type"] if isinstance(field["type"], list) else [field["type"]]
        for member in members:
            if not isinstance(member, dict):
                continue
            if member.get("logicalType") == "timestamp-millis":
                checks.append(_LogicalCheck(field["name"], "timestamp-millis"))
            elif member.get("logicalType") == "decimal":
                checks.append(_LogicalCheck(field["name"], "decimal", int(member["precision"])))
    return tuple(checks)


class EventDecoder:
    """Turns input record values into raw dicts of one input record type (the current version of `reader`, any
    writer schema resolved into it), or raises DecodeError."""

    reader_name = WITHDRAWAL_REQUESTED

    def __init__(self, repository: SchemaRepository, catalog: SchemaCatalog, max_message_bytes: int) -> None:
        self._repository = repository
        self._reader_full = catalog.current(self.reader_name).schema
        self._reader = parse_schema(strip_logical_types(self._reader_full), {})
        self._reader_canonical = to_parsing_canonical_form(self._reader)
        self._logical_checks = _logical_checks(self._reader_full)
        self._plans: dict[int, _ReadPlan] = {}
        self.max_message_bytes = max_message_bytes

    def _plan(self, schema_id: int) -> _ReadPlan:
        plan = self._plans.get(schema_id)
        if plan is not None:
            return plan
        try:
            writer_json: Any = self._repository.writer_schema(schema_id)
        except UnknownSchemaId:
            raise DecodeError(DeadLetterReason.UNKNOWN_SCHEMA_ID, f"no schema with id {schema_id}") from None
        try:
            writer = parse_schema(strip_logical_types(writer_json), {})
        except Exception as exc:  # noqa: BLE001 - any unparsable registry schema makes the record undecodable
            raise DecodeError(DeadLetterReason.UNKNOWN_SCHEMA_ID, f"schema {schema_id} unusable: {exc}") from None
        same = to_parsing_canonical_form(writer) == self._reader_canonical
        plan = _ReadPlan(
            writer=writer, reader=None if same else self._reader, error=self._unreadable(schema_id, writer_json)
        )
        self._plans[schema_id] = plan
        return plan

    def _unreadable(self, schema_id: int, writer_json: Any) -> DecodeError | None:
        """Why records of this writer schema can never be read as the reader schema (None: they may be).

        Any writer schema is accepted here (a record, a union such as ["null", WithdrawalRequested], a primitive):
        resolution itself (fastavro, per record) decides about the rest, e.g. a null branch written."""
        branches = _record_branches(writer_json)
        if not branches:
            detail = (
                f"writer schema {schema_id} is a {_writer_kind(writer_json)!r}, not a record: it cannot be read as "
                f"{self.reader_name}"
            )
            return DecodeError(DeadLetterReason.WRONG_TYPE, detail[:500])
        for branch in branches:
            mismatch = _logical_mismatch(branch, self._reader_full)  # canonical forms omit logical types
            if mismatch:
                detail = f"writer schema {schema_id} cannot be read as {self.reader_name}: {mismatch}"
                return DecodeError(DeadLetterReason.WRONG_TYPE, detail)
        return None

    def decode_raw(self, value: bytes | None) -> tuple[int, dict[str, Any]]:
        """Return (writer schema id, record). Raises DecodeError; SchemaSourceUnavailable propagates."""
        if value is None:
            raise DecodeError(DeadLetterReason.NULL_VALUE, "record has no value (tombstone)")
        size = len(value)
        if size > self.max_message_bytes:
            raise DecodeError(DeadLetterReason.OVERSIZE, f"{size} bytes exceeds the limit of {self.max_message_bytes}")
        if size == 0 or value[0] != MAGIC_BYTE:
            first = "empty value" if size == 0 else f"first byte is {value[0]:#04x}"
            raise DecodeError(DeadLetterReason.BAD_MAGIC, f"not Confluent wire format ({first}, expected 0x00)")
        if size < HEADER_SIZE:
            raise DecodeError(DeadLetterReason.TRUNCATED, f"{size} bytes is shorter than the 5-byte header")
        schema_id = int.from_bytes(value[1:5], "big")
        plan = self._plans.get(schema_id) or self._plan(schema_id)
        if plan.error is not None:
            raise plan.error
        stream = io.BytesIO(value)
        stream.seek(HEADER_SIZE)
        try:
            record = cast("dict[str, Any]", schemaless_reader(stream, plan.writer, plan.reader))
        except EOFError:
            raise DecodeError(DeadLetterReason.TRUNCATED, "Avro body ends before the record does") from None
        except SchemaResolutionError as exc:
            message = str(exc)
            reason = (
                DeadLetterReason.MISSING_REQUIRED_FIELD
                if message.startswith("No default value")
                else DeadLetterReason.WRONG_TYPE
            )
            detail = f"writer schema {schema_id} cannot be read as {self.reader_name}: {message}"
            raise DecodeError(reason, detail) from None
        except Exception as exc:  # noqa: BLE001 - fastavro raises many types on garbage; all mean "malformed"
            raise DecodeError(DeadLetterReason.MALFORMED_AVRO, f"{type(exc).__name__}: {exc}") from None
        if stream.tell() != size:
            raise DecodeError(DeadLetterReason.TRAILING_BYTES, f"{size - stream.tell()} bytes left after the record")
        self._validate(record)
        return schema_id, record

    def _validate(self, record: dict[str, Any]) -> None:
        """What Avro cannot say: required strings not empty, sizes bounded, values their logical types can hold."""
        for field in _REQUIRED_NON_EMPTY:
            if not record[field]:
                raise DecodeError(DeadLetterReason.INVALID_FIELD, f"{field} is empty")
        _check_lengths(record)
        for check in self._logical_checks:
            problem = check.problem(record[check.field])
            if problem is not None:
                raise DecodeError(DeadLetterReason.INVALID_FIELD, problem)


class WithdrawalDecoder(EventDecoder):
    """WithdrawalRequested inputs."""

    reader_name = WITHDRAWAL_REQUESTED

    def decode(self, value: bytes | None) -> tuple[int, WithdrawalEvent]:
        schema_id, record = self.decode_raw(value)
        # Read into the reader schema (Avro resolution), so it has exactly the fields of WithdrawalEvent.
        return schema_id, cast("WithdrawalEvent", record)


class DepositDecoder(EventDecoder):
    """DepositReceived inputs."""

    reader_name = DEPOSIT_RECEIVED

    def decode(self, value: bytes | None) -> tuple[int, DepositEvent]:
        schema_id, record = self.decode_raw(value)
        return schema_id, cast("DepositEvent", record)


class RecordEncoder:
    """Encodes records of one output schema, framed with its schema id."""

    def __init__(self, schema: Schema, schema_id: int) -> None:
        self.schema_id = schema_id
        self._parsed = parse_schema(strip_logical_types(schema), {})
        self._header = HEADER.pack(MAGIC_BYTE, schema_id)

    def encode(self, record: Mapping[str, object]) -> bytes:
        stream = io.BytesIO()
        stream.write(self._header)
        schemaless_writer(stream, self._parsed, record)
        return stream.getvalue()


class EventEncoder(RecordEncoder):
    """Encodes input events, WithdrawalRequested or DepositReceived (for producers: the demo generator, tests,
    benchmarks). Accepts friendly values (Decimal amounts, int or datetime timestamps) and converts them to the raw
    form."""

    def encode(self, record: Mapping[str, object]) -> bytes:
        raw: dict[str, Any] = dict(record)
        if isinstance(raw.get("amount"), Decimal):
            raw["amount"] = decimal_to_bytes(raw["amount"], _AMOUNT_SCALE)
        if isinstance(raw.get("usd_value"), Decimal):
            raw["usd_value"] = decimal_to_bytes(raw["usd_value"], _USD_SCALE)
        for name in ("requested_at", "observed_at"):
            moment = raw.get(name)
            if moment is not None and not isinstance(moment, int):
                raw[name] = int(moment.timestamp() * 1000)
        return super().encode(raw)


class FramedReader:
    """Decodes any framed record by its writer schema (for consumers of our outputs: tests, the demo, tools).

    `logical_types=False` keeps decimals as bytes and timestamps as integers, which is several times faster."""

    def __init__(self, repository: SchemaRepository, *, logical_types: bool = True) -> None:
        self.repository = repository
        self.logical_types = logical_types
        self._parsed: dict[int, Any] = {}

    def decode(self, value: bytes) -> tuple[int, dict[str, Any]]:
        magic, schema_id = HEADER.unpack_from(value)
        if magic != MAGIC_BYTE:
            raise ValueError("not Confluent wire format")
        schema = self._parsed.get(schema_id)
        if schema is None:
            writer = self.repository.writer_schema(schema_id)
            schema = parse_schema(writer if self.logical_types else strip_logical_types(writer), {})
            self._parsed[schema_id] = schema
        record = schemaless_reader(io.BytesIO(value[HEADER_SIZE:]), schema, None)
        return schema_id, cast("dict[str, Any]", record)
