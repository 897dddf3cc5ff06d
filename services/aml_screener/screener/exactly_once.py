"""The exactly-once sink (AML_PROCESSING_GUARANTEE=exactly_once): every output of a batch and the batch's input
offsets in one Kafka transaction, so a read_committed reader sees each decision (flag, dead letter, held record)
exactly once across screener crashes, broker failover and rebalances.

Per batch: begin, send every output, add the batch's offsets with the consumer's group metadata
(`send_offsets_to_transaction`), check that every output was acknowledged, commit. Anything going wrong before the
commit aborts the transaction (its outputs are never visible to read_committed readers) and raises BatchAborted:
the loop reads the batch again after a back-off. The producer is kafka-python's own transactional producer,
because the offsets must carry the group metadata of the kafka-python consumer (docs/architecture.md, "Exactly
once: why kafka-python's producer").

Fencing of zombies: one transactional id per member (`<group id>.<instance id>`, kafka_config.py); a newer member
with the same id fences an older one at `init_transactions`, and a member whose group generation is stale has its
offsets refused (KIP-447: the group metadata goes with the offsets), which aborts its transaction. A fenced
producer can never commit again: SinkFailed, the member stops (a restart re-registers the id and resumes safely).

A transaction never spans a consumer poll: `submit` returns only once it is committed or aborted, so a rebalance
(whose callbacks run inside poll) never finds one open, and nothing needs aborting on revoke. Blocking
transactional calls run on a helper thread so the loop can bound them: it stays alive meanwhile, gives up at the
shutdown deadline (the brokers then abort what was left open after AML_KAFKA_TRANSACTION_TIMEOUT_MS), and stops
the member if a call outlives the delivery plus transaction timeouts (the producer is stuck; a restart is safe).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
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


class ExactlyOnceSink:
    def __init__(
        self,
        *,
        producer: TransactionalProducer,
        group_metadata: Callable[[], Any],
        metrics: Metrics,
        transactional_id: str,
        call_bound_seconds: float,
    ) -> None:
        self.producer = producer
        self.group_metadata = group_metadata
        self.metrics = metrics
        self.transactional_id = transactional_id
        # A transactional call that takes longer than this means the producer is stuck (every output is
        # acknowledged or expired within the delivery timeout, and the brokers abort a transaction open longer than
        # the transaction timeout): the member stops rather than hang.
        self.call_bound_seconds = call_bound_seconds
        self._finished: list[InFlightBatch] = []
        self._unresolved = False  # a call was abandoned at the shutdown deadline: the producer is mid-transaction

    def __len__(self) -> int:
        return 0  # each batch's transaction is resolved before submit returns

    def start(self, control: LoopControl) -> bool:
        """Register the transactional id (fencing any older producer with it and aborting what it left open)."""
        while True:
            try:
                self._call(self.producer.init_transactions, control)
            except _DeadlinePassed:
                return False
            except (ProducerFencedError, TransactionalIdAuthorizationFailedError) as exc:
                raise self._failed(exc) from exc
            except KafkaError as exc:
                # Typically a timeout while the transaction coordinator is unavailable: retrying resumes the wait.
                log.warning("registering the transactional id failed; retrying", extra={"error": str(exc)})
                if not control.wait_paused(1.0):
                    return False
                continue
            log.info("transactional producer ready", extra={"transactional_id": self.transactional_id})
            return True

    def submit(self, batch: InFlightBatch, control: LoopControl) -> None:
        futures: list[tuple[str, RecordFuture]] = []
        try:
            self.producer.begin_transaction()
            for output in batch.completed.outputs:
                future = self.producer.send(output.topic, output.value, output.key, headers=output.headers or [])
                futures.append((output.topic, future))
            group = self.group_metadata()  # snapshot on the loop thread, where the consumer lives
            self._call(lambda: self._complete(batch.offsets, group, futures), control)
        except _DeadlinePassed:
            self._unresolved = True
            raise BatchAborted("shutdown deadline passed before the transaction completed") from None
        except SinkFailed:
            raise
        except (ProducerFencedError, TransactionalIdAuthorizationFailedError) as exc:
            raise self._failed(exc) from exc
        except Exception as exc:
            # Whatever failed before the commit (a refused output, stale group metadata, a bug), the transaction
            # must end before the next one can begin: abort it. Kafka's errors mean "read the batch again"; anything
            # else goes on to the loop's error handling (counted, backed off, re-read).
            self._abort(control, exc, futures)
            if isinstance(exc, KafkaError):
                raise BatchAborted(f"transaction aborted: {type(exc).__name__}: {exc}") from exc
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
        try:
            self.producer.close(timeout_seconds)
        except KafkaError as exc:
            log.warning("transactional producer close failed", extra={"error": str(exc)})
        return 0

    # ---------------------------------------------------------------------------------------------------------
    def _complete(self, offsets: Offsets, group: Any, futures: list[tuple[str, RecordFuture]]) -> None:
        """On the helper thread: offsets into the transaction, every output acknowledged, commit."""
        self.producer.send_offsets_to_transaction(offsets, group)
        self.producer.flush()
        # Check every output before committing. kafka-python 3.0.12 fails an output whose delivery timed out
        # without marking the transaction abortable (sender.py: a retriable error past the delivery timeout "just
        # fails the batch"), and fails an output at send() whose topic has no metadata without adding it to the
        # transaction at all: committing then would commit the offsets without those outputs.
        for _topic, future in futures:
            if not future.is_done or future.failed():
                raise future.exception or KafkaError("output not acknowledged before the commit")
        self.producer.commit_transaction()

    def _abort(self, control: LoopControl, cause: BaseException, futures: list[tuple[str, RecordFuture]]) -> None:
        refused = Counter(topic for topic, future in futures if future.is_done and future.failed())
        for topic, count in refused.items():
            self.metrics.produce_errors.labels(topic).inc(count)
        log.warning(
            "transaction aborted; the batch will be read again",
            extra={"error": f"{type(cause).__name__}: {cause}", "refused_outputs": sum(refused.values())},
        )
        try:
            self._call(self.producer.abort_transaction, control)
        except _DeadlinePassed:
            self._unresolved = True
            return
        except KafkaError as exc:
            # The producer is in a fatal state (fenced, or an error that cannot be aborted): it can never commit.
            raise self._failed(exc) from exc
        self.metrics.transactions.labels("aborted").inc()

    def _failed(self, exc: BaseException) -> SinkFailed:
        if isinstance(exc, ProducerFencedError):
            detail = (
                f"the transactional producer was fenced: another member registered transactional id "
                f"{self.transactional_id!r} (a newer instance with the same AML_KAFKA_GROUP_ID and AML_INSTANCE_ID; "
                f"AML_INSTANCE_ID must be unique per member). This member stops."
            )
        else:
            detail = f"the transactional producer cannot go on ({type(exc).__name__}: {exc}). This member stops."
        self.metrics.transactions.labels("failed").inc()
        return SinkFailed(detail)

    def _call(self, function: Callable[[], T], control: LoopControl) -> T:
        """Run a blocking producer call on a helper thread; the loop stays alive meanwhile. Raises what the call
        raised, _DeadlinePassed at the shutdown deadline, SinkFailed past the call bound."""
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
            if time.monotonic() - started > self.call_bound_seconds:
                self._unresolved = True
                raise SinkFailed(
                    f"a transactional call did not complete within {self.call_bound_seconds:.0f} s "
                    "(AML_KAFKA_DELIVERY_TIMEOUT_MS + AML_KAFKA_TRANSACTION_TIMEOUT_MS): the producer is stuck. "
                    "This member stops; its open transaction is aborted by the brokers."
                )
        if error:
            raise error[0]
        return outcome[0]
