"""The consumer loop: the only module that polls, commits, pauses and handles rebalances.

It orchestrates; the parts with state of their own live beside it, each with unit tests against fakes: the sink
(sink.py, the port; at_least_once.py: idempotent producer, acknowledgement window, async commits of the acked
prefix; exactly_once.py: one Kafka transaction per batch with its offsets), the watchlist gate (watchlist_gate.py:
fail closed / fail open, back-off, readiness and its metrics), the loop's error runs (loop_errors.py), and the batch
pipeline itself (pipeline.py). The Kafka consumer is reached through `Consumer`, the port below (kafka-python's
KafkaConsumer fits it; the unit tests use a fake). Which sink runs is AML_PROCESSING_GUARANTEE; the loop is the same.

Per poll batch: prepare (decode + normalize) -> complete (one watchlist round trip, decide, encode) -> submit to the
sink (outputs and the batch's input offsets) -> the sink reports the batch finished once its outputs are durable
and its offsets committed. Guarantees:

- Nothing lost: offsets never move past an input whose outputs are not durable (at-least-once: acknowledged; exactly
  once: in the same committed transaction). A batch that cannot be finished (watchlist outage plus shutdown,
  partitions revoked while holding it, its transaction aborted) is *abandoned*: nothing is committed and, for
  partitions still owned, the consumer seeks back so the records are read again.
- Fail closed: while the watchlist cannot be consulted, the held batch is not decided; all partitions are paused
  (the group membership is kept alive by polling), readiness is off, and the lookup is retried with back-off.
- Rebalance-safe: on revoke, finished work is committed synchronously; on loss, nothing is committed (the new
  owner re-reads from the last commit: at-least-once, duplicates with equal decision ids; exactly-once, no batch's
  transaction is open while the consumer polls, so there is nothing to commit or abort).
- A partition (re)assigned starts from the group's committed offset, never from a position the client kept: kafka-
  python 3.0.12 keeps a partition's fetch position across an eager rebalance when the same member gets it back
  (Java's client clears the assignment on revoke), so a member that was out of the group meanwhile (frozen, stuck
  in a join) resumed where it had been and decided again what another member had decided and committed since.
  After every assignment the loop drops what the poll returned for the assigned partitions, fetches their
  committed offsets (stable ones, KIP-447, in exactly-once mode) and seeks there. The client keeps a partition's
  paused flag across such a rebalance too, so a partition assigned while the loop is not waiting is resumed.
- Fail open only by explicit choice (AML_WATCHLIST_FAILURE_MODE=open): while the watchlist cannot be consulted,
  decodable events are passed unscreened to the hold topic (counted, never decided, never `clear`) instead of
  pausing; the watchlist is retried with back-off meanwhile, and screening resumes when it answers.
- SIGTERM (`request_stop`): the current batch is finished (bounded by the shutdown timeout), committed, the group
  is left cleanly so partitions move at once, and `run` returns 0. A sink that can never deliver again (a fenced
  transactional producer) stops the member instead: `run` returns EXIT_SINK_FAILED.
- Unreadable input is visible, never a silent stall: a record batch the Kafka client cannot parse (a codec whose
  library is missing, a corrupt batch) leaves its partition blocked at that offset (nothing is skipped); the
  loop keeps turning (see fetch_errors.py for the client bug this avoids), logs the partition, offset and error,
  reports not ready while it lasts and unhealthy once it lasted longer than the liveness bound.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from kafka import AsyncConsumerRebalanceListener, TopicPartition
from kafka.errors import KafkaError

from aml_screener.infra.kafka import refresh_consumer_lag
from aml_screener.infra.settings import Settings
from aml_screener.screener.ack_window import InFlightBatch, Offsets, next_offsets
from aml_screener.screener.backoff import FIRST_BACKOFF_SECONDS, Backoff
from aml_screener.screener.errors import LookupFailure, LookupUnavailable, SchemaSourceUnavailable
from aml_screener.screener.fetch_errors import discard_failed_batch, is_record_read_error
from aml_screener.screener.health import ServiceState
from aml_screener.screener.lookup import LookupResult
from aml_screener.screener.loop_errors import LoopErrors
from aml_screener.screener.metrics import Metrics
from aml_screener.screener.pipeline import BatchScreener, CompletedBatch, InputRecord, PreparedBatch
from aml_screener.screener.sink import BatchAborted, Sink, SinkFailed
from aml_screener.screener.watchlist_gate import WatchlistGate
from aml_screener.screening.decision import Outcome

log = logging.getLogger(__name__)

# While a batch waits with the partitions paused (failing closed, or for acknowledgements) the loop polls the
# paused consumer this often: frequent enough to keep the group membership and react to rebalances and SIGTERM
# within ~0.2 s.
_PAUSED_POLL_MS = 200
# Consumer lag gauges are refreshed at most this often (they are read from fetch metadata, but cost a loop).
_LAG_REFRESH_SECONDS = 1.0
# Consumer poll timeout while outputs are in flight: short, so acknowledgements are served promptly.
_IN_FLIGHT_POLL_MS = 2
# Fetching a newly assigned partition's committed offset waits at most this long per loop turn (the loop stays
# alive meanwhile; the partition's records are held back until it is answered). One round trip to the group
# coordinator, normally milliseconds; longer only while the coordinator moves.
_COMMITTED_TIMEOUT_MS = 1_000
# On revoke, wait at most this long for in-flight outputs (the wait blocks kafka-python's heartbeats).
_REVOKE_DRAIN_SECONDS = 3.0
# While an input topic is missing at start-up, the wait is logged this often.
_MISSING_TOPIC_LOG_SECONDS = 30.0
# At shutdown without a stop request (the loop ended otherwise), wait at most this long for in-flight outputs.
_SHUTDOWN_DRAIN_SECONDS = 5.0
# Exit code of `aml-screener run` when the sink can never deliver again (a fenced transactional producer): the
# member stops instead of retrying; its platform restarts it (a new instance re-registers its transactional id).
EXIT_SINK_FAILED = 3


class Consumer(Protocol):
    """What the loop needs of a Kafka consumer (kafka-python's KafkaConsumer)."""

    def subscribe(self, topics: list[str], listener: Any = ...) -> None: ...
    def topics(self) -> set[str]: ...
    def partitions_for_topic(self, topic: str) -> set[int] | None: ...
    def poll(self, timeout_ms: int = ..., max_records: int | None = ...) -> Mapping[TopicPartition, list[Any]]: ...
    def assignment(self) -> set[TopicPartition]: ...
    def pause(self, *partitions: TopicPartition) -> None: ...
    def resume(self, *partitions: TopicPartition) -> None: ...
    def seek(self, partition: TopicPartition, offset: int) -> None: ...
    def seek_to_beginning(self, *partitions: TopicPartition) -> None: ...
    def seek_to_end(self, *partitions: TopicPartition) -> None: ...
    def committed(self, partition: TopicPartition, metadata: bool = ..., timeout_ms: int | None = ...) -> Any: ...
    def group_metadata(self) -> Any: ...
    def commit_async(self, offsets: Offsets, callback: Any = ...) -> Any: ...
    def commit(self, offsets: Offsets) -> None: ...
    def position(self, partition: TopicPartition, timeout_ms: int = ...) -> int | None: ...
    def highwater(self, partition: TopicPartition) -> int | None: ...
    def close(self, autocommit: bool = ...) -> None: ...


class WatchlistCheck(Protocol):
    """The readiness lookup (WatchlistLookup.check)."""

    def check(self) -> LookupResult: ...


class _Abandon(Exception):
    """The batch being worked on must be given up (stop requested while failing closed, or its partitions
    revoked): nothing of it is committed, and it is read again."""


class _Listener(AsyncConsumerRebalanceListener):  # type: ignore[misc]  # kafka-python ships no type hints
    """kafka-python 3 runs rebalance callbacks on its IO thread while the loop thread waits inside poll();
    blocking consumer calls are not allowed there, so the revoke commit is awaited instead."""

    def __init__(self, screener: Screener) -> None:
        self.screener = screener

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        # Let in-flight outputs finish first so their offsets can be committed; bounded, because this blocks
        # kafka-python's IO loop (heartbeats) while it waits.
        screener = self.screener
        screener._finished(screener.sink.drain(min(_REVOKE_DRAIN_SECONDS, screener.settings.shutdown_timeout_seconds)))
        finished = screener._on_revoked(list(revoked), lost=False)
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
        consumer: Consumer,
        sink: Sink,
        batch_screener: BatchScreener,
        lookup: WatchlistCheck,
        metrics: Metrics,
        state: ServiceState,
        gate: WatchlistGate | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.sink = sink
        self.batch = batch_screener
        self.lookup = lookup
        self.metrics = metrics
        self.state = state
        self.clock = clock
        if state.on_readiness is None:
            state.on_readiness = lambda ready: metrics.ready.set(1 if ready else 0)
        self.gate = gate or WatchlistGate(
            mode=settings.watchlist_failure_mode,
            metrics=metrics,
            state=state,
            retry_max_seconds=settings.lookup_retry_max_seconds,
            hold_topic=settings.kafka_hold_topic,
        )
        self.errors = LoopErrors(state=state, metrics=metrics, retry_max_seconds=settings.lookup_retry_max_seconds)
        self._stop = threading.Event()
        self._stop_deadline = float("inf")
        # The batch being worked on (prepared, not yet sent): its first offset per partition, to re-read it from
        # there if it is abandoned, and whether a rebalance took any of its partitions meanwhile.
        self._working: dict[TopicPartition, int] = {}
        self._working_revoked = False
        self._waiting_paused = False  # the loop waits with every partition paused (new assignments too)
        self._paused: set[TopicPartition] = set()
        self._next_lag_refresh = 0.0
        self._lag_labels: set[tuple[str, str]] = set()
        self._unreadable: dict[TopicPartition, int] = {}  # input partitions blocked at an unreadable batch's offset
        # Assigned partitions not yet positioned at their committed offset (see the module docstring), and those
        # whose committed-offset request timed out: kafka-python caches an unfinished request per partition set and
        # would answer a later call for the same partition with its (by then stale) result, so it is collected.
        self._unpositioned: set[TopicPartition] = set()
        self._committed_pending: set[TopicPartition] = set()
        # Partitions of an abandoned batch that are read again from the committed offsets: where it started, for a
        # group that has committed nothing there yet.
        self._uncommitted_start: dict[TopicPartition, int] = {}
        self._membership: Any = None  # the consumer's group membership when the batch in hand was polled
        self._aborts = Backoff(settings.lookup_retry_max_seconds)  # between re-reads of batches the sink aborted
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
            if not self.sink.start(self):
                return 0
            self._await_topic_metadata()
            self.consumer.subscribe(list(self.settings.input_topics), listener=_Listener(self))
            # kafka-python 3.0 computes the group leader's metadata snapshot on metadata updates that arrive
            # *after* subscribe(); without one before the first join, the leader assigns from an empty snapshot,
            # and the next periodic metadata refresh forces a second rebalance right after start.
            self.consumer.topics()
            log.info("screener consuming", extra={"topics": list(self.settings.input_topics)})
            while not self._stop.is_set():
                self.state.heartbeat()
                self.gate.probe_if_due(self.lookup.check)
                # While outputs are in flight, poll briefly so their acknowledgements (and commits) are not
                # delayed by an idle topic.
                timeout_ms = _IN_FLIGHT_POLL_MS if len(self.sink) else self.settings.kafka_poll_timeout_ms
                try:
                    polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=self.settings.kafka_max_poll_records)
                except Exception as exc:  # noqa: BLE001 - any poll failure: report, back off, poll again
                    # Group and fetch errors surface here (e.g. a SyncGroup refused mid-rebalance); the client
                    # rejoins and refetches by itself on the next poll. A batch it cannot parse raises here too.
                    self._on_poll_error(exc)
                    continue
                if self._unpositioned or self._committed_pending:
                    polled = self._position_from_commits(polled)
                if self._unreadable:
                    self._unblock(polled)
                records = [record for records in polled.values() for record in records]
                if records:
                    # The generation these records were fetched under, before kafka-python's heartbeat thread can
                    # reset it: an exactly-once commit of their offsets must carry it (exactly_once.py).
                    self._membership = self.consumer.group_metadata()
                if records:
                    self._process_safely(records)
                else:
                    self.errors.quiet()
                    self._settle(wait=False)
                self._refresh_lag()
        except SinkFailed as exc:
            log.error("the sink cannot deliver any more: stopping", extra={"detail": str(exc)})  # noqa: TRY400
            return EXIT_SINK_FAILED
        else:
            return 0
        finally:
            self._shutdown()

    def _await_topic_metadata(self) -> None:
        """Join the group only once the input topics exist: a member that joins before gets an empty assignment
        and has to rebalance again as soon as a topic appears. A topic still missing is logged every
        `_MISSING_TOPIC_LOG_SECONDS` with what to do (an unused deposits topic is switched off, not waited for)."""
        logged_at = -_MISSING_TOPIC_LOG_SECONDS
        while not self._stop.is_set():
            self.state.heartbeat()
            missing: list[str] = []
            error: str | None = None
            for topic in self.settings.input_topics:
                try:
                    if not self.consumer.partitions_for_topic(topic):
                        missing.append(topic)
                except KafkaError as exc:
                    missing.append(topic)
                    error = str(exc)
            if not missing:
                return
            if time.monotonic() - logged_at >= _MISSING_TOPIC_LOG_SECONDS:
                logged_at = time.monotonic()
                log.warning(
                    "waiting for input topics to exist before joining the group (create them, or set "
                    "AML_KAFKA_DEPOSIT_TOPIC='' to screen withdrawals only)",
                    extra={"topics": missing, "error": error},
                )
            self._stop.wait(FIRST_BACKOFF_SECONDS)

    def _wait_for_watchlist(self) -> bool:
        """Before joining the group: not ready, and no partitions taken, until the watchlist answers (or, in
        fail-open mode, at once: events are passed on unscreened meanwhile)."""
        backoff = Backoff(self.settings.lookup_retry_max_seconds)
        while not self._stop.is_set():
            self.state.heartbeat()
            try:
                result = self.lookup.check()
            except LookupUnavailable as exc:
                self.gate.unavailable(exc)
                if self.gate.fails_open:
                    return True
                self._stop.wait(backoff.next())
                continue
            self.gate.available(result)
            return True
        return False

    def _shutdown(self) -> None:
        try:
            remaining = self._stop_deadline - time.monotonic() if self._stop.is_set() else _SHUTDOWN_DRAIN_SECONDS
            self._finished(self.sink.drain(max(0.0, remaining)))
            self.sink.finish()
        finally:
            try:
                # autocommit=False: positions may be past abandoned records; only finished offsets are safe.
                self.consumer.close(autocommit=False)
            except KafkaError as exc:
                log.warning("consumer close failed", extra={"error": str(exc)})
            undelivered = self.sink.close(self.settings.shutdown_timeout_seconds)
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
        except SinkFailed:
            raise  # the member must stop (run() returns EXIT_SINK_FAILED), not retry
        except Exception as exc:  # noqa: BLE001 - the loop's last line of defence, logged with traceback
            self._resume_paused()
            self._abandon(f"unexpected {type(exc).__name__}")
            self._stop.wait(self.errors.failed("batch", exc, with_traceback=True))
        else:
            self.errors.succeeded()

    def _position_from_commits(self, polled: Mapping[TopicPartition, list[Any]]) -> Mapping[TopicPartition, list[Any]]:
        """Seek newly assigned partitions to their committed offsets (the module docstring says why); what the poll
        returned for them came from the client's own position and is dropped (it is fetched again from there)."""
        owned = set(self.consumer.assignment())
        self._unpositioned &= owned
        held_back = set(self._unpositioned)
        for tp in sorted(self._unpositioned | self._committed_pending, key=lambda tp: (tp.topic, tp.partition)):
            try:
                offset = self.consumer.committed(tp, timeout_ms=_COMMITTED_TIMEOUT_MS)
            except KafkaError as exc:
                self._committed_pending.add(tp)
                log.warning(
                    "committed offset of an assigned partition not fetched yet; its records wait",
                    extra={"partition": f"{tp.topic}-{tp.partition}", "error": f"{type(exc).__name__}: {exc}"},
                )
                continue
            self._committed_pending.discard(tp)
            if tp not in self._unpositioned:
                continue  # a timed-out request collected for a partition no longer ours
            fallback = self._uncommitted_start.pop(tp, None)
            if offset is not None:
                self.consumer.seek(tp, int(offset))
            elif fallback is not None:
                self.consumer.seek(tp, fallback)  # an abandoned batch of a group that never committed: read it again
            elif self.settings.kafka_auto_offset_reset == "earliest":
                self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek_to_end(tp)
            self._unpositioned.discard(tp)
        return {tp: records for tp, records in polled.items() if tp not in held_back}

    def _on_poll_error(self, exc: Exception) -> None:
        partition = discard_failed_batch(self.consumer)
        if partition is not None and is_record_read_error(exc):
            try:
                offset = int(self.consumer.position(partition, timeout_ms=0) or -1)
            except KafkaError:
                offset = -1
            self._block(partition, offset, f"{type(exc).__name__}: {exc}")
        self._stop.wait(self.errors.failed("poll", exc))

    def _block(self, partition: TopicPartition, offset: int, error: str) -> None:
        """An input partition cannot be read past `offset`: not ready (records wait undecided) until it can."""
        label = f"{partition.topic}-{partition.partition}"
        if self.state.mark_unreadable(label, offset, error):
            log.error(
                "input records cannot be read by the Kafka client; the partition is blocked at this offset (nothing "
                "is skipped) until they can be (e.g. install the codec's library) or an operator moves the offset",
                extra={"partition": label, "offset": offset, "error": error},
            )
        self._unreadable[partition] = offset
        self.metrics.unreadable_partitions.set(len(self._unreadable))

    def _unblock(self, polled: Mapping[TopicPartition, list[Any]]) -> None:
        """Records of a blocked partition at or past its blocked offset arrived: it is readable again."""
        for partition, records in polled.items():
            offset = self._unreadable.get(partition)
            if offset is not None and records and records[-1].offset >= offset:
                self._forget_unreadable(partition)
                log.info(
                    "input partition readable again", extra={"partition": f"{partition.topic}-{partition.partition}"}
                )

    def _forget_unreadable(self, partition: TopicPartition) -> None:
        if self._unreadable.pop(partition, None) is None:
            return
        self.state.clear_unreadable(f"{partition.topic}-{partition.partition}")
        self.metrics.unreadable_partitions.set(len(self._unreadable))

    def _process(self, records: Sequence[InputRecord]) -> None:
        """Decide one batch and send its outputs; commits happen when its acknowledgements are in (`_settle`)."""
        self._working = {}
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            if tp not in self._working or record.offset < self._working[tp]:
                self._working[tp] = record.offset
        self._working_revoked = False
        per_topic = Counter(record.topic for record in records)
        for topic, count in per_topic.items():
            self.metrics.events_consumed.labels(topic).inc(count)
        try:
            prepared = self._prepare(records)
            completed = self._complete(prepared)
            batch = InFlightBatch(
                offsets=next_offsets(records),
                completed=completed,
                size=len(records),
                sent_at=time.perf_counter(),
                pending=len(completed.outputs),
                membership=self._membership,
            )
            self.sink.submit(batch, self)
        except _Abandon as reason:
            self._abandon(str(reason))
            return
        except BatchAborted as aborted:
            self._abandon(str(aborted), from_committed=aborted.from_committed)
            with contextlib.suppress(_Abandon):
                self._wait_paused(self._aborts.next(), abandon_on_stop=True)
            return
        finally:
            self._resume_paused()
        self._aborts.reset()
        self._working = {}  # from here on the batch's fate is the sink's, not a re-read
        stages = self.metrics.stage_duration
        for stage, seconds in completed.stage_seconds.items():
            stages.labels(stage).observe(seconds)
        self._settle(wait=True)  # the sink waits only while its in-flight bound is reached

    def _prepare(self, records: Sequence[InputRecord]) -> PreparedBatch:
        backoff = Backoff(self.settings.lookup_retry_max_seconds)
        registry_was_down = False
        while True:
            try:
                prepared = self.batch.prepare(records)
            except SchemaSourceUnavailable as exc:
                # Decoding needs the registry: an outage of it is handled like a watchlist outage (fail closed).
                self.gate.unavailable(LookupUnavailable(LookupFailure.SCHEMA_REGISTRY_UNAVAILABLE, str(exc)))
                registry_was_down = True
                self._wait_paused(backoff.next(), abandon_on_stop=True)
                continue
            if registry_was_down and not prepared.screenable:
                # The registry is back but nothing in this batch consults the watchlist (only dead letters), which
                # is what would otherwise end the fail-closed state: check the watchlist here.
                with contextlib.suppress(LookupUnavailable):
                    self.gate.available(self.lookup.check())
            return prepared

    def _complete(self, prepared: PreparedBatch) -> CompletedBatch:
        if self.gate.pass_unscreened():
            return self.batch.hold(prepared, self.gate.open_reason)  # not yet time to retry the watchlist
        backoff = Backoff(self.settings.lookup_retry_max_seconds)
        while True:
            try:
                completed = self.batch.complete(prepared)
            except LookupUnavailable as exc:
                self.gate.unavailable(exc)
                if self.gate.fails_open:
                    return self.batch.hold(prepared, exc.reason)
                self._wait_paused(backoff.next(), abandon_on_stop=True)
                continue
            if completed.lookup is not None:
                self.gate.available(completed.lookup)
                self.metrics.redis_lookup_duration.observe(completed.lookup.seconds)
            return completed

    def _settle(self, *, wait: bool) -> None:
        """Let the sink finish what it can (at-least-once: serve acknowledgements, commit the acknowledged prefix,
        re-send refused outputs); with `wait`, until the in-flight window has room again. Partitions paused while
        waiting are resumed before returning: a consumer left paused would never deliver the batch that resumes it
        (found on real Kafka, where acks=all sometimes takes longer than one acknowledgement wait)."""
        try:
            self._finished(self.sink.settle(self, wait=wait))
        finally:
            self._resume_paused()

    def _finished(self, batches: Sequence[InFlightBatch]) -> None:
        """Batches whose outputs are durable and whose offsets are committed (or being committed): count them."""
        if not batches:
            return
        acked_at = self.clock()
        now = time.perf_counter()
        for batch in batches:
            self.batches += 1
            self.records_done += batch.size
            self.metrics.stage_duration.labels("produce").observe(now - batch.sent_at)
            self._observe(batch.completed, acked_at, batch.size)
        self.metrics.last_batch_timestamp.set(acked_at)

    # --- what the sink may ask of the loop (sink.LoopControl) ------------------------------------------
    def wait_paused(self, seconds: float) -> bool:
        try:
            self._wait_paused(seconds, abandon_on_stop=False)
        except _Abandon:
            return False
        return True

    def keep_alive(self) -> bool:
        self.state.heartbeat()
        return not (self._stop.is_set() and time.monotonic() > self._stop_deadline)

    # --- waiting with the partitions paused ------------------------------------------------------------
    def _wait_paused(self, seconds: float, *, abandon_on_stop: bool) -> None:
        """Wait `seconds` with all partitions paused, polling to keep the group membership.

        Raises _Abandon when the batch being worked on must be given up: its partitions were revoked, or a stop
        was requested (immediately when `abandon_on_stop`, i.e. nothing was decided yet; otherwise at the shutdown
        deadline).
        """
        deadline = time.monotonic() + seconds
        while True:
            if self._working_revoked:
                raise _Abandon("partitions of the batch being worked on were revoked")
            if self._stop.is_set() and (abandon_on_stop or time.monotonic() > self._stop_deadline):
                raise _Abandon("stop requested")
            self._waiting_paused = True
            self._pause_all()
            self._finished(self.sink.poll())
            try:
                polled = self.consumer.poll(timeout_ms=_PAUSED_POLL_MS if seconds else 0)
            except KafkaError as exc:
                log.warning("poll failed while waiting with the partitions paused", extra={"error": str(exc)})
                polled = {}
            for tp, records in polled.items():
                # Only partitions assigned during the wait can deliver; rewind so nothing is skipped.
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

    def _resume_paused(self) -> None:
        self._waiting_paused = False
        if self._paused:
            owned = self._paused & set(self.consumer.assignment())
            if owned:
                self.consumer.resume(*owned)
            self._paused.clear()

    def _abandon(self, reason: str, *, from_committed: bool = False) -> None:
        """Give up the batch being worked on without committing; re-read it where we still own the partition: from
        its first offsets, or, `from_committed`, from the group's committed offsets (its first offsets where the
        group has none)."""
        owned = set(self.consumer.assignment())
        for tp, first_offset in self._working.items():
            if tp in owned:
                self.consumer.seek(tp, first_offset)
                if from_committed:
                    self._unpositioned.add(tp)
                    self._uncommitted_start[tp] = first_offset
        log.warning("batch abandoned, will be re-read", extra={"reason": reason, "partitions": len(self._working)})
        self._working = {}

    # --- rebalance callbacks (called from inside consumer.poll) ----------------------------------------
    def _on_revoked(self, partitions: list[TopicPartition], *, lost: bool) -> Offsets:
        """Drop state of partitions we no longer own; return the finished offsets to commit (none if lost)."""
        self.metrics.rebalances.labels("lost" if lost else "revoked").inc()
        gone = set(partitions)
        finished = self.sink.revoked(gone, lost=lost)
        for tp in gone:
            self._paused.discard(tp)
            self._forget_unreadable(tp)
            label = (tp.topic, str(tp.partition))
            if label in self._lag_labels:
                self.metrics.consumer_lag.remove(*label)
                self._lag_labels.discard(label)
        self._unpositioned -= gone
        for tp in gone:
            self._uncommitted_start.pop(tp, None)
        if gone & set(self._working):
            self._working_revoked = True
        log.info(
            "partitions lost" if lost else "partitions revoked",
            extra={"partitions": sorted(f"{tp.topic}-{tp.partition}" for tp in gone)},
        )
        return finished

    def _on_assigned(self, partitions: list[TopicPartition]) -> None:
        self.metrics.rebalances.labels("assigned").inc()
        self._unpositioned |= set(partitions)
        assignment = sorted(self.consumer.assignment(), key=lambda tp: (tp.topic, tp.partition))
        self.metrics.assigned_partitions.set(len(assignment))
        self.state.assigned_partitions = [f"{tp.topic}-{tp.partition}" for tp in assignment]
        if partitions and self._waiting_paused:
            self.consumer.pause(*partitions)
            self._paused |= set(partitions)
        elif partitions:
            # kafka-python (3.0.9+) keeps a partition's state, its paused flag included, when a rebalance gives it
            # back to the same member, and the JoinGroup may finish in a later poll than the revocation: a partition
            # paused while the loop waited, revoked meanwhile (so no longer ours to resume) and assigned back once
            # the wait was over would stay paused for good. Not waiting: every assigned partition is fetched.
            self.consumer.resume(*partitions)
        log.info("partitions assigned", extra={"partitions": self.state.assigned_partitions})

    # --- metrics ---------------------------------------------------------------------------------------
    def _refresh_lag(self) -> None:
        now = time.monotonic()
        if now < self._next_lag_refresh:
            return
        self._next_lag_refresh = now + _LAG_REFRESH_SECONDS
        self._lag_labels = refresh_consumer_lag(self.consumer, self.metrics.consumer_lag, self._lag_labels)

    def _observe(self, completed: CompletedBatch, acked_at: float, size: int) -> None:
        metrics = self.metrics
        metrics.batch_size.observe(size)
        counts: Counter[tuple[str, str]] = Counter()
        actions: Counter[tuple[str, str]] = Counter()
        latency = metrics.end_to_end_latency
        known_assets = self.settings.metric_assets
        acked_ms = acked_at * 1000.0
        for event in completed.decided:
            direction = event.direction.value
            counts[event.outcome.value.lower(), direction] += 1
            actions[direction, event.action] += 1
            latency.observe(max(0.0, (acked_ms - event.event_timestamp_ms) / 1000.0))
            if event.reason is not None:
                metrics.unscreenable.labels(event.reason).inc()
            if event.matches:
                asset = event.asset.upper()
                asset = asset if asset in known_assets else "other"
                for match in event.matches:
                    metrics.flags.labels(
                        match["list"], match["category"], asset, event.chain or "unknown", direction
                    ).inc()
                if event.outcome is Outcome.FLAGGED:
                    # One line per hit for the analyst's trail: ids and lists, never the account or the address.
                    log.warning(
                        f"{direction} flagged",
                        extra={
                            "event_id": event.event_id,
                            "decision_id": event.decision_id,
                            "direction": direction,
                            "severity": event.severity,
                            "action": event.action,
                            "lists": sorted({match["list"] for match in event.matches}),
                            "asset": asset,
                            "chain": event.chain,
                        },
                    )
                if event.usd_value is not None:
                    category = event.matches[0]["category"]
                    metrics.flagged_usd.labels(category, asset, direction).inc(max(0.0, event.usd_value))
        for (outcome, direction), count in counts.items():
            metrics.decisions.labels(outcome, direction).inc(count)
        for (direction, action), count in actions.items():
            metrics.actions.labels(direction, action).inc(count)
        for record, error in completed.dead_letters:
            metrics.dead_lettered.labels(error.reason.value, self.batch.direction_of(record).value).inc()
        if completed.held:
            metrics.held.labels(completed.hold_reason or "unknown").inc(completed.held)
