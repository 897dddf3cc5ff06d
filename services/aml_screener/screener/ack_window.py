"""The acknowledgement window: decided batches whose outputs were sent and whose input offsets wait for Kafka.

A batch's input offsets may be committed only when every output of it, and of every batch sent before it, is
acknowledged (at-least-once: an offset never moves past an input whose outputs are not durable). The window keeps
the in-flight batches in send order and hands out the acknowledged prefix; a batch with refused outputs stops the
prefix until they are re-sent and acknowledged. On a revoke it drops the partitions the consumer no longer owns, so
their offsets are never committed by this member. No Kafka client here: delivery reports come in through
`InFlightBatch.on_delivery`, and the loop (service.py) commits what the window returns.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from kafka.structs import OffsetAndMetadata, TopicPartition

from aml_screener.screener.emitter import output_of
from aml_screener.screener.pipeline import CompletedBatch, InputRecord, OutputRecord

Offsets = dict[TopicPartition, OffsetAndMetadata]


def next_offsets(records: Sequence[InputRecord]) -> Offsets:
    """Per partition, the offset to commit once these records are done: the highest offset + 1."""
    offsets: Offsets = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        current = offsets.get(tp)
        if current is None or record.offset + 1 > current.offset:
            offsets[tp] = OffsetAndMetadata(record.offset + 1, "", -1)
    return offsets


@dataclass(eq=False)
class InFlightBatch:
    """A decided batch whose outputs were sent and whose input offsets wait for their acknowledgements."""

    offsets: Offsets
    completed: CompletedBatch
    size: int
    sent_at: float
    pending: int  # outputs whose delivery report has not come yet
    failed: list[tuple[OutputRecord, str]] = field(default_factory=list)  # refused outputs and the error
    # The consumer's group membership when the batch was polled (kafka-python's ConsumerGroupMetadata): the
    # generation its records were fetched under, which an exactly-once commit of its offsets must carry (KIP-447).
    membership: Any = None
    slow_reported: bool = False  # a wait for its acknowledgements was long enough to be logged

    def on_delivery(self, error: Any, message: Any) -> None:
        # Called by librdkafka's poll/flush in the thread that called them (the loop, or the rebalance
        # listener while the loop waits inside consumer.poll): never concurrently.
        self.pending -= 1
        if error is not None:
            self.failed.append((output_of(message), str(error)))

    @property
    def acknowledged(self) -> bool:
        return self.pending == 0 and not self.failed

    @property
    def refused(self) -> bool:
        """Every report is in and some outputs were refused: they must be re-sent before anything is committed."""
        return self.pending == 0 and bool(self.failed)

    def take_refused(self) -> list[tuple[OutputRecord, str]]:
        """The refused outputs, to be sent again (their reports are pending again from now on)."""
        refused, self.failed = self.failed, []
        self.pending += len(refused)
        return refused


class AcknowledgementWindow:
    """In-flight batches in send order, and the offsets finished (acknowledged) since the last synchronous commit."""

    def __init__(self) -> None:
        self._batches: deque[InFlightBatch] = deque()
        # Offsets of acknowledged batches per partition: what a synchronous commit (on revoke, at shutdown) covers.
        self.finished: Offsets = {}

    def __len__(self) -> int:
        return len(self._batches)

    def __iter__(self) -> Iterator[InFlightBatch]:
        return iter(self._batches)

    def add(self, batch: InFlightBatch) -> None:
        self._batches.append(batch)

    def oldest(self) -> InFlightBatch | None:
        return self._batches[0] if self._batches else None

    def refused_head(self) -> InFlightBatch | None:
        """The oldest batch, when it is the one holding the prefix back because outputs were refused."""
        head = self._batches[0] if self._batches else None
        return head if head is not None and head.refused else None

    def pop_acknowledged(self) -> tuple[Offsets, list[InFlightBatch]]:
        """Remove the fully acknowledged batches at the head; return their offsets (to commit) and the batches."""
        offsets: Offsets = {}
        done: list[InFlightBatch] = []
        while self._batches and self._batches[0].acknowledged:
            batch = self._batches.popleft()
            offsets.update(batch.offsets)  # later batches carry higher offsets for the same partition
            done.append(batch)
        self.finished.update(offsets)
        return offsets, done

    def drop_partitions(self, gone: Iterable[TopicPartition], *, lost: bool) -> Offsets:
        """Forget partitions this member no longer owns. Returns the finished offsets of revoked partitions, to
        commit before they move (nothing when they were lost: another member may already own them)."""
        gone = set(gone)
        finished = {} if lost else {tp: meta for tp, meta in self.finished.items() if tp in gone}
        for batch in self._batches:
            for tp in gone & set(batch.offsets):
                del batch.offsets[tp]  # never commit a partition we no longer own
        for tp in gone:
            self.finished.pop(tp, None)
        return finished
