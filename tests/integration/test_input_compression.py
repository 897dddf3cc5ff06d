"""Compressed input, as real producers send it (confluent-kafka's Producer with `compression.type`), is decided
like any other; a batch the Kafka client cannot read blocks only its partition, visibly, and SIGTERM still works."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.integration.harness import all_decided, generate, load_bundled_watchlist, produce

pytestmark = pytest.mark.integration

HIDDEN_CODECS = Path(__file__).resolve().parents[1] / "data" / "hidden_codecs"


@pytest.mark.parametrize("codec", ["lz4", "snappy", "zstd", "gzip"])
def test_compressed_input_is_decided_like_any_other(stack, screeners, reader, codec):
    listings = load_bundled_watchlist(stack.redis_url)
    events = generate(listings, 600, seed=21, hit_share=0.1)
    screener = screeners(codec)
    screener.wait_assigned()
    produce(stack, events, config={"compression.type": codec, "linger.ms": 50})
    outputs = reader.read_until(all_decided(events), 45, f"every {codec}-compressed event decided or dead-lettered")
    expected = {e.event_id: e.expected.value for e in events if e.expected.value != "DEAD_LETTER"}
    assert outputs.outcome_of() == expected
    assert screener.terminate() == 0


def test_a_batch_the_client_cannot_read_blocks_its_partition_visibly_and_sigterm_still_stops(stack, screeners, reader):
    """lz4's library hidden from the screener: kafka-python raises UnsupportedCodecError for that batch. Before the
    fix, every later poll() spun for ever inside the client (100 % CPU, nothing decided, /readyz 200, SIGTERM
    ignored)."""
    listings = load_bundled_watchlist(stack.redis_url)
    before, lz4_events, behind, elsewhere = (
        generate(listings, n, seed=s, hit_share=0.1) for n, s in ((200, 31), (50, 32), (50, 33), (300, 34))
    )
    screener = screeners(
        "nolz4",
        PYTHONPATH=os.pathsep.join([str(HIDDEN_CODECS), os.environ.get("PYTHONPATH", "")]),
        AML_HEALTH_STALL_SECONDS="3",
        AML_SHUTDOWN_TIMEOUT_SECONDS="5",
    )
    screener.wait_assigned()
    produce(stack, before, partition=0)
    reader.read_until(all_decided(before), 45, "plain events on partition 0 decided")
    produce(stack, lz4_events, partition=0, config={"compression.type": "lz4"})
    produce(stack, behind, partition=0)

    partition0 = f"{stack.topics.input}-0"

    def blocked() -> bool:
        status, body = screener.probe("/readyz")
        return status == 503 and partition0 in body["unreadable_input"]

    screener.wait_until(blocked, 30, "partition 0 reported unreadable")
    _status, body = screener.probe("/readyz")
    assert body["reason"] == "input_unreadable"
    blocked_at = body["unreadable_input"][partition0]
    assert blocked_at["offset"] == len(before), "blocked exactly at the first unreadable record"
    assert "UnsupportedCodecError" in blocked_at["error"]
    assert screener.metric("aml_screener_input_unreadable_partitions") == 1
    # The loop keeps turning: other partitions are still screened.
    produce(stack, elsewhere, partition=1)
    reader.read_until(all_decided(elsewhere), 45, "events on another partition decided meanwhile")
    # Nothing of partition 0 past the unreadable batch was decided or dead-lettered: it waits, nothing is skipped.
    waiting = {e.event_id for e in lz4_events + behind}
    assert not waiting & set(reader.outputs.decisions_by_event())
    assert len(reader.outputs.dead_letters) == sum(e.expected.value == "DEAD_LETTER" for e in before + elsewhere)
    # Liveness: unhealthy once the partition has been unreadable for longer than AML_HEALTH_STALL_SECONDS.
    screener.wait_until(lambda: screener.probe("/healthz")[0] == 503, 20, "/healthz 503 for the unreadable input")
    health = screener.probe("/healthz")[1]
    assert health["problem"] == "input_unreadable"
    assert health["seconds_since_loop"] < 3, "the loop itself is still turning"
    messages = [line for line in screener.log_lines() if line["msg"].startswith("input records cannot be read")]
    assert [(m["partition"], m["offset"]) for m in messages] == [(partition0, len(before))]
    started = time.monotonic()
    assert screener.terminate(timeout=20) == 0, "SIGTERM stops the screener while a partition is unreadable"
    assert time.monotonic() - started < 15, "within the shutdown bound (5 s drain + close)"
