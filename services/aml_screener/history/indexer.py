"""`aml-screener history index`: the screening history's writer, a consumer group of its own on the decision topic
(and the input topics, for each event's account, amount and USD value).

Per poll batch: decode (decisions of any schema version, read into the current one; inputs with the screener's
own decoders) -> write every screened address and every event in one database transaction (idempotent: COPY into
a temporary table, INSERT ... ON CONFLICT DO NOTHING) -> commit it -> the late check -> send the late matches and
dead letters and wait for Kafka's acknowledgement -> commit the input offsets. Offsets are committed only after
the database transaction committed, so a crash at any point re-reads the batch and writes nothing twice.

The late check closes the race with the lookback (history/lookback.py): a decision made with watchlist version W
that reaches the history after the lookback processed a newer version V (the indexer was behind, down, or the
screener had not switched to V yet) was not there when V was looked back on. After its rows are committed, the
indexer looks its keys up in the change log for listings added by versions newer than W within the window, and
produces those RetroactiveMatch records itself (found_by 'indexer'). The lookback writes the change log before it
looks back and the indexer checks after it committed, so one of the two always sees both sides.

What cannot be stored: an input record the screener could not decode either (it was dead-lettered there) is
skipped and counted; a decision record that cannot be decoded goes to AML_HISTORY_DEAD_LETTER_TOPIC with the reason
(headers as the screener's dead letters). A database, schema registry or Kafka outage holds the batch: partitions
paused, membership kept, not ready, retried with back-off, nothing committed.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import psycopg
from fastavro import parse_schema, schemaless_reader
from kafka import TopicPartition
from kafka.errors import CommitFailedError, KafkaError

from aml_screener.history.lookback import count_retroactive
from aml_screener.history.metrics import HistoryMetrics
from aml_screener.history.migrate import PARTITION_MONTHS_AHEAD, check_current, ensure_partitions
from aml_screener.history.outputs import DeliveryFailed, HistoryOutputs
from aml_screener.history.retro import FoundBy, PastAddress, hits_by_key, retroactive_match
from aml_screener.history.rows import AddressRow, EventRow, address_rows, event_row
from aml_screener.history.store import HistoryStore
from aml_screener.infra.kafka import refresh_consumer_lag
from aml_screener.infra.settings import Settings
from aml_screener.screener.ack_window import next_offsets
from aml_screener.screener.backoff import Backoff
from aml_screener.screener.codec import HEADER_SIZE, MAGIC_BYTE, DepositDecoder, EventDecoder, WithdrawalDecoder
from aml_screener.screener.errors import DeadLetterReason, DecodeError, SchemaSourceUnavailable
from aml_screener.screener.health import ServiceState
from aml_screener.screener.pipeline import (
    DLQ_HEADER_DETAIL,
    DLQ_HEADER_OFFSET,
    DLQ_HEADER_PARTITION,
    DLQ_HEADER_REASON,
    DLQ_HEADER_TIMESTAMP,
    DLQ_HEADER_TOPIC,
    InputRecord,
    OutputRecord,
)
from aml_screener.screener.schemas import (
    SCREENING_DECISION,
    Schema,
    SchemaCatalog,
    SchemaRepository,
    UnknownSchemaId,
    strip_logical_types,
)
from aml_screener.screener.service import Consumer
from aml_screener.screening.records import Direction

log = logging.getLogger(__name__)

ROLE = "indexer"
# Monthly partitions are checked (and the next months created) this often; they are created months ahead, so an
# hour is far inside the margin.
_PARTITION_CHECK_SECONDS = 3_600.0
# While a batch waits (an outage), the paused consumer is polled this often to keep the group membership.
_PAUSED_POLL_MS = 200
_LAG_REFRESH_SECONDS = 1.0
_DLQ_DETAIL_MAX = 512


class DecisionReader:
    """Decision records of any ScreeningDecision version (writer schema by id), read into the current schema
    without logical types. Raises DecodeError (dead letter) or SchemaSourceUnavailable (retry)."""

    def __init__(self, repository: SchemaRepository, catalog: SchemaCatalog) -> None:
        self._repository = repository
        self._reader = parse_schema(strip_logical_types(catalog.current(SCREENING_DECISION).schema), {})
        self._writers: dict[int, Any] = {}

    def _writer(self, schema_id: int) -> Any:
        writer = self._writers.get(schema_id)
        if writer is None:
            try:
                raw: Schema = self._repository.writer_schema(schema_id)
            except UnknownSchemaId:
                raise DecodeError(DeadLetterReason.UNKNOWN_SCHEMA_ID, f"no schema with id {schema_id}") from None
            try:
                writer = parse_schema(strip_logical_types(raw), {})
            except Exception as exc:  # noqa: BLE001 - any unusable schema makes the record undecodable
                raise DecodeError(DeadLetterReason.UNKNOWN_SCHEMA_ID, f"schema {schema_id} unusable: {exc}") from None
            self._writers[schema_id] = writer
        return writer

    def decode(self, value: bytes | None) -> dict[str, Any]:
        if not value:
            raise DecodeError(DeadLetterReason.NULL_VALUE, "record has no value")
        if len(value) < HEADER_SIZE or value[0] != MAGIC_BYTE:
            raise DecodeError(DeadLetterReason.BAD_MAGIC, "not Confluent wire format")
        writer = self._writer(int.from_bytes(value[1:5], "big"))
        stream = io.BytesIO(value)
        stream.seek(HEADER_SIZE)
        try:
            record = cast("dict[str, Any]", schemaless_reader(stream, writer, self._reader))
        except EOFError:
            raise DecodeError(DeadLetterReason.TRUNCATED, "Avro body ends before the record does") from None
        except Exception as exc:  # noqa: BLE001 - fastavro raises many types on garbage or an incompatible writer
            raise DecodeError(DeadLetterReason.MALFORMED_AVRO, f"{type(exc).__name__}: {exc}") from None
        if not record.get("decision_id") or not record.get("event_id"):
            raise DecodeError(DeadLetterReason.INVALID_FIELD, "decision_id or event_id is empty")
        return record


@dataclass
class DecodedBatch:
    addresses: list[AddressRow] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    dead_letters: list[OutputRecord] = field(default_factory=list)
    skipped: int = 0


class BatchDecoder:
    """Records of the indexer's topics -> rows (pure apart from the schema repository)."""

    def __init__(
        self,
        *,
        decisions_topic: str,
        withdrawals_topic: str | None,
        deposits_topic: str | None,
        decisions: DecisionReader,
        withdrawals: EventDecoder,
        deposits: EventDecoder,
        dead_letter_topic: str,
    ) -> None:
        self.decisions_topic = decisions_topic
        self.inputs: dict[str, tuple[Direction, EventDecoder]] = {}
        if withdrawals_topic:
            self.inputs[withdrawals_topic] = (Direction.WITHDRAWAL, withdrawals)
        if deposits_topic:
            self.inputs[deposits_topic] = (Direction.DEPOSIT, deposits)
        self.decisions = decisions
        self.dead_letter_topic = dead_letter_topic

    def decode(self, records: Sequence[InputRecord], metrics: HistoryMetrics | None = None) -> DecodedBatch:
        batch = DecodedBatch()
        for record in records:
            if record.topic == self.decisions_topic:
                try:
                    decision = self.decisions.decode(record.value)
                    batch.addresses.extend(address_rows(decision))
                except DecodeError as exc:
                    batch.dead_letters.append(self._dead_letter(record, exc))
                    if metrics is not None:
                        metrics.skipped.labels("decision_undecodable").inc()
                continue
            direction, decoder = self.inputs[record.topic]
            try:
                _schema_id, event = decoder.decode_raw(record.value)
            except DecodeError:
                batch.skipped += 1  # the screener dead-lettered it: it has no decision either
                if metrics is not None:
                    metrics.skipped.labels("input_undecodable").inc()
                continue
            batch.events.append(
                event_row(
                    direction,
                    event,
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    timestamp_ms=record.timestamp,
                )
            )
        return batch

    def _dead_letter(self, record: InputRecord, error: DecodeError) -> OutputRecord:
        headers = [
            (DLQ_HEADER_REASON, error.reason.value.encode()),
            (DLQ_HEADER_DETAIL, error.detail[:_DLQ_DETAIL_MAX].encode("utf-8", "replace")),
            (DLQ_HEADER_TOPIC, record.topic.encode()),
            (DLQ_HEADER_PARTITION, str(record.partition).encode()),
            (DLQ_HEADER_OFFSET, str(record.offset).encode()),
            (DLQ_HEADER_TIMESTAMP, str(record.timestamp).encode()),
        ]
        return OutputRecord(self.dead_letter_topic, record.key, record.value or b"", headers)


