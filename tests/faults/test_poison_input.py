"""Poison input, property-based (hypothesis), through the real decode path (WithdrawalDecoder + BatchScreener with
the bundled schemas): whatever the bytes, the pipeline neither crashes nor loses the record. A record is either
screened (exactly one decision) or dead-lettered with a stable reason, a bounded detail and its original bytes."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from aml_screener.screener.codec import FramedReader
from aml_screener.screener.errors import DeadLetterReason
from aml_screener.screener.lookup import LookupResult
from aml_screener.screener.pipeline import DLQ_HEADER_DETAIL, DLQ_HEADER_REASON
from tests.faults.poison import payloads
from tests.pipeline_support import REPOSITORY, Record, batch_screener

pytestmark = pytest.mark.faults

READER = FramedReader(REPOSITORY)
SCREENER = batch_screener(lambda keys: LookupResult("v-fuzz", 1, {}, 0.0), instance_id="fuzz")
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
