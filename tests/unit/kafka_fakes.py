"""Fakes of the producers behind the two sinks, shared by the loop's tests and the sinks' own: the librdkafka
emitter of the at-least-once sink (delivery reports served on poll/flush, some refused on demand) and kafka-python's
transactional producer of the exactly-once sink (what each transaction held, and failures the way kafka-python
reports them)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from kafka.errors import KafkaError

from aml_screener.screener.ack_window import Offsets
from aml_screener.screener.pipeline import OutputRecord


class FakeEmitter:
    """Acknowledges every output on the next poll/flush, or refuses the first `refuse` outputs once; with
    `slow_flushes`, reports arrive only after that many flushes (acknowledgements slower than the loop waits)."""

    def __init__(self, refuse: int = 0, slow_flushes: int = 0) -> None:
        self.sent: list[OutputRecord] = []
        self.pending: list[tuple[OutputRecord, Callable[[Any, Any], None]]] = []
        self.refuse = refuse
        self.slow_flushes = slow_flushes
        self.flushes = 0

    def send(self, outputs: Iterable[OutputRecord], on_delivery: Callable[[Any, Any], None]) -> int:
        batch = list(outputs)
        self.sent.extend(batch)
        self.pending.extend((output, on_delivery) for output in batch)
        return len(batch)

    def poll(self, timeout_seconds: float = 0.0) -> None:
        if self.flushes < self.slow_flushes:
            return
        pending, self.pending = self.pending, []
        for output, callback in pending:
            error = None
            if self.refuse:
                self.refuse -= 1
                error = "refused: NOT_ENOUGH_REPLICAS"
            callback(error, Message(output))

    def flush(self, timeout_seconds: float = 0.0) -> bool:
        self.flushes += 1
        self.poll()
        return not self.pending

    def close(self, timeout_seconds: float = 0.0) -> int:
        return len(self.pending)


class Message:
    """A librdkafka delivery report's message."""

    def __init__(self, output: OutputRecord) -> None:
        self._output = output

    def topic(self) -> str:
        return self._output.topic

    def key(self) -> bytes | None:
        return self._output.key

    def value(self) -> bytes:
        return self._output.value

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._output.headers


@dataclass
class FakeFuture:
    """kafka-python's FutureRecordMetadata once the record's batch completed."""

    exception: BaseException | None = None
    is_done: bool = True

    def failed(self) -> bool:
        return self.is_done and self.exception is not None


@dataclass
class Transaction:
    outputs: list[OutputRecord] = field(default_factory=list)
    offsets: Offsets | None = None
    group: Any = None


class FakeTransactionalProducer:
    """Keeps what every transaction held: `committed` and `aborted` lists of Transaction. A sink's producer factory
    returns the same fake every time (a replacement producer shares the brokers' view of the transactions).

    Failures, the way kafka-python 3.0.12 reports them: `refuse` fails the next outputs' futures *without* making
    the commit fail (its sender fails an expired batch of a transaction without marking the transaction abortable);
    `raises[name]` makes the named call raise once (e.g. a stale generation at send_offsets_to_transaction, a fenced
    producer at commit_transaction); with `commit_gate` set, commit_transaction waits until it is set;
    `lose_commit_answers` makes commit_transaction commit and then raise (the coordinator committed, its answer was
    lost: a transaction coordinator killed after writing the commit)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.open: Transaction | None = None
        self.committed: list[Transaction] = []
        self.aborted: list[Transaction] = []
        self.refuse = 0
        self.raises: dict[str, list[BaseException]] = {}
        self.commit_gate: threading.Event | None = None
        self.lost_commit_answers: list[BaseException] = []
        self.closed = False

    def fail(self, call: str, *errors: BaseException) -> None:
        self.raises.setdefault(call, []).extend(errors)

    def _call(self, name: str) -> None:
        self.calls.append(name)
        pending = self.raises.get(name)
        if pending:
            raise pending.pop(0)

    def init_transactions(self) -> None:
        """Also what a new producer registering the same transactional id does: abort what was left open."""
        self._call("init_transactions")
        if self.open is not None:
            self.aborted.append(self.open)
            self.open = None

    def begin_transaction(self) -> None:
        self._call("begin_transaction")
        if self.open is not None:
            raise KafkaError("Invalid transition attempted from state IN_TRANSACTION to state IN_TRANSACTION")
        self.open = Transaction()

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None, headers: Any = None) -> FakeFuture:
        self.calls.append("send")
        assert self.open is not None, "send outside a transaction"
        self.open.outputs.append(OutputRecord(topic, key, value or b"", headers or None))
        if self.refuse:
            self.refuse -= 1
            return FakeFuture(KafkaError("Expiring 1 record(s): 5000 ms has passed since batch creation"))
        return FakeFuture()

    def send_offsets_to_transaction(self, offsets: Offsets, group_metadata: Any) -> None:
        self._call("send_offsets_to_transaction")
        assert self.open is not None
        self.open.offsets, self.open.group = dict(offsets), group_metadata

    def flush(self, timeout: float | None = None) -> None:
        self._call("flush")

    def commit_transaction(self) -> None:
        self._call("commit_transaction")
        if self.commit_gate is not None:
            self.commit_gate.wait()
        assert self.open is not None
        self.committed.append(self.open)
        self.open = None
        if self.lost_commit_answers:
            raise self.lost_commit_answers.pop(0)

    def abort_transaction(self) -> None:
        self._call("abort_transaction")
        if self.open is None:
            raise KafkaError("TransactionalProducer: no transaction to abort (invalid transition)")
        self.aborted.append(self.open)
        self.open = None

    def close(self, timeout: float | None = None) -> None:
        self.closed = True
