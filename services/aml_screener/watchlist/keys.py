"""The watchlist's Redis key layout (layout version 2). Documented in docs/watchlist.md; the only place key names
are built, so the sync job and the screener cannot disagree.

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

from dataclasses import dataclass

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
