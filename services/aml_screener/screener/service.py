"""The consumer loop: the only module that polls, commits, pauses and handles rebalances.

Per poll batch: prepare (decode + normalize) -> complete (one watchlist round trip, decide, encode) -> send all
outputs -> wait until Kafka acknowledged every one -> commit the batch's offsets. Guarantees:

- At-least-once: offsets never move past an input whose outputs are not acknowledged. A batch that cannot be
  finished (watchlist outage plus shutdown, partitions revoked while holding it) is *abandoned*: nothing is
  committed and, for partitions still owned, the consumer seeks back so the records are read again.
- Fail closed: while the watchlist cannot be consulted, the held batch is not decided; all partitions are paused
  (the group membership is kept alive by polling), readiness is off, and the lookup is retried with back-off.
- Rebalance-safe: on revoke, finished work is committed synchronously; on loss, nothing is committed (the new
  owner re-reads from the last commit: duplicates with equal decision ids, no loss).
- Fail open only by explicit choice (AML_WATCHLIST_FAILURE_MODE=open): while the watchlist cannot be consulted,
  decodable events are passed unscreened to the hold topic (counted, never decided, never `clear`) instead of
  pausing; the watchlist is retried with back-off meanwhile, and screening resumes when it answers.
- SIGTERM (`request_stop`): the current batch is finished (bounded by the shutdown timeout), committed, the group
  is left cleanly so partitions move at once, and `run` returns 0.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kafka import AsyncConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from aml_screener.screener.emitter import Emitter, output_of
from aml_screener.screener.errors import LookupUnavailable, SchemaSourceUnavailable
from aml_screener.screener.health import ServiceState
from aml_screener.screener.lookup import WatchlistLookup
from aml_screener.screener.metrics import Metrics
from aml_screener.screener.pipeline import BatchScreener, CompletedBatch, InputRecord, OutputRecord, PreparedBatch
from aml_screener.screener.settings import FailureMode, Settings
from aml_screener.screening.decision import Outcome

log = logging.getLogger(__name__)

# While holding a batch (fail-closed or waiting for acknowledgements) the loop polls the paused consumer this
# often: frequent enough to keep the group membership and react to rebalances and SIGTERM within ~0.2 s.
_HOLD_POLL_MS = 200
# First retry of a failed lookup after 0.1 s, doubling up to settings.lookup_retry_max_seconds: Redis failovers
# take seconds, and a tight loop would only add load to a recovering server.
_FIRST_BACKOFF_SECONDS = 0.1
# Consumer lag gauges are refreshed at most this often (they are read from fetch metadata, but cost a loop).
_LAG_REFRESH_SECONDS = 1.0
# After this many consecutive loop errors (a poison batch, a broken client) readiness turns off so the
# platform notices; the loop keeps retrying with back-off.
_ERRORS_BEFORE_NOT_READY = 5
# Consumer poll timeout while outputs are in flight: short, so acknowledgements are served promptly.
_IN_FLIGHT_POLL_MS = 2
# On revoke, wait at most this long for in-flight outputs (the wait blocks kafka-python's heartbeats).
_REVOKE_DRAIN_SECONDS = 3.0
# Flush slice while waiting for acknowledgements before the consumer is polled again.
_ACK_WAIT_SECONDS = 0.2


class _Abandon(Exception):
    """The held batch must be given up (stop requested while failing closed, or its partitions revoked)."""


@dataclass(eq=False)
class _InFlight:
    """A decided batch whose outputs were sent and whose input offsets wait for their acknowledgements."""

    offsets: dict[TopicPartition, OffsetAndMetadata]
    completed: CompletedBatch
    size: int
    sent_at: float
    pending: int
    failed: list[tuple[OutputRecord, str]] = field(default_factory=list)

    def on_delivery(self, error: Any, message: Any) -> None:
        # Called by librdkafka's poll/flush in the thread that called them (the loop, or the rebalance
        # listener while the loop waits inside consumer.poll): never concurrently.
        self.pending -= 1
        if error is not None:
            self.failed.append((output_of(message), str(error)))


def _next_offsets(records: Sequence[InputRecord]) -> dict[TopicPartition, OffsetAndMetadata]:
    offsets: dict[TopicPartition, OffsetAndMetadata] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        current = offsets.get(tp)
        if current is None or record.offset + 1 > current.offset:
            offsets[tp] = OffsetAndMetadata(record.offset + 1, "", -1)
    return offsets


class _Listener(AsyncConsumerRebalanceListener):  # type: ignore[misc]  # kafka-python ships no type hints
    """kafka-python 3 runs rebalance callbacks on its IO thread while the loop thread waits inside poll();
    blocking consumer calls are not allowed there, so the revoke commit is awaited instead."""

    def __init__(self, screener: Screener) -> None:
        self.screener = screener

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        # Let in-flight outputs finish first so their offsets can be committed; bounded, because this blocks
        # kafka-python's IO loop (heartbeats) while it waits.
        self.screener._drain(min(_REVOKE_DRAIN_SECONDS, self.screener.settings.shutdown_timeout_seconds))
        finished = self.screener._on_revoked(list(revoked), lost=False)
        if finished:
            try:
                await self.screener.consumer.commit_async(finished)
                self.screener.metrics.commits.labels("ok").inc()
            except Exception as exc:  # noqa: BLE001 - a failed commit here only means duplicates later
                self.screener.metrics.commits.labels("failed").inc()
                log.warning("commit on revoke failed", extra={"error": str(exc)})

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self.screener._on_assigned(list(assigned))

    async def on_partitions_lost(self, lost: Iterable[TopicPartition]) -> None:
        self.screener._on_revoked(list(lost), lost=True)


class Screener:
    def __init__(
        self,
        *,
        settings: Settings,
        consumer: KafkaConsumer,
        emitter: Emitter,
        batch_screener: BatchScreener,
        lookup: WatchlistLookup,
        metrics: Metrics,
        state: ServiceState,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.emitter = emitter
        self.batch = batch_screener
        self.lookup = lookup
        self.metrics = metrics
        self.state = state
        self.clock = clock
        self._stop = threading.Event()
        self._stop_deadline = float("inf")
        self._finished: dict[TopicPartition, OffsetAndMetadata] = {}
        self._held: dict[TopicPartition, int] = {}  # first offset per partition of the batch being worked on
        self._inflight: deque[_InFlight] = deque()  # sent batches awaiting acknowledgement, oldest first
        self._held_revoked = False
        self._holding = False
        self._paused: set[TopicPartition] = set()
        self._next_lag_refresh = 0.0
        self._fail_closed_since: float | None = None
        self._fail_open = settings.watchlist_failure_mode is FailureMode.OPEN
        self._fail_open_since: float | None = None
        self._fail_open_reason = ""
        self._fail_open_retry_at = 0.0
        self._fail_open_backoff = _FIRST_BACKOFF_SECONDS
        self.state.failure_mode = settings.watchlist_failure_mode.value
        self.metrics.failure_mode.info({"mode": settings.watchlist_failure_mode.value})
        self._lag_labels: set[tuple[str, str]] = set()
        self._consecutive_errors = 0
        self.batches = 0
        self.records_done = 0  # input records whose outputs were acknowledged and whose offsets were committed

    # --- lifecycle -------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Signal-safe: only sets a flag. The loop finishes the current batch within the shutdown timeout."""
        if not self._stop.is_set():
            self._stop_deadline = time.monotonic() + self.settings.shutdown_timeout_seconds
            self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> int:
        self.metrics.up.set(1)
        try:
            if not self._wait_for_watchlist():
                return 0
            self._await_topic_metadata()
            self.consumer.subscribe([self.settings.kafka_input_topic], listener=_Listener(self))
            # kafka-python 3.0 computes the group leader's metadata snapshot on metadata updates that arrive
            # *after* subscribe(); without one before the first join, the leader assigns from an empty snapshot,
            # and the next periodic metadata refresh forces a second rebalance right after start.
            self.consumer.topics()
            log.info("screener consuming", extra={"topic": self.settings.kafka_input_topic})
            while not self._stop.is_set():
                self.state.heartbeat()
                # While outputs are in flight, poll briefly so their acknowledgements (and commits) are not
                # delayed by an idle topic.
                timeout_ms = _IN_FLIGHT_POLL_MS if self._inflight else self.settings.kafka_poll_timeout_ms
                try:
                    polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=self.settings.kafka_max_poll_records)
                except KafkaError as exc:
                    # Group and fetch errors surface here (e.g. a SyncGroup refused mid-rebalance); the client
                    # rejoins and refetches by itself on the next poll, so wait a little and go on.
                    self._loop_error("poll", exc)
                    continue
                records = [record for records in polled.values() for record in records]
                if records:
                    self._process_safely(records)
                else:
                    self._settle(wait=False)
                self._refresh_lag()
            return 0
        finally:
            self._shutdown()

    def _await_topic_metadata(self) -> None:
        """Join the group only once the input topic exists: a member that joins before gets an empty assignment
        and has to rebalance again as soon as the topic appears."""
        topic = self.settings.kafka_input_topic
        while not self._stop.is_set():
            self.state.heartbeat()
            try:
                if self.consumer.partitions_for_topic(topic):
                    return
            except KafkaError as exc:
                log.warning("waiting for input topic metadata", extra={"topic": topic, "error": str(exc)})
            self._stop.wait(_FIRST_BACKOFF_SECONDS)

    def _wait_for_watchlist(self) -> bool:
        """Before joining the group: not ready, and no partitions taken, until the watchlist answers."""
        backoff = _FIRST_BACKOFF_SECONDS
        while not self._stop.is_set():
            self.state.heartbeat()
            try:
                result = self.lookup.check()
            except LookupUnavailable as exc:
                if self._fail_open:
                    self._enter_fail_open(exc)  # the operator chose to pass events on unscreened meanwhile
                    return True
                self._enter_fail_closed(exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.settings.lookup_retry_max_seconds)
                continue
            self._leave_fail_closed(result.version, result.size)
            return True
        return False

    def _shutdown(self) -> None:
        try:
            self._drain(max(0.0, self._stop_deadline - time.monotonic()) if self._stop.is_set() else 5.0)
            if self._inflight:
                log.warning(
                    "outputs still unacknowledged at shutdown; their inputs are not committed",
                    extra={"batches": len(self._inflight)},
                )
            if self._finished:
                self._commit_sync(self._finished)
        finally:
            try:
                # autocommit=False: positions may be past abandoned records; only _finished offsets are safe.
                self.consumer.close(autocommit=False)
            except KafkaError as exc:
                log.warning("consumer close failed", extra={"error": str(exc)})
            undelivered = self.emitter.close(self.settings.shutdown_timeout_seconds)
            if undelivered:
                log.warning("outputs undelivered at shutdown (not committed)", extra={"count": undelivered})
            self.metrics.up.set(0)
            self.metrics.ready.set(0)
            log.info("screener stopped", extra={"batches": self.batches})

    # --- one batch -------------------------------------------------------------------------------------
    def _process_safely(self, records: Sequence[InputRecord]) -> None:
        """A bug or an unforeseen client error must not end the loop, and must not lose the batch either."""
        try:
            self._process(records)
        except Exception as exc:  # noqa: BLE001 - the loop's last line of defence, logged with traceback
            self._release_hold()
            self._abandon(f"unexpected {type(exc).__name__}")
            self._loop_error("batch", exc, with_traceback=True)
        else:
            self._consecutive_errors = 0

    def _loop_error(self, where: str, exc: BaseException, *, with_traceback: bool = False) -> None:
        self._consecutive_errors += 1
        self.metrics.loop_errors.labels(where).inc()
        log.warning(
            "consumer loop error; retrying",
            extra={"where": where, "error": f"{type(exc).__name__}: {exc}", "consecutive": self._consecutive_errors},
            exc_info=exc if with_traceback else None,
        )
        if self._consecutive_errors >= _ERRORS_BEFORE_NOT_READY:
            self.state.set_not_ready(f"{where}_failing", fail_closed=False)
            self.metrics.ready.set(0)
        delay = min(
            _FIRST_BACKOFF_SECONDS * 2 ** (self._consecutive_errors - 1), self.settings.lookup_retry_max_seconds
        )
        self._stop.wait(delay)

    def _process(self, records: Sequence[InputRecord]) -> None:
        """Decide one batch and send its outputs; commits happen when its acknowledgements are in (`_settle`)."""
        self._held = {}
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            if tp not in self._held or record.offset < self._held[tp]:
                self._held[tp] = record.offset
        self._held_revoked = False
        self.metrics.events_consumed.labels(self.settings.kafka_input_topic).inc(len(records))
        try:
            prepared = self._prepare(records)
            completed = self._complete(prepared)
        except _Abandon as reason:
            self._abandon(str(reason))
            return
        finally:
            self._release_hold()
        batch = _InFlight(
            offsets=_next_offsets(records),
            completed=completed,
            size=len(records),
            sent_at=time.perf_counter(),
            pending=len(completed.outputs),
        )
        self._held = {}  # from here on the batch's fate is its acknowledgements, not a re-read
        self._inflight.append(batch)
        self.emitter.send(completed.outputs, batch.on_delivery)
        stages = self.metrics.stage_duration
        for stage, seconds in completed.stage_seconds.items():
            stages.labels(stage).observe(seconds)
        self._settle(wait=len(self._inflight) >= self.settings.max_inflight_batches)

    def _prepare(self, records: Sequence[InputRecord]) -> PreparedBatch:
        backoff = _FIRST_BACKOFF_SECONDS
        while True:
            try:
                return self.batch.prepare(records)
            except SchemaSourceUnavailable as exc:
                self._enter_fail_closed(LookupUnavailable("schema_registry_unavailable", str(exc)))
                self._hold_for(backoff, abandon_on_stop=True)
                backoff = min(backoff * 2, self.settings.lookup_retry_max_seconds)

    def _complete(self, prepared: PreparedBatch) -> CompletedBatch:
        if self._fail_open_since is not None and time.monotonic() < self._fail_open_retry_at:
            return self.batch.hold(prepared, self._fail_open_reason)  # not yet time to retry the watchlist
        backoff = _FIRST_BACKOFF_SECONDS
        while True:
            try:
                completed = self.batch.complete(prepared)
            except LookupUnavailable as exc:
                if self._fail_open:
                    self._enter_fail_open(exc)
                    return self.batch.hold(prepared, exc.reason)
                self._enter_fail_closed(exc)
                self._hold_for(backoff, abandon_on_stop=True)
                backoff = min(backoff * 2, self.settings.lookup_retry_max_seconds)
                continue
            if completed.lookup is not None:
                self._leave_fail_closed(completed.lookup.version, completed.lookup.size)
                self.metrics.redis_lookup_duration.observe(completed.lookup.seconds)
            return completed

    def _settle(self, *, wait: bool) -> None:
        """Serve delivery reports and commit the acknowledged prefix of the in-flight batches, in order.

        With `wait`, block (keeping the group membership) until the in-flight window has room again. Outputs that
        Kafka refused are re-sent with back-off; nothing behind them is committed meanwhile. Partitions paused
        while waiting are resumed before returning: nothing is held any more, and a consumer left paused would
        never deliver the batch that releases it.
        """
        try:
            self._settle_window(wait=wait)
        finally:
            self._release_hold()

    def _settle_window(self, *, wait: bool) -> None:
        backoff = _FIRST_BACKOFF_SECONDS
        while True:
            self.emitter.poll(0)
            self._commit_acknowledged()
            head = self._inflight[0] if self._inflight else None
            if head is not None and head.pending == 0 and head.failed:
                self._resend(head)
                try:
                    self._hold_for(backoff, abandon_on_stop=False)
                except _Abandon:
                    return
                backoff = min(backoff * 2, self.settings.lookup_retry_max_seconds)
                continue
            if not wait or len(self._inflight) < self.settings.max_inflight_batches:
                return
            if not self.emitter.flush(_ACK_WAIT_SECONDS):
                # Acknowledgements are slow (broker failover, overloaded cluster): keep the group alive.
                try:
                    self._hold_for(0, abandon_on_stop=False)
                except _Abandon:
                    return

    def _resend(self, batch: _InFlight) -> None:
        failed, batch.failed = batch.failed, []
        for output, _error in failed:
            self.metrics.produce_errors.labels(output.topic).inc()
        log.warning(
            "outputs not acknowledged; re-sending before any commit",
            extra={"count": len(failed), "error": failed[0][1]},
        )
        batch.pending += len(failed)
        self.emitter.send((output for output, _ in failed), batch.on_delivery)

    def _commit_acknowledged(self, *, commit: bool = True) -> None:
        """Pop the fully acknowledged batches at the head of the window; commit their offsets (async)."""
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        done: list[_InFlight] = []
        while self._inflight and self._inflight[0].pending == 0 and not self._inflight[0].failed:
            batch = self._inflight.popleft()
            offsets.update(batch.offsets)  # later batches carry higher offsets for the same partition
            done.append(batch)
        if not done:
            return
        acked_at = self.clock()
        now = time.perf_counter()
        self._finished.update(offsets)
        if commit and offsets:
            self.consumer.commit_async(offsets, callback=self._on_commit)
        for batch in done:
            self.batches += 1
            self.records_done += batch.size
            self.metrics.stage_duration.labels("produce").observe(now - batch.sent_at)
            self._observe(batch.completed, acked_at, batch.size)
        self.metrics.last_batch_timestamp.set(acked_at)

    def _drain(self, timeout_seconds: float) -> None:
        """Wait (bounded) for every in-flight output's report and record what was acknowledged, without
        committing (the caller commits). Used on revoke and on shutdown."""
        deadline = time.monotonic() + timeout_seconds
        while self._inflight and time.monotonic() < deadline:
            self.emitter.flush(min(_ACK_WAIT_SECONDS, max(0.0, deadline - time.monotonic())))
            self._commit_acknowledged(commit=False)
            head = self._inflight[0] if self._inflight else None
            if head is not None and head.pending == 0 and head.failed:
                self._resend(head)

    def _on_commit(self, offsets: Any, response: Any) -> None:
        if isinstance(response, Exception):
            # A failed async commit only risks duplicates; the next commit (or the one on revoke) covers it.
            self.metrics.commits.labels("failed").inc()
            log.warning("offset commit failed", extra={"error": str(response)})
        else:
            self.metrics.commits.labels("ok").inc()

    def _commit_sync(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        try:
            self.consumer.commit(dict(offsets))
            self.metrics.commits.labels("ok").inc()
        except KafkaError as exc:
            self.metrics.commits.labels("failed").inc()
            log.warning("synchronous offset commit failed", extra={"error": str(exc)})

    # --- holding a batch -------------------------------------------------------------------------------
    def _hold_for(self, seconds: float, *, abandon_on_stop: bool) -> None:
        """Wait `seconds` with all partitions paused, polling to keep the group membership.

        Raises _Abandon when the batch must be given up: its partitions were revoked, or a stop was requested
        (immediately when `abandon_on_stop`, i.e. nothing was decided yet; otherwise at the shutdown deadline).
        """
        deadline = time.monotonic() + seconds
        while True:
            if self._held_revoked:
                raise _Abandon("partitions of the held batch were revoked")
            if self._stop.is_set() and (abandon_on_stop or time.monotonic() > self._stop_deadline):
                raise _Abandon("stop requested")
            self._holding = True
            self._pause_all()
            self.emitter.poll(0)
            self._commit_acknowledged()
            try:
                polled = self.consumer.poll(timeout_ms=_HOLD_POLL_MS if seconds else 0)
            except KafkaError as exc:
                log.warning("poll failed while holding a batch", extra={"error": str(exc)})
                polled = {}
            for tp, records in polled.items():
                # Only partitions assigned during the hold can deliver; rewind so nothing is skipped.
                self.consumer.seek(tp, min(record.offset for record in records))
            self.state.heartbeat()
            if time.monotonic() >= deadline:
                return

    def _pause_all(self) -> None:
        assignment = set(self.consumer.assignment())
        to_pause = assignment - self._paused
        if to_pause:
            self.consumer.pause(*to_pause)
            self._paused |= to_pause

    def _release_hold(self) -> None:
        self._holding = False
        if self._paused:
            owned = self._paused & set(self.consumer.assignment())
            if owned:
                self.consumer.resume(*owned)
            self._paused.clear()

    def _abandon(self, reason: str) -> None:
        """Give up the held batch without committing; re-read it where we still own the partition."""
        owned = set(self.consumer.assignment())
        for tp, first_offset in self._held.items():
            if tp in owned:
                self.consumer.seek(tp, first_offset)
        log.warning("batch abandoned, will be re-read", extra={"reason": reason, "partitions": len(self._held)})
        self._held = {}

    # --- fail-closed state -----------------------------------------------------------------------------
    def _enter_fail_closed(self, exc: LookupUnavailable) -> None:
        self.metrics.lookup_errors.labels(exc.reason).inc()
        if self._fail_closed_since is None:
            self._fail_closed_since = time.monotonic()
            self.metrics.fail_closed.set(1)
            self.metrics.ready.set(0)
            self.metrics.fail_closed_pauses.labels(exc.reason).inc()
            self.state.set_not_ready(exc.reason, fail_closed=True)
            log.error(
                "watchlist unavailable: failing closed (consumption paused, no decisions)",
                extra={"reason": exc.reason, "detail": exc.detail},
            )

    def _enter_fail_open(self, exc: LookupUnavailable) -> None:
        self.metrics.lookup_errors.labels(exc.reason).inc()
        now = time.monotonic()
        if self._fail_open_since is None:
            self._fail_open_since = now
            self._fail_open_backoff = _FIRST_BACKOFF_SECONDS
            self.metrics.fail_open_active.set(1)
            self.metrics.ready.set(0)
            self.state.set_not_ready(exc.reason, fail_closed=False, fail_open=True)
            log.error(
                "watchlist unavailable: FAIL-OPEN mode, passing events unscreened to the hold topic",
                extra={"reason": exc.reason, "detail": exc.detail, "hold_topic": self.settings.kafka_hold_topic},
            )
        else:
            self._fail_open_backoff = min(self._fail_open_backoff * 2, self.settings.lookup_retry_max_seconds)
        self._fail_open_reason = exc.reason
        self._fail_open_retry_at = now + self._fail_open_backoff

    def _leave_fail_closed(self, version: str, size: int) -> None:
        if self._fail_open_since is not None:
            log.info(
                "watchlist available again: screening resumes (fail-open bypass ends)",
                extra={"bypassed_seconds": round(time.monotonic() - self._fail_open_since, 3)},
            )
            self._fail_open_since = None
            self.metrics.fail_open_active.set(0)
        if self._fail_closed_since is not None:
            paused_for = time.monotonic() - self._fail_closed_since
            self.metrics.fail_closed_seconds.inc(paused_for)
            log.info("watchlist available again: resuming", extra={"paused_seconds": round(paused_for, 3)})
            self._fail_closed_since = None
            self.metrics.fail_closed.set(0)
        if version != self.state.watchlist_version:
            if self.state.watchlist_version is not None:
                self.metrics.watchlist_switches.inc()
            log.info("watchlist version in use", extra={"version": version, "addresses": size})
            self.metrics.watchlist_info.info({"version": version})
        if not self.state.ready or version != self.state.watchlist_version:
            self.state.set_ready(version)
            self.metrics.ready.set(1)
        self.metrics.watchlist_keys.set(size)

    # --- rebalance callbacks (called from inside consumer.poll) ----------------------------------------
    def _on_revoked(self, partitions: list[TopicPartition], *, lost: bool) -> dict[TopicPartition, OffsetAndMetadata]:
        """Drop state of partitions we no longer own; return the finished offsets to commit (none if lost)."""
        self.metrics.rebalances.labels("lost" if lost else "revoked").inc()
        gone = set(partitions)
        finished = {} if lost else {tp: meta for tp, meta in self._finished.items() if tp in gone}
        for batch in self._inflight:
            for tp in gone & set(batch.offsets):
                del batch.offsets[tp]  # never commit a partition we no longer own
        for tp in gone:
            self._finished.pop(tp, None)
            self._paused.discard(tp)
            label = (tp.topic, str(tp.partition))
            if label in self._lag_labels:
                self.metrics.consumer_lag.remove(*label)
                self._lag_labels.discard(label)
        if gone & set(self._held):
            self._held_revoked = True
        log.info(
            "partitions lost" if lost else "partitions revoked",
            extra={"partitions": sorted(f"{tp.topic}-{tp.partition}" for tp in gone)},
        )
        return finished

    def _on_assigned(self, partitions: list[TopicPartition]) -> None:
        self.metrics.rebalances.labels("assigned").inc()
        assignment = sorted(self.consumer.assignment(), key=lambda tp: (tp.topic, tp.partition))
        self.metrics.assigned_partitions.set(len(assignment))
        self.state.assigned_partitions = [f"{tp.topic}-{tp.partition}" for tp in assignment]
        if self._holding and partitions:
            self.consumer.pause(*partitions)
            self._paused |= set(partitions)
        log.info("partitions assigned", extra={"partitions": self.state.assigned_partitions})

    # --- metrics ---------------------------------------------------------------------------------------
    def _refresh_lag(self) -> None:
        now = time.monotonic()
        if now < self._next_lag_refresh:
            return
        self._next_lag_refresh = now + _LAG_REFRESH_SECONDS
        labels: set[tuple[str, str]] = set()
        for tp in self.consumer.assignment():
            highwater = self.consumer.highwater(tp)
            if highwater is None:
                continue
            try:
                position = self.consumer.position(tp, timeout_ms=0)
            except KafkaError:
                continue
            if position is None:
                continue
            key = (tp.topic, str(tp.partition))
            labels.add(key)
            self.metrics.consumer_lag.labels(*key).set(max(0, highwater - position))
        for stale in self._lag_labels - labels:
            self.metrics.consumer_lag.remove(*stale)
        self._lag_labels = labels

    def _observe(self, completed: CompletedBatch, acked_at: float, size: int) -> None:
        metrics = self.metrics
        metrics.batch_size.observe(size)
        counts: dict[str, int] = {}
        latency = metrics.end_to_end_latency
        known_assets = self.settings.metric_assets
        acked_ms = acked_at * 1000.0
        for event in completed.decided:
            counts[event.outcome.value] = counts.get(event.outcome.value, 0) + 1
            latency.observe(max(0.0, (acked_ms - event.event_timestamp_ms) / 1000.0))
            if event.reason is not None:
                metrics.unscreenable.labels(event.reason).inc()
            if event.matches:
                asset = event.asset.upper()
                asset = asset if asset in known_assets else "other"
                for match in event.matches:
                    metrics.flags.labels(match["list"], match["category"], asset, event.chain or "unknown").inc()
                if event.outcome is Outcome.FLAGGED:
                    # One line per hit for the analyst's trail: ids and lists, never the account or the address.
                    log.warning(
                        "withdrawal flagged",
                        extra={
                            "event_id": event.event_id,
                            "decision_id": event.decision_id,
                            "severity": event.severity,
                            "lists": sorted({match["list"] for match in event.matches}),
                            "asset": asset,
                            "chain": event.chain,
                        },
                    )
                if event.usd_value is not None:
                    category = event.matches[0]["category"]
                    metrics.flagged_usd.labels(category, asset).inc(max(0.0, event.usd_value))
        for outcome, count in counts.items():
            metrics.decisions.labels(outcome.lower()).inc(count)
        for _record, error in completed.dead_letters:
            metrics.dead_lettered.labels(error.reason.value).inc()
        if completed.held:
            metrics.held.labels(completed.hold_reason or "unknown").inc(completed.held)
