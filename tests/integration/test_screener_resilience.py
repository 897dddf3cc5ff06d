"""Nothing lost, nothing decided without the watchlist: restarts, crashes, two members, Redis outages."""

from __future__ import annotations

import threading
import time

import pytest

from aml_screener.devstack.generator import Expected
from tests.integration.harness import (
    INPUT_PARTITIONS,
    all_decided,
    generate,
    load_bundled_watchlist,
    produce,
)

pytestmark = pytest.mark.integration


def assert_complete_and_correct(events, outputs):
    """Every screenable event decided with the expected outcome; duplicates share their decision id."""
    by_event = outputs.decisions_by_event()
    for event in events:
        if event.expected is Expected.DEAD_LETTER:
            continue
        decisions = by_event[event.event_id]
        assert decisions, f"event {event.event_id} was lost"
        assert {d["decision"] for d in decisions} == {event.expected.value}
        assert len({d["decision_id"] for d in decisions}) == 1, "a duplicate is recognisable by its decision id"


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_screener_stopped_mid_stream_and_restarted_loses_nothing(stack, screeners, reader, how):
    listings = load_bundled_watchlist(stack.redis_url)
    events = generate(listings, 12_000, seed=3, hit_share=0.03)
    first = screeners("first", AML_KAFKA_MAX_POLL_RECORDS="200")
    first.wait_assigned()
    produce(stack, events)
    reader.read_until(lambda o: len(o.decisions) >= 3000, 60, "a quarter of the stream decided")
    if how == "sigterm":
        assert first.terminate() == 0, "SIGTERM: finish the batch, commit, exit 0"
        log = [line["msg"] for line in first.log_lines()]
        assert "screener stopped" in log
    else:
        first.kill()
    decided_before = len(reader.outputs.decisions)
    assert decided_before < len(events), "stopped mid-stream"
    second = screeners("second")
    second.wait_assigned()
    outputs = reader.read_until(all_decided(events), 90, "every event decided after the restart")
    outputs = reader.settle(1.0)
    assert_complete_and_correct(events, outputs)
    if how == "sigterm":
        # A clean stop commits what it finished: nothing (or at most one in-flight batch) is decided twice.
        assert outputs.duplicates() <= 200
    assert {d["screener"] for d in outputs.decisions} == {"first", "second"}
    assert second.terminate() == 0


def test_two_screeners_in_one_group_split_partitions_and_decide_everything(stack, screeners, reader):
    listings = load_bundled_watchlist(stack.redis_url)
    events = generate(listings, 12_000, seed=5, hit_share=0.03)
    one = screeners("one")
    one.wait_assigned()
    two = screeners("two")

    def both_have_partitions() -> bool:
        a = set(one.probe("/readyz")[1]["assigned_partitions"])
        b = set(two.probe("/readyz")[1]["assigned_partitions"])
        return bool(a) and bool(b) and not (a & b) and len(a | b) == INPUT_PARTITIONS

    two.wait_until(both_have_partitions, 90, "the group to split the input partitions between both members")
    produce(stack, events)
    outputs = reader.read_until(all_decided(events), 90, "every event decided by the group")
    outputs = reader.settle(1.0)
    assert_complete_and_correct(events, outputs)
    by_screener: dict[str, set[int]] = {}
    for decision in outputs.decisions:
        by_screener.setdefault(decision["screener"], set()).add(decision["source"]["partition"])
    assert set(by_screener) == {"one", "two"}, "both members decided"
    assert not (by_screener["one"] & by_screener["two"]), "each partition decided by one member (no rebalance)"
    assert outputs.duplicates() == 0
    assert one.terminate() == 0
    assert two.terminate() == 0


def test_redis_outage_pauses_without_any_clear_and_resumes_by_itself(stack_factory, screeners, reader_factory):
    # Redis with an append-only file, so its data survives the restart (a persistent production Redis).
    stack = stack_factory(redis_args=("--appendonly", "yes"))
    listings = load_bundled_watchlist(stack.redis_url)
    events = generate(listings, 9_000, seed=8, hit_share=0.05)
    screener = screeners("s", target=stack, AML_KAFKA_MAX_POLL_RECORDS="100")
    screener.wait_assigned()
    reader = reader_factory(stack)
    producer = threading.Thread(target=produce_slowly, args=(stack, events), daemon=True)
    producer.start()
    reader.read_until(lambda o: len(o.decisions) >= 1500, 60, "decisions before the outage")
    stack.redis.stop()
    screener.wait_until(lambda: screener.probe("/readyz")[0] == 503, 10, "not ready during the outage")
    _status, body = screener.probe("/readyz")
    assert body["fail_closed"] is True
    assert screener.metric("aml_screener_fail_closed") == 1
    reader.settle(1.0)  # anything decided before the outage was noticed
    during = len(reader.outputs.decisions)
    time.sleep(3)
    reader.settle(0.5)
    assert len(reader.outputs.decisions) == during, "no decision at all while the watchlist is unreachable"
    assert screener.probe("/healthz")[0] == 200, "failing closed is healthy (waiting), not stuck"
    stack.redis.start()
    outputs = reader.read_until(all_decided(events), 90, "every event decided after Redis returned")
    producer.join(30)
    assert_complete_and_correct(events, outputs)
    assert screener.probe("/readyz")[0] == 200
    assert screener.metric("aml_screener_fail_closed") == 0
    assert screener.metric("aml_screener_fail_closed_pauses_total", reason="redis_unavailable") >= 1
    assert screener.terminate() == 0


def produce_slowly(stack, events, chunk: int = 300, pause: float = 0.1) -> None:
    for start in range(0, len(events), chunk):
        produce(stack, events[start : start + chunk])
        time.sleep(pause)


