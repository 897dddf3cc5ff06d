"""The sink port: where a decided batch's outputs go, and how its input offsets come to count as consumed.

The consumer loop (service.py) decides batches; a sink makes them durable. Two implementations, one per
AML_PROCESSING_GUARANTEE, each with unit tests against fakes:

- at_least_once.py: the idempotent librdkafka producer, the acknowledgement window and asynchronous offset commits
  of the acknowledged prefix (several batches in flight; a crash or rebalance may repeat decisions, recognisably);
- exactly_once.py: one Kafka transaction per batch holding every output and the batch's input offsets (a
  read_committed reader sees each decision once).

The loop does not know which one it drives. What a sink may ask of the loop is `LoopControl`; what it tells the
loop is what it returns (the batches finished, offsets to commit before a revoke) and two exceptions: `BatchAborted`
(the batch's outputs were thrown away: re-read it) and `SinkFailed` (the sink cannot go on: stop the member).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from kafka.structs import TopicPartition

from aml_screener.screener.ack_window import InFlightBatch, Offsets
from aml_screener.screener.errors import ScreenerError


class BatchAborted(ScreenerError):
    """The batch's outputs were discarded (its transaction aborted) and its offsets not committed: the loop reads it
    again, after a back-off, from its first offsets, or, when `from_committed`, from the group's committed offsets
    (stable ones): a sink whose offsets are committed with its outputs in one transaction cannot always know whether
    the brokers committed it (the answer to a commit can be lost), and only the committed offsets say."""

    def __init__(self, message: str, *, from_committed: bool = False) -> None:
        super().__init__(message)
        self.from_committed = from_committed


class SinkFailed(ScreenerError):
    """The sink can never deliver again (e.g. its producer was fenced by a newer member with the same transactional
    id): the member must stop instead of retrying, and exit non-zero."""


class LoopControl(Protocol):
    """What a sink may ask of the consumer loop while it waits for Kafka."""

    def wait_paused(self, seconds: float) -> bool:
        """Wait with every partition paused, keeping the group membership. False: stop waiting and give up what
        you wait for (the shutdown deadline passed, or the partitions were revoked)."""
        ...

    def keep_alive(self) -> bool:
        """Called while blocked on a Kafka call that must not be interleaved with polls (a transaction commit): the
        loop counts as alive. False once the shutdown deadline has passed."""
        ...


class Sink(Protocol):
    def __len__(self) -> int:
        """Batches submitted whose fate is still open (outputs unacknowledged or offsets uncommitted)."""
        ...

    def start(self, control: LoopControl) -> bool:
        """Before the group is joined (exactly-once: register the transactional id, fencing predecessors). False
        when the loop was stopped meanwhile."""
        ...

    def submit(self, batch: InFlightBatch, control: LoopControl) -> None:
        """Send a decided batch's outputs with its input offsets. Raises BatchAborted or SinkFailed."""
        ...

    def poll(self) -> list[InFlightBatch]:
        """Without blocking: batches finished since the last call (outputs durable, offsets committed or being
        committed)."""
        ...

    def settle(self, control: LoopControl, *, wait: bool) -> list[InFlightBatch]:
        """Like poll, and deal with refused outputs; with `wait`, block until fewer than the in-flight bound
        remain."""
        ...

    def drain(self, timeout_seconds: float) -> list[InFlightBatch]:
        """Before a revoke or at shutdown: wait (bounded) for what is in flight, without committing."""
        ...

    def revoked(self, partitions: Iterable[TopicPartition], *, lost: bool) -> Offsets:
        """Forget partitions this member no longer owns; the finished offsets to commit before they move."""
        ...

    def finish(self) -> None:
        """At shutdown, before the consumer leaves the group: commit what is finished and not committed yet."""
        ...

    def close(self, timeout_seconds: float) -> int:
        """After the consumer closed: flush and close the producer; returns how many outputs were not delivered."""
        ...
