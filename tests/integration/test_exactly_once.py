"""Exactly-once mode (AML_PROCESSING_GUARANTEE=exactly_once) on the real Kafka cluster: a read_committed reader sees
every decision, flag and dead letter exactly once across a clean stop and a crash; of two live members with the
same transactional id, one stops instead of fencing the other for ever; a zombie thawed after its partitions moved
commits nothing twice. (The fault suite repeats every fault scenario in this mode; tests/faults.)"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from aml_screener.devstack.generator import Expected, GeneratedEvent
from aml_screener.screener.service import EXIT_SINK_FAILED
from tests.integration.harness import (
    INPUT_PARTITIONS,
    IsolatedStack,
    OutputReader,
    Outputs,
    all_decided,
    generate,
    load_bundled_watchlist,
    produce,
)

pytestmark = pytest.mark.integration

EXACTLY_ONCE = {"AML_PROCESSING_GUARANTEE": "exactly_once"}


@pytest.fixture
def committed(stack: IsolatedStack) -> Iterator[OutputReader]:
    """What a downstream consumer of an exactly-once screener reads."""
    output_reader = OutputReader(stack, isolation_level="read_committed")
    yield output_reader
    output_reader.close()


def assert_each_once(events: list[GeneratedEvent], outputs: Outputs) -> None:
    by_event = outputs.decisions_by_event()
    for event in events:
        if event.expected is not Expected.DEAD_LETTER:
            assert [d["decision"] for d in by_event[event.event_id]] == [event.expected.value], event.event_id
    assert outputs.duplicates() == 0
    flagged = Counter(record["event_id"] for record in outputs.flagged)
    assert set(flagged) == {e.event_id for e in events if e.expected is Expected.FLAGGED}
    assert set(flagged.values()) == {1}, "one flag per hit"
    dead = Counter(record.key for record in outputs.dead_letters)
    assert sum(dead.values()) == sum(1 for e in events if e.expected is Expected.DEAD_LETTER)
    assert set(dead.values()) == {1}, "one dead letter per malformed record"


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_stopped_mid_stream_and_restarted_a_committed_reader_sees_each_decision_once(stack, screeners, committed, how):
    listings = load_bundled_watchlist(stack.redis_url)
    events = generate(listings, 8_000, seed=23, hit_share=0.05, malformed_share=0.01)
    first = screeners("first", AML_KAFKA_MAX_POLL_RECORDS="200", **EXACTLY_ONCE)
    first.wait_assigned()
    produce(stack, events)
    committed.read_until(lambda o: len(o.decisions) >= 2000, 60, "a quarter of the stream decided")
    if how == "sigterm":
        assert first.terminate() == 0, "SIGTERM: the batch's transaction committed, group left, exit 0"
    else:
        first.kill()  # its open transaction, if any, is aborted by the brokers after the transaction timeout
    assert len(committed.outputs.decisions) < len(events), "stopped mid-stream"
    second = screeners("second", **EXACTLY_ONCE)
    outputs = committed.read_until(all_decided(events), 90, "every event decided after the restart")
    outputs = committed.settle(1.5)
    assert_each_once(events, outputs)
    assert {d["screener"] for d in outputs.decisions} == {"first", "second"}
    assert second.metric("aml_screener_transactions_total", result="committed") > 0
    assert second.metric("aml_screener_offset_commits_total", result="ok") > 0
    assert second.terminate() == 0


def test_two_live_members_with_the_same_transactional_id_one_stops_and_nothing_is_decided_twice(
    stack, screeners, committed
):
    """Two members with the same AML_INSTANCE_ID (a misconfiguration, or a zombie beside its replacement): each
    registration of the transactional id fences the other's producer. One fencing is survived (kafka-python reports
    a transaction the brokers aborted on its timeout the same way); fenced again and again, a member must stop (exit
    3) instead of fencing back for ever, and no decision may be committed twice meanwhile."""
    listings = load_bundled_watchlist(stack.redis_url)
    pool = generate(listings, 40_000, seed=29, hit_share=0.05)
    first = screeners("twin", AML_KAFKA_MAX_POLL_RECORDS="100", **EXACTLY_ONCE)
    first.wait_assigned()
    sent = produce(stack, pool[:2000])
    committed.read_until(lambda o: len(o.decisions) >= 500, 60, "the first member deciding")
    second = screeners("twin", AML_KAFKA_MAX_POLL_RECORDS="100", **EXACTLY_ONCE)
    twins = {"first": first, "second": second}
    # The twins fence each other only while both have batches to commit: keep the stream flowing until one stops,
    # however fast or slow this machine decides (a fixed number of events may all be decided before the third
    # fencing on a fast machine).
    deadline = time.monotonic() + 120
    while not any(twin.proc is not None and twin.proc.poll() is not None for twin in twins.values()):
        assert time.monotonic() < deadline, "neither twin stopped"
        if sent < len(pool):
            sent += produce(stack, pool[sent : sent + 500])
        time.sleep(0.5)
    events = pool[:sent]
    stopped = {name for name, twin in twins.items() if twin.proc is not None and twin.proc.poll() is not None}
    assert len(stopped) == 1, f"exactly one twin stops, not {sorted(stopped)}"
    (name,) = stopped
    loser, survivor = twins[name], twins[({"first", "second"} - stopped).pop()]
    assert loser.proc is not None and loser.proc.returncode == EXIT_SINK_FAILED
    fenced = [line for line in loser.log_lines() if line["msg"] == "the sink cannot deliver any more: stopping"]
    assert fenced and "AML_INSTANCE_ID must be unique" in fenced[0]["detail"]
    outputs = committed.read_until(all_decided(events), 120, "every event decided by the remaining member")
    outputs = committed.settle(1.5)
    assert_each_once(events, outputs)
    assert survivor.terminate() == 0


def test_a_zombie_thawed_after_its_partitions_moved_commits_nothing_twice(stack, screeners, committed):
    """A member frozen (SIGSTOP) past its session timeout loses its partitions to the other member; thawed, it
    finishes the batch it was holding with the group generation it had. The group coordinator refuses those offsets
    (KIP-447) and its transaction aborts: a read_committed reader never sees that batch twice."""
    listings = load_bundled_watchlist(stack.redis_url)
    events = generate(listings, 8_000, seed=31, hit_share=0.05)
    zombie = screeners("zombie", AML_KAFKA_MAX_POLL_RECORDS="200", AML_KAFKA_SESSION_TIMEOUT_MS="6000", **EXACTLY_ONCE)
    zombie.wait_assigned()
    other = screeners("other", AML_KAFKA_MAX_POLL_RECORDS="200", AML_KAFKA_SESSION_TIMEOUT_MS="6000", **EXACTLY_ONCE)

    def split() -> bool:
        return bool(other.probe("/readyz")[1]["assigned_partitions"])

    other.wait_until(split, 60, "both members own partitions")
    produce(stack, events)
    # Frozen only once both members' decisions are readable (committed): under load the zombie's first transaction
    # can lag behind the other member's first thousand decisions, and a zombie that had decided nothing proves nothing.
    committed.read_until(
        lambda o: {d["screener"] for d in o.decisions} == {"zombie", "other"}, 60, "both members deciding"
    )
    assert zombie.proc is not None
    zombie.proc.send_signal(signal.SIGSTOP)
    try:
        other.wait_until(
            lambda: len(other.probe("/readyz")[1]["assigned_partitions"]) == INPUT_PARTITIONS,
            60,
            "the other member owning every partition after the frozen one's session timed out",
        )
        time.sleep(2)  # the other member decides (and commits) some of what the zombie held
    finally:
        zombie.proc.send_signal(signal.SIGCONT)
    outputs = committed.read_until(all_decided(events), 120, "every event decided")
    outputs = committed.settle(3.0)  # what the thawed zombie might still commit
    assert_each_once(events, outputs)
    assert {d["screener"] for d in outputs.decisions} == {"zombie", "other"}
    assert zombie.terminate() == 0
    assert other.terminate() == 0
