"""`aml-screener history lookback`: on every watchlist change, the past events that touched a newly listed address.

The trigger is lossless without being a message: the lookback compares the watchlist versions in Redis (the
`versions` index the sync keeps, and the active pointer) with what it has recorded in PostgreSQL, and processes
every version it has not finished, oldest first. The Redis change notification only wakes it at once; a missed
one (pub/sub is not durable) is caught by the timer (AML_LOOKBACK_POLL_SECONDS). Per version:

1. ingest (one transaction): the version's tables are compared with the lookback's copy of the watchlist in
   PostgreSQL (only the sources whose table changed; content-addressed tables make that a key comparison), giving
   the listings added, removed and updated (history/changes.py); the change log, the copy and the version's row
   are written together. The copy, not an older version in Redis, is the base: any number of versions may be
   activated and garbage-collected while the lookback is down, nothing of their net change is lost.
2. look back: every past screened address of the window (AML_HISTORY_LOOKBACK_DAYS before the version's
   activation) that an added listing applies to, decided with an older version, gives a RetroactiveMatch
   (history/retro.py); every removed listing gives a Delisted announcement and one Delisted per past decision
   flagged under it in the window.
3. only when Kafka acknowledged every record: the version is marked done (its durable progress). A crash or an
   outage before that redoes step 2 from the change log: duplicates carry the same ids.

The very first version the lookback ever sees is its baseline: copied, not compared (changes before the lookback
first ran are not looked back on), and recorded in the change log as adding its whole content, where the retained
history of versions that `watchlist as-of` reads starts (history/asof.py). Decisions that reach the history only
after their version was processed (the indexer was behind) are checked by the indexer itself against the change log
(history/indexer.py), so neither a slow indexer nor a slow lookback loses a match. One lookback works at a time (a
PostgreSQL advisory lock; a second replica waits as a standby).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import psycopg
import redis

from aml_screener.history.changes import ChangeKind, decode_table_value, version_changes
from aml_screener.history.metrics import HistoryMetrics
from aml_screener.history.migrate import check_current
from aml_screener.history.outputs import DeliveryFailed, HistoryOutputs
from aml_screener.history.retro import (
    FoundBy,
    PastAddress,
    VersionInfo,
    delisted_decision,
    delisting_announcement,
    hits_by_key,
    retroactive_match,
)
from aml_screener.history.store import HistoryStore, IngestedVersion, md5_text
from aml_screener.infra.watchlist_layout import VersionRecord, WatchlistKeys
from aml_screener.screener.backoff import Backoff
from aml_screener.screener.health import ServiceState
from aml_screener.screener.pipeline import OutputRecord
from aml_screener.screening.records import Match
from aml_screener.watchlist.store import WatchlistStore

log = logging.getLogger(__name__)

ROLE = "lookback"
# Key of the session-level advisory lock that makes one lookback the worker (any constant, distinct from the
# migrator's).
LOCK_KEY = 0x616D6C5F6C6B6263  # "aml_lkbc"
# The wait for a change notification is sliced so a stop request is noticed within this long.
_WAIT_SLICE_SECONDS = 0.5
# Heartbeat at least this often while reading a large table (the liveness probe watches it).
_HEARTBEAT_EVERY_KEYS = 10_000


class VersionUnavailable(Exception):
    """A version's tables cannot be read completely from Redis (garbage-collected meanwhile): skipped, its changes
    are folded into the next version's."""


@dataclass
class VersionResult:
    version: str
    baseline: bool = False
    skipped: bool = False
    retroactive: int = 0
    delisted_decisions: int = 0


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


