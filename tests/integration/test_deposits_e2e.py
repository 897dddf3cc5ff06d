"""Deposits end to end on the embedded stack: a real `aml-screener run` reading withdrawals and deposits from their
own topics on the shared Apache Kafka cluster, with a real redis-server holding the bundled OFAC sample."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

import pytest

from aml_screener.devstack.generator import Expected
from aml_screener.screener.codec import HEADER
from aml_screener.screening.records import Direction
from tests.integration.harness import (
    all_decided,
    generate,
    load_bundled_watchlist,
    produce,
    produce_raw,
)

pytestmark = pytest.mark.integration


def test_a_mixed_stream_of_withdrawals_and_deposits_gives_exactly_the_expected_decisions(stack, screeners, reader):
    listings = load_bundled_watchlist(stack.redis_url)
    events = generate(
        listings, 4000, seed=23, hit_share=0.05, invalid_share=0.01, malformed_share=0.01, deposit_share=0.4
    )
    deposits = [event for event in events if event.direction is Direction.DEPOSIT]
    assert len(deposits) > 1000 and any(len(event.sources) > 1 for event in deposits)
    screener = screeners()
    screener.wait_assigned()
    produce(stack, events)
    outputs = reader.read_until(all_decided(events), 90, "every withdrawal and deposit decided")
    outputs = reader.settle(1.0)

    by_event = {decision["event_id"]: decision for decision in outputs.decisions}
    for event in events:
        if event.expected is Expected.DEAD_LETTER:
            assert event.event_id not in by_event
            continue
        decision = by_event[event.event_id]
        assert (decision["direction"], decision["decision"]) == (event.direction.value, event.expected.value), (
            event.network,
            event.address,
            event.sources,
        )
        if event.direction is Direction.DEPOSIT:
            assert [source["address"] for source in decision["sources"]] == list(dict.fromkeys(event.sources))
            assert decision["source"]["topic"] == stack.topics.deposits
        else:
            assert decision["address"] == event.address and decision["sources"] == []
    assert outputs.duplicates() == 0

    # Each hit on the flagged topic of its direction, with what an analyst needs.
    expected_flagged = Counter(event.direction.value for event in events if event.expected is Expected.FLAGGED)
    assert len(outputs.flagged) == expected_flagged["withdrawal"]
    assert len(outputs.deposit_flagged) == expected_flagged["deposit"] > 30
    deposit_flag = outputs.deposit_flagged[0]
    flagged_source = next(source for source in deposit_flag["sources"] if source["outcome"] == "FLAGGED")
    assert flagged_source["matches"][0]["list"] == "ofac-sdn"
    assert deposit_flag["deposit"]["amount"] > Decimal(0) and deposit_flag["deposit"]["tx_hash"]
    assert deposit_flag["summary"].startswith(f"{deposit_flag['deposit']['asset']} on ")
    assert " from an address listed by ofac-sdn" in deposit_flag["summary"]

    # Undecodable deposits land on the deposits' dead-letter topic, undecodable withdrawals on theirs.
    dead_topics = Counter(record.topic for record in outputs.dead_letters)
    expected_dead = Counter(event.direction for event in events if event.expected is Expected.DEAD_LETTER)
    assert dead_topics[stack.topics.deposit_dlq] == expected_dead[Direction.DEPOSIT] > 0
    assert dead_topics[stack.topics.dlq] == expected_dead[Direction.WITHDRAWAL] > 0

    # Metrics by direction agree with the outputs.
    screener.wait_until(
        lambda: (
            screener.metric("aml_screener_decisions_total", decision="flagged", direction="deposit")
            == expected_flagged["deposit"]
        ),
        15,
        "the deposit flagged count",
    )
    assert screener.metric("aml_screener_events_consumed_total", topic=stack.topics.deposits) == len(deposits)
    assert screener.metric("aml_screener_dead_lettered_total", direction="deposit") == expected_dead[Direction.DEPOSIT]
    assert screener.metric("aml_screener_flags_total", direction="deposit") >= expected_flagged["deposit"]
    assert screener.terminate() == 0


def test_a_poison_deposit_is_dead_lettered_and_the_deposits_behind_it_are_still_decided(stack, screeners, reader):
    listings = load_bundled_watchlist(stack.redis_url)
    good = [event for event in generate(listings, 200, seed=3, deposit_share=1.0, malformed_share=0.0)]
    screener = screeners()
    screener.wait_assigned()
    produce_raw(
        stack, [(b"poison-1", HEADER.pack(0, 999_999) + b"\x00" * 8), (b"poison-2", None)], stack.topics.deposits
    )
    produce(stack, good)
    outputs = reader.read_until(
        lambda o: len(o.decisions) >= len(good) and len(o.dead_letters) >= 2,
        60,
        "deposits decided, poison dead-lettered",
    )
    reasons = Counter(dict(record.headers)["aml.dlq.reason"].decode() for record in outputs.dead_letters)
    assert reasons == {"unknown_schema_id": 1, "null_value": 1}
    assert {record.topic for record in outputs.dead_letters} == {stack.topics.deposit_dlq}
    assert {d["event_id"] for d in outputs.decisions} == {event.event_id for event in good}
    assert screener.terminate() == 0
