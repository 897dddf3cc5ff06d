"""The at-least-once sink (AML_PROCESSING_GUARANTEE=at_least_once, the default): outputs through the idempotent
librdkafka producer, input offsets committed asynchronously once every output of a batch and of every batch before
it is acknowledged.

Up to AML_MAX_INFLIGHT_BATCHES batches await their acknowledgements while the loop screens the next ones (the
acknowledgement window, ack_window.py). Outputs Kafka refused are re-sent with back-off and nothing behind them is
committed; offsets never move past an input whose outputs are not durable. A crash or a rebalance between
"acknowledged" and "committed" lets the next owner decide those events again, with the same decision ids.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any, Protocol

from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from aml_screener.screener.ack_window import AcknowledgementWindow, InFlightBatch, Offsets
from aml_screener.screener.backoff import Backoff
from aml_screener.screener.emitter import DeliveryCallback
from aml_screener.screener.metrics import Metrics
from aml_screener.screener.pipeline import OutputRecord
from aml_screener.screener.sink import LoopControl

log = logging.getLogger(__name__)

# Flush slice while waiting for acknowledgements before the loop polls the (paused) consumer again.
_ACK_WAIT_SECONDS = 0.2
# A batch whose outputs wait this long for Kafka's acknowledgement is logged (once): well above a broker failover's
# usual few seconds, far below librdkafka's delivery timeout (AML_KAFKA_DELIVERY_TIMEOUT_MS), after which they fail
# and are re-sent.
_SLOW_ACK_SECONDS = 10.0


class OutputProducer(Protocol):
    """What the sink needs of the producer (emitter.Emitter; the unit tests use a fake)."""

    def send(self, outputs: Iterable[OutputRecord], on_delivery: DeliveryCallback) -> int: ...
    def poll(self, timeout_seconds: float = ...) -> None: ...
    def flush(self, timeout_seconds: float) -> bool: ...
    def close(self, timeout_seconds: float) -> int: ...


class OffsetCommitter(Protocol):
    """What the sink needs of the consumer: kafka-python's offset commits."""

    def commit_async(self, offsets: Offsets, callback: Any = ...) -> Any: ...
    def commit(self, offsets: Offsets) -> None: ...


class AtLeastOnceSink:
    def __init__(
        self,
        *,
        producer: OutputProducer,
        committer: OffsetCommitter,
        metrics: Metrics,
        max_inflight_batches: int,
        retry_max_seconds: float,
    ) -> None:
        self.producer = producer
        self.committer = committer
        self.metrics = metrics
        self.max_inflight_batches = max_inflight_batches
        self.retry_max_seconds = retry_max_seconds
        self.window = AcknowledgementWindow()

    def __len__(self) -> int:
        return len(self.window)

    def start(self, control: LoopControl) -> bool:
        return True  # the idempotent producer obtains its producer id by itself on the first send

    def submit(self, batch: InFlightBatch, control: LoopControl) -> None:
        self.window.add(batch)
        self.producer.send(batch.completed.outputs, batch.on_delivery)

    def poll(self) -> list[InFlightBatch]:
        self.producer.poll(0)
        return self._take_acknowledged(commit=True)

    def settle(self, control: LoopControl, *, wait: bool) -> list[InFlightBatch]:
        """Serve delivery reports and commit the acknowledged prefix of the in-flight batches, in order. Outputs
        Kafka refused are re-sent with back-off; nothing behind them is committed meanwhile. With `wait`, block
        (the loop keeps the group membership) until the window has room again."""
        finished: list[InFlightBatch] = []
        backoff = Backoff(self.retry_max_seconds)
        while True:
            finished += self.poll()
            refused = self.window.refused_head()
            if refused is not None:
                self._resend(refused)
                if not control.wait_paused(backoff.next()):
                    return finished
                continue
            if not wait or len(self.window) < self.max_inflight_batches:
                return finished
            # Acknowledgements are slow (broker failover, overloaded cluster): keep the group alive meanwhile.
            if not self.producer.flush(_ACK_WAIT_SECONDS):
                self._report_slow_acknowledgements()
                if not control.wait_paused(0):
                    return finished

    def drain(self, timeout_seconds: float) -> list[InFlightBatch]:
        """Wait (bounded) for every in-flight output's report; what is acknowledged counts as finished (in
        `window.finished`) but is not committed here: the caller commits it (on revoke, at shutdown)."""
        deadline = time.monotonic() + timeout_seconds
        finished: list[InFlightBatch] = []
        while len(self.window) and time.monotonic() < deadline:
            self.producer.flush(min(_ACK_WAIT_SECONDS, max(0.0, deadline - time.monotonic())))
            finished += self._take_acknowledged(commit=False)
            refused = self.window.refused_head()
            if refused is not None:
                self._resend(refused)
        return finished

    def revoked(self, partitions: Iterable[TopicPartition], *, lost: bool) -> Offsets:
        return self.window.drop_partitions(partitions, lost=lost)

    def finish(self) -> None:
        if len(self.window):
            log.warning(
                "outputs still unacknowledged at shutdown; their inputs are not committed",
                extra={"batches": len(self.window)},
            )
        if self.window.finished:
            try:
                self.committer.commit(dict(self.window.finished))
                self.metrics.commits.labels("ok").inc()
            except KafkaError as exc:
                self.metrics.commits.labels("failed").inc()
                log.warning("synchronous offset commit failed", extra={"error": str(exc)})

    def close(self, timeout_seconds: float) -> int:
        return self.producer.close(timeout_seconds)

    # ---------------------------------------------------------------------------------------------------------
    def _take_acknowledged(self, *, commit: bool) -> list[InFlightBatch]:
        """The fully acknowledged batches at the head of the window; their offsets committed (async) if asked."""
        offsets, done = self.window.pop_acknowledged()
        if commit and offsets:
            self.committer.commit_async(offsets, callback=self._on_commit)
        return done

    def _report_slow_acknowledgements(self) -> None:
        """One warning per batch whose outputs Kafka has not acknowledged for long: consumption waits (paused) and
        nothing is committed past them; without this line a slow or stuck producer would look like an idle topic."""
        oldest = self.window.oldest()
        if oldest is None or oldest.slow_reported:
            return
        waited = time.perf_counter() - oldest.sent_at
        if waited > _SLOW_ACK_SECONDS:
            oldest.slow_reported = True
            log.warning(
                "outputs not acknowledged by Kafka yet; consumption waits and nothing is committed past them",
                extra={"seconds": round(waited, 1), "pending": oldest.pending, "batches_in_flight": len(self.window)},
            )

    def _resend(self, batch: InFlightBatch) -> None:
        refused = batch.take_refused()
        for output, _error in refused:
            self.metrics.produce_errors.labels(output.topic).inc()
        log.warning(
            "outputs not acknowledged; re-sending before any commit",
            extra={"count": len(refused), "error": refused[0][1]},
        )
        self.producer.send((output for output, _ in refused), batch.on_delivery)

    def _on_commit(self, offsets: Any, response: Any) -> None:
        if isinstance(response, Exception):
            # A failed async commit only risks duplicates; the next commit (or the one on revoke) covers it.
            self.metrics.commits.labels("failed").inc()
            log.warning("offset commit failed", extra={"error": str(response)})
        else:
            self.metrics.commits.labels("ok").inc()
