"""Reading and writing the history database (PostgreSQL; schema in history/migrations/, explained in docs/history.md).

- :func:`connect`: a connection from settings (password from its own variable, UTC session time zone).
- :class:`HistoryStore` over one connection: idempotent batch writes of screened addresses and events (COPY into a
  temporary table, then INSERT ... ON CONFLICT DO NOTHING: a re-delivered decision is never stored twice), the
  lookups of past addresses by key within a window, the lookback's copy of the watchlist and its change log, and
  the versions it processed. The caller owns the transaction (commits or rolls back).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from aml_screener.history.changes import ListingChange
from aml_screener.history.retro import PastAddress, VersionInfo
from aml_screener.history.rows import ADDRESS_COLUMNS, EVENT_COLUMNS, AddressRow, EventRow
from aml_screener.infra.settings import Settings
from aml_screener.screening.records import Match

# Keys per lookup query: an array parameter of this many keys is probed through the indexes in one statement;
# larger sets (a new list of 100,000 addresses) are looked up chunk by chunk so no statement runs for minutes.
LOOKUP_CHUNK = 1_000
# A connection attempt gives up after this long (then the caller backs off and retries): a database that does not
# answer in 5 s is down for our purposes, and the loops must keep their liveness heartbeat going.
CONNECT_TIMEOUT_SECONDS = 5
_ADDRESS_COLS = sql.SQL(", ").join(map(sql.Identifier, ADDRESS_COLUMNS))
_EVENT_COLS = sql.SQL(", ").join(map(sql.Identifier, EVENT_COLUMNS))
# Rows go to a temporary table by COPY, then into the history by one INSERT that skips what is already there.
_COPY_ADDRESSES = sql.SQL("COPY incoming_addresses ({}) FROM STDIN").format(_ADDRESS_COLS)
_INSERT_ADDRESSES = sql.SQL(
    "INSERT INTO aml_history.screened_addresses ({0}) SELECT {0} FROM incoming_addresses ON CONFLICT DO NOTHING"
).format(_ADDRESS_COLS)
_COPY_EVENTS = sql.SQL("COPY incoming_events ({}) FROM STDIN").format(_EVENT_COLS)
_INSERT_EVENTS = sql.SQL(
    "INSERT INTO aml_history.screened_events ({0}) SELECT {0} FROM incoming_events ON CONFLICT DO NOTHING"
).format(_EVENT_COLS)

# Past addresses with their event's facts: ``{rows}`` finds the history rows (materialized), then each one's event is
# fetched by its primary key. Written as one join, the planner (misled by the array-overlap estimate of the
# related-keys index) hashed the whole events table: minutes at 10 million rows instead of seconds.
_PAST_SELECT = """
WITH h AS MATERIALIZED ({rows})
SELECT h.decision_id::text, h.address_index, h.direction, h.event_id, h.exchange_id, e.account_id, h.asset,
       h.network, h.address, h.address_key, h.checked_keys, h.checked_relations, h.outcome, h.decision, h.severity,
       h.action, h.matched_keys, e.amount, e.usd_value, h.event_time, h.decided_at, h.watchlist_version,
       h.source_topic, h.source_partition, h.source_offset, h.source_schema_id
FROM h
LEFT JOIN aml_history.watchlist_versions v ON v.version = h.watchlist_version
LEFT JOIN LATERAL (
    SELECT e.account_id, e.amount, e.usd_value FROM aml_history.screened_events e
    WHERE e.direction = h.direction AND e.event_id = h.event_id AND e.event_time = h.event_time
    LIMIT 1
) e ON true
WHERE {outer}
"""
# The rows touching a set of keys, probed key by key (a lateral join over the keys: one index probe per key and
# partition of the window). Given the whole array at once (`address_key = ANY(keys) OR checked_keys && keys`), the
# planner estimates the overlap with a thousand keys as most of the table and scans every partition sequentially
# (minutes at 10 million rows, docs/benchmarks.md part E); per key, it probes the indexes. A row found under several
# keys is returned once.
_BY_KEY = """
SELECT DISTINCT ON (x.decision_id, x.address_index, x.event_time) x.*
FROM unnest(%(keys)s::text[]) AS k(key)
CROSS JOIN LATERAL ({per_key}) x
"""
_TOUCHING_KEY = (
    "SELECT * FROM aml_history.screened_addresses a WHERE a.address_key = k.key AND a.event_time >= %(since)s "
    "UNION ALL "
    "SELECT * FROM aml_history.screened_addresses a WHERE a.checked_keys @> ARRAY[k.key] AND a.event_time >= %(since)s"
)
_FLAGGED_UNDER_KEY = (
    "SELECT * FROM aml_history.screened_addresses a WHERE cardinality(a.matched_keys) > 0 "
    "AND a.matched_keys @> ARRAY[k.key] AND a.event_time >= %(since)s"
)
# Decided with a watchlist version older than the one being processed: a version the lookback saw is ordered by
# its activation time; one it never saw (older than its baseline, or garbage-collected before it looked) by the
# time in its id, to the second; an id of another form counts as older (a duplicate alert beats a missed one).
_DECIDED_BEFORE = """
h.watchlist_version IS NOT NULL AND CASE
    WHEN v.created_at IS NOT NULL THEN v.created_at < %(created)s
    ELSE coalesce(aml_history.version_time(h.watchlist_version) < date_trunc('second', %(created)s), true)
