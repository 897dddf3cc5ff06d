"""Watchlist lookup for a whole batch in one Redis round trip (the read side of watchlist/keys.py).

One MULTI/EXEC carries: GET active, HLEN of the cached version's hash, HMGET of every key of the batch. Because
the three run atomically, a non-empty HMGET answer under `active == cached` is a consistent snapshot of the active
version. If the active version changed, the lookup is repeated against the new one (a second round trip only on
a version switch). Anything doubtful raises LookupUnavailable, which makes the caller fail closed: no active
version, an empty or missing version hash, an unreachable or slow Redis, an unparsable entry.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from aml_screener.screener.errors import LookupUnavailable
from aml_screener.screening.watchlist import decode_matches
from aml_screener.watchlist.keys import WatchlistKeys


@dataclass(frozen=True, slots=True)
class LookupResult:
    version: str
    size: int  # number of address keys in the version
    matches: dict[str, list[dict[str, Any]]]  # only the keys that are listed
    seconds: float  # wall time of the Redis round trip(s)


class WatchlistLookup:
    """Reads the active watchlist version. Expects a redis client with decode_responses=True."""

    def __init__(self, client: redis.Redis, keys: WatchlistKeys) -> None:
        self.redis = client
        self.keys = keys
        self.version: str | None = None
        self.size = 0

    def lookup(self, address_keys: Sequence[str]) -> LookupResult:
        started = time.perf_counter()
        for _attempt in range(3):  # a version switch between GET and HMGET costs one more round trip
            cached = self.version
            try:
                answer = self._round_trip(cached, address_keys)
            except redis.RedisError as exc:
                raise LookupUnavailable("redis_unavailable", f"{type(exc).__name__}: {exc}") from None
            active, size, values = answer
            if active is None:
                raise LookupUnavailable("no_active_version", "no watchlist version is active (nothing loaded yet)")
            active = str(active)
            if active != cached:
                self.version = active
                continue
            if not size:
                raise LookupUnavailable(
                    "empty_watchlist", f"active version {active} has no entries (missing or emptied hash)"
                )
            self.size = int(size)
            matches: dict[str, list[dict[str, Any]]] = {}
            if values:
                for key, value in zip(address_keys, values, strict=True):
                    if value is not None:
                        try:
                            matches[key] = decode_matches(value)
                        except ValueError as exc:
                            raise LookupUnavailable("corrupt_entry", f"entry for {key!r}: {exc}") from None
            return LookupResult(active, self.size, matches, time.perf_counter() - started)
        raise LookupUnavailable("version_churn", "active version changed on every attempt")

    def _round_trip(self, version: str | None, address_keys: Sequence[str]) -> tuple[Any, Any, Any]:
        if version is None:  # first call (or after a reset): learn which version is active
            return self.redis.get(self.keys.active), 0, []
        with self.redis.pipeline(transaction=True) as tx:
            tx.get(self.keys.active)
            tx.hlen(self.keys.addresses(version))
            if address_keys:
                tx.hmget(self.keys.addresses(version), list(address_keys))
            result = tx.execute()
        return result[0], result[1], result[2] if address_keys else []

    def check(self) -> LookupResult:
        """Readiness probe: the active version exists and is non-empty (same checks, no keys)."""
        return self.lookup(())
