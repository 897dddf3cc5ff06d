"""The consumer loop (screener/service.py) driven through fakes of its ports: a consumer that replays a script of
poll results (and records again after a seek back), either sink over a fake producer (an emitter that acknowledges
or refuses outputs; a transactional producer that keeps what each transaction held), a lookup that answers or is
down. No Kafka, no Redis: what is checked is what the loop does with what it is given — commits, transactions,
pauses, readiness, re-sends, re-reads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from typing import Any

import pytest
from kafka.errors import KafkaError, KafkaTimeoutError, ProducerFencedError
from kafka.structs import ConsumerGroupMetadata, OffsetAndMetadata, TopicPartition
from prometheus_client import CollectorRegistry

from aml_screener.infra.settings import FailureMode, Settings
from aml_screener.screener.at_least_once import AtLeastOnceSink
from aml_screener.screener.codec import EventEncoder
from aml_screener.screener.errors import LookupFailure, LookupUnavailable
from aml_screener.screener.exactly_once import FENCINGS_BEFORE_STOP, ExactlyOnceSink
from aml_screener.screener.health import ServiceState
from aml_screener.screener.lookup import LookupResult
from aml_screener.screener.metrics import Metrics
from aml_screener.screener.schemas import WITHDRAWAL_REQUESTED
from aml_screener.screener.service import EXIT_SINK_FAILED, Screener
from aml_screener.screener.sink import Sink
from tests.pipeline_support import CATALOG, Record, batch_screener
from tests.unit.kafka_fakes import FakeEmitter, FakeTransactionalProducer

TOPIC = "withdrawals.requested"
TP0 = TopicPartition(TOPIC, 0)
CLEAN = "0x52908400098527886e0f7030069857d2e4169ee7"


def withdrawal(offset: int) -> Record:
    entry = CATALOG.current(WITHDRAWAL_REQUESTED)
    value = EventEncoder(entry.schema, entry.schema_id).encode(
        {
            "event_id": f"e-{offset}",
            "exchange_id": "x",
            "account_id": "a",
            "asset": "ETH",
            "network": "ethereum",
            "destination_address": CLEAN,
            "destination_tag": None,
            "amount": Decimal(1),
            "usd_value": None,
            "requested_at": 1,
            "metadata": None,
        }
    )
    return Record(TOPIC, 0, offset, 1, b"k", value)


Step = dict[TopicPartition, list[Record]] | Exception
GROUP = ConsumerGroupMetadata("aml-screener", 7, "member-1")  # the fake consumer's group membership


class FakeConsumer:
    """Plays `script` (one poll result or exception per poll), then empty polls; stops the screener once `until()`
    holds after the script (default: at once), or after 10 s (the test's assertions then say what went wrong). A
    seek back makes the next poll deliver again, as a broker would, the records it delivered from that offset on."""

    def __init__(self, script: Iterable[Step]) -> None:
        self.script = iter(script)
        self.until: Callable[[], bool] = lambda: True
        self.deadline = time.monotonic() + 10
        self.screener: Screener | None = None
        self.assigned = {TP0}
        self.paused: set[TopicPartition] = set()
        self.commits: list[dict[TopicPartition, OffsetAndMetadata]] = []
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.polls = 0
        self._held_back: Step | None = None
        self._delivered: dict[TopicPartition, dict[int, Record]] = {}
        self._replay: dict[TopicPartition, list[Record]] = {}
        self.after_poll: Callable[[int], None] = lambda count: None
        self.membership = GROUP
        self.committed_calls: list[TopicPartition] = []
        # Offsets committed in transactions (exactly-once tests set it to read the fake producer's).
        self.transaction_offsets: Callable[[TopicPartition], list[OffsetAndMetadata]] = lambda tp: []

    def subscribe(self, topics: list[str], listener: Any = None) -> None:
        self.listener = listener

    def topics(self) -> set[str]:
        return {TOPIC}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0}

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[TopicPartition, list[Record]]:
        self.polls += 1
        self.after_poll(self.polls)
        if time.monotonic() > self.deadline:
            assert self.screener is not None
            self.screener.request_stop()  # the test's assertions say what did not happen in time
        replay = {tp: records for tp, records in self._replay.items() if tp not in self.paused}
        if replay:
            for tp in replay:
                del self._replay[tp]
            return replay
        step = self._held_back or next(self.script, None)
        self._held_back = None
        if isinstance(step, dict) and any(tp in self.paused for tp in step):
            self._held_back = step  # a paused partition delivers nothing; its records wait, as on a broker
            time.sleep(timeout_ms / 1000)
            return {}
        if step is None:
            assert self.screener is not None
            if self.until() or time.monotonic() > self.deadline:
                self.screener.request_stop()
            time.sleep(timeout_ms / 1000)
            return {}
        if isinstance(step, Exception):
            raise step
        for tp, records in step.items():
            self._delivered.setdefault(tp, {}).update((record.offset, record) for record in records)
        return {tp: records for tp, records in step.items() if tp not in self.paused}

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def pause(self, *partitions: TopicPartition) -> None:
        self.paused |= set(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.paused -= set(partitions)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))
        delivered = self._delivered.get(tp, {})
        self._replay[tp] = [delivered[o] for o in sorted(delivered) if o >= offset]

    def commit_async(self, offsets: dict[TopicPartition, OffsetAndMetadata], callback: Any = None) -> None:
        self.commits.append(dict(offsets))
        if callback is not None:
            callback(offsets, None)

    def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        self.commits.append(dict(offsets))

    def committed(self, tp: TopicPartition, metadata: bool = False, timeout_ms: int | None = None) -> int | None:
        """The group's committed offset: the consumer's own commits, or the exactly-once transactions'."""
        self.committed_calls.append(tp)
        offsets = [c[tp].offset for c in self.commits if tp in c] + [o.offset for o in self.transaction_offsets(tp)]
        return max(offsets) if offsets else None

    def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        for tp in partitions:
            self.seek(tp, 0)

    def seek_to_end(self, *partitions: TopicPartition) -> None:
        raise AssertionError("auto_offset_reset is earliest in these tests")

    def group_metadata(self) -> ConsumerGroupMetadata:
        return self.membership

    def position(self, tp: TopicPartition, timeout_ms: int = 0) -> int:
        return 0

    def highwater(self, tp: TopicPartition) -> int | None:
        return None

    def close(self, autocommit: bool = False) -> None:
        pass


class FakeLookup:
    """Answers, except for the calls (1-based) in `down`."""

    def __init__(self, down: Iterable[int] = ()) -> None:
        self.down = set(down)
        self.calls = 0

    def lookup(self, keys: Sequence[str]) -> LookupResult:
        self.calls += 1
        if self.calls in self.down:
            raise LookupUnavailable(LookupFailure.REDIS_UNAVAILABLE, "connection refused")
        return LookupResult("v1", 10, {}, 0.0)

    def check(self) -> LookupResult:
        return self.lookup(())


def make(
    script: Iterable[Step],
    *,
    lookup: FakeLookup | None = None,
    emitter: FakeEmitter | None = None,
    mode: FailureMode = FailureMode.CLOSED,
    max_inflight_batches: int = 4,
) -> tuple[Screener, FakeConsumer, FakeEmitter, ServiceState, Metrics]:
    """The loop with the at-least-once sink over a fake emitter."""
    emitter = emitter or FakeEmitter()

    def sink(consumer: FakeConsumer, metrics: Metrics) -> Sink:
        return AtLeastOnceSink(
            producer=emitter,
            committer=consumer,
            metrics=metrics,
            max_inflight_batches=max_inflight_batches,
            retry_max_seconds=0.2,
        )

    screener, consumer, state, metrics = loop(script, sink, lookup=lookup, mode=mode)
    return screener, consumer, emitter, state, metrics


def make_exactly_once(
    script: Iterable[Step],
    *,
    lookup: FakeLookup | None = None,
    producer: FakeTransactionalProducer | None = None,
    mode: FailureMode = FailureMode.CLOSED,
) -> tuple[Screener, FakeConsumer, FakeTransactionalProducer, ServiceState, Metrics]:
    """The loop with the exactly-once sink over a fake transactional producer."""
    producer = producer or FakeTransactionalProducer()

    def sink(consumer: FakeConsumer, metrics: Metrics) -> Sink:
        return ExactlyOnceSink(
            producer_factory=lambda: producer,
            metrics=metrics,
            transactional_id="aml-screener.test",
            stall_seconds=5,
        )

    screener, consumer, state, metrics = loop(script, sink, lookup=lookup, mode=mode)
    consumer.transaction_offsets = lambda tp: [
        t.offsets[tp] for t in producer.committed if t.offsets and tp in t.offsets
    ]
    return screener, consumer, producer, state, metrics


def loop(
    script: Iterable[Step],
    sink: Callable[[FakeConsumer, Metrics], Sink],
    *,
    lookup: FakeLookup | None,
    mode: FailureMode,
) -> tuple[Screener, FakeConsumer, ServiceState, Metrics]:
    settings = Settings(
        kafka_input_topic=TOPIC,
        lookup_retry_max_seconds=0.2,
        kafka_poll_timeout_ms=1,
        watchlist_failure_mode=mode,
        shutdown_timeout_seconds=1,
    )
    consumer = FakeConsumer(script)
    lookup = lookup or FakeLookup()
    metrics = Metrics(CollectorRegistry())
    state = ServiceState()
    screener = Screener(
        settings=settings,
        consumer=consumer,
        sink=sink(consumer, metrics),
        batch_screener=batch_screener(lookup.lookup),
        lookup=lookup,
        metrics=metrics,
        state=state,
    )
    consumer.screener = screener
    return screener, consumer, state, metrics


def ready_gauge(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("aml_screener_ready") or 0.0


def test_a_processed_batch_is_committed_after_its_outputs_are_acknowledged() -> None:
    screener, consumer, emitter, _state, _ = make([{TP0: [withdrawal(0), withdrawal(1)]}])
    assert screener.run() == 0
    assert len(emitter.sent) == 2 and {o.topic for o in emitter.sent} == {"decisions"}
    assert consumer.commits and consumer.commits[-1] == {TP0: OffsetAndMetadata(2, "", -1)}
    assert screener.records_done == 2


def test_poll_errors_on_an_idle_topic_do_not_leave_the_screener_not_ready() -> None:
    """Issue 12: five poll errors spread over time turned readiness off, and on a quiet topic only a processed
    batch (or a watchlist recovery) turned it back on: a broker blip left an idle screener not ready for good."""
    blip = [KafkaError("NodeNotReadyError") for _ in range(5)]
    readiness: list[tuple[int, bool, float]] = []
    screener, consumer, _emitter, state, metrics = make(blip)
    consumer.after_poll = lambda count: readiness.append((count, state.is_ready(), ready_gauge(metrics)))
    consumer.until = state.is_ready  # the topic stays idle: nothing but empty polls from here on
    assert screener.run() == 0
    assert (6, False, 0.0) in readiness, "after five consecutive errors the screener reports not ready"
    assert readiness[-1][1:] == (True, 1.0), "once polls succeed again for a while, it is ready again, gauge too"


def test_a_watchlist_outage_pauses_decides_nothing_and_resumes_by_itself() -> None:
    # Call 1 is the start-up check; the batch's lookups 2 to 4 fail; the fifth answers.
    lookup = FakeLookup(down={2, 3, 4})
    screener, consumer, emitter, state, metrics = make([{TP0: [withdrawal(0)]}], lookup=lookup)
    seen: list[tuple[float, frozenset[TopicPartition], int]] = []
    consumer.after_poll = lambda count: seen.append(
        (ready_gauge(metrics), frozenset(consumer.paused), len(emitter.sent))
    )
    consumer.until = lambda: bool(consumer.commits)
    assert screener.run() == 0
    assert (0.0, frozenset({TP0}), 0) in seen, "while failing closed: not ready, partitions paused, nothing sent"
    assert lookup.calls == 5 and len(emitter.sent) == 1
    assert consumer.commits[-1] == {TP0: OffsetAndMetadata(1, "", -1)}, "decided once the watchlist answered"
    assert seen[-1][:2] == (1.0, frozenset()) and state.is_ready(), "ready and resumed"


def test_refused_outputs_are_resent_before_anything_is_committed() -> None:
    screener, consumer, emitter, _state, metrics = make(
        [{TP0: [withdrawal(0)]}, *({} for _ in range(5))], emitter=FakeEmitter(refuse=1)
    )
    assert screener.run() == 0
    assert len(emitter.sent) == 2, "the refused decision was sent again"
    assert consumer.commits[-1] == {TP0: OffsetAndMetadata(1, "", -1)}
    assert metrics.registry.get_sample_value(
        "aml_screener_produce_errors_total", {"topic": "decisions"}
    ) == pytest.approx(1.0)


def test_fail_open_mode_holds_events_unscreened_and_probes_until_the_watchlist_answers() -> None:
    # Call 1 is the start-up check; the batch's lookup (2) and the first two probes fail; the third probe answers.
    lookup = FakeLookup(down={2, 3, 4})
    screener, consumer, emitter, state, metrics = make([{TP0: [withdrawal(0)]}], lookup=lookup, mode=FailureMode.OPEN)
    consumer.until = lambda: lookup.calls >= 5
    assert screener.run() == 0
    assert [o.topic for o in emitter.sent] == ["withdrawals.held"], "held unscreened, never decided"
    assert consumer.commits[-1] == {TP0: OffsetAndMetadata(1, "", -1)}
    assert state.is_ready() and not state.fail_open, "the bypass ended with no further traffic"
    assert metrics.registry.get_sample_value("aml_screener_fail_open_active") == 0.0


def test_a_full_window_pauses_consumption_only_until_the_acknowledgements_arrive() -> None:
    """Found on real Kafka (issue 11): when acknowledgements took longer than one wait, the loop paused every
    partition to keep the group alive and returned with them still paused; nothing resumed them."""
    emitter = FakeEmitter(slow_flushes=3)
    screener, consumer, emitter, _state, _ = make(
        [{TP0: [withdrawal(0)]}, {TP0: [withdrawal(1)]}], emitter=emitter, max_inflight_batches=1
    )
    consumer.until = lambda: len(consumer.commits) >= 2
    assert screener.run() == 0
    assert consumer.commits[:2] == [{TP0: OffsetAndMetadata(1, "", -1)}, {TP0: OffsetAndMetadata(2, "", -1)}], (
        "each batch committed in turn by the loop (not only by the shutdown's final commit)"
    )
    assert not consumer.paused


# --------------------------------------------------------------------------------------------------------
# Exactly-once: the same loop over the transactional sink
# --------------------------------------------------------------------------------------------------------


def transactions(metrics: Metrics, result: str) -> float:
    return metrics.registry.get_sample_value("aml_screener_transactions_total", {"result": result}) or 0.0


def test_exactly_once_commits_a_batchs_outputs_and_offsets_in_one_transaction() -> None:
    screener, consumer, producer, _state, metrics = make_exactly_once([{TP0: [withdrawal(0), withdrawal(1)]}])
    assert screener.run() == 0
    assert producer.calls[0] == "init_transactions", "the transactional id is registered before the group is joined"
    [transaction] = producer.committed
    assert [output.topic for output in transaction.outputs] == ["decisions", "decisions"]
    assert transaction.offsets == {TP0: OffsetAndMetadata(2, "", -1)} and transaction.group == GROUP
    assert consumer.commits == [], "offsets go only through the transaction, never through the consumer"
    assert screener.records_done == 2 and transactions(metrics, "committed") == 1
    assert producer.closed


def test_exactly_once_an_aborted_transaction_is_read_again_and_committed_once() -> None:
    """kafka-python fails an output whose delivery timed out without failing the commit: the sink must abort, and
    the loop must read the batch again from its first offset."""
    producer = FakeTransactionalProducer()
    producer.refuse = 1
    screener, consumer, producer, _state, metrics = make_exactly_once(
        [{TP0: [withdrawal(5), withdrawal(6)]}], producer=producer
    )
    consumer.until = lambda: bool(producer.committed)
    assert screener.run() == 0
    assert len(producer.aborted) == 1 and producer.aborted[0].offsets == {TP0: OffsetAndMetadata(7, "", -1)}
    assert consumer.seeks[0] == (TP0, 5), "re-read from the batch's first offset"
    [transaction] = producer.committed
    assert len(transaction.outputs) == 2 and transaction.offsets == {TP0: OffsetAndMetadata(7, "", -1)}
    assert transactions(metrics, "aborted") == 1 and transactions(metrics, "committed") == 1
    assert metrics.registry.get_sample_value(
        "aml_screener_produce_errors_total", {"topic": "decisions"}
    ) == pytest.approx(1.0)


def test_exactly_once_a_commit_whose_answer_was_lost_is_not_decided_again() -> None:
    """The brokers committed the transaction but the client saw an error (its transaction coordinator was killed
    after writing the commit): only the group's committed offsets know. Reading the batch again from its first offset
    put 126 decisions twice before a read_committed reader (fault suite, leader + coordinator kill -9, CI)."""
    producer = FakeTransactionalProducer()
    producer.lost_commit_answers.append(KafkaTimeoutError("Timed out waiting for EndTxn"))
    screener, consumer, producer, _state, _ = make_exactly_once(
        [{TP0: [withdrawal(0), withdrawal(1)]}, {TP0: [withdrawal(2)]}], producer=producer
    )
    consumer.until = lambda: b"e-2" in {o.key for t in producer.committed for o in t.outputs}
    assert screener.run() == 0
    keys = [output.key or b"" for transaction in producer.committed for output in transaction.outputs]
    assert sorted(keys) == [b"e-0", b"e-1", b"e-2"], "each event decided once as a read_committed reader sees it"
    assert TP0 in consumer.committed_calls, "where to read again came from the group's committed offsets"


def test_exactly_once_an_aborted_first_batch_is_read_again_although_nothing_was_ever_committed() -> None:
    """Reading an aborted batch again from the committed offsets must not skip it when the group has none yet, also
    for a group that starts at the end of its topics."""
    producer = FakeTransactionalProducer()
    producer.fail("send_offsets_to_transaction", KafkaError("coordinator not available"))
    screener, consumer, producer, _state, _ = make_exactly_once([{TP0: [withdrawal(7)]}], producer=producer)
    screener.settings = screener.settings.model_copy(update={"kafka_auto_offset_reset": "latest"})
    consumer.until = lambda: bool(producer.committed)
    assert screener.run() == 0
    [transaction] = producer.committed
    assert [output.key for output in transaction.outputs] == [b"e-7"]


def test_exactly_once_a_producer_fenced_again_and_again_stops_the_member_instead_of_looping() -> None:
    """Another live member registering the same transactional id: each replacement producer is fenced again."""
    producer = FakeTransactionalProducer()
    producer.fail("commit_transaction", *(ProducerFencedError() for _ in range(FENCINGS_BEFORE_STOP)))
    screener, consumer, producer, _state, metrics = make_exactly_once([{TP0: [withdrawal(0)]}], producer=producer)
    consumer.until = lambda: False  # the batch is read again after each fencing, until the member stops
    assert screener.run() == EXIT_SINK_FAILED
    assert producer.committed == [] and producer.calls.count("commit_transaction") == FENCINGS_BEFORE_STOP
    assert producer.calls.count("init_transactions") == FENCINGS_BEFORE_STOP, "registered anew after each fencing"
    assert consumer.commits == [] and transactions(metrics, "failed") == 1
    assert metrics.registry.get_sample_value("aml_screener_up") == 0


def test_exactly_once_one_fencing_replaces_the_producer_and_the_batch_is_read_again() -> None:
    """kafka-python reports a transaction the brokers aborted on its timeout (a long broker failover) as fenced."""
    producer = FakeTransactionalProducer()
    producer.fail("commit_transaction", ProducerFencedError())
    screener, consumer, producer, _state, _ = make_exactly_once([{TP0: [withdrawal(3)]}], producer=producer)
    consumer.until = lambda: bool(producer.committed)
    assert screener.run() == 0
    assert consumer.seeks[0] == (TP0, 3) and producer.calls.count("init_transactions") == 2
    [transaction] = producer.committed
    assert transaction.offsets == {TP0: OffsetAndMetadata(4, "", -1)}
    assert len(producer.aborted) == 1, "the new producer's registration aborted the fenced one's transaction"


def test_exactly_once_fail_open_holds_events_in_the_same_transaction_as_their_offsets() -> None:
    lookup = FakeLookup(down={2})  # call 1 is the start-up check; the batch's lookup fails
    screener, _consumer, producer, _state, _ = make_exactly_once(
        [{TP0: [withdrawal(0)]}], lookup=lookup, mode=FailureMode.OPEN
    )
    assert screener.run() == 0
    [transaction] = producer.committed
    assert [output.topic for output in transaction.outputs] == ["withdrawals.held"]
    assert transaction.offsets == {TP0: OffsetAndMetadata(1, "", -1)}


def test_exactly_once_sigterm_during_a_commit_that_hangs_stops_at_the_shutdown_deadline() -> None:
    producer = FakeTransactionalProducer()
    gate = producer.commit_gate = threading.Event()  # the commit never returns (a cluster that stopped answering)
    screener, consumer, producer, _state, _ = make_exactly_once([{TP0: [withdrawal(0)]}], producer=producer)
    runner = threading.Thread(target=lambda: results.append(screener.run()))
    results: list[int] = []
    runner.start()
    while "commit_transaction" not in producer.calls:
        time.sleep(0.01)
    screener.request_stop()  # shutdown bound: 1 s
    runner.join(timeout=10)
    gate.set()
    assert not runner.is_alive() and results == [0], "the member stopped at the deadline"
    assert producer.committed == [] and consumer.commits == []
    assert not producer.closed, "a producer mid-transaction is left to the brokers, not closed under the call"


# --------------------------------------------------------------------------------------------------------
# Rebalances: a partition assigned again starts from the committed offset; the membership of the poll commits
# --------------------------------------------------------------------------------------------------------


def rebalance_then(consumer: FakeConsumer, at_poll: int, stale: list[Record]) -> None:
    """At poll `at_poll`, the group rebalances and gives TP0 back to this member (kafka-python calls the listener
    inside poll), and the poll returns records from the position the client kept across the rebalance (`stale`):
    what kafka-python 3.0.12 does, where Java's client would fetch the committed offset."""

    def after_poll(count: int) -> None:
        if count == at_poll:
            assert consumer.screener is not None
            consumer.screener._on_revoked([TP0], lost=False)
            consumer.screener._on_assigned([TP0])
            consumer._replay[TP0] = stale

    consumer.after_poll = after_poll


def test_a_partition_assigned_again_resumes_from_its_committed_offset_not_from_the_clients_position() -> None:
    """Found on real Kafka (test_exactly_once, zombie case): a member that got its partitions back resumed from the
    position it had kept and decided 3,285 events a second time that another member had decided and committed."""
    records = [withdrawal(offset) for offset in range(4)]
    screener, consumer, emitter, _state, _ = make([{TP0: records[:2]}, {}, {}, {TP0: records[2:]}])
    rebalance_then(consumer, at_poll=3, stale=records[:2])  # kept position 0; the group committed 2
    consumer.until = lambda: bool(consumer.commits) and consumer.commits[-1][TP0].offset == 4
    assert screener.run() == 0
    decided = [output.key for output in emitter.sent]
    assert len(decided) == 4 and len(set(decided)) == 4, "each event decided once"
    assert TP0 in consumer.committed_calls and (TP0, 2) in consumer.seeks


def test_exactly_once_a_partition_assigned_again_is_not_decided_twice() -> None:
    records = [withdrawal(offset) for offset in range(4)]
    screener, consumer, producer, _state, _ = make_exactly_once([{TP0: records[:2]}, {}, {}, {TP0: records[2:]}])
    rebalance_then(consumer, at_poll=3, stale=records[:2])
    consumer.until = lambda: len(producer.committed) == 2
    assert screener.run() == 0
    keys = [output.key for transaction in producer.committed for output in transaction.outputs]
    assert len(keys) == 4 and len(set(keys)) == 4, "a read_committed reader sees each decision once"


def test_a_partition_paused_when_revoked_and_assigned_back_later_is_resumed() -> None:
    """Found on real Kafka (rebalance storm, CI): kafka-python 3.0.12 keeps a partition's state, its paused flag
    included, across an eager rebalance that gives it back to the same member, and its JoinGroup may finish in a
    later poll than the one that revoked. A partition paused while the loop waited (here: a watchlist outage) was
    revoked during the wait, assigned back after it, and stayed paused in the client: its records were never read
    again (2 of 6 partitions stalled for minutes while /readyz said ready)."""
    lookup = FakeLookup(down={2})  # call 1 is the start-up check; the batch's first lookup fails: the loop waits
    screener, consumer, emitter, _state, _ = make([{TP0: [withdrawal(0)]}, {TP0: [withdrawal(1)]}], lookup=lookup)

    def rebalance(count: int) -> None:
        if count == 2:  # the poll inside the wait, partitions paused: the group revokes them; JoinGroup in flight
            assert consumer.screener is not None and consumer.paused == {TP0}
            consumer.screener._on_revoked([TP0], lost=False)
        if count == 4:  # a later poll, the wait over: the join completes and TP0 comes back, its paused flag kept
            assert consumer.screener is not None
            consumer.screener._on_assigned([TP0])

    consumer.after_poll = rebalance
    consumer.until = lambda: b"e-1" in {output.key for output in emitter.sent}
    assert screener.run() == 0
    assert b"e-1" in {output.key for output in emitter.sent}, "the partition's next record was read and decided"
    assert not consumer.paused, "nothing is left paused once the loop no longer waits"


def test_exactly_once_commits_with_the_membership_of_the_poll_not_a_later_one() -> None:
    """kafka-python's heartbeat thread may reset the membership between the poll and the commit (the member was
    expelled): the transaction carries the generation the records were fetched under, which the coordinator then
    refuses, instead of "no generation", which it would accept unchecked."""
    screener, consumer, producer, _state, _ = make_exactly_once([{TP0: [withdrawal(0)]}])
    expelled = ConsumerGroupMetadata("aml-screener", -1, "")
    original = screener.batch.complete

    def complete_then_expel(prepared: Any) -> Any:
        consumer.membership = expelled  # the heartbeat thread's reset, after the poll
        return original(prepared)

    screener.batch.complete = complete_then_expel  # type: ignore[method-assign,assignment]
    assert screener.run() == 0
    [transaction] = producer.committed
    assert transaction.group == GROUP


def test_a_long_wait_for_acknowledgements_is_logged_once_per_batch(monkeypatch, caplog) -> None:
    """A slow or stuck producer must not look like an idle topic: the wait is logged (consumption waits paused)."""
    monkeypatch.setattr("aml_screener.screener.at_least_once._SLOW_ACK_SECONDS", 0.0)
    screener, consumer, _emitter, _state, _ = make(
        [{TP0: [withdrawal(0)]}], emitter=FakeEmitter(slow_flushes=4), max_inflight_batches=1
    )
    consumer.until = lambda: bool(consumer.commits)
    with caplog.at_level("WARNING", logger="aml_screener.screener.at_least_once"):
        assert screener.run() == 0
    slow = [r for r in caplog.records if r.getMessage().startswith("outputs not acknowledged by Kafka yet")]
    assert len(slow) == 1 and slow[0].pending == 1