class Lookback:
    """Finds the versions to process and processes them. `process_pending` is one pass (the tests drive it);
    `run` loops with reconnects, back-off, notifications and the health state."""

    def __init__(
        self,
        *,
        connect: Callable[[], psycopg.Connection],
        client: redis.Redis,
        keys: WatchlistKeys,
        outputs: HistoryOutputs,
        lookback_days: int,
        metrics: HistoryMetrics,
        state: ServiceState,
        poll_seconds: float = 10.0,
        retry_max_seconds: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._connect = connect
        self.redis = client
        self.watchlist = WatchlistStore(client, keys)
        self.keys = keys
        self.outputs = outputs
        self.lookback_days = lookback_days
        self.metrics = metrics
        self.state = state
        self.poll_seconds = poll_seconds
        self.retry_max_seconds = retry_max_seconds
        self.clock = clock
        self._conn: psycopg.Connection | None = None
        self._store: HistoryStore | None = None
        self._stop = threading.Event()

    # --- lifecycle -------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        self._stop.set()

    def run(self) -> int:
        self.metrics.up.labels(ROLE).set(1)
        backoff = Backoff(self.retry_max_seconds)
        pubsub = None
        try:
            while not self._stop.is_set():
                self.state.heartbeat()
                try:
                    if pubsub is None:
                        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
                        pubsub.subscribe(self.keys.changes)
                    if not self._hold_lock():
                        self.state.set_not_ready("standby: another lookback holds the lock", fail_closed=False)
                        self._stop.wait(self.poll_seconds)
                        continue
                    self.process_pending()
                    self.state.set_ready(self._last_done)
                    backoff.reset()
                except (psycopg.Error, redis.RedisError, OSError, DeliveryFailed) as exc:
                    self._on_error(exc)
                    pubsub = self._drop_pubsub(pubsub) if isinstance(exc, redis.RedisError | OSError) else pubsub
                    self._stop.wait(backoff.next())
                    continue
                pubsub = self._wait_for_change(pubsub)
            return 0
        finally:
            self._drop_pubsub(pubsub)
            self._close_db()
            self.outputs.close()
            self.metrics.up.labels(ROLE).set(0)

    def _on_error(self, exc: Exception) -> None:
        database = isinstance(exc, psycopg.Error)
        reason = (
            "database_unavailable"
            if database
            else ("kafka_unacknowledged" if isinstance(exc, DeliveryFailed) else "redis_unavailable")
        )
        if database:
            self.metrics.database_errors.labels(ROLE).inc()
            self._close_db()
        log.warning("lookback pass failed; retrying", extra={"reason": reason, "error": str(exc)[:500]})
        self.state.set_not_ready(reason, fail_closed=False)
        self.metrics.ready.labels(ROLE).set(0)

    def _wait_for_change(self, pubsub: Any) -> Any:
        deadline = time.monotonic() + self.poll_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            self.state.heartbeat()
            try:
                message = pubsub.get_message(timeout=_WAIT_SLICE_SECONDS)
            except (redis.RedisError, OSError) as exc:
                log.warning("watchlist change channel lost; resubscribing", extra={"error": str(exc)})
                return self._drop_pubsub(pubsub)
            if message is not None and message.get("type") == "message":
                self.metrics.notifications.inc()
                return pubsub
        return pubsub

    @staticmethod
    def _drop_pubsub(pubsub: Any) -> None:
        if pubsub is not None:
            try:
                pubsub.close()
            except (redis.RedisError, OSError):
                log.debug("closing the pub/sub connection failed", exc_info=True)

    def _store_or_connect(self) -> HistoryStore:
        if self._store is None or self._conn is None or self._conn.closed:
            self._close_db()
            conn = self._connect()
            check_current(conn)
            conn.commit()
            self._conn, self._store = conn, HistoryStore(conn)
        return self._store

    def _hold_lock(self) -> bool:
        store = self._store_or_connect()
        if getattr(self, "_locked_conn", None) is store.conn:
            return True
        row = store.conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()
        store.conn.commit()
        if row and row[0]:
            self._locked_conn: psycopg.Connection | None = store.conn
            return True
        return False

    def _close_db(self) -> None:
        conn, self._conn, self._store = self._conn, None, None
        self._locked_conn = None
        if conn is not None and not conn.closed:
            try:
                conn.close()
            except psycopg.Error:
                log.debug("closing the database connection failed", exc_info=True)

    @property
    def _last_done(self) -> str | None:
        return getattr(self, "_last_done_version", None)

    # --- one pass --------------------------------------------------------------------------------------
    def process_pending(self) -> list[VersionResult]:
        """Finish every version not finished yet, oldest first; return what was done."""
        store = self._store_or_connect()
        results: list[VersionResult] = []
        ingested = store.ingested_versions()
        store.conn.commit()
        for version in [item for item in ingested if not item.done]:
            results.append(self._look_back(store, version))  # ingested before a crash or outage: redo its records
        last = ingested[-1] if ingested else None
        active = self.watchlist.active_version()
        if active is None:
            self._update_lag(store, None)
            return results
        known = {item.version for item in ingested}
        for name, created in self._versions_after(last, active, known):
            self.state.heartbeat()
            meta = self.watchlist.meta(name)
            if meta is None:
                self._skipped(name, "no longer in Redis")
                continue
            try:
                ingested_version = self._ingest(store, meta, created, last)
            except VersionUnavailable as exc:
                store.conn.rollback()
                self._skipped(name, str(exc))
                continue
            last = ingested_version
            if ingested_version.done:  # the baseline: nothing to look back on
                self.metrics.versions_processed.labels("baseline").inc()
                self._finished(ingested_version)
                results.append(VersionResult(name, baseline=True))
                continue
            results.append(self._look_back(store, ingested_version))
        self._update_lag(store, active)
        return results

    def _versions_after(self, last: IngestedVersion | None, active: str, known: set[str]) -> list[tuple[str, float]]:
        """The versions to ingest, oldest first: those activated after the last ingested one (``known``: every
        version ingested), up to the active one; without any ingested yet only the active one (the baseline)."""
        ranked = cast("list[tuple[str, float]]", self.redis.zrange(self.keys.versions, 0, -1, withscores=True))
        scored = [(str(member), float(score)) for member, score in ranked]
        by_version = dict(scored)
        active_created = by_version.get(active)
        if active_created is None:
            meta = self.watchlist.meta(active)
            active_created = meta.created_at if meta is not None else self.clock()
        if last is None:
            return [(active, active_created)]
        if active in known:
            return []
        after = by_version.get(last.version, last.created_at.timestamp())
        return sorted(
            (
                (version, created)
                for version, created in scored
                if after <= created <= active_created and version not in known
            ),
            key=lambda item: item[1],
        )

    def _skipped(self, version: str, why: str) -> None:
        log.warning(
            "watchlist version skipped: its changes are folded into the next version's",
            extra={"version": version, "why": why},
        )
        self.metrics.versions_processed.labels("skipped").inc()

    # --- step 1: ingest --------------------------------------------------------------------------------
    def _read_table(self, table: str, expected: int | None) -> dict[str, str]:
        values: dict[str, str] = {}
        for count, (key, value) in enumerate(self.watchlist.iter_table(table), 1):
            values[key] = value
            if count % _HEARTBEAT_EVERY_KEYS == 0:
                self.state.heartbeat()
        if not values or (expected is not None and len(values) != expected):
            raise VersionUnavailable(f"table {table}: {len(values)} keys read, {expected} recorded")
        return values

    def _ingest(
        self, store: HistoryStore, meta: VersionRecord, created: float, last: IngestedVersion | None
    ) -> IngestedVersion:
        started = time.perf_counter()
        tables = dict(meta.tables)
        recorded = {name: meta.sources.get(name, {}).get("keys") for name in tables}
        if last is None:
            everything = {
                source: self._read_table(table, _int_or_none(recorded[source])) for source, table in tables.items()
            }
            # Its whole content is recorded as added by it: where the retained history of versions starts
            # (history/asof.py); being the baseline, it is not looked back on.
            baseline_keys = sorted({key for values in everything.values() for key in values})
            store.record_version(
                version=meta.version,
                parent=meta.parent,
                created_at=_utc(created),
                previous=None,
                baseline=True,
                tables=tables,
                upserts=everything,
                deletes={},
                changes=version_changes(baseline_keys, {}, everything),
                replace_all=True,
            )
            store.mark_done(meta.version, retroactive=0, delisted=0)
            store.conn.commit()
            log.info("lookback baseline recorded", extra={"version": meta.version, "sources": sorted(tables)})
            return IngestedVersion(meta.version, 0, _utc(created), None, True, True)
        copy = store.snapshot_tables()
        changed = sorted(
            {name for name, table in tables.items() if copy.get(name) != table} | (set(copy) - set(tables))
        )
        upserts: dict[str, dict[str, str]] = {}
        deletes: dict[str, list[str]] = {}
        new_values: dict[str, dict[str, str]] = {}
        candidates: set[str] = set()
        for source in changed:
            table = tables.get(source)
            new = self._read_table(table, _int_or_none(recorded[source])) if table is not None else {}
            old = store.snapshot_digests(source)
            self.state.heartbeat()
            differing = {key: value for key, value in new.items() if old.get(key) != md5_text(value)}
            gone = [key for key in old if key not in new]
            upserts[source] = differing
            deletes[source] = gone
            candidates.update(differing)
            candidates.update(gone)
            new_values[source] = new
        keys = sorted(candidates)
        old_view = store.snapshot_values(keys)
        new_view: dict[str, Mapping[str, str]] = {
            source: old_view.get(source, {}) for source in tables if source not in new_values
        }
        for source, values in new_values.items():
            if source in tables:
                new_view[source] = {key: values[key] for key in keys if key in values}
        changes = version_changes(keys, old_view, new_view)
        store.record_version(
            version=meta.version,
            parent=meta.parent,
            created_at=_utc(created),
            previous=last.version,
            baseline=False,
            tables=tables,
            upserts=upserts,
            deletes=deletes,
            changes=changes,
        )
        store.conn.commit()
        counts = {kind.value: sum(1 for change in changes if change.kind is kind) for kind in ChangeKind}
        self.metrics.stage_duration.labels("ingest").observe(time.perf_counter() - started)
        log.info(
            "watchlist version ingested",
            extra={"version": meta.version, "previous": last.version, "sources_changed": changed, **counts},
        )
        return IngestedVersion(meta.version, 0, _utc(created), last.version, False, False)

    # --- step 2: look back -----------------------------------------------------------------------------
    def _look_back(self, store: HistoryStore, version: IngestedVersion) -> VersionResult:
        started = time.perf_counter()
        info = version.info
        since = info.created_at - timedelta(days=self.lookback_days)
        now = _utc(self.clock())
        added: list[tuple[str, Match]] = []
        removed: dict[str, list[Match]] = {}
        for key, change, listing in store.changes_of(version.version):
            if change == ChangeKind.ADDED.value:
                added.append((key, listing))
            elif change == ChangeKind.REMOVED.value:
                removed.setdefault(key, []).append(listing)
        hits = hits_by_key(added)
        records: dict[str, dict[str, Any]] = {}
        for row in store.addresses_touching(sorted(hits), since=since, before=info.created_at):
            record = retroactive_match(
                row, hits, info, found_by=FoundBy.LOOKBACK, found_at=now, lookback_days=self.lookback_days
            )
            if record is not None:
                records.setdefault(record["retroactive_match_id"], record)
        looked_up = time.perf_counter()
        delisted = self._delistings(store, removed, info, since, now)
        store.conn.commit()
        self.metrics.stage_duration.labels("lookup").observe(looked_up - started)
        outputs: list[OutputRecord] = [self.outputs.retroactive(record) for record in records.values()]
        outputs += [self.outputs.delisted(record) for record in delisted]
        produce_started = time.perf_counter()
        self.outputs.deliver(outputs, self.state.heartbeat)
        self.metrics.stage_duration.labels("produce").observe(time.perf_counter() - produce_started)
        decisions = sum(1 for record in delisted if record["decision"] is not None)
        store.mark_done(version.version, retroactive=len(records), delisted=decisions)
        store.conn.commit()
        self._count(records.values(), delisted, FoundBy.LOOKBACK)
        self.metrics.versions_processed.labels("change").inc()
        self.metrics.version_latency.observe(max(0.0, self.clock() - info.created_at.timestamp()))
        self._finished(version)
        log.info(
            "lookback finished a watchlist version",
            extra={
                "version": version.version,
                "added_keys": len(hits),
                "removed_keys": len(removed),
                "retroactive_matches": len(records),
                "delisted_decisions": decisions,
                "seconds": round(time.perf_counter() - started, 3),
            },
        )
        return VersionResult(version.version, retroactive=len(records), delisted_decisions=decisions)

    def _delistings(
        self,
        store: HistoryStore,
        removed: Mapping[str, Sequence[Match]],
        info: VersionInfo,
        since: datetime,
        now: datetime,
    ) -> list[dict[str, Any]]:
        if not removed:
            return []
        keys = sorted(removed)
        current = store.snapshot_values(keys)  # the copy is at this version (versions are processed in order)
        still: dict[str, list[Match]] = {}
        for values in current.values():
            for key, value in values.items():
                still.setdefault(key, []).extend(decode_table_value(value))
        gone = frozenset(key for key in keys if not still.get(key))
        per_decision: list[dict[str, Any]] = []
        affected: dict[str, int] = {}
        seen: set[str] = set()
        rows: list[PastAddress] = list(store.flagged_under(keys, since=since, before=info.created_at))
        for row in rows:
            for key in row.matched_keys:
                if key not in removed:
                    continue
                record = delisted_decision(
                    row,
                    key,
                    removed[key],
                    still.get(key, []),
                    info,
                    delisted_keys=gone,
                    found_by=FoundBy.LOOKBACK,
                    found_at=now,
                    lookback_days=self.lookback_days,
                )
                if record["delisted_id"] not in seen:
                    seen.add(record["delisted_id"])
                    per_decision.append(record)
                    affected[key] = affected.get(key, 0) + 1
        announcements = [
            delisting_announcement(
                key,
                removed[key],
                still.get(key, []),
                info,
                affected=affected.get(key, 0),
                found_at=now,
                lookback_days=self.lookback_days,
            )
            for key in keys
        ]
        return announcements + per_decision

    def _count(self, retro: Any, delisted: Sequence[Mapping[str, Any]], found_by: str) -> None:
        count_retroactive(self.metrics, retro, found_by)
        for record in delisted:
            if record["decision"] is None:
                self.metrics.delisted.labels("listing").inc()
            else:
                self.metrics.delisted.labels("decision").inc()
                if record["open_action"]:
                    self.metrics.delisted_open_actions.inc()

    def _finished(self, version: IngestedVersion) -> None:
        self._last_done_version = version.version
        self.metrics.processed_version.info({"version": version.version})
        self.metrics.processed_created.set(version.created_at.timestamp())

    def _update_lag(self, store: HistoryStore, active: str | None) -> None:
        """Pending versions and lag: what Redis has activated beyond what is finished."""
        if active is None:
            self.metrics.pending_versions.set(0)
            self.metrics.lag_seconds.set(0)
            return
        ingested = store.ingested_versions()
        store.conn.commit()
        done = [item for item in ingested if item.done]
        done_names = {item.version for item in done}
        ranked = cast("list[tuple[str, float]]", self.redis.zrange(self.keys.versions, 0, -1, withscores=True))
        scored = {str(member): float(score) for member, score in ranked}
        last_done = scored.get(done[-1].version, done[-1].created_at.timestamp()) if done else float("-inf")
        pending = sorted(score for member, score in scored.items() if score >= last_done and member not in done_names)
        active_score = scored.get(active)  # from the ZRANGE above: the reader ACL user has no ZSCORE
        if active_score is not None:
            self.metrics.active_created.set(active_score)
        self.metrics.pending_versions.set(len(pending))
        self.metrics.lag_seconds.set(max(0.0, self.clock() - pending[0]) if pending else 0.0)


def count_retroactive(metrics: HistoryMetrics, records: Any, found_by: str) -> None:
    for record in records:
        categories = {match["category"] for match in record["matches"]}
        category = "sanctions" if "sanctions" in categories else sorted(categories)[0]
        direction = record["decision"]["direction"]
        metrics.retroactive_matches.labels(category, record["severity"], direction, found_by).inc()


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
