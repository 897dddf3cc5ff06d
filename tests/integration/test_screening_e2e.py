"""End to end on the embedded stack: real `aml-screener run` processes, Kafka protocol broker, redis-server."""

from __future__ import annotations

import io
import json
import shutil
from decimal import Decimal
from pathlib import Path

import pytest
from fastavro import parse_schema, schemaless_writer

from aml_screener.devstack.generator import Expected
from aml_screener.screener.codec import HEADER
from aml_screener.screener.schemas import SchemaCatalog, default_schema_dir
from tests.integration.harness import (
    all_decided,
    encoder,
    generate,
    load_bundled_watchlist,
    produce,
    produce_raw,
)

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "schemas"


def test_known_stream_gives_exactly_the_expected_decisions(stack, screeners, reader):
    listings = load_bundled_watchlist(stack.redis_url)
    events = generate(listings, 4000, seed=11, hit_share=0.05, invalid_share=0.01, malformed_share=0.01)
    screener = screeners()
    screener.wait_assigned()
    produce(stack, events)
    outputs = reader.read_until(all_decided(events), 60, "every event decided")
    outputs = reader.settle(1.0)

    expected = {event.event_id: event for event in events}
    outcome = outputs.outcome_of()
    flagged_expected = {e.event_id for e in events if e.expected is Expected.FLAGGED}
    flagged_got = {event_id for event_id, o in outcome.items() if o == "FLAGGED"}
    assert flagged_got == flagged_expected, "no missed hits, no false hits"
    assert len(flagged_expected) > 100
    spellings = {expected[e].address for e in flagged_expected if expected[e].network != "bitcoin"}
    assert any(a != a.lower() and a.startswith("0x") for a in spellings), "EIP-55 variants were in the stream"
    assert any(a.startswith("0x") and a[2:] == a[2:].upper() for a in spellings), "upper-case variants too"
    for event_id, event in expected.items():
        if event.expected is Expected.DEAD_LETTER:
            assert event_id not in outcome
        else:
            assert outcome[event_id] == event.expected.value, (event.network, event.address)
    assert outputs.duplicates() == 0, "a normal run decides every event exactly once"

    flagged_by_event = {record["event_id"]: record for record in outputs.flagged}
    assert set(flagged_by_event) == flagged_expected, "one WithdrawalFlagged per hit"
    # A fifth of the hits go to an address related to a listed one (one severity level lower); which flag arrives
    # first depends on the partitions, so pick a direct one and check both kinds.
    severities = {(r["matches"][0]["match_type"], r["severity"]) for r in flagged_by_event.values()}
    assert severities == {("direct", "critical"), ("related", "high")}, severities
    sample = next(r for r in flagged_by_event.values() if r["matches"][0]["match_type"] == "direct")
    assert sample["matches"] and sample["matches"][0]["list"] == "ofac-sdn"
    assert sample["matches"][0]["programs"], "the sanctions program travels with the hit"
    assert sample["withdrawal"]["amount"] > Decimal(0)
    versions = {decision["watchlist_version"] for decision in outputs.decisions}
    assert len(versions) == 1 and None not in versions

    dead = outputs.dead_letter_reasons()
    assert sum(dead.values()) == sum(1 for e in events if e.expected is Expected.DEAD_LETTER)
    assert set(dead) <= {"truncated", "bad_magic", "unknown_schema_id"}

    # Metrics agree with the outputs (counted when the acknowledgements reach the screener, which can follow the
    # records becoming readable), and no label carries an address or an account.
    screener.wait_until(
        lambda: screener.metric("aml_screener_decisions_total", decision="flagged") == len(flagged_expected),
        15,
        "the flagged count",
    )
    assert screener.metric("aml_screener_events_consumed_total", topic=stack.topics.input) == len(events)
    text = screener.metrics()
    for family in (
        "aml_screener_flags_total",
        "aml_screener_dead_lettered_total",
        "aml_screener_unscreenable_total",
        "aml_screener_end_to_end_latency_seconds_bucket",
        "aml_screener_stage_duration_seconds_bucket",
        "aml_screener_redis_lookup_duration_seconds_bucket",
        "aml_screener_batch_size_records_bucket",
        "aml_screener_consumer_lag_records",
        "aml_screener_watchlist_info",
        "aml_screener_watchlist_addresses",
        "aml_screener_ready 1.0",
        "aml_screener_up 1.0",
    ):
        assert family in text, family
    assert "0x" not in text and "acct-" not in text
    assert screener.terminate() == 0


