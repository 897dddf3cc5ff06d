"""The watchlist's Redis key layout (layout version 1). Documented in docs/watchlist.md; the only place key names
are built, so the loader and the screener cannot disagree.

    {prefix}:active                  STRING  id of the active version (what screeners read)
    {prefix}:v:{version}:addr        HASH    normalized address key -> JSON array of WatchlistMatch objects
    {prefix}:v:{version}:meta        HASH    version metadata (see VersionMeta fields)
    {prefix}:versions                ZSET    version ids scored by creation time (history, garbage collection)
    {prefix}:changes                 PUBSUB  channel: one JSON message per activated version
    {prefix}:lock                    STRING  held by the one writer building a version (SET NX PX)

Versions are immutable once built: a writer builds a whole new version beside the active one and activates it
with one atomic SET, so a screener never sees a half-written list. The default prefix `aml:{wl}` carries a Redis
Cluster hash tag so that all keys share a slot and the screener's MULTI lookup stays single-slot.
"""

from __future__ import annotations

from dataclasses import dataclass

LAYOUT_VERSION = 1
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

    def addresses(self, version: str) -> str:
        return f"{self.prefix}:v:{version}:addr"

    def meta(self, version: str) -> str:
        return f"{self.prefix}:v:{version}:meta"
