"""Poison input, property-based (hypothesis), through the real decode path (WithdrawalDecoder + BatchScreener with
the bundled schemas): whatever the bytes, the pipeline neither crashes nor loses the record. A record is either
screened (exactly one decision) or dead-lettered with a stable reason, a bounded detail and its original bytes."""

from __future__ import annotations

import io
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer
from hypothesis import HealthCheck, given, settings

from aml_screener.screener.codec import HEADER, FramedReader, WithdrawalDecoder
from aml_screener.screener.errors import DeadLetterReason
from aml_screener.screener.lookup import LookupResult
from aml_screener.screener.pipeline import DLQ_HEADER_DETAIL, DLQ_HEADER_REASON
from aml_screener.screener.schemas import inline_named_types
from tests.faults.poison import WriterCase, payloads, writer_cases
from tests.pipeline_support import CATALOG, DEPOSIT_TOPIC, REPOSITORY, Record, batch_screener

pytestmark = pytest.mark.faults

READER = FramedReader(REPOSITORY)
SCREENER = batch_screener(lambda keys: LookupResult("v-fuzz", 1, {}, 0.0), instance_id="fuzz")
REASONS = {reason.value for reason in DeadLetterReason}


@settings(max_examples=1_500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads())
def test_any_payload_is_screened_or_dead_lettered_with_a_reason_never_a_crash(payload):
    _screened_or_dead_lettered(Record("withdrawals.requested", 0, 7, 1_700_000_000_000, b"key", payload), "dlq")


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads(deposits=True))
def test_any_deposit_payload_is_screened_or_dead_lettered_with_a_reason_never_a_crash(payload):
    _screened_or_dead_lettered(Record(DEPOSIT_TOPIC, 0, 7, 1_700_000_000_000, b"key", payload), "deposits.dlq")


def _screened_or_dead_lettered(record: Record, dead_letter_topic: str) -> None:
    payload = record.value
    completed = SCREENER.complete(SCREENER.prepare([record]))
    decisions = [output for output in completed.outputs if output.topic == "decisions"]
    dead = [output for output in completed.outputs if output.topic == dead_letter_topic]
    assert len(decisions) + len(dead) == 1, "exactly one outcome per record: nothing lost, nothing doubled"
    if dead:
        headers = dict(dead[0].headers or [])
        assert headers[DLQ_HEADER_REASON].decode() in REASONS
        assert 0 < len(headers[DLQ_HEADER_DETAIL]) <= 2_048, "a reason a human can read, bounded in size"
        assert dead[0].value == payload, "the original bytes are kept for replay"
    else:
        _schema_id, decision = READER.decode(decisions[0].value)
        assert decision["decision"] in {"CLEAR", "UNSCREENABLE"}  # nothing is listed in this lookup
        assert decision["watchlist_version"] == "v-fuzz"


class _Registry:
    """Writer schemas by id, made self-contained the way the registry client resolves Confluent references."""

    def __init__(self, schemas: dict[int, Any]) -> None:
        self.schemas = schemas

    def writer_schema(self, schema_id: int) -> Any:
        if schema_id in self.schemas:
            return self.schemas[schema_id]
        return REPOSITORY.writer_schema(schema_id)

    def output_schema_id(self, subject: str, schema: Any) -> int:
        return REPOSITORY.output_schema_id(subject, schema)


def _written(case: WriterCase, schema_id: int) -> bytes:
    named: dict[str, Any] = {}
    for schema in case.references.values():
        parse_schema(schema, named)
    stream = io.BytesIO()
    stream.write(HEADER.pack(0, schema_id))
    schemaless_writer(stream, parse_schema(case.schema, named), case.datum)
    return stream.getvalue()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(writer_cases())
def test_any_writer_schema_is_decided_when_resolvable_else_dead_lettered_with_a_reason(case):
    """Evolution in both directions, unions around the record, primitives, named types from other subjects: a
    resolvable writer gives exactly one decision for the event, any other exactly one dead letter with a reason."""
    schema_id = 900
    registry = _Registry({schema_id: inline_named_types(case.schema, case.references)})
    screener = batch_screener(lambda keys: LookupResult("v-fuzz", 1, {}, 0.0), instance_id="fuzz")
    screener.decoder = WithdrawalDecoder(registry, CATALOG, max_message_bytes=65_536)
    payload = _written(case, schema_id)
    record = Record("withdrawals.requested", 0, 7, 1_700_000_000_000, b"key", payload)
    completed = screener.complete(screener.prepare([record]))
    decisions = [output for output in completed.outputs if output.topic == "decisions"]
    dead = [output for output in completed.outputs if output.topic == "dlq"]
    assert len(decisions) + len(dead) == 1, case.what
    if case.resolvable:
        assert decisions, f"{case.what}: {dict(dead[0].headers or []) if dead else ''}"
        _schema_id, decision = READER.decode(decisions[0].value)
        assert decision["event_id"] == case.datum["event_id"]
        assert decision["source"]["schema_id"] == schema_id
    else:
        assert dead, case.what
        headers = dict(dead[0].headers or [])
        assert headers[DLQ_HEADER_REASON].decode() in {"wrong_type", "missing_required_field"}, case.what
        assert dead[0].value == payload
