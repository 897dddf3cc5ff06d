"""The exactly-once sink (AML_PROCESSING_GUARANTEE=exactly_once): every output of a batch and the batch's input
offsets in one Kafka transaction, so a read_committed reader sees each decision (flag, dead letter, held record)
exactly once across screener crashes, broker failover and rebalances.

Per batch: begin, send every output, add the batch's offsets with the consumer's group metadata
(`send_offsets_to_transaction`), check that every output was acknowledged, commit. Anything going wrong before the
commit aborts the transaction (its outputs are never visible to read_committed readers) and raises BatchAborted:
the loop reads the batch again after a back-off, from the group's committed offsets (`_aborted`: the answer to a
commit can be lost, and then only the brokers know whether the batch was committed). The producer is kafka-python's
own transactional producer, because the offsets must carry the group metadata of the kafka-python consumer
(docs/architecture.md, "Exactly once: why kafka-python's producer").

Fencing of zombies: one transactional id per member (`<group id>.<instance id>`, infra/kafka.py). A producer that
registers the id fences every older producer with it (and aborts what it left open), and a member whose group
generation is stale has its offsets refused (KIP-447: the group metadata goes with the offsets), which aborts its
transaction. A fenced producer can never commit again. The group metadata sent is the one the batch was *polled*
under (`InFlightBatch.membership`, taken by the loop right after the poll), never a later snapshot, and a batch
polled without a generation is aborted here, unsent: Kafka accepts a transactional offset commit that carries no
member id and no generation without any check (ClassicGroup.validateOffsetCommit, Kafka 4.4: older clients sent
none), and kafka-python's heartbeat thread resets the generation to exactly that when the coordinator no longer
knows the member. A zombie thawed after its session expired polled a batch, lost its generation to a heartbeat
before committing, and committed the batch a second time with "no generation" (found by
tests/integration/test_exactly_once.py, zombie case).

The producer is replaced (a new one registers the same id, which aborts whatever the old one left open) when:
- a transactional call makes no progress for the transaction timeout: the brokers abort such a transaction anyway,
  and kafka-python 3.0.12 can stall for good when its transaction coordinator dies (measured here: no request sent
  again after the coordinator's kill -9, the commit waiting past every timeout);
- it was fenced: kafka-python reports a transaction the brokers aborted on its timeout as ProducerFencedError too,
  so one fencing is survived. Fenced FENCINGS_BEFORE_STOP times within FENCING_WINDOW_SECONDS means another live
  member uses the same transactional id (a duplicate AML_INSTANCE_ID): SinkFailed, this member stops.

A transaction never spans a consumer poll: `submit` returns only once it is committed or aborted, so a rebalance
(whose callbacks run inside poll) never finds one open, and nothing needs aborting on revoke. Blocking
transactional calls run on a helper thread so the loop can bound them: it stays alive meanwhile and gives up at the
shutdown deadline (the brokers then abort what was left open after AML_KAFKA_TRANSACTION_TIMEOUT_MS, or at once
when the member's successor registers the id).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

from kafka.errors import KafkaError, ProducerFencedError, TransactionalIdAuthorizationFailedError
from kafka.structs import TopicPartition

from aml_screener.screener.ack_window import InFlightBatch, Offsets
from aml_screener.screener.metrics import Metrics
from aml_screener.screener.sink import BatchAborted, LoopControl, SinkFailed

log = logging.getLogger(__name__)

T = TypeVar("T")

# How often the loop is told it is alive while a transactional call blocks (and checks the shutdown deadline).
_CALL_SLICE_SECONDS = 0.1
# Between attempts to create and register a producer while the brokers cannot (coordinator unavailable).
_REGISTER_RETRY_SECONDS = 1.0
# Fenced this often within this window: another live member registers the same transactional id over and over.
# One fencing in a window is survived (a transaction the brokers aborted on its timeout reports as fenced too).
FENCINGS_BEFORE_STOP = 3
FENCING_WINDOW_SECONDS = 60.0


class RecordFuture(Protocol):
    """kafka-python's FutureRecordMetadata, as far as the sink reads it."""

    @property
    def is_done(self) -> bool: ...
    def failed(self) -> bool: ...
    @property
    def exception(self) -> BaseException | None: ...