def late_matches(
    store: HistoryStore, rows: Sequence[AddressRow], *, lookback_days: int, now: datetime
) -> list[dict[str, Any]]:
    """The retroactive matches of freshly stored rows for listings that versions newer than the rows' own added
    (the lookback had processed those versions before these rows arrived). Usually none, in two cheap queries."""
    from aml_screener.history.rows import ADDRESS_COLUMNS  # noqa: PLC0415 - column positions, next to their use

    col = {name: index for index, name in enumerate(ADDRESS_COLUMNS)}
    keyed = [row for row in rows if row[col["address_key"]] is not None and row[col["watchlist_version"]]]
    if not keyed:
        return []
    times = store.version_times(row[col["watchlist_version"]] for row in keyed)
    oldest = min(times.values(), default=datetime.min.replace(tzinfo=UTC))
    if len(times) < len({row[col["watchlist_version"]] for row in keyed}):
        oldest = datetime.min.replace(tzinfo=UTC)  # a version of unknown age: compare with every change
    keys = sorted({key for row in keyed for key in (row[col["address_key"]], *row[col["checked_keys"]])})
    added = store.added_after(keys, oldest)
    store.conn.commit()
    if not added:
        return []
    window = timedelta(days=lookback_days)
    candidates: dict[tuple[str, int], list[Any]] = {}
    for row in keyed:
        decided_with = times.get(row[col["watchlist_version"]], datetime.min.replace(tzinfo=UTC))
        lookup = {row[col["address_key"]], *row[col["checked_keys"]]}
        for item in added:
            if (
                item.key in lookup
                and item.version.created_at > decided_with
                and row[col["event_time"]] >= item.version.created_at - window
            ):
                candidates.setdefault((str(row[col["decision_id"]]), row[col["address_index"]]), []).append(item)
    if not candidates:
        return []
    past = {(row.decision_id, row.address_index): row for row in store.past_addresses(list(candidates))}
    store.conn.commit()
    records: dict[str, dict[str, Any]] = {}
    for identity, items in candidates.items():
        past_row: PastAddress | None = past.get(identity)
        if past_row is None:
            continue
        by_version: dict[str, list[Any]] = {}
        for item in items:
            by_version.setdefault(item.version.version, []).append(item)
        for version_items in by_version.values():
            version = version_items[0].version
            hits = hits_by_key((item.key, item.listing) for item in version_items)
            record = retroactive_match(
                past_row, hits, version, found_by=FoundBy.INDEXER, found_at=now, lookback_days=lookback_days
            )
            if record is not None:
                records.setdefault(record["retroactive_match_id"], record)
    return list(records.values())


