"""`aml-screener report serve`: the loop that turns flagged events into recorded OFAC reporting obligations.

1. Rebuild the state: read the obligations topic from the beginning to its end (ObligationLog.catch_up). Not ready
   until done; nothing is consumed before, so a filed obligation is known as filed before its flagged event can be
   read again.
2. Consume both flagged topics in a consumer group of its own (AML_REPORTING_GROUP_ID). For each batch: decode
   every flagged event by its writer schema, derive its obligation (obligations.py), write the ones the state does
   not know yet, wait for Kafka's acknowledgement of each, and only then commit the batch's offsets. A write that
   fails (or a schema registry that cannot be reached) sends the consumer back to the batch's first offsets:
   the batch is read again after a back-off, never skipped. An obligation that exists (open or filed) is never
   written again, so reading a flagged event again never reopens a filed one.
3. Keep following the obligations topic, so obligations filed by `aml-screener report file` (another process) are
   seen as filed by the metrics.

Records that are no flagged event (undecodable bytes, an unknown schema id) are logged with their position,
counted and skipped: they oblige nothing this code can see, and they stay in the flagged topic. SIGTERM finishes the
batch, leaves the group and exits 0. Run one `report serve` per deployment: a second one would only wait as a hot
standby in the group, and two writers could, in a rebalance race, write an open value after `report file` filed it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kafka import TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from aml_screener.reporting.book import ObligationBook
from aml_screener.reporting.metrics import ReportingMetrics
from aml_screener.reporting.obligations import Obligation, obligation_from_flagged
from aml_screener.reporting.topic import ObligationLog, ObligationsTopicError
from aml_screener.screener.backoff import Backoff
from aml_screener.screener.codec import FramedReader
from aml_screener.screener.errors import SchemaSourceUnavailable
from aml_screener.screener.health import loop_liveness_problem
from aml_screener.screening.records import Direction

log = logging.getLogger(__name__)

# Flagged events are rare and their reports due in days: a quarter-second poll costs nothing and adds nothing that
# matters to the time an obligation takes to be recorded.
FLAGGED_POLL_MS = 250
# The obligations topic is followed between flagged polls without waiting on it.
STATE_POLL_MS = 0
# How long to wait at start for the flagged topics' metadata before joining the group without a missing one.
TOPIC_WAIT_SECONDS = 10.0
# Upper bound on flagged events per batch (each may mean one write, all awaited before the commit).
MAX_BATCH_RECORDS = 500


@dataclass
class ReporterState:
    """What /healthz and /readyz report (health.Probes). Written by the loop, read by HTTP threads."""

    stall_seconds: float = 60.0
    reason: str | None = "starting"  # why not ready; None when ready
    last_loop: float = field(default_factory=time.monotonic)
    failing_since: float | None = None
    obligations: Callable[[], int] = lambda: 0
    on_readiness: Callable[[bool], None] | None = None

    def heartbeat(self) -> None:
        self.last_loop = time.monotonic()

    def set_not_ready(self, reason: str) -> None:
        if self.reason != reason:
            self.reason = reason
            if self.on_readiness is not None:
                self.on_readiness(False)

    def set_ready(self) -> None:
        if self.reason is not None:
            self.reason = None
            if self.on_readiness is not None:
                self.on_readiness(True)

    def failed(self) -> None:
        if self.failing_since is None:
            self.failing_since = time.monotonic()

    def succeeded(self) -> None:
        self.failing_since = None

    def liveness_problem(self) -> str | None:
        return loop_liveness_problem(time.monotonic(), self.last_loop, self.failing_since, self.stall_seconds)

    def snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "ready": self.reason is None,
            "reason": self.reason,
            "obligations": self.obligations(),
            "seconds_since_loop": round(now - self.last_loop, 3),
            "failing_seconds": None if self.failing_since is None else round(now - self.failing_since, 3),
        }

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        return self.reason is None, self.snapshot()


class _Retry(Exception):
    """The batch must be read again after a back-off (reason: the readiness reason meanwhile)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class Reporter:
    def __init__(
        self,
        *,
        flagged_consumer: Any,  # kafka.KafkaConsumer (subscribe, poll, commit, seek, close)
        obligations: ObligationLog,
        reader: FramedReader,
        book: ObligationBook,
        metrics: ReportingMetrics,
        state: ReporterState,
        directions: Mapping[str, Direction],  # flagged topic -> direction
        delivery_timeout_seconds: float,
        retry_max_seconds: float,
        stop: threading.Event | None = None,
    ) -> None:
        self.consumer = flagged_consumer
        self.obligations = obligations
        self.reader = reader
        self.book = book
        self.metrics = metrics
        self.state = state
        self.directions = dict(directions)
        self.delivery_timeout = delivery_timeout_seconds
        self.backoff = Backoff(retry_max_seconds)
        self.stop = stop or threading.Event()

    def request_stop(self) -> None:
        self.stop.set()

    # --- the loop ------------------------------------------------------------------------------------------
    def run(self) -> int:
        self.metrics.up.set(1)
        try:
            if not self.rebuild():
                return 0
            self._await_topic_metadata()
            self.consumer.subscribe(list(self.directions))
            # kafka-python 3.0 computes the group leader's metadata snapshot on metadata updates that arrive after
            # subscribe(): without one before the first join the leader assigns nothing (as in screener/service.py).
            self.consumer.topics()
            log.info("reporter consuming", extra={"topics": list(self.directions), "obligations": len(self.book)})
            while not self.stop.is_set():
                self.step()
            return 0
        finally:
            self.metrics.up.set(0)
            self.consumer.close(autocommit=False)  # leaves the group: the partitions move at once
            self.obligations.close()
            log.info("reporter stopped")

    def rebuild(self) -> bool:
        """Read the obligations topic to its end (retrying with back-off); False when stopped meanwhile."""
        self.state.set_not_ready("rebuilding_state")
        while not self.stop.is_set():
            self.state.heartbeat()
            try:
                self.obligations.assign()
                # Half the liveness bound: a slow read shows as a retry, not as a stalled loop.
                count = self.obligations.catch_up(self.book, timeout=self.state.stall_seconds / 2)
            except ObligationsTopicError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure to read the state: report, back off, retry
                self._failed("state", exc, "state_unavailable")
                continue
            log.info("reporter state rebuilt", extra={"records": count, "obligations": len(self.book)})
            self._recovered()
            return True
        return False

    def _await_topic_metadata(self) -> None:
        """Join the group once the flagged topics' metadata is known, or after TOPIC_WAIT_SECONDS: a missing topic
        (deposits not screened yet) must not keep withdrawals' obligations waiting. It is read once it exists
        (kafka-python picks new topics up at its next metadata refresh)."""
        deadline = time.monotonic() + TOPIC_WAIT_SECONDS
        missing = list(self.directions)
        while not self.stop.is_set():
            self.state.heartbeat()
            missing = [topic for topic in self.directions if not self._partitions_known(topic)]
            if not missing or time.monotonic() > deadline:
                break
            self.stop.wait(0.1)
        if missing:
            log.warning("flagged topics do not exist (yet): read once they do", extra={"topics": missing})

    def _partitions_known(self, topic: str) -> bool:
        try:
            return bool(self.consumer.partitions_for_topic(topic))
        except KafkaError:
            return False

    def step(self) -> None:
        """One loop iteration: follow the obligations topic, then poll and record one batch of flagged events."""
        self.state.heartbeat()
        try:
            self.obligations.poll(self.book, STATE_POLL_MS)
            polled = self.consumer.poll(timeout_ms=FLAGGED_POLL_MS, max_records=MAX_BATCH_RECORDS)
        except Exception as exc:  # noqa: BLE001 - client errors surface here; the clients recover by themselves
            self._failed("poll", exc, "poll_failing")
            return
        if not polled:
            if self.state.reason is not None:
                self._recovered()  # polls work again and nothing waits to be retried
            return
        try:
            self.record(polled)
        except _Retry as exc:
            self._rewind(polled)
            self._failed("write", exc, exc.reason)
            # Read the state to its end before trying again: a write that failed ambiguously may have landed.
            try:
                self.obligations.catch_up(self.book, timeout=self.state.stall_seconds / 2)
            except Exception as catch_up_error:  # noqa: BLE001 - retried with the batch
                log.warning("reading the obligations topic failed", extra={"error": str(catch_up_error)})
            return
        except Exception as exc:  # noqa: BLE001 - a bug: never lose the batch, retry it after a back-off
            self._rewind(polled)
            self._failed("batch", exc, "batch_failing", with_traceback=True)
            return
        self._recovered()

    def record(self, polled: Mapping[TopicPartition, Sequence[Any]]) -> list[Obligation]:
        """Record the obligations of one batch and commit its offsets once Kafka acknowledged them all. Raises
        _Retry when the batch must be read again. Returns the obligations written."""
        new: dict[str, Obligation] = {}
        for tp, records in polled.items():
            direction = self.directions.get(tp.topic, Direction.WITHDRAWAL)
            for record in records:
                self.metrics.flagged.labels(direction.value).inc()
                obligation = self._obligation(record)
                if obligation is not None and not self.book.knows(obligation.obligation_id):
                    new.setdefault(obligation.obligation_id, obligation)
        if new:
            outcome = self.obligations.write(list(new.values()), self.delivery_timeout)
            acknowledged = [oid for oid, error in outcome.items() if error is None]
            self.book.written(acknowledged)
            for oid in acknowledged:
                obligation = new[oid]
                self.metrics.recorded.labels(obligation.kind.value).inc()
                log.info(
                    "obligation recorded",
                    extra={
                        "obligation_id": oid,
                        "kind": obligation.kind.value,
                        "due_at": obligation.due_at.isoformat(),
                        "decision_id": obligation.evidence.decision_id,
                        "event_id": obligation.transaction.event_id,
                    },
                )
            failed = {oid: error for oid, error in outcome.items() if error is not None}
            if failed:
                raise _Retry("obligations_unwritable", f"{len(failed)} of {len(new)} not acknowledged: {failed}")
        offsets = {tp: OffsetAndMetadata(records[-1].offset + 1, "", -1) for tp, records in polled.items() if records}
        try:
            self.consumer.commit(offsets)
        except KafkaError as exc:
            # The obligations are written: a commit lost to a rebalance only means the batch is read again, and
            # its obligations are known by then.
            log.warning("flagged offsets not committed", extra={"error": str(exc)})
        return list(new.values())

    def _obligation(self, record: Any) -> Obligation | None:
        try:
            _schema_id, flagged = self.reader.decode(record.value)
        except SchemaSourceUnavailable as exc:
            raise _Retry("schema_registry_unavailable", str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - anything else: this record is no flagged event
            self._unreadable(record, f"undecodable: {type(exc).__name__}: {exc}")
            return None
        try:
            return obligation_from_flagged(flagged, flagged_position=(record.topic, record.partition, record.offset))
        except (KeyError, TypeError, ValueError) as exc:
            self._unreadable(record, f"not a flagged event: {type(exc).__name__}: {exc}")
            return None

    # --- helpers -----------------------------------------------------------------------------------------
    def _unreadable(self, record: Any, detail: str) -> None:
        log.error(
            "flagged record skipped",
            extra={"topic": record.topic, "partition": record.partition, "offset": record.offset, "detail": detail},
        )
        self.metrics.unreadable.labels(record.topic).inc()

    def _rewind(self, polled: Mapping[TopicPartition, Sequence[Any]]) -> None:
        for tp, records in polled.items():
            if records:
                self.consumer.seek(tp, records[0].offset)

    def _failed(self, where: str, exc: BaseException, reason: str, *, with_traceback: bool = False) -> None:
        self.metrics.errors.labels(where).inc()
        self.state.failed()
        self.state.set_not_ready(reason)
        log.warning(
            "reporter loop error; retrying",
            extra={"where": where, "error": f"{type(exc).__name__}: {exc}"},
            exc_info=exc if with_traceback else None,
        )
        self.stop.wait(self.backoff.next())

    def _recovered(self) -> None:
        self.backoff.reset()
        self.state.succeeded()
        self.state.set_ready()
