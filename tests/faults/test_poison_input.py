"""Poison input, property-based (hypothesis), through the real decode path (WithdrawalDecoder + BatchScreener with
the bundled schemas): whatever the bytes, the pipeline neither crashes nor loses the record. A record is either
screened (exactly one decision) or dead-lettered with a stable reason, a bounded detail and its original bytes."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings

from aml_screener.screener.codec import FramedReader, RecordEncoder, WithdrawalDecoder
from aml_screener.screener.errors import DeadLetterReason
from aml_screener.screener.lookup import LookupResult
from aml_screener.screener.pipeline import DLQ_HEADER_DETAIL, DLQ_HEADER_REASON, BatchScreener, Topics
from aml_screener.screener.schemas import SCREENING_DECISION, WITHDRAWAL_FLAGGED, LocalSchemaRepository
from tests.faults.poison import CATALOG, payloads

pytestmark = pytest.mark.faults

REPOSITORY = LocalSchemaRepository(CATALOG)
READER = FramedReader(REPOSITORY)


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None


def screener() -> BatchScreener:
    decision, flagged = CATALOG.current(SCREENING_DECISION), CATALOG.current(WITHDRAWAL_FLAGGED)
    return BatchScreener(
        decoder=WithdrawalDecoder(REPOSITORY, CATALOG, max_message_bytes=65_536),
        decision_encoder=RecordEncoder(decision.schema, decision.schema_id),
        flagged_encoder=RecordEncoder(flagged.schema, flagged.schema_id),
        topics=Topics("decisions", "flagged", "dlq"),
        instance_id="fuzz",
        lookup=lambda keys: LookupResult("v-fuzz", 1, {}, 0.0),
    )


SCREENER = screener()
REASONS = {reason.value for reason in DeadLetterReason}


@settings(max_examples=1_500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads())
def test_any_payload_is_screened_or_dead_lettered_with_a_reason_never_a_crash(payload):
    record = Record("withdrawals.requested", 0, 7, 1_700_000_000_000, b"key", payload)
    completed = SCREENER.complete(SCREENER.prepare([record]))
    decisions = [output for output in completed.outputs if output.topic == "decisions"]
    dead = [output for output in completed.outputs if output.topic == "dlq"]
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