class TransactionalProducer(Protocol):
    """kafka-python's KafkaProducer with a transactional_id (the unit tests use a fake)."""

    def init_transactions(self) -> None: ...
    def begin_transaction(self) -> None: ...
    def send(
        self, topic: str, value: bytes | None = ..., key: bytes | None = ..., headers: Any = ...
    ) -> RecordFuture: ...
    def flush(self, timeout: float | None = ...) -> None: ...
    def send_offsets_to_transaction(self, offsets: Offsets, group_metadata: Any) -> None: ...
    def commit_transaction(self) -> None: ...
    def abort_transaction(self) -> None: ...
    def close(self, timeout: float | None = ...) -> None: ...


class _DeadlinePassed(Exception):
    """The loop's shutdown deadline passed while a transactional call was still running."""


class _Stalled(Exception):
    """A transactional call made no progress for the stall bound: the producer is to be replaced."""


class ExactlyOnceSink:
    def __init__(
        self,
        *,
        producer_factory: Callable[[], TransactionalProducer],
        metrics: Metrics,
        transactional_id: str,
        stall_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.producer_factory = producer_factory
        self.metrics = metrics
        self.transactional_id = transactional_id
        # A transactional call that takes longer than this (the transaction timeout: by then the brokers abort the
        # transaction themselves) is given up and the producer replaced.
        self.stall_seconds = stall_seconds
        self.clock = clock
        self.producer: TransactionalProducer | None = None
        self._finished: list[InFlightBatch] = []
        self._fencings: deque[float] = deque()
        self._unresolved = False  # a call was abandoned at the shutdown deadline: the producer is mid-transaction

    def __len__(self) -> int:
        return 0  # each batch's transaction is resolved before submit returns

    def start(self, control: LoopControl) -> bool:
        """Create the producer and register the transactional id (fencing older producers with it)."""
        return self._register(control)

    def submit(self, batch: InFlightBatch, control: LoopControl) -> None:
        group = batch.membership
        if not _is_member(group):
            # Offsets without a generation would be committed unchecked (module docstring): read the batch again
            # once the consumer has rejoined the group. No transaction was begun.
            raise _aborted("the batch was polled while the consumer had no group generation")
        if self.producer is None:
            self._register(control)
        producer = self.producer
        if producer is None:
            raise _aborted("stopping before a producer was registered")
        futures: list[tuple[str, RecordFuture]] = []
        try:
            producer.begin_transaction()
            for output in batch.completed.outputs:
                futures.append(
                    (output.topic, producer.send(output.topic, output.value, output.key, output.headers or []))
                )
            self._call(lambda: self._complete(producer, batch.offsets, group, futures), control)
        except _DeadlinePassed:
            self._unresolved = True
            raise _aborted("shutdown deadline passed before the transaction completed") from None
        except _Stalled:
            self._replace("the transaction made no progress", futures)
            self._register(control)  # registering the id ends the stalled transaction: its offsets become stable
            raise _aborted("transaction stalled; producer replaced") from None
        except TransactionalIdAuthorizationFailedError as exc:
            raise self._failed(exc) from exc
        except ProducerFencedError as exc:
            self._fenced(exc, futures)
            raise _aborted("producer fenced; replaced") from exc
        except Exception as exc:
            if _reports_fencing(exc):
                # The fencing reported by a later call, wrapped (the producer is in its fatal state): a fencing
                # like any other, counted towards FENCINGS_BEFORE_STOP.
                self._fenced(exc, futures)
                raise _aborted("producer fenced; replaced") from exc
            # Whatever failed before the commit (a refused output, stale group metadata, a bug), the transaction
            # must end before the next one can begin: abort it. Kafka's errors mean "read the batch again"; anything
            # else goes on to the loop's error handling (counted, backed off, re-read).
            self._abort(producer, control, exc, futures)
            if self.producer is None and not self._unresolved:
                self._register(control)  # the abort failed and the producer was replaced: end what it left open
            if isinstance(exc, KafkaError):
                raise _aborted(f"transaction aborted: {type(exc).__name__}: {exc}") from exc
            raise
        self.metrics.transactions.labels("committed").inc()
        self.metrics.commits.labels("ok").inc()
        self._finished.append(batch)

    def poll(self) -> list[InFlightBatch]:
        finished, self._finished = self._finished, []
        return finished

    def settle(self, control: LoopControl, *, wait: bool) -> list[InFlightBatch]:
        return self.poll()

    def drain(self, timeout_seconds: float) -> list[InFlightBatch]:
        return self.poll()

    def revoked(self, partitions: Iterable[TopicPartition], *, lost: bool) -> Offsets:
        return {}  # no transaction is ever open while the consumer polls (module docstring)

    def finish(self) -> None:
        pass  # every batch's offsets were committed in its transaction

    def close(self, timeout_seconds: float) -> int:
        if self._unresolved:
            # A call is still running on the helper thread; closing would race it. The brokers abort the open
            # transaction after the transaction timeout, or at once when this member's successor registers the id.
            log.warning("transaction left unresolved at shutdown", extra={"transactional_id": self.transactional_id})
            return 0
        if self.producer is not None:
            try:
                self.producer.close(timeout_seconds)
            except KafkaError as exc:
                log.warning("transactional producer close failed", extra={"error": str(exc)})
        return 0

    # ---------------------------------------------------------------------------------------------------------
    def _complete(
        self, producer: TransactionalProducer, offsets: Offsets, group: Any, futures: list[tuple[str, RecordFuture]]
    ) -> None:
        """On the helper thread: offsets into the transaction, every output acknowledged, commit."""
        producer.send_offsets_to_transaction(offsets, group)
        producer.flush()
        # Check every output before committing. kafka-python 3.0.12 fails an output whose delivery timed out
        # without marking the transaction abortable (sender.py: a retriable error past the delivery timeout "just
        # fails the batch"), and fails an output at send() whose topic has no metadata without adding it to the
        # transaction at all: committing then would commit the offsets without those outputs.
        for _topic, future in futures:
            if not future.is_done or future.failed():
                raise future.exception or KafkaError("output not acknowledged before the commit")
        producer.commit_transaction()

    def _abort(
        self,
        producer: TransactionalProducer,
        control: LoopControl,
        cause: BaseException,
        futures: list[tuple[str, RecordFuture]],
    ) -> None:
        self._count_refused(futures)
        log.warning(
            "transaction aborted; the batch will be read again",
            extra={"error": f"{type(cause).__name__}: {cause}"},
        )
        try:
            self._call(producer.abort_transaction, control)
        except _DeadlinePassed:
            self._unresolved = True
            return
        except ProducerFencedError as exc:
            self._fenced(exc, [])
            return
        except (_Stalled, KafkaError) as exc:
            # Stuck, or in a state that cannot abort (a fatal error): a new producer registering the id aborts it.
            self._replace(f"the transaction could not be aborted ({type(exc).__name__})", [])
            return
        self.metrics.transactions.labels("aborted").inc()

    def _fenced(self, exc: BaseException, futures: list[tuple[str, RecordFuture]]) -> None:
        now = self.clock()
        self._fencings.append(now)
        while self._fencings and now - self._fencings[0] > FENCING_WINDOW_SECONDS:
            self._fencings.popleft()
        if len(self._fencings) >= FENCINGS_BEFORE_STOP:
            raise self._failed(exc)
        self._replace(
            "the producer was fenced (another producer registered its id, or its transaction timed out)", futures
        )

    def _replace(self, reason: str, futures: list[tuple[str, RecordFuture]]) -> None:
        """Drop the producer; the next batch registers a new one with the same transactional id, which fences this
        one and aborts its open transaction."""
        self._count_refused(futures)
        self.metrics.transactions.labels("aborted").inc()
        log.warning(
            "transactional producer replaced; the batch will be read again",
            extra={"reason": reason, "transactional_id": self.transactional_id},
        )
        old, self.producer = self.producer, None
        if old is not None:
            # Closing waits for the client's threads, which may be stuck: in the background, never on the loop.
            threading.Thread(target=_close_quietly, args=(old,), name="aml-producer-close", daemon=True).start()

    def _register(self, control: LoopControl) -> bool:
        """Create a producer and register the transactional id, retrying while the brokers cannot; False when the
        shutdown deadline passed meanwhile."""
        while self.producer is None:
            producer: TransactionalProducer | None = None
            try:
                producer = self._call(self.producer_factory, control)
                self._call(producer.init_transactions, control)
            except _DeadlinePassed:
                return False
            except TransactionalIdAuthorizationFailedError as exc:
                raise self._failed(exc) from exc
            except (_Stalled, KafkaError) as exc:
                # Typically the transaction coordinator is unavailable (a broker failover): try again shortly.
                log.warning("registering the transactional id failed; retrying", extra={"error": repr(exc)})
                if producer is not None:
                    threading.Thread(target=_close_quietly, args=(producer,), daemon=True).start()
                if not control.wait_paused(_REGISTER_RETRY_SECONDS):
                    return False
                continue
            self.producer = producer
            log.info("transactional producer ready", extra={"transactional_id": self.transactional_id})
        return True

    def _count_refused(self, futures: list[tuple[str, RecordFuture]]) -> None:
        refused = Counter(topic for topic, future in futures if future.is_done and future.failed())
        for topic, count in refused.items():
            self.metrics.produce_errors.labels(topic).inc(count)

    def _failed(self, exc: BaseException) -> SinkFailed:
        if _reports_fencing(exc):
            detail = (
                f"the transactional producer was fenced {FENCINGS_BEFORE_STOP} times within "
                f"{FENCING_WINDOW_SECONDS:.0f} s: another live member registers transactional id "
                f"{self.transactional_id!r} (the same AML_KAFKA_GROUP_ID and AML_INSTANCE_ID; AML_INSTANCE_ID must be "
                "unique per member). This member stops."
            )
        else:
            detail = f"the transactional producer cannot go on ({type(exc).__name__}: {exc}). This member stops."
        self.metrics.transactions.labels("failed").inc()
        return SinkFailed(detail)

    def _call(self, function: Callable[[], T], control: LoopControl) -> T:
        """Run a blocking producer call on a helper thread; the loop stays alive meanwhile. Raises what the call
        raised, _DeadlinePassed at the shutdown deadline, _Stalled past the stall bound."""
        outcome: list[T] = []
        error: list[BaseException] = []
        done = threading.Event()

        def target() -> None:
            try:
                outcome.append(function())
            except BaseException as exc:  # noqa: BLE001 - handed to the loop thread
                error.append(exc)
            finally:
                done.set()

        # A daemon thread, not an executor: a call stuck in the client must not keep the process from exiting.
        threading.Thread(target=target, name="aml-transaction", daemon=True).start()
        started = time.monotonic()
        while not done.wait(_CALL_SLICE_SECONDS):
            if not control.keep_alive():
                raise _DeadlinePassed
            if time.monotonic() - started > self.stall_seconds:
                raise _Stalled
        if error:
            raise error[0]
        return outcome[0]


def _aborted(reason: str) -> BatchAborted:
    """A batch this sink gave up is read again from the group's committed offsets, never from its first offsets: a
    commit whose answer was lost (a transaction coordinator killed after writing it, a call given up as stalled, a
    fencing that completed a prepared commit) may have committed the batch, and reading it again from its first
    offsets then decided it twice for read_committed readers (126 decisions in the fault suite, leader + coordinator
    kill -9). The committed offsets are asked for as stable ones (KIP-447), so an unresolved transaction is waited
    out, not read past."""
    return BatchAborted(reason, from_committed=True)


def _reports_fencing(exc: BaseException) -> bool:
    """kafka-python 3.0.12 raises a fencing that its sender thread received first as a plain KafkaError from the
    next transactional call or send ("Cannot perform send because at least one previous transactional or idempotent
    request has failed with errors.", ProducerFencedError(); "... we are in an error state: [Error 90]
    ProducerFencedError"): counted as a generic failure, two members with the same transactional id fenced each other
    without ever reaching FENCINGS_BEFORE_STOP (found by test_exactly_once, twins case)."""
    if isinstance(exc, ProducerFencedError):
        return True
    if not isinstance(exc, KafkaError):
        return False
    if any(isinstance(arg, ProducerFencedError) for arg in exc.args) or isinstance(exc.__cause__, ProducerFencedError):
        return True
    return ProducerFencedError.__name__ in str(exc)


def _is_member(group: Any) -> bool:
    """A group membership the coordinator can check: a generation and a member id (kafka-python's
    ConsumerGroupMetadata; -1 and '' while the consumer is out of the group)."""
    return group is not None and getattr(group, "generation_id", -1) >= 0 and bool(getattr(group, "member_id", ""))


def _close_quietly(producer: TransactionalProducer) -> None:
    with contextlib.suppress(Exception):
        producer.close(0)