def test_without_a_watchlist_the_screener_is_not_ready_and_takes_no_partitions(stack, screeners, reader):
    screener = screeners()
    screener.wait_until(lambda: screener.probe("/readyz")[1]["reason"] == "no_active_version", 20, "not ready")
    status, body = screener.probe("/readyz")
    assert status == 503
    assert body["assigned_partitions"] == []
    listings = load_bundled_watchlist(stack.redis_url)  # the first sync arrives
    events = generate(listings, 500, seed=1)
    produce(stack, events)
    screener.wait_assigned()
    reader.read_until(all_decided(events), 45, "decisions once the watchlist exists")
    assert screener.terminate() == 0


def test_fail_open_mode_passes_events_unscreened_to_the_hold_topic_never_clear(
    stack_factory, screeners, reader_factory
):
    """The operator's explicit bypass: with the watchlist down, events go to the hold topic, counted and visible;
    none is decided (so none is `clear`), and screening resumes by itself when the watchlist is back."""
    stack = stack_factory(redis_args=("--appendonly", "yes"))
    listings = load_bundled_watchlist(stack.redis_url)
    before, during, after = (generate(listings, n, seed=s, hit_share=0.2) for n, s in ((500, 1), (800, 2), (500, 3)))
    screener = screeners("open", target=stack, AML_WATCHLIST_FAILURE_MODE="open", AML_LOOKUP_RETRY_MAX_SECONDS="0.5")
    screener.wait_assigned()
    assert screener.metric("aml_screener_failure_mode_info", mode="open") == 1
    reader = reader_factory(stack)
    produce(stack, before)
    reader.read_until(all_decided(before), 45, "decisions while the watchlist is up")
    stack.redis.stop()
    produce(stack, during)
    held_ids = {event.event_id for event in during if event.expected is not Expected.DEAD_LETTER}
    reader.read_until(lambda o: len(o.held) >= len(held_ids), 45, "the outage's events on the hold topic")
    _status, body = screener.probe("/readyz")
    assert (body["ready"], body["fail_open"], body["failure_mode"]) == (False, True, "open")
    assert screener.metric("aml_screener_fail_open_active") == 1
    assert screener.metric("aml_screener_fail_closed") == 0, "fail-open does not pause"
    held = reader.outputs.held
    assert {record.key.decode() for record in held} == held_ids, "every event of the outage held, once"
    assert {dict(record.headers)["aml.hold.reason"] for record in held} == {b"redis_unavailable"}
    by_event = reader.outputs.decisions_by_event()
    assert not held_ids & set(by_event), "a held event has no decision: never `clear`"
    # Counted when Kafka's acknowledgement reaches the screener, which can follow the records becoming readable.
    screener.wait_until(
        lambda: screener.metric("aml_screener_held_total", reason="redis_unavailable") == len(held_ids),
        15,
        "the held count",
    )
    stack.redis.start()
    # Resumption must not wait for traffic: with the input topic idle, the screener probes the watchlist on its
    # back-off (at most AML_LOOKUP_RETRY_MAX_SECONDS = 0.5 s here) and leaves fail-open by itself.
    screener.wait_until(lambda: screener.probe("/readyz")[0] == 200, 20, "ready again with no traffic")
    assert screener.metric("aml_screener_fail_open_active") == 0
    assert "watchlist available again: screening resumes (fail-open bypass ends)" in {
        line["msg"] for line in screener.log_lines()
    }
    produce(stack, after)
    reader.read_until(all_decided(after), 45, "screening resumes when the watchlist is back")
    reader.settle(0.5)
    assert len(reader.outputs.held) == len(held_ids), "nothing held once the watchlist answers again"
    assert screener.metric("aml_screener_fail_open_active") == 0
    assert screener.probe("/readyz")[0] == 200
    assert screener.terminate() == 0


def test_fail_closed_is_the_default_and_says_so(stack, screeners):
    screener = screeners()
    screener.wait_until(lambda: screener.probe("/readyz")[1]["reason"] == "no_active_version", 20, "not ready")
    _status, body = screener.probe("/readyz")
    assert (body["failure_mode"], body["fail_closed"], body["fail_open"]) == ("closed", True, False)
    assert screener.metric("aml_screener_failure_mode_info", mode="closed") == 1
    assert screener.terminate() == 0


def test_redis_that_lost_its_data_keeps_screeners_not_ready_until_a_sync_restores_it(stack, screeners, reader):
    """A restart without persistence empties Redis: no version, no tables. The screener must notice (not ready,
    fail closed, no decisions) rather than decide `clear` against an empty list; the next sync restores it."""
    listings = load_bundled_watchlist(stack.redis_url)
    first, second = generate(listings, 1_000, seed=11, hit_share=0.2), generate(listings, 1_000, seed=12, hit_share=0.2)
    screener = screeners()
    screener.wait_assigned()
    produce(stack, first)
    reader.read_until(all_decided(first), 45, "decisions before the data loss")
    stack.redis.restart()  # the embedded Redis keeps nothing on disk: it comes back empty
    produce(stack, second)
    screener.wait_until(lambda: screener.probe("/readyz")[0] == 503, 15, "not ready after the data loss")
    assert screener.probe("/readyz")[1]["fail_closed"] is True
    time.sleep(2)
    reader.settle(0.5)
    second_ids = {event.event_id for event in second}
    assert not second_ids & set(reader.outputs.decisions_by_event()), "no decision without the watchlist"
    load_bundled_watchlist(stack.redis_url)  # the sync job runs again
    outputs = reader.read_until(all_decided(second), 60, "every event decided once the sync restored the list")
    assert_complete_and_correct(first + second, outputs)
    assert screener.probe("/readyz")[0] == 200
    assert screener.terminate() == 0
