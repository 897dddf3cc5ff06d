"""Back-pressure on slow acknowledgements: a full in-flight window pauses consumption only until the outputs are
acknowledged, then the screener consumes again by itself.

Runs on librdkafka's mock on purpose: its per-request latency injection makes every Produce answer late, on
demand and deterministically, which real Kafka can only be pushed into by overload or a frozen follower (the
fault suite does that, tests/faults). Found on real Kafka 4.4, where acks=all on a loaded 2-core machine now and
then took longer than the screener's 0.2 s acknowledgement wait: the partitions stayed paused for good."""

from __future__ import annotations

import pytest

from aml_screener.devstack.mock_kafka import ApiKey, KafkaError
from tests.integration.harness import all_decided, generate, load_bundled_watchlist, produce

pytestmark = pytest.mark.integration

# Each Produce answered after 0.6 s: longer than the screener's acknowledgement wait (0.2 s), so every batch
# finds the window full and holds (paused) until its outputs are acknowledged.
SLOW_ACK_MS = 600


def test_slow_acknowledgements_hold_consumption_and_it_resumes_by_itself(stack_factory, screeners, reader_factory):
    stack = stack_factory(broker="mock")
    listings = load_bundled_watchlist(stack.redis_url)
    events = generate(listings, 2_000, seed=31, hit_share=0.05)
    screener = screeners("slow-acks", target=stack, AML_MAX_INFLIGHT_BATCHES="1", AML_KAFKA_MAX_POLL_RECORDS="100")
    screener.wait_assigned()
    reader = reader_factory(stack)
    stack.embedded.mock.push_broker_request_error_rtts(1, ApiKey.PRODUCE, [(KafkaError.NONE, SLOW_ACK_MS)] * 15)
    produce(stack, events)
    outputs = reader.read_until(all_decided(events), 90, "every event decided although acknowledgements were slow")
    assert screener.metric("aml_screener_events_consumed_total", topic=stack.topics.input) >= len(events)
    assert outputs.duplicates() == 0
    assert screener.terminate() == 0
