"""Writing and reading watchlist versions in Redis (the write side; key layout in infra/watchlist_layout.py).

- `TableWriter` streams one source's entries into a new table in bounded memory (chunks of 5,000), merging
  listings that share an address key, and names the finished table by a digest of its content. Every listing is
  also stored under the keys of the related addresses that only the list side can derive
  (`screening.related.listing_keys`: P2SH-P2WPKH of a listed key hash, Solana token accounts, unified-address
  receivers), marked with the relation; the table records under which key scheme it was built.
- `WatchlistStore.activate` records a version = one table per source (+ stats), and makes it active with one
  atomic MULTI. Identical content gives no new version.
- Old versions are kept for a while (`KEEP_VERSIONS`), then deleted with the tables no kept version uses.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from aml_screener.infra.watchlist_layout import VersionRecord, WatchlistKeys
from aml_screener.screening.records import Match
from aml_screener.screening.related import ListingRelations, listing_entries
from aml_screener.screening.watchlist import Listing, decode_matches, encode_matches
from aml_screener.watchlist.errors import EmptyTableError, WatchlistWriteError
from aml_screener.watchlist.sources.base import SourceEntry

# Entries are written in chunks: one HMGET (to merge with earlier chunks) and one HSET per chunk keeps memory
# bounded for any list size and each Redis command far below the protocol's limits.
_CHUNK = 5_000
_SCAN_COUNT = 5_000
# Superseded versions that stay readable (and their tables) before garbage collection.
KEEP_VERSIONS = 3
# A writer holds the lock at most this long: a crashed sync must not block the next one forever.
_LOCK_TTL_MS = 30 * 60 * 1000
# Order-independent content digest: sum of per-item SHA-256 values modulo 2**256.
_MOD = 1 << 256


def _item_digest(key: str, value: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{key}\x00{value}".encode()).digest(), "big")


@dataclass(frozen=True)
class TableInfo:
    key: str  # Redis key of the table
    digest: str
    keys: int  # distinct address keys
    listings: int
    # ListingRelations.fingerprint() of the rules it was built under; None: unknown (built by an older release).
    key_scheme: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"table": self.key, "digest": self.digest, "keys": self.keys, "listings": self.listings}


class TableWriter:
    """Streams entries into a new, immutable table for one source."""

    def __init__(
        self, client: redis.Redis, keys: WatchlistKeys, source: str, relations: ListingRelations | None = None
    ) -> None:
        self.redis = client
        self.keys = keys
        self.source = source
        self.relations = relations or ListingRelations()
        self.temp = keys.table(source, f"build-{uuid.uuid4().hex}")
        self._buffer: dict[str, list[Listing]] = {}
        self._buffered = 0
        self._digest = 0
        self.count_keys = 0
        self.count_listings = 0

    def add(self, entry: SourceEntry) -> None:
        for key, listing in listing_entries(entry.key, entry.listing, self.relations):
            listings = self._buffer.setdefault(key, [])
            if listing not in listings:
                listings.append(listing)
                self._buffered += 1
        if self._buffered >= _CHUNK:
            self.flush()

    def add_all(self, entries: Iterable[SourceEntry]) -> None:
        for entry in entries:
            self.add(entry)

    def flush(self) -> None:
        if not self._buffer:
            return
        keys = list(self._buffer)
        existing = self.redis.hmget(self.temp, keys)
        mapping: dict[str, str] = {}
        for key, old in zip(keys, existing, strict=True):
            listings = self._buffer[key]
            if old is not None:
                earlier = [Listing.from_match(match) for match in decode_matches(old)]
                listings = earlier + [item for item in listings if item not in earlier]
                self._digest = (self._digest - _item_digest(key, str(old))) % _MOD
                self.count_listings -= len(earlier)
            else:
                self.count_keys += 1
            value = encode_matches(listings)
            self._digest = (self._digest + _item_digest(key, value)) % _MOD
            self.count_listings += len(listings)
            mapping[key] = value
        self.redis.hset(self.temp, mapping=mapping)  # type: ignore[arg-type]  # redis-py's Mapping is invariant
        self._buffer.clear()
        self._buffered = 0

    def finish(self) -> TableInfo:
        """Name the table by its content; an identical existing table is reused."""
        self.flush()
        if self.count_keys == 0:
            raise EmptyTableError(f"source {self.source!r} produced no usable entry")
        written = int(self.redis.hlen(self.temp))
        if written != self.count_keys:
            self.abort()
            raise WatchlistWriteError(f"table for {self.source!r}: {written} keys written, {self.count_keys} expected")
        digest = f"{self._digest:064x}"[:16]
        final = self.keys.table(self.source, digest)
        if int(self.redis.hlen(final)) == self.count_keys:
            self.redis.delete(self.temp)  # the same content is already there
        else:
            self.redis.rename(self.temp, final)  # new, or a damaged copy (lost keys) replaced atomically
        return TableInfo(final, digest, self.count_keys, self.count_listings, self.relations.fingerprint())

    def abort(self) -> None:
        self.redis.delete(self.temp)


def new_version_id(now: float, tables: Mapping[str, str]) -> str:
    """Sortable and self-describing: UTC build time plus a digest of the tables, e.g. 20261123T194500Z-3f2a1c9d04be."""
    digest = hashlib.sha256(json.dumps(tables, sort_keys=True).encode()).hexdigest()
    return f"{datetime.fromtimestamp(now, UTC).strftime('%Y%m%dT%H%M%SZ')}-{digest[:12]}"


@dataclass(frozen=True)
class TableDiff:
    added: int
    removed: int
    changed: int
    added_keys: list[str] | None  # None when the tables were too large to enumerate
    removed_keys: list[str] | None


class WatchlistStore:
    """Versioned watchlist in Redis. Expects a client created with decode_responses=True."""

    def __init__(
        self, client: redis.Redis, keys: WatchlistKeys | None = None, relations: ListingRelations | None = None
    ) -> None:
        self.redis = client
        self.keys = keys or WatchlistKeys()
        self.relations = relations or ListingRelations()

    # --- reading ---------------------------------------------------------------------------------------
    def active_version(self) -> str | None:
        value = self.redis.get(self.keys.active)
        return None if value is None else str(value)

    def meta(self, version: str) -> VersionRecord | None:
        raw = self.redis.hgetall(self.keys.version(version))
        return VersionRecord.from_redis(raw) if raw else None  # type: ignore[arg-type]

    def active_meta(self) -> VersionRecord | None:
        version = self.active_version()
        return self.meta(version) if version else None

    def lookup(self, version: str, address_key: str) -> list[Match]:
        """Every listing of an address key in a version, across its tables (for tools; not the hot path)."""
        meta = self.meta(version)
        if meta is None:
            return []
        matches: list[Match] = []
        for table in meta.tables.values():
            value = self.redis.hget(table, address_key)
            if value is not None:
                matches.extend(decode_matches(str(value)))
        return matches

    def iter_table(self, table: str) -> Iterator[tuple[str, str]]:
        for key, value in self.redis.hscan_iter(table, count=_SCAN_COUNT):
            yield str(key), str(value)

    def source_state(self, source: str) -> dict[str, str]:
        return dict(self.redis.hgetall(self.keys.source_state(source)))  # type: ignore[arg-type]

    def set_source_state(self, source: str, fields: Mapping[str, Any]) -> None:
        clean = {key: ("" if value is None else str(value)) for key, value in fields.items()}
        self.redis.hset(self.keys.source_state(source), mapping=clean)  # type: ignore[arg-type]

    # --- writing ---------------------------------------------------------------------------------------
    def table_writer(self, source: str) -> TableWriter:
        return TableWriter(self.redis, self.keys, source, self.relations)

    def activate(
        self,
        tables: Mapping[str, TableInfo],
        sources: Mapping[str, dict[str, Any]],
        lists: Mapping[str, dict[str, Any]],
    ) -> tuple[VersionRecord, bool]:
        """Make a version of these tables active. Returns (meta, created); identical tables -> (active, False).

        Each table's key scheme is recorded in its source's stats (`key_scheme`), which screeners check."""
        parent = self.active_meta()
        sources = {name: dict(stats) for name, stats in sources.items()}
        for name, info in tables.items():
            if info.key_scheme is not None:
                sources.setdefault(name, {})["key_scheme"] = info.key_scheme
        table_keys = {name: info.key for name, info in sorted(tables.items())}
        schemes = {name: sources.get(name, {}).get("key_scheme") for name in table_keys}
        if (
            parent is not None
            and parent.tables == table_keys
            and parent.lists == dict(lists)
            and {name: parent.sources.get(name, {}).get("key_scheme") for name in table_keys} == schemes
        ):
            return parent, False
        now = time.time()
        meta = VersionRecord(
            version=new_version_id(now, table_keys),
            created_at=now,
            parent=parent.version if parent else None,
            tables=table_keys,
            sources=dict(sources),
            lists=dict(lists),
            keys=sum(info.keys for info in tables.values()),
            listings=sum(info.listings for info in tables.values()),
        )
        for table in table_keys.values():
            if not self.redis.exists(table):
                raise WatchlistWriteError(f"table {table} vanished before activation")
        with self.redis.pipeline(transaction=True) as tx:
            tx.hset(self.keys.version(meta.version), mapping=meta.to_redis())  # type: ignore[arg-type]
            tx.set(self.keys.active, meta.version)
            tx.zadd(self.keys.versions, {meta.version: now})
            tx.execute()
        return meta, True

    def diff(self, old_table: str | None, new_table: str, *, enumerate_up_to: int) -> TableDiff:
        """Keys added/removed/changed from one table of a source to the next (listed when both are small)."""
        if old_table == new_table:
            return TableDiff(0, 0, 0, [], [])
        new_size = int(self.redis.hlen(new_table))
        old_size = int(self.redis.hlen(old_table)) if old_table else 0
        if max(new_size, old_size) > enumerate_up_to:
            return TableDiff(max(0, new_size - old_size), max(0, old_size - new_size), 0, None, None)
        new = dict(self.iter_table(new_table))
        old = dict(self.iter_table(old_table)) if old_table else {}
        added = sorted(set(new) - set(old))
        removed = sorted(set(old) - set(new))
        changed = sum(1 for key in set(new) & set(old) if new[key] != old[key])
        return TableDiff(len(added), len(removed), changed, added, removed)

    def collect_garbage(self, keep: int = KEEP_VERSIONS) -> int:
        """Delete versions beyond the newest `keep` (never the active one) and tables no kept version uses."""
        versions = [str(v) for v in self.redis.zrange(self.keys.versions, 0, -1)]
        active = self.active_version()
        stale = [v for v in versions[: max(0, len(versions) - keep)] if v != active]
        for version in stale:
            with self.redis.pipeline(transaction=True) as tx:
                tx.delete(self.keys.version(version))
                tx.zrem(self.keys.versions, version)
                tx.execute()
        referenced: set[str] = set()
        for kept in self.redis.zrange(self.keys.versions, 0, -1):
            meta = self.meta(str(kept))
            if meta is not None:
                referenced.update(meta.tables.values())
        deleted = 0
        for found in self.redis.scan_iter(match=self.keys.table_pattern(), count=_SCAN_COUNT):
            if str(found) not in referenced:
                deleted += int(self.redis.delete(str(found)))
        return deleted

    def writer_lock(self) -> WriterLock:
        return WriterLock(self.redis, self.keys.lock)


class WriterLock:
    """Single-writer lock (SET NX PX with a token; released only by its owner)."""

    _RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"

    def __init__(self, client: redis.Redis, key: str) -> None:
        self.redis = client
        self.key = key
        self.token = uuid.uuid4().hex

    def __enter__(self) -> WriterLock:
        if not self.redis.set(self.key, self.token, nx=True, px=_LOCK_TTL_MS):
            raise WatchlistWriteError(f"another writer holds {self.key}; try again when it finishes")
        return self

    def __exit__(self, *exc: object) -> None:
        self.redis.eval(self._RELEASE, 1, self.key, self.token)
