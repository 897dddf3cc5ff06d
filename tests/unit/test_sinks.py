"""The two sinks alone (screener/at_least_once.py, screener/exactly_once.py), over fake producers and a fake loop:
what is committed when, what is re-sent or aborted, and when the member must stop. No Kafka."""

from __future__ import annotations

import threading

import pytest
from kafka.errors import IllegalGenerationError, KafkaError, KafkaTimeoutError, ProducerFencedError
from kafka.structs import ConsumerGroupMetadata, OffsetAndMetadata, TopicPartition
from prometheus_client import CollectorRegistry

from aml_screener.screener.ack_window import InFlightBatch, Offsets, next_offsets
from aml_screener.screener.at_least_once import AtLeastOnceSink
from aml_screener.screener.exactly_once import FENCING_WINDOW_SECONDS, FENCINGS_BEFORE_STOP, ExactlyOnceSink
from aml_screener.screener.metrics import Metrics
from aml_screener.screener.pipeline import CompletedBatch, OutputRecord
from aml_screener.screener.sink import BatchAborted, SinkFailed
from tests.pipeline_support import Record
from tests.unit.kafka_fakes import FakeEmitter, FakeTransactionalProducer

A0, A1 = TopicPartition("in", 0), TopicPartition("in", 1)
# The consumer's group membership when a batch was polled (generation 3 of member "member").
GROUP = ConsumerGroupMetadata("group", 3, "member")


def batch(
    *offsets: tuple[int, int], topics: tuple[str, ...] = ("decisions",), membership: object = GROUP
) -> InFlightBatch:
    """A decided batch of records at (partition, offset), one output per record (topics cycled)."""
    records = [Record("in", partition, offset, 1, None, b"") for partition, offset in offsets]
    outputs = [OutputRecord(topics[i % len(topics)], b"k", b"v", None) for i in range(len(records))]
    completed = CompletedBatch(outputs, [], [], "v1", None)
    return InFlightBatch(next_offsets(records), completed, len(records), 0.0, len(outputs), membership=membership)


class FakeLoop:
    """The loop as a sink sees it: waits are counted; `deadline_after` keep-alives, the shutdown deadline passes."""

    def __init__(self, deadline_after: int | None = None) -> None:
        self.waits: list[float] = []
        self.keep_alives = 0
        self.deadline_after = deadline_after

    def wait_paused(self, seconds: float) -> bool:
        self.waits.append(seconds)
        return True

    def keep_alive(self) -> bool:
        self.keep_alives += 1
        return self.deadline_after is None or self.keep_alives <= self.deadline_after


class FakeCommitter:
    def __init__(self) -> None:
        self.async_commits: list[Offsets] = []
        self.sync_commits: list[Offsets] = []

    def commit_async(self, offsets: Offsets, callback: object = None) -> None:
        self.async_commits.append(dict(offsets))

    def commit(self, offsets: Offsets) -> None:
        self.sync_commits.append(dict(offsets))


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


# --------------------------------------------------------------------------------------------------------
# At-least-once
# --------------------------------------------------------------------------------------------------------


def at_least_once(emitter: FakeEmitter) -> tuple[AtLeastOnceSink, FakeCommitter, Metrics]:
    committer, metrics = FakeCommitter(), Metrics(CollectorRegistry())
    sink = AtLeastOnceSink(
        producer=emitter, committer=committer, metrics=metrics, max_inflight_batches=2, retry_max_seconds=0.2
    )
    return sink, committer, metrics


def test_at_least_once_commits_the_acknowledged_prefix_asynchronously() -> None:
    sink, committer, _ = at_least_once(FakeEmitter())
    first, second = batch((0, 1)), batch((0, 2), (1, 9))
    sink.submit(first, FakeLoop())
    sink.submit(second, FakeLoop())
    assert len(sink) == 2 and committer.async_commits == []
    assert sink.settle(FakeLoop(), wait=False) == [first, second]
    assert committer.async_commits == [{A0: OffsetAndMetadata(3, "", -1), A1: OffsetAndMetadata(10, "", -1)}]


def test_at_least_once_re_sends_refused_outputs_with_back_off_before_committing() -> None:
    emitter = FakeEmitter(refuse=1)
    sink, committer, metrics = at_least_once(emitter)
    loop = FakeLoop()
    sink.submit(batch((0, 1)), loop)
    finished = sink.settle(loop, wait=False)
    assert loop.waits == [0.1], "backed off once with the partitions paused"
    assert len(emitter.sent) == 2 and len(finished) == 1
    assert committer.async_commits == [{A0: OffsetAndMetadata(2, "", -1)}]
    assert sample(metrics, "aml_screener_produce_errors_total", topic="decisions") == 1


def test_at_least_once_drain_does_not_commit_and_finish_commits_synchronously() -> None:
    sink, committer, _ = at_least_once(FakeEmitter())
    sink.submit(batch((0, 1)), FakeLoop())
    sink.submit(batch((1, 4)), FakeLoop())
    assert len(sink.drain(1.0)) == 2 and committer.async_commits == []
    assert sink.revoked([A1], lost=False) == {A1: OffsetAndMetadata(5, "", -1)}, "revoked: commit before it moves"
    sink.finish()
    assert committer.sync_commits == [{A0: OffsetAndMetadata(2, "", -1)}], "what is still ours, at shutdown"


