"""Watchlist lookup for a whole batch in one Redis round trip (the read side of infra/watchlist_layout.py, layout 2).

A version is a set of tables (one per source). The screener caches the active version's table list; per batch,
one MULTI/EXEC carries: GET active, HLEN of each table, HMGET of every key of the batch in each table. Because
they run atomically, an answer under `active == cached` is a consistent snapshot of the active version. When the
active version moved (a sync finished), the screener reads the new version's metadata and repeats the lookup
against it: hot reload at the next batch, without pausing. Anything doubtful raises LookupUnavailable, which
makes the caller fail closed: no active version, missing metadata, a table missing or empty, a table whose size
differs from the count its version recorded (Redis lost or altered data), a table built under another key scheme
(an older release's normalization or relations: it may lack keys this one looks up), an unparsable entry, an
unreachable or slow Redis.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from aml_screener.infra.watchlist_layout import LAYOUT_VERSION, VersionRecord, WatchlistKeys
from aml_screener.screener.errors import LookupFailure, LookupUnavailable
from aml_screener.screening.records import Match
from aml_screener.screening.related import KEY_SCHEME_VERSION
from aml_screener.screening.watchlist import decode_matches


@dataclass(frozen=True, slots=True)
class LookupResult:
    version: str
    size: int  # address keys over all tables of the version
    matches: dict[str, list[Match]]  # only the keys that are listed
    seconds: float  # wall time of the Redis round trip(s)
    overridable: frozenset[str] = field(default_factory=frozenset)  # lists the allowlist may downgrade
    digest: str | None = None  # VersionRecord.content_digest: what the version's content is, for the evidence


@dataclass(frozen=True, slots=True)
class ActiveVersion:
    version: str
    tables: tuple[str, ...]
    overridable: frozenset[str]
    recorded_sizes: tuple[int | None, ...]  # per table, the key count the sync recorded (None: unknown)
    digest: str | None = None  # VersionRecord.content_digest


class WatchlistLookup:
    """Reads the active watchlist version, or always the one ``pinned`` version (`aml-screener replay`). Expects a
    redis client with decode_responses=True."""

    def __init__(self, client: redis.Redis, keys: WatchlistKeys, *, pinned: str | None = None) -> None:
        self.redis = client
        self.keys = keys
        self.pinned = pinned
        self.active: ActiveVersion | None = None
        self.size = 0

    @property
    def version(self) -> str | None:
        return self.active.version if self.active else None

    def lookup(self, address_keys: Sequence[str]) -> LookupResult:
        started = time.perf_counter()
        try:
            for _attempt in range(3):  # a version switch between reads costs one more round trip
                if self.active is None:
                    self.active = self._load_active()
                active = self.active
                current, sizes, values = self._round_trip(active, address_keys)
                if current != active.version and self.pinned is None:
                    self.active = None
                    continue
                return self._result(active, sizes, values, address_keys, started)
        except redis.AuthenticationError as exc:  # wrong user or password, user disabled (before ConnectionError)
            raise LookupUnavailable(LookupFailure.REDIS_AUTH_FAILED, f"{type(exc).__name__}: {exc}") from None
        except redis.exceptions.NoPermissionError as exc:  # the ACL user lacks a command or key (docs/security.md)
            raise LookupUnavailable(LookupFailure.REDIS_PERMISSION_DENIED, f"{type(exc).__name__}: {exc}") from None
        except redis.RedisError as exc:
            raise LookupUnavailable(LookupFailure.REDIS_UNAVAILABLE, f"{type(exc).__name__}: {exc}") from None
        raise LookupUnavailable(LookupFailure.VERSION_CHURN, "active version changed on every attempt")

    def check(self) -> LookupResult:
        """Readiness probe: the active version exists and every table is present and non-empty."""
        return self.lookup(())

    def _load_active(self) -> ActiveVersion:
        raw_version = self.pinned if self.pinned is not None else self.redis.get(self.keys.active)
        if raw_version is None:
            raise LookupUnavailable(
                LookupFailure.NO_ACTIVE_VERSION, "no watchlist version is active (nothing loaded yet)"
            )
        version = str(raw_version)
        raw: dict[str, str] = self.redis.hgetall(self.keys.version(version))  # type: ignore[assignment]
        if not raw:
            raise LookupUnavailable(
                LookupFailure.MISSING_VERSION,
                f"metadata of {'watchlist' if self.pinned else 'active'} version {version} is missing"
                + (" (garbage-collected, or never synced under this key prefix)" if self.pinned else ""),
            )
        try:
            record = VersionRecord.from_redis(raw)
        except (KeyError, ValueError) as exc:
            raise LookupUnavailable(
                LookupFailure.MISSING_VERSION, f"metadata of active version {version} cannot be read: {exc!r}"
            ) from None
        if record.layout != LAYOUT_VERSION:
            raise LookupUnavailable(
                LookupFailure.UNSUPPORTED_LAYOUT, f"version {version} has layout {raw.get('layout')!r}"
            )
        tables = tuple(record.tables.values())
        if not tables:
            raise LookupUnavailable(LookupFailure.EMPTY_WATCHLIST, f"active version {version} has no tables")
        outdated = record.outdated_key_schemes(KEY_SCHEME_VERSION)
        if outdated:
            raise LookupUnavailable(
                LookupFailure.KEY_SCHEME_MISMATCH,
                f"version {version}: the tables of {', '.join(outdated)} were built under another key scheme than "
                f"this screener's ({KEY_SCHEME_VERSION}) and may lack keys it looks up; run `aml-screener watchlist "
                "sync` with this release",
            )
        recorded = record.recorded_keys
        return ActiveVersion(
            version,
            tables,
            record.overridable_lists,
            tuple(recorded.get(table) for table in tables),
            record.content_digest,
        )

    def _round_trip(self, active: ActiveVersion, address_keys: Sequence[str]) -> tuple[Any, list[Any], list[Any]]:
        with self.redis.pipeline(transaction=True) as tx:
            tx.get(self.keys.active)
            for table in active.tables:
                tx.hlen(table)
            if address_keys:
                keys = list(address_keys)
                for table in active.tables:
                    tx.hmget(table, keys)
            result = tx.execute()
        count = len(active.tables)
        return result[0], result[1 : 1 + count], result[1 + count :]

    def _result(
        self,
        active: ActiveVersion,
        sizes: list[Any],
        values: list[Any],
        address_keys: Sequence[str],
        started: float,
    ) -> LookupResult:
        for table, size, recorded in zip(active.tables, sizes, active.recorded_sizes, strict=True):
            if not size:
                raise LookupUnavailable(
                    LookupFailure.EMPTY_WATCHLIST,
                    f"table {table} of active version {active.version} is missing or empty",
                )
            if recorded is not None and int(size) != recorded:
                raise LookupUnavailable(
                    LookupFailure.COUNT_MISMATCH,
                    f"table {table} of active version {active.version} holds {size} keys, its version recorded "
                    f"{recorded}: Redis lost or altered watchlist data",
                )
        self.size = sum(int(size) for size in sizes)
        matches: dict[str, list[Match]] = {}
        for table_values in values:
            for key, value in zip(address_keys, table_values, strict=True):
                if value is not None:
                    try:
                        matches.setdefault(key, []).extend(decode_matches(value))
                    except ValueError as exc:
                        raise LookupUnavailable(LookupFailure.CORRUPT_ENTRY, f"entry for {key!r}: {exc}") from None
        return LookupResult(
            active.version, self.size, matches, time.perf_counter() - started, active.overridable, active.digest
        )
