"""`aml-screener replay` as a process on the real components (Apache Kafka, redis-server with the real sync's
versions): the same input range, watchlist version and policy give byte-identical decisions, run after run and after
the watchlist moved on; a candidate version or policy gives the decisions it would have given; a range is exactly
its records; bad requests are refused with the reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from kafka import KafkaConsumer, TopicPartition

from aml_screener.devstack.generator import Expected, GeneratedEvent
from aml_screener.screener.codec import FramedReader
from aml_screener.screening.records import Direction
from aml_screener.watchlist.config import AddressListConfig
from aml_screener.watchlist.store import WatchlistStore
from aml_screener.watchlist.sync import run_sync
from tests.integration.harness import REPOSITORY, IsolatedStack, generate, load_bundled_watchlist, produce

pytestmark = pytest.mark.integration


def replay(stack: IsolatedStack, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "AML_KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap_servers,
        "AML_REDIS_URL": stack.redis_url,
        **stack.topics.env(),
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "aml_screener.cli", "replay", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def output(stack: IsolatedStack) -> str:
    topic = f"replay.{uuid.uuid4().hex[:8]}"
    stack.kafka.create_topic(topic, 1)
    return topic


def read_all(stack: IsolatedStack, topic: str, count: int) -> list[tuple[bytes | None, bytes]]:
    consumer = KafkaConsumer(**stack.kafka_python_config(), enable_auto_commit=False)
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        consumer.seek_to_beginning()
        end = consumer.end_offsets([partition])[partition]
        assert end == count, f"{topic} holds {end} records, expected {count}"
        found: list[tuple[bytes | None, bytes]] = []
        while len(found) < count:
            for records in consumer.poll(timeout_ms=500).values():
                found.extend((record.key, record.value) for record in records)
        return found
    finally:
        consumer.close()


def decoded(records: list[tuple[bytes | None, bytes]]) -> list[dict[str, Any]]:
    framed = FramedReader(REPOSITORY)
    return [framed.decode(value)[1] for _key, value in records]


def sync_theft(stack: IsolatedStack, lists: Path, addresses: list[tuple[str, str]]) -> str:
    for asset, address in addresses:
        (lists / f"candidate_{asset}.txt").write_text(f"{address}\n")
    config = AddressListConfig(name="candidate", location=str(lists / "*.txt"), list="candidate", category="theft")
    result = run_sync(WatchlistStore(redis.Redis.from_url(stack.redis_url, decode_responses=True)), [config],
                      keep_other_sources=True)  # fmt: skip
    assert result.version
    return result.version


def decided(events: list[GeneratedEvent]) -> int:
    return sum(1 for event in events if event.expected is not Expected.DEAD_LETTER)


def test_replays_are_byte_identical_and_a_candidate_list_or_policy_shows_its_decisions(stack, tmp_path):
    listings = load_bundled_watchlist(stack.redis_url)
    events = generate(listings, 600, seed=14, hit_share=0.05, deposit_share=0.4, clean_pool=100)
    produce(stack, events)
    count = decided(events)
    first, second = output(stack), output(stack)
    run = replay(stack, "--output-topic", first)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["records"] == len(events) and summary["decisions"] == count
    assert summary["undecodable"] == len(events) - count
    v1 = summary["version"]
    baseline = read_all(stack, first, count)

    # A candidate list goes live meanwhile: a replay pinned to v1 still gives exactly the same bytes.
    clean = next(e for e in events if e.expected is Expected.CLEAR and e.direction is Direction.WITHDRAWAL)
    v2 = sync_theft(stack, tmp_path, [(clean.asset, clean.address)])
    run = replay(stack, "--output-topic", second, "--watchlist-version", v1)
    assert run.returncode == 0, run.stderr
    assert read_all(stack, second, count) == baseline  # byte for byte, in the same order

    decisions = decoded(baseline)
    assert {d["watchlist_version"] for d in decisions} == {v1}
    assert {d["screener"] for d in decisions} == {"replay"}
    assert len({d["timings"]["decided_at"] for d in decisions}) == 1
    assert sum(d["direction"] == "deposit" for d in decisions) > 0
    flagged_before = {d["event_id"] for d in decisions if d["decision"] == "FLAGGED"}
    assert flagged_before == {e.event_id for e in events if e.expected is Expected.FLAGGED}

    # The candidate version: the withdrawals to the newly listed address are held and the deposits from it frozen
    # (theft, the default policy); nothing else moves.
    candidate = output(stack)
    run = replay(stack, "--output-topic", candidate, "--watchlist-version", v2)
    assert run.returncode == 0, run.stderr
    with_candidate = {d["event_id"]: d for d in decoded(read_all(stack, candidate, count))}
    newly = {event_id for event_id, d in with_candidate.items() if d["decision"] == "FLAGGED"} - flagged_before
    sent = {e.event_id for e in events if e.direction is Direction.WITHDRAWAL and e.address == clean.address}
    received = {e.event_id for e in events if e.direction is Direction.DEPOSIT and clean.address in e.sources}
    assert newly == sent | received
    assert {with_candidate[event_id]["action"] for event_id in sent} == {"hold"}
    assert {with_candidate[event_id]["action"] for event_id in received} <= {"freeze"}

    # A candidate policy: theft withdrawals rejected instead of held.
    policy = tmp_path / "policy.toml"
    policy.write_text(
        'version = "strict-theft"\n\n[[rule]]\nid = "reject-theft"\ndirection = "withdrawal"\n'
        'category = ["theft"]\naction = "reject"\nseverity = "high"\n'
    )
    strict = output(stack)
    run = replay(stack, "--output-topic", strict, "--watchlist-version", v2, "--policy", str(policy))
    assert run.returncode == 0, run.stderr
    strict_decisions = {d["event_id"]: d for d in decoded(read_all(stack, strict, count))}
    assert {strict_decisions[event_id]["action"] for event_id in sent} == {"reject"}
    assert {d["policy_version"] for d in strict_decisions.values()} != {d["policy_version"] for d in decisions}


def test_a_range_is_exactly_its_records_and_bad_requests_are_refused(stack):
    listings = load_bundled_watchlist(stack.redis_url)
    events = generate(listings, 200, seed=15, hit_share=0.05)
    produce(stack, events, partition=0)
    target = output(stack)
    run = replay(stack, "--output-topic", target, "--from", "50", "--to", "80", "--batch-size", "7")
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["records"] == 30
    assert summary["ranges"][f"{stack.topics.input}:0"] == [50, 80]
    in_range = [e for e in events[50:80] if e.expected is not Expected.DEAD_LETTER]
    assert [d["event_id"] for d in decoded(read_all(stack, target, len(in_range)))] == [e.event_id for e in in_range]

    live = replay(stack, "--output-topic", stack.topics.decisions)
    assert live.returncode == 1 and "live topic" in live.stderr
    gone = replay(stack, "--output-topic", output(stack), "--watchlist-version", "20200101T000000Z-000000000000")
    assert gone.returncode == 1 and "not in Redis" in gone.stderr
    bad = replay(stack, "--output-topic", output(stack), "--from", "yesterday")
    assert bad.returncode == 2 and "ISO 8601" in bad.stderr