# --------------------------------------------------------------------------------------------------------
# Exactly-once
# --------------------------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def exactly_once(
    producer: FakeTransactionalProducer | None = None, stall_seconds: float = 5, clock: Clock | None = None
) -> tuple[ExactlyOnceSink, FakeTransactionalProducer, Metrics]:
    """A started sink (its producer registered) over a fake producer."""
    producer = producer or FakeTransactionalProducer()
    metrics = Metrics(CollectorRegistry())
    sink = ExactlyOnceSink(
        producer_factory=lambda: producer,
        metrics=metrics,
        transactional_id="aml.s1",
        stall_seconds=stall_seconds,
        clock=clock or Clock(),
    )
    assert sink.start(FakeLoop())
    producer.calls.clear()
    return sink, producer, metrics


def test_exactly_once_every_output_is_acknowledged_before_the_offsets_commit() -> None:
    sink, producer, metrics = exactly_once()
    done = batch((0, 1), (0, 2), (1, 7), topics=("decisions", "flagged", "dlq"))
    sink.submit(done, FakeLoop())
    assert producer.calls == [
        "begin_transaction",
        "send",
        "send",
        "send",
        "send_offsets_to_transaction",
        "flush",
        "commit_transaction",
    ]
    [transaction] = producer.committed
    assert [o.topic for o in transaction.outputs] == ["decisions", "flagged", "dlq"]
    assert transaction.offsets == {A0: OffsetAndMetadata(3, "", -1), A1: OffsetAndMetadata(8, "", -1)}
    assert transaction.group == GROUP, "the group metadata of the poll fences a stale generation (KIP-447)"
    assert sink.poll() == [done] and sink.poll() == [] and len(sink) == 0
    assert sample(metrics, "aml_screener_transactions_total", result="committed") == 1


def test_exactly_once_a_batch_polled_without_a_group_generation_is_never_committed() -> None:
    """Kafka accepts a transactional offset commit carrying no generation and no member id without any check, and
    kafka-python's heartbeat thread resets the consumer's membership to exactly that when the coordinator no longer
    knows it (a zombie thawed after its session expired): such a batch must be read again, not committed."""
    sink, producer, _metrics = exactly_once()
    unjoined = ConsumerGroupMetadata("group", -1, "")
    with pytest.raises(BatchAborted, match="no group generation"):
        sink.submit(batch((0, 1), membership=unjoined), FakeLoop())
    assert producer.committed == [] and producer.open is None and "begin_transaction" not in producer.calls
    sink.submit(batch((0, 1)), FakeLoop())
    assert [t.group for t in producer.committed] == [GROUP], "the next batch, polled as a member, commits"


def test_exactly_once_an_output_that_failed_silently_aborts_instead_of_committing() -> None:
    """kafka-python 3.0.12 fails an expired output of a transaction without failing commit_transaction: committing
    would commit the input offsets without that output (lost)."""
    sink, producer, metrics = exactly_once()
    producer.refuse = 1
    with pytest.raises(BatchAborted):
        sink.submit(batch((0, 1), (0, 2), topics=("flagged", "decisions")), FakeLoop())
    assert producer.committed == [] and len(producer.aborted) == 1
    assert sample(metrics, "aml_screener_produce_errors_total", topic="flagged") == 1
    assert sample(metrics, "aml_screener_transactions_total", result="aborted") == 1
    assert sink.poll() == [], "nothing finished: the loop reads the batch again"


def test_exactly_once_offsets_of_a_stale_generation_abort_and_the_next_batch_starts_clean() -> None:
    sink, producer, _ = exactly_once()
    producer.fail("send_offsets_to_transaction", IllegalGenerationError())
    with pytest.raises(BatchAborted):
        sink.submit(batch((0, 1)), FakeLoop())
    sink.submit(batch((0, 1)), FakeLoop())
    assert len(producer.aborted) == 1 and len(producer.committed) == 1


def test_exactly_once_a_bug_aborts_the_transaction_and_reaches_the_loop_as_itself() -> None:
    sink, producer, _ = exactly_once()
    producer.fail("flush", ValueError("a bug"))
    with pytest.raises(ValueError, match="a bug"):
        sink.submit(batch((0, 1)), FakeLoop())
    assert len(producer.aborted) == 1 and producer.open is None, "no transaction left open for the next batch"


