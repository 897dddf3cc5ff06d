"""The watchlist's Redis key layout (layout version 2) and its version record: the contract between the write side
(watchlist/) and the read side (the screener's lookup and watcher). Documented in docs/watchlist.md; the only place
key names are built and version metadata is written and parsed, so the sync job and the screener cannot disagree.

    {prefix}:active                   STRING  id of the active version (what screeners read)
    {prefix}:v:{version}              HASH    version metadata: its tables (one per source), per-source stats, lists
    {prefix}:t:{source}:{digest}      HASH    one source's content: address key -> JSON array of WatchlistMatch
    {prefix}:versions                 ZSET    version ids scored by creation time (history, garbage collection)
    {prefix}:src:{source}             HASH    sync state of a source: validators, last attempt/success, error
    {prefix}:changes                  PUBSUB  one JSON message per activated version (the diff)
    {prefix}:lock                     STRING  held by the one writer building a version (SET NX PX)

Tables are immutable and content-addressed (the digest is of their content): a version is a list of tables, so a
sync that changes one source writes one table and reuses the others, and identical content is never stored twice.
A new version is activated with one atomic SET, so a screener never sees a half-written list. The default prefix
`aml:{wl}` carries a Redis Cluster hash tag: all keys share a slot and the screener's MULTI lookup stays
single-slot.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

LAYOUT_VERSION = 2
DEFAULT_PREFIX = "aml:{wl}"


@dataclass(frozen=True, slots=True)
class WatchlistKeys:
    prefix: str = DEFAULT_PREFIX

    @property
    def active(self) -> str:
        return f"{self.prefix}:active"

    @property
    def versions(self) -> str:
        return f"{self.prefix}:versions"

    @property
    def changes(self) -> str:
        return f"{self.prefix}:changes"

    @property
    def lock(self) -> str:
        return f"{self.prefix}:lock"

    def version(self, version: str) -> str:
        return f"{self.prefix}:v:{version}"

    def table(self, source: str, digest: str) -> str:
        return f"{self.prefix}:t:{source}:{digest}"

    def table_pattern(self) -> str:
        return f"{self.prefix}:t:*"

    def source_state(self, source: str) -> str:
        return f"{self.prefix}:src:{source}"

    def source_state_pattern(self) -> str:
        return f"{self.prefix}:src:*"


@dataclass(frozen=True)
class VersionRecord:
    """The metadata of one watchlist version (`{prefix}:v:{version}`): its tables, per-source stats, lists."""

    version: str
    created_at: float
    parent: str | None
    tables: dict[str, str]  # source name -> table key
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-source stats (keys, table, key_scheme...)
    lists: dict[str, dict[str, Any]] = field(default_factory=dict)  # list name -> {category, overridable, ...}
    keys: int = 0  # sum over tables (an address in two sources counts twice)
    listings: int = 0
    layout: int = LAYOUT_VERSION

    def to_redis(self) -> dict[str, str]:
        return {
            "version": self.version,
            "layout": str(self.layout),
            "created_at": f"{self.created_at:.3f}",
            "parent": self.parent or "",
            "tables": json.dumps(self.tables, sort_keys=True),
            "sources": json.dumps(self.sources, sort_keys=True),
            "lists": json.dumps(self.lists, sort_keys=True),
            "keys": str(self.keys),
            "listings": str(self.listings),
        }

    @classmethod
    def from_redis(cls, raw: Mapping[str, str]) -> VersionRecord:
        """Parse the stored hash; ValueError (or KeyError) when it is not a version record."""
        layout = raw.get("layout")
        return cls(
            version=raw["version"],
            created_at=float(raw.get("created_at") or 0),
            parent=raw.get("parent") or None,
            tables=json.loads(raw.get("tables") or "{}"),
            sources=json.loads(raw.get("sources") or "{}"),
            lists=json.loads(raw.get("lists") or "{}"),
            keys=int(raw.get("keys") or 0),
            listings=int(raw.get("listings") or 0),
            layout=int(layout) if layout and layout.isdigit() else 0,
        )

    @property
    def overridable_lists(self) -> frozenset[str]:
        return frozenset(name for name, info in self.lists.items() if info.get("overridable"))

    @property
    def recorded_keys(self) -> dict[str, int]:
        """Per table key, the key count the sync recorded for it."""
        return {
            info["table"]: int(info["keys"]) for info in self.sources.values() if info.get("table") and info.get("keys")
        }

    def outdated_key_schemes(self, current: int) -> list[str]:
        """The sources whose table was built under another key-scheme version than `current` (the release's
        ``screening.related.KEY_SCHEME_VERSION``), as "name (scheme)": such a table may lack keys the release
        looks up, so it must not be read as complete."""
        outdated = []
        for name in self.tables:
            scheme = str(self.sources.get(name, {}).get("key_scheme") or "")
            if scheme.partition(":")[0] != str(current):
                outdated.append(f"{name} ({scheme or 'built by an older release'})")
        return outdated