class Indexer:
    """The consumer loop of the history indexer (one batch at a time: nothing is in flight across polls)."""

    def __init__(
        self,
        *,
        settings: Settings,
        consumer: Consumer,
        decoder: BatchDecoder,
        connect: Callable[[], psycopg.Connection],
        outputs: HistoryOutputs,
        metrics: HistoryMetrics,
        state: ServiceState,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.decoder = decoder
        self._connect = connect
        self.outputs = outputs
        self.metrics = metrics
        self.state = state
        self.clock = clock
        self._stop = threading.Event()
        self._conn: psycopg.Connection | None = None
        self._store: HistoryStore | None = None
        self._next_partition_check = 0.0
        self._next_lag_refresh = 0.0
        self._lag_labels: set[tuple[str, str]] = set()
        self.batches = 0
        self.records_done = 0

    @property
    def topics(self) -> list[str]:
        return [self.decoder.decisions_topic, *self.decoder.inputs]

    def request_stop(self) -> None:
        self._stop.set()

    def run(self) -> int:
        self.metrics.up.labels(ROLE).set(1)
        try:
            if not self._until_database():
                return 0
            self.consumer.subscribe(self.topics)
            # A metadata update after subscribe() gives the group leader its snapshot (as in screener/service.py):
            # without it, kafka-python assigns from an empty snapshot and this member idles until the next periodic
            # metadata refresh (5 minutes) when it joins before the topics' metadata arrived.
            self.consumer.topics()
            log.info("history indexer consuming", extra={"topics": self.topics})
            while not self._stop.is_set():
                self.state.heartbeat()
                try:
                    polled = self.consumer.poll(timeout_ms=200, max_records=self.settings.kafka_max_poll_records)
                except KafkaError as exc:
                    log.warning("poll failed", extra={"error": str(exc)})
                    self._stop.wait(0.5)
                    continue
                records = [record for batch in polled.values() for record in batch]
                if records:
                    self._process_with_retry(records)
                self._maintain()
            return 0
        finally:
            self._close_db()
            self.outputs.close()
            try:
                self.consumer.close(autocommit=False)
            except KafkaError:
                log.debug("closing the consumer failed", exc_info=True)
            self.metrics.up.labels(ROLE).set(0)

    # --- database --------------------------------------------------------------------------------------
    def _store_or_connect(self) -> HistoryStore:
        if self._store is None or self._conn is None or self._conn.closed:
            self._close_db()
            conn = self._connect()
            check_current(conn)
            conn.commit()
            self._conn, self._store = conn, HistoryStore(conn)
        return self._store

    def _close_db(self) -> None:
        conn, self._conn, self._store = self._conn, None, None
        if conn is not None and not conn.closed:
            try:
                conn.close()
            except psycopg.Error:
                log.debug("closing the database connection failed", exc_info=True)

    def _until_database(self) -> bool:
        """Before joining the group: not ready until the database answers and is migrated."""
        backoff = Backoff(self.settings.lookup_retry_max_seconds)
        while not self._stop.is_set():
            self.state.heartbeat()
            try:
                self._store_or_connect()
                self._ensure_partitions()
            except psycopg.Error as exc:
                self._failed("database_unavailable", exc)
                self._stop.wait(backoff.next())
                continue
            self._ready()
            return True
        return False

    def _ensure_partitions(self) -> None:
        store = self._store_or_connect()
        created = ensure_partitions(store.conn, 1, PARTITION_MONTHS_AHEAD)
        if created:
            log.info("history partitions created", extra={"count": created})
        self._next_partition_check = time.monotonic() + _PARTITION_CHECK_SECONDS

    def _ready(self) -> None:
        self.state.set_ready(None)
        self.metrics.ready.labels(ROLE).set(1)

    def _failed(self, reason: str, exc: Exception) -> None:
        if isinstance(exc, psycopg.Error):
            self.metrics.database_errors.labels(ROLE).inc()
            self._close_db()
        log.warning("history batch held: retrying", extra={"reason": reason, "error": str(exc)[:500]})
        self.state.set_not_ready(reason, fail_closed=True)
        self.metrics.ready.labels(ROLE).set(0)

    # --- one batch -------------------------------------------------------------------------------------
    def _process_with_retry(self, records: list[Any]) -> None:
        backoff = Backoff(self.settings.lookup_retry_max_seconds)
        failing = False
        while True:
            try:
                self._process(records)
            except psycopg.Error as exc:
                self._failed("database_unavailable", exc)
            except SchemaSourceUnavailable as exc:
                self._failed("schema_registry_unavailable", exc)
            except DeliveryFailed as exc:
                self._failed("kafka_unacknowledged", exc)
            else:
                if failing:
                    self._ready()
                return
            failing = True
            if not self._wait_paused(backoff.next()):
                return  # stopping: nothing of the batch was committed; it is read again
            owned = set(self.consumer.assignment())
            records = [record for record in records if TopicPartition(record.topic, record.partition) in owned]
            if not records:
                return  # every partition of the batch moved to another member, which reads it again

    def _process(self, records: list[Any]) -> None:
        started = time.perf_counter()
        decoded = self.decoder.decode(records, self.metrics)
        decoded_at = time.perf_counter()
        store = self._store_or_connect()
        try:
            new_addresses, new_events = store.write(decoded.addresses, decoded.events)
            store.conn.commit()
        except BaseException:
            if not store.conn.closed:
                store.conn.rollback()
            raise
        written_at = time.perf_counter()
        late = late_matches(
            store, decoded.addresses, lookback_days=self.settings.history_lookback_days, now=datetime.now(UTC)
        )
        checked_at = time.perf_counter()
        outputs = [*decoded.dead_letters, *(self.outputs.retroactive(record) for record in late)]
        self.outputs.deliver(outputs, self.state.heartbeat)
        produced_at = time.perf_counter()
        self._commit(records)
        done_at = time.perf_counter()
        m = self.metrics
        for record in records:
            m.records_consumed.labels(record.topic).inc()
        m.rows_written.labels("screened_addresses").inc(new_addresses)
        m.rows_written.labels("screened_events").inc(new_events)
        m.rows_duplicate.labels("screened_addresses").inc(len(decoded.addresses) - new_addresses)
        m.rows_duplicate.labels("screened_events").inc(len(decoded.events) - new_events)
        count_retroactive(m, late, FoundBy.INDEXER)
        m.batch_size.observe(len(records))
        for stage, seconds in (
            ("decode", decoded_at - started),
            ("write", written_at - decoded_at),
            ("check", checked_at - written_at),
            ("produce", produced_at - checked_at),
            ("commit", done_at - produced_at),
        ):
            m.stage_duration.labels(stage).observe(seconds)
        m.last_batch_timestamp.set(self.clock())
        self.batches += 1
        self.records_done += len(records)
        if late:
            log.warning(
                "retroactive matches found for decisions indexed after their watchlist change",
                extra={"count": len(late), "event_ids": sorted({r["decision"]["event_id"] for r in late})[:20]},
            )

    def _commit(self, records: Sequence[InputRecord]) -> None:
        offsets = next_offsets(records)
        try:
            self.consumer.commit(dict(offsets))
        except (CommitFailedError, KafkaError) as exc:
            # The partitions moved meanwhile: their new owner reads from the last commit and writes nothing twice.
            log.warning("offset commit failed; the records will be read again", extra={"error": str(exc)})

    def _wait_paused(self, seconds: float) -> bool:
        """Wait with every partition paused, polling to keep the membership; False when a stop was requested."""
        deadline = time.monotonic() + seconds
        assignment = set(self.consumer.assignment())
        if assignment:
            self.consumer.pause(*assignment)
        try:
            while time.monotonic() < deadline:
                if self._stop.is_set():
                    return False
                self.state.heartbeat()
                try:
                    polled = self.consumer.poll(timeout_ms=_PAUSED_POLL_MS)
                except KafkaError as exc:
                    log.warning("poll failed while waiting", extra={"error": str(exc)})
                    polled = {}
                for tp, batch in polled.items():
                    self.consumer.seek(tp, min(record.offset for record in batch))  # newly assigned: read it later
            return not self._stop.is_set()
        finally:
            owned = set(self.consumer.assignment())
            if owned:
                self.consumer.resume(*owned)

    def _maintain(self) -> None:
        now = time.monotonic()
        if now >= self._next_partition_check:
            try:
                self._ensure_partitions()
            except psycopg.Error as exc:
                self._failed("database_unavailable", exc)
                self._next_partition_check = now + 60  # retried soon; months are created well ahead
        if now >= self._next_lag_refresh:
            self._next_lag_refresh = now + _LAG_REFRESH_SECONDS
            self._refresh_lag()

    def _refresh_lag(self) -> None:
        self._lag_labels = refresh_consumer_lag(self.consumer, self.metrics.consumer_lag, self._lag_labels)


def decoders(settings: Settings, repository: SchemaRepository, catalog: SchemaCatalog) -> BatchDecoder:
    index_inputs = settings.history_index_inputs
    return BatchDecoder(
        decisions_topic=settings.kafka_decisions_topic,
        withdrawals_topic=settings.kafka_input_topic if index_inputs else None,
        deposits_topic=(settings.kafka_deposit_topic or None) if index_inputs else None,
        decisions=DecisionReader(repository, catalog),
        withdrawals=WithdrawalDecoder(repository, catalog, settings.kafka_max_message_bytes),
        deposits=DepositDecoder(repository, catalog, settings.kafka_max_message_bytes),
        dead_letter_topic=settings.history_dead_letter_topic,
    )
