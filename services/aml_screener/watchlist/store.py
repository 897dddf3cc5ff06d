"""Writing and reading watchlist versions in Redis (the write side: loader and sync jobs).

A version is built completely under its own keys, then activated with one atomic MULTI (SET active + ZADD
versions), then announced on the change channel. Loading a list replaces that list's listings and keeps every
other list of the active version, so several sources can be loaded independently. Old versions are kept for a
while (screeners that cached the previous id re-check `active` in the same round trip anyway) and then deleted.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis

from aml_screener.screening.watchlist import Listing, decode_matches, encode_matches
from aml_screener.watchlist.keys import LAYOUT_VERSION, WatchlistKeys

# Bounded pipelines: one HSET per chunk keeps each Redis command well under the 512 MB protocol limit and
# keeps the server responsive for screeners while a large list is written.
_WRITE_CHUNK = 5_000
_SCAN_COUNT = 5_000
# How many superseded versions stay readable before garbage collection.
KEEP_VERSIONS = 3
# A writer holds the lock at most this long (a crashed writer must not block syncs forever).
_LOCK_TTL_MS = 10 * 60 * 1000


class WatchlistWriteError(Exception):
    """A version could not be built or activated; the previously active version stays active."""


@dataclass(frozen=True)
class VersionMeta:
    version: str
    created_at: float
    parent: str | None
    keys: int
    listings: int
    content_sha256: str
    lists: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_redis(self) -> dict[str, str]:
        return {
            "version": self.version,
            "layout": str(LAYOUT_VERSION),
            "created_at": f"{self.created_at:.3f}",
            "parent": self.parent or "",
            "keys": str(self.keys),
            "listings": str(self.listings),
            "content_sha256": self.content_sha256,
            "lists": json.dumps(self.lists, sort_keys=True),
        }

    @classmethod
    def from_redis(cls, raw: Mapping[str, str]) -> VersionMeta:
        return cls(
            version=raw["version"],
            created_at=float(raw["created_at"]),
            parent=raw.get("parent") or None,
            keys=int(raw["keys"]),
            listings=int(raw["listings"]),
            content_sha256=raw["content_sha256"],
            lists=json.loads(raw.get("lists") or "{}"),
        )


def content_hash(table: Mapping[str, str]) -> str:
    digest = hashlib.sha256()
    for key in sorted(table):
        digest.update(key.encode())
        digest.update(b"\x00")
        digest.update(table[key].encode())
        digest.update(b"\x00")
    return digest.hexdigest()


def new_version_id(now: float, sha256: str) -> str:
    """Sortable and self-describing: UTC build time plus a content prefix, e.g. 20261123T194500Z-3f2a1c9d04be."""
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{sha256[:12]}"


class WatchlistStore:
    """Versioned watchlist in Redis. Expects a client created with decode_responses=True."""

    def __init__(self, client: redis.Redis, keys: WatchlistKeys | None = None) -> None:
        self.redis = client
        self.keys = keys or WatchlistKeys()

    # --- reading ---------------------------------------------------------------------------------------
    def active_version(self) -> str | None:
        value = self.redis.get(self.keys.active)
        return None if value is None else str(value)

    def meta(self, version: str) -> VersionMeta | None:
        raw = self.redis.hgetall(self.keys.meta(version))
        return VersionMeta.from_redis(raw) if raw else None  # type: ignore[arg-type]

    def iter_listings(self, version: str) -> Iterator[tuple[str, list[dict[str, Any]]]]:
        for key, value in self.redis.hscan_iter(self.keys.addresses(version), count=_SCAN_COUNT):
            yield str(key), decode_matches(value)

    def lookup(self, version: str, address_key: str) -> list[dict[str, Any]]:
        value = self.redis.hget(self.keys.addresses(version), address_key)
        return [] if value is None else decode_matches(str(value))

    # --- writing ---------------------------------------------------------------------------------------
    def replace_list(
        self,
        list_name: str,
        listings: Iterable[tuple[str, Listing]],
        list_info: Mapping[str, Any] | None = None,
    ) -> VersionMeta:
        """New version = active version without `list_name`'s listings + `listings`; activate it.

        Returns the activated version's metadata (or the active one unchanged if the content is identical).
        """
        with self._writer_lock():
            parent = self.active_version()
            parent_meta = self.meta(parent) if parent else None
            by_key: dict[str, list[Listing]] = defaultdict(list)
            if parent is not None:
                for key, matches in self.iter_listings(parent):
                    kept = [Listing.from_match(m) for m in matches if m["list"] != list_name]
                    if kept:
                        by_key[key].extend(kept)
            added = 0
            for key, listing in listings:
                if listing.list != list_name:
                    raise ValueError(f"listing of list {listing.list!r} passed to replace_list({list_name!r})")
                if listing not in by_key[key]:
                    by_key[key].append(listing)
                    added += 1
            lists = dict(parent_meta.lists) if parent_meta else {}
            lists[list_name] = {"listings": added, "loaded_at": round(time.time(), 3), **(list_info or {})}
            return self._build_and_activate(by_key, parent, lists)

    def _build_and_activate(
        self, by_key: Mapping[str, list[Listing]], parent: str | None, lists: dict[str, dict[str, Any]]
    ) -> VersionMeta:
        table = {key: encode_matches(items) for key, items in by_key.items() if items}
        sha = content_hash(table)
        if parent is not None:
            parent_meta = self.meta(parent)
            if parent_meta is not None and parent_meta.content_sha256 == sha:
                return parent_meta
        now = time.time()
        version = new_version_id(now, sha)
        meta = VersionMeta(
            version=version,
            created_at=now,
            parent=parent,
            keys=len(table),
            listings=sum(len(items) for items in by_key.values()),
            content_sha256=sha,
            lists=lists,
        )
        addr_key = self.keys.addresses(version)
        try:
            items = list(table.items())
            for start in range(0, len(items), _WRITE_CHUNK):
                chunk: dict[str | bytes, str | bytes] = dict(items[start : start + _WRITE_CHUNK])
                self.redis.hset(addr_key, mapping=chunk)  # type: ignore[arg-type]  # redis-py's Mapping is invariant
            written = self.redis.hlen(addr_key)
            if written != len(table):
                raise WatchlistWriteError(f"version {version}: wrote {written} keys, expected {len(table)}")
            self.redis.hset(self.keys.meta(version), mapping=meta.to_redis())  # type: ignore[arg-type]
            with self.redis.pipeline(transaction=True) as tx:
                tx.set(self.keys.active, version)
                tx.zadd(self.keys.versions, {version: now})
                tx.execute()
        except redis.RedisError as exc:
            self.redis.delete(addr_key, self.keys.meta(version))
            raise WatchlistWriteError(f"could not build version {version}: {exc}") from exc
        self.redis.publish(
            self.keys.changes,
            json.dumps({"version": version, "previous": parent, "keys": meta.keys, "created_at": now}),
        )
        self._collect_garbage(keep=KEEP_VERSIONS)
        return meta

    def _collect_garbage(self, keep: int) -> None:
        versions = [str(v) for v in self.redis.zrange(self.keys.versions, 0, -1)]
        active = self.active_version()
        stale = [v for v in versions[: max(0, len(versions) - keep)] if v != active]
        for version in stale:
            with self.redis.pipeline(transaction=True) as tx:
                tx.delete(self.keys.addresses(version), self.keys.meta(version))
                tx.zrem(self.keys.versions, version)
                tx.execute()

    def _writer_lock(self) -> _Lock:
        return _Lock(self.redis, self.keys.lock)


class _Lock:
    """Single-writer lock (SET NX PX with a token; released only by its owner)."""

    _RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"

    def __init__(self, client: redis.Redis, key: str) -> None:
        self.redis = client
        self.key = key
        self.token = uuid.uuid4().hex

    def __enter__(self) -> _Lock:
        if not self.redis.set(self.key, self.token, nx=True, px=_LOCK_TTL_MS):
            raise WatchlistWriteError(f"another writer holds {self.key}; try again when it finishes")
        return self

    def __exit__(self, *exc: object) -> None:
        self.redis.eval(self._RELEASE, 1, self.key, self.token)