def _schema_dir_with_bad_writers(tmp_path: Path) -> Path:
    directory = tmp_path / "schemas"
    directory.mkdir()
    for file in default_schema_dir().iterdir():
        shutil.copy(file, directory / file.name)
    registry = json.loads((directory / "registry.json").read_text())
    for schema_id, name in [
        (103, "withdrawal_requested.no_event_id.avsc"),
        (104, "withdrawal_requested.amount_string.avsc"),
    ]:
        shutil.copy(FIXTURES / name, directory / name)
        registry["schemas"][str(schema_id)] = name
    (directory / "registry.json").write_text(json.dumps(registry))
    return directory


def _encode_with(directory: Path, schema_id: int, record: dict) -> bytes:
    schema = parse_schema(SchemaCatalog(directory).by_id(schema_id).schema, {})
    stream = io.BytesIO(HEADER.pack(0, schema_id))
    stream.seek(5)
    schemaless_writer(stream, schema, record)
    return stream.getvalue()


def test_every_kind_of_malformed_input_is_dead_lettered_with_its_reason(stack, screeners, reader, tmp_path):
    listings = load_bundled_watchlist(stack.redis_url)
    schema_dir = _schema_dir_with_bad_writers(tmp_path)
    good = encoder().encode(
        {
            "event_id": "good-1",
            "exchange_id": "x",
            "account_id": "a",
            "asset": "ETH",
            "network": "ethereum",
            "destination_address": listings[0][1].listed_address,
            "amount": Decimal("1"),
            "requested_at": 1,
        }
    )
    base = {
        "exchange_id": "x",
        "account_id": "a",
        "asset": "ETH",
        "network": "ethereum",
        "destination_address": "0x52908400098527886e0f7030069857d2e4169ee7",
        "requested_at": 1,
    }
    cases = {
        "truncated": good[:-4],
        "bad_magic": b"\x01" + good[1:],
        "unknown_schema_id": HEADER.pack(0, 77) + good[5:],
        "missing_required_field": _encode_with(schema_dir, 103, {**base, "amount": Decimal("1")}),
        "wrong_type": _encode_with(schema_dir, 104, {**base, "event_id": "w", "amount": "1.0"}),
        "oversize": encoder().encode({**base, "event_id": "big", "amount": Decimal(1), "metadata": {"k": "v" * 5000}}),
        "trailing_bytes": good + b"\x00",
        "null_value": None,
    }
    screener = screeners(AML_SCHEMA_DIR=str(schema_dir), AML_KAFKA_MAX_MESSAGE_BYTES="4096")
    screener.wait_assigned()
    keys = {reason: f"key-{reason}".encode() for reason in cases}
    produce_raw(stack, [(keys[r], v) for r, v in cases.items()] + [(b"good", good)])
    outputs = reader.read_until(
        lambda o: len(o.dead_letters) >= len(cases) and any(d["event_id"] == "good-1" for d in o.decisions),
        45,
        "all dead letters and the good event",
    )
    by_key = {record.key: record for record in outputs.dead_letters}
    for reason, value in cases.items():
        record = by_key[keys[reason]]
        headers = {k: v.decode() for k, v in record.headers}
        assert headers["aml.dlq.reason"] == reason, (reason, headers)
        assert headers["aml.dlq.detail"]
        assert headers["aml.source.topic"] == stack.topics.input
        assert int(headers["aml.source.offset"]) >= 0 and headers["aml.source.partition"].isdigit()
        assert record.value == (value or b""), f"{reason}: the original bytes are kept"
    assert "event_id" in {k: v.decode() for k, v in by_key[keys["missing_required_field"]].headers}["aml.dlq.detail"]
    assert [d["decision"] for d in outputs.decisions if d["event_id"] == "good-1"] == ["FLAGGED"]
    # Metrics count a dead letter when its acknowledgement reaches the screener, which on real Kafka can follow the
    # moment the record became readable.
    screener.wait_until(
        lambda: screener.metric("aml_screener_dead_lettered_total", reason="oversize") == 1, 15, "the oversize count"
    )
    assert screener.terminate() == 0, "malformed input never crashes the loop"