@pytest.mark.parametrize("call", ["commit_transaction", "send_offsets_to_transaction", "begin_transaction"])
def test_exactly_once_a_fenced_producer_is_replaced_and_fenced_again_and_again_fails_the_sink(call: str) -> None:
    clock = Clock()
    sink, producer, metrics = exactly_once(clock=clock)
    producer.fail(call, *(ProducerFencedError() for _ in range(FENCINGS_BEFORE_STOP)))
    for _ in range(FENCINGS_BEFORE_STOP - 1):
        with pytest.raises(BatchAborted, match="fenced"):
            sink.submit(batch((0, 1)), FakeLoop())
        clock.now += 1
    with pytest.raises(SinkFailed, match=r"fenced 3 times.*aml\.s1.*AML_INSTANCE_ID must be unique"):
        sink.submit(batch((0, 1)), FakeLoop())
    assert producer.calls.count("init_transactions") == FENCINGS_BEFORE_STOP - 1, "a new producer each time"
    assert producer.committed == [] and sample(metrics, "aml_screener_transactions_total", result="failed") == 1


@pytest.mark.parametrize(
    "wrapped",
    [
        KafkaError(
            "Cannot perform send because at least one previous transactional or idempotent request has failed with "
            "errors.",
            ProducerFencedError(),
        ),
        KafkaError(
            "Cannot execute transactional method because we are in an error state: " + str(ProducerFencedError())
        ),
    ],
)
def test_exactly_once_a_fencing_reported_wrapped_by_a_later_call_counts_as_a_fencing(wrapped: KafkaError) -> None:
    """kafka-python 3.0.12 reports a fencing its sender thread saw first as a plain KafkaError from the next call:
    two live members with the same transactional id must still reach FENCINGS_BEFORE_STOP."""
    clock = Clock()
    sink, producer, _ = exactly_once(clock=clock)
    producer.fail("begin_transaction", *(wrapped for _ in range(FENCINGS_BEFORE_STOP)))
    for _ in range(FENCINGS_BEFORE_STOP - 1):
        with pytest.raises(BatchAborted, match="fenced"):
            sink.submit(batch((0, 1)), FakeLoop())
        clock.now += 1
    with pytest.raises(SinkFailed, match="AML_INSTANCE_ID must be unique"):
        sink.submit(batch((0, 1)), FakeLoop())


def test_exactly_once_fencings_far_apart_are_each_survived() -> None:
    clock = Clock()
    sink, producer, _ = exactly_once(clock=clock)
    producer.fail("commit_transaction", *(ProducerFencedError() for _ in range(FENCINGS_BEFORE_STOP + 1)))
    for _ in range(FENCINGS_BEFORE_STOP + 1):
        with pytest.raises(BatchAborted):
            sink.submit(batch((0, 1)), FakeLoop())
        clock.now += FENCING_WINDOW_SECONDS * 0.6
    sink.submit(batch((0, 1)), FakeLoop())
    assert len(producer.committed) == 1


def test_exactly_once_a_transaction_that_cannot_be_aborted_gets_a_new_producer() -> None:
    sink, producer, _ = exactly_once()
    producer.refuse = 1
    producer.fail("abort_transaction", KafkaError("Cannot execute transactional method: fatal state"))
    with pytest.raises(BatchAborted):
        sink.submit(batch((0, 1)), FakeLoop())
    sink.submit(batch((0, 1)), FakeLoop())
    assert producer.calls.count("init_transactions") == 1 and len(producer.committed) == 1
    assert len(producer.aborted) == 1, "the new producer's registration aborted the stuck transaction"


def test_exactly_once_a_commit_that_makes_no_progress_gets_a_new_producer() -> None:
    """kafka-python 3.0.12 can stall for good when its transaction coordinator dies."""
    sink, producer, _ = exactly_once(stall_seconds=0.3)
    gate = producer.commit_gate = threading.Event()
    loop = FakeLoop()
    try:
        with pytest.raises(BatchAborted, match="stalled"):
            sink.submit(batch((0, 1)), loop)
    finally:
        gate.set()
    assert loop.keep_alives >= 2, "the loop counted as alive while it waited"
    assert producer.calls[-2:] == ["commit_transaction", "init_transactions"], "a new producer registered the id"
    assert len(producer.aborted) == 1, "which ended the stalled transaction: its offsets are stable again"


def test_exactly_once_the_shutdown_deadline_leaves_the_transaction_to_the_brokers() -> None:
    sink, producer, _ = exactly_once()
    producer.commit_gate = threading.Event()
    try:
        with pytest.raises(BatchAborted, match="shutdown deadline"):
            sink.submit(batch((0, 1)), FakeLoop(deadline_after=2))
        sink.close(1.0)
        assert not producer.closed, "not closed under a running call"
    finally:
        producer.commit_gate.set()


def test_exactly_once_start_registers_the_transactional_id_retrying_while_the_coordinator_is_away() -> None:
    producer = FakeTransactionalProducer()
    producer.fail("init_transactions", KafkaTimeoutError(), KafkaTimeoutError())
    sink = ExactlyOnceSink(
        producer_factory=lambda: producer,
        metrics=Metrics(CollectorRegistry()),
        transactional_id="aml.s1",
        stall_seconds=5,
    )
    loop = FakeLoop()
    assert sink.start(loop)
    assert producer.calls == ["init_transactions"] * 3 and loop.waits == [1.0, 1.0]