END
"""


def connect(settings: Settings, *, application_name: str, autocommit: bool = False) -> psycopg.Connection:
    """A connection to the history database (AML_HISTORY_DATABASE_URL); OperationalError when unreachable."""
    if not settings.history_database_url:
        raise ValueError("AML_HISTORY_DATABASE_URL is not set (the history database's postgresql:// URI)")
    password = settings.history_database_password
    kwargs: dict[str, Any] = {
        "application_name": application_name,
        "connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "autocommit": autocommit,
        # Times are compared and written in UTC whatever the server's default time zone is.
        "options": "-c timezone=UTC",
    }
    if password is not None:
        kwargs["password"] = password.get_secret_value()
    return psycopg.connect(settings.history_database_url, **kwargs)


def md5_text(value: str) -> str:
    """PostgreSQL's md5(text) of a UTF-8 database, computed here (to compare table values without moving them)."""
    return hashlib.md5(value.encode(), usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class IngestedVersion:
    version: str
    seq: int
    created_at: datetime
    previous: str | None
    baseline: bool
    done: bool

    @property
    def info(self) -> VersionInfo:
        return VersionInfo(self.version, self.created_at, self.previous)


@dataclass(frozen=True)
class AddedListing:
    """A listing some version added under ``key`` (the change log), with that version."""

    key: str
    listing: Match
    version: VersionInfo


class HistoryStore:
    """The history's reads and writes over one connection (not thread-safe; one per loop)."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self._temp_tables = False

    # --- the indexer's writes --------------------------------------------------------------------------
    def _ensure_temp_tables(self) -> None:
        if self._temp_tables:
            return
        with self.conn.cursor() as cur:
            cur.execute(
                "CREATE TEMP TABLE IF NOT EXISTS incoming_addresses "
                "(LIKE aml_history.screened_addresses INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            )
            cur.execute(
                "CREATE TEMP TABLE IF NOT EXISTS incoming_events "
                "(LIKE aml_history.screened_events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            )
        self._temp_tables = True

    def write(self, addresses: Sequence[AddressRow], events: Sequence[EventRow]) -> tuple[int, int]:
        """Store rows idempotently (in the caller's transaction); return how many were new (addresses, events)."""
        self._ensure_temp_tables()
        new_addresses = new_events = 0
        with self.conn.cursor() as cur:
            if addresses:
                with cur.copy(_COPY_ADDRESSES) as copy:
                    for row in addresses:
                        copy.write_row(row)
                cur.execute(_INSERT_ADDRESSES)
                new_addresses = max(0, cur.rowcount)
            if events:
                with cur.copy(_COPY_EVENTS) as copy:
                    for row in events:
                        copy.write_row(row)
                cur.execute(_INSERT_EVENTS)
                new_events = max(0, cur.rowcount)
        return new_addresses, new_events

    # --- lookups of the past ---------------------------------------------------------------------------
    def addresses_touching(self, keys: Sequence[str], *, since: datetime, before: datetime) -> Iterator[PastAddress]:
        """Past screened addresses (event time >= ``since``) whose own key or a related key they were checked under
        is in ``keys``, decided with a watchlist version older than ``before`` (the version's activation time)."""
        for start in range(0, len(keys), LOOKUP_CHUNK):
            chunk = list(keys[start : start + LOOKUP_CHUNK])
            yield from self._past(
                _BY_KEY.format(per_key=_TOUCHING_KEY), {"since": since, "keys": chunk, "created": before}
            )

    def flagged_under(self, keys: Sequence[str], *, since: datetime, before: datetime) -> Iterator[PastAddress]:
        """Past screened addresses (event time >= ``since``) flagged under one of ``keys`` (matched there),
        decided with a watchlist version older than ``before``."""
        for start in range(0, len(keys), LOOKUP_CHUNK):
            chunk = list(keys[start : start + LOOKUP_CHUNK])
            yield from self._past(
                _BY_KEY.format(per_key=_FLAGGED_UNDER_KEY), {"since": since, "keys": chunk, "created": before}
            )

    def past_addresses(self, identities: Sequence[tuple[str, int]]) -> list[PastAddress]:
        """The history rows of these (decision id, address index) pairs."""
        if not identities:
            return []
        params = {
            "ids": [decision_id for decision_id, _ in identities],
            "indexes": [index for _, index in identities],
        }
        rows = (  # probed pair by pair through the primary key, as the keys above
            "SELECT a.* FROM unnest(%(ids)s::uuid[], %(indexes)s::smallint[]) AS k(decision_id, address_index) "
            "CROSS JOIN LATERAL (SELECT * FROM aml_history.screened_addresses a "
            "WHERE a.decision_id = k.decision_id AND a.address_index = k.address_index) a"
        )
        with self.conn.cursor() as cur:
            cur.execute(_PAST_SELECT.format(rows=rows, outer="true"), params)
            return [PastAddress(*row) for row in cur]

    def _past(self, rows: str, params: Mapping[str, Any]) -> Iterator[PastAddress]:
        with self.conn.cursor() as cur:
            cur.execute(_PAST_SELECT.format(rows=rows, outer=_DECIDED_BEFORE), params)
            for row in cur:
                yield PastAddress(*row)

    # --- versions --------------------------------------------------------------------------------------
    def ingested_versions(self) -> list[IngestedVersion]:
        rows = self.conn.execute(
            "SELECT version, seq, created_at, previous, baseline, lookback_done_at IS NOT NULL "
            "FROM aml_history.watchlist_versions ORDER BY seq"
        ).fetchall()
        return [IngestedVersion(*row) for row in rows]

    def version_times(self, versions: Iterable[str]) -> dict[str, datetime]:
        """Activation time of the given versions the lookback has seen; for others the time in their id."""
        wanted = sorted({version for version in versions if version})
        if not wanted:
            return {}
        rows = self.conn.execute(
            "SELECT w.version, coalesce(v.created_at, aml_history.version_time(w.version)) "
            "FROM unnest(%s::text[]) AS w(version) "
            "LEFT JOIN aml_history.watchlist_versions v ON v.version = w.version",
            (wanted,),
        ).fetchall()
        return {version: created for version, created in rows if created is not None}

    def added_after(self, keys: Sequence[str], after: datetime) -> list[AddedListing]:
        """Listings added under ``keys`` by versions activated after ``after`` (not the baseline)."""
        if not keys:
            return []
        rows = self.conn.execute(
            "SELECT c.key, c.listing, v.version, v.created_at, v.previous "
            "FROM aml_history.watchlist_changes c JOIN aml_history.watchlist_versions v USING (version) "
            "WHERE c.change = 'added' AND c.key = ANY(%s) AND v.created_at > %s AND NOT v.baseline",
            (list(keys), after),
        ).fetchall()
        return [
            AddedListing(key, listing, VersionInfo(version, created, previous))
            for key, listing, version, created, previous in rows
        ]

    def changes_of(self, version: str) -> list[tuple[str, str, Match]]:
        """(key, change, listing) of one version, in key order."""
        rows = self.conn.execute(
            "SELECT key, change, listing FROM aml_history.watchlist_changes WHERE version = %s ORDER BY key, identity",
            (version,),
        ).fetchall()
        return [(key, change, listing) for key, change, listing in rows]

    def mark_done(self, version: str, *, retroactive: int, delisted: int) -> None:
        self.conn.execute(
            "UPDATE aml_history.watchlist_versions SET lookback_done_at = now(), retroactive_matches = %s, "
            "delisted_decisions = %s WHERE version = %s",
            (retroactive, delisted, version),
        )

    # --- the lookback's copy of the watchlist ----------------------------------------------------------
    def snapshot_tables(self) -> dict[str, str]:
        """Source -> table key of the last ingested version."""
        return dict(self.conn.execute("SELECT source, table_key FROM aml_history.watchlist_sources").fetchall())

    def snapshot_digests(self, source: str) -> dict[str, str]:
        """Key -> md5 of its value in the copy of one source's table."""
        with self.conn.cursor() as cur:
            cur.execute("SELECT key, md5(listings) FROM aml_history.watchlist_entries WHERE source = %s", (source,))
            return dict(cur.fetchall())

    def snapshot_values(self, keys: Sequence[str]) -> dict[str, dict[str, str]]:
        """Source -> {key: value} of the copy, for ``keys`` (every source)."""
        values: dict[str, dict[str, str]] = {}
        for start in range(0, len(keys), LOOKUP_CHUNK * 10):
            rows = self.conn.execute(
                "SELECT source, key, listings FROM aml_history.watchlist_entries WHERE key = ANY(%s)",
                (list(keys[start : start + LOOKUP_CHUNK * 10]),),
            ).fetchall()
            for source, key, listings in rows:
                values.setdefault(source, {})[key] = listings
        return values

    def record_version(
        self,
        *,
        version: str,
        parent: str | None,
        created_at: datetime,
        previous: str | None,
        baseline: bool,
        tables: Mapping[str, str],
        upserts: Mapping[str, Mapping[str, str]],
        deletes: Mapping[str, Sequence[str]],
        changes: Sequence[ListingChange],
        replace_all: bool = False,
    ) -> None:
        """Record an ingested version in one go (the caller's transaction): its row, its changes, and the copy of
        the watchlist brought to it (``upserts``/``deletes`` per source; ``replace_all`` empties the copy first,
        for a baseline). ``tables`` is the version's source -> table key."""
        counts = {"added": 0, "removed": 0, "updated": 0}
        for change in changes:
            counts[change.kind.value] += 1
        with self.conn.cursor() as cur:
            if replace_all:
                cur.execute("DELETE FROM aml_history.watchlist_entries")
                cur.execute("DELETE FROM aml_history.watchlist_sources")
            cur.execute(
                "INSERT INTO aml_history.watchlist_versions (version, parent, created_at, previous, baseline, added, "
                "removed, updated) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (version, parent, created_at, previous, baseline, *counts.values()),
            )
            if changes:
                with cur.copy(
                    "COPY aml_history.watchlist_changes (version, key, change, identity, source, listing) FROM STDIN"
                ) as copy:
                    for change in changes:
                        copy.write_row(
                            (
                                version,
                                change.key,
                                change.kind.value,
                                change.identity,
                                change.source,
                                Jsonb(change.listing),
                            )
                        )
            for source, keys in deletes.items():
                if keys:
                    cur.execute(
                        "DELETE FROM aml_history.watchlist_entries WHERE source = %s AND key = ANY(%s)",
                        (source, list(keys)),
                    )
            if any(upserts.values()):
                cur.execute(
                    "CREATE TEMP TABLE IF NOT EXISTS incoming_entries "
                    "(LIKE aml_history.watchlist_entries) ON COMMIT DELETE ROWS"
                )
                with cur.copy("COPY incoming_entries (source, key, listings) FROM STDIN") as copy:
                    for source, entries in upserts.items():
                        for key, value in entries.items():
                            copy.write_row((source, key, value))
                cur.execute(
                    "INSERT INTO aml_history.watchlist_entries (source, key, listings) "
                    "SELECT source, key, listings FROM incoming_entries "
                    "ON CONFLICT (source, key) DO UPDATE SET listings = EXCLUDED.listings"
                )
            dropped = [source for source in self.snapshot_tables() if source not in tables]
            if dropped:
                cur.execute("DELETE FROM aml_history.watchlist_entries WHERE source = ANY(%s)", (dropped,))
                cur.execute("DELETE FROM aml_history.watchlist_sources WHERE source = ANY(%s)", (dropped,))
            for source, table in tables.items():
                cur.execute(
                    "INSERT INTO aml_history.watchlist_sources (source, table_key, version) VALUES (%s, %s, %s) "
                    "ON CONFLICT (source) DO UPDATE SET table_key = EXCLUDED.table_key, version = EXCLUDED.version",
                    (source, table, version),
                )
