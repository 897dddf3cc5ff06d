"""Retroactive matches and delistings as records: pure functions from history rows and listing changes.

A past screened address matches the listings a watchlist version added exactly as the screener would match them
today: :func:`~aml_screener.screening.matching.collect_matches` over the address's own key and the related keys it
was checked under (stored with the decision), given the added listings by key. So a newly listed EVM account finds
past withdrawals to its TRON twin, a newly listed Bitcoin key hash finds its P2SH-P2WPKH (stored under its own
key by the list loader), and a relation of a relation is not followed. Allowlist entries are never a hit.

Record ids are deterministic (UUIDv5), so the same match found twice (a crash, or both the lookback and the
indexer) carries the same id. Records are dicts of the Avro schemas without logical types (times as integers,
decimals as bytes), ready for the encoder.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from aml_screener.history.rows import to_micros, to_millis
from aml_screener.screener.codec import decimal_to_bytes
from aml_screener.screening.matching import collect_matches
from aml_screener.screening.records import Match
from aml_screener.screening.watchlist import Category, highest_severity

# Fixed name spaces of the record ids (UUIDv5). Never change them: duplicates would stop looking alike.
RETROACTIVE_NAMESPACE = uuid.UUID("0d7f5f55-3e0c-5b8e-9c1a-6a1e2b9f4c21")
DELISTED_NAMESPACE = uuid.UUID("5b3c9a10-8f47-5e2d-a6b1-3c9d7e0f2a84")
# Actions that keep funds held or blocked while the decision stands (a withdrawal held for review, a deposit frozen
# or awaiting review, docs/policy.md): a delisting asks for them to be released. A reject is final (nothing was
# sent, nothing is held); allow and accept released the funds at once.
OPEN_ACTIONS = frozenset({"hold", "review", "freeze"})
_AMOUNT_SCALE = 18
_USD_SCALE = 2


class FoundBy:
    LOOKBACK = "lookback"  # when the watchlist version was processed
    INDEXER = "indexer"  # when the decision reached the history, after that


@dataclass(frozen=True, slots=True)
class PastAddress:
    """One row of the history (a screened address of a past decision), with its event's facts when known."""

    decision_id: str
    address_index: int
    direction: str
    event_id: str
    exchange_id: str
    account_id: str | None
    asset: str
    network: str
    address: str
    address_key: str | None
    checked_keys: Sequence[str]
    checked_relations: Sequence[str]
    outcome: str
    decision: str
    severity: str | None
    action: str | None
    matched_keys: Sequence[str]
    amount: Decimal | None
    usd_value: Decimal | None
    event_time: datetime
    decided_at: datetime
    watchlist_version: str | None
    source_topic: str
    source_partition: int
    source_offset: int
    source_schema_id: int

    @property
    def related(self) -> list[tuple[str, str]]:
        return list(zip(self.checked_keys, self.checked_relations, strict=False))

    @property
    def lookup_keys(self) -> list[str]:
        return [self.address_key, *self.checked_keys] if self.address_key else []


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """A watchlist version as the lookback processed it."""

    version: str
    created_at: datetime
    previous: str | None


def retroactive_match_id(decision_id: str, address_key: str, version: str) -> str:
    return str(uuid.uuid5(RETROACTIVE_NAMESPACE, f"{decision_id}\x1f{address_key}\x1f{version}"))


def delisted_id(key: str, version: str, decision_id: str = "", address_index: int = -1) -> str:
    suffix = f"\x1f{decision_id}\x1f{address_index}" if decision_id else ""
    return str(uuid.uuid5(DELISTED_NAMESPACE, f"{key}\x1f{version}{suffix}"))


def screened_address(row: PastAddress) -> dict[str, Any]:
    """The ScreenedAddress record of a history row."""
    return {
        "decision_id": row.decision_id,
        "event_id": row.event_id,
        "direction": row.direction,
        "exchange_id": row.exchange_id,
        "account_id": row.account_id,
        "asset": row.asset,
        "network": row.network,
        "address": row.address,
        "address_index": row.address_index,
        "address_key": row.address_key,
        "outcome": row.outcome,
        "decision": row.decision,
        "severity": row.severity,
        "action": row.action,
        "amount": None if row.amount is None else decimal_to_bytes(row.amount, _AMOUNT_SCALE),
        "usd_value": None if row.usd_value is None else decimal_to_bytes(row.usd_value, _USD_SCALE),
        "event_time": to_millis(row.event_time),
        "decided_at": to_micros(row.decided_at),
        "watchlist_version": row.watchlist_version,
        "source": {
            "topic": row.source_topic,
            "partition": row.source_partition,
            "offset": row.source_offset,
            "schema_id": row.source_schema_id,
        },
    }


def hits_by_key(added: Iterable[tuple[str, Match]]) -> dict[str, list[Match]]:
    """Added listings by key, without allowlist entries (never a hit)."""
    found: dict[str, list[Match]] = {}
    for key, listing in added:
        if listing.get("category") != Category.ALLOW.value:
            found.setdefault(key, []).append(listing)
    return found


def retroactive_match(
    row: PastAddress,
    added: Mapping[str, Sequence[Match]],
    version: VersionInfo,
    *,
    found_by: str,
    found_at: datetime,
    lookback_days: int,
) -> dict[str, Any] | None:
    """The RetroactiveMatch of ``row`` for the listings ``version`` added (by key; see :func:`hits_by_key`), or
    None when none applies to it."""
    if row.address_key is None:
        return None
    matches = collect_matches(row.address_key, row.related, added)
    if not matches:
        return None
    severity = highest_severity(matches)
    return {
        "retroactive_match_id": retroactive_match_id(row.decision_id, row.address_key, version.version),
        "decision": screened_address(row),
        "matches": [_full_match(match) for match in matches],
        "severity": severity.value if severity is not None else "low",
        "watchlist_version": version.version,
        "previous_version": version.previous,
        "listed_at": to_millis(version.created_at),
        "lookback_days": lookback_days,
        "found_by": found_by,
        "found_at": to_micros(found_at),
    }


def _full_match(match: Match) -> Match:
    """A match with every WatchlistMatch field present (stored listings omit the optional ones)."""
    full: dict[str, Any] = {
        "entry_name": None,
        "programs": [],
        "listed_asset": None,
        "published_at": None,
        "match_type": "direct",
        "relation": None,
        "matched_key": None,
        "listed_key": None,
        **match,
    }
    return full  # type: ignore[return-value]


def delisting_announcement(
    key: str,
    removed: Sequence[Match],
    still_listed: Sequence[Match],
    version: VersionInfo,
    *,
    affected: int,
    found_at: datetime,
    lookback_days: int,
) -> dict[str, Any]:
    """The Delisted record that announces the removal of ``removed`` from ``key`` (decision null)."""
    return {
        "delisted_id": delisted_id(key, version.version),
        "key": key,
        "removed": [_full_match(match) for match in removed],
        "still_listed": [_full_match(match) for match in still_listed],
        "watchlist_version": version.version,
        "previous_version": version.previous,
        "delisted_at": to_millis(version.created_at),
        "decision": None,
        "affected_decisions": affected,
        "open_action": False,
        "still_flagged": bool(still_listed),
        "lookback_days": lookback_days,
        "found_by": FoundBy.LOOKBACK,
        "found_at": to_micros(found_at),
    }


def delisted_decision(
    row: PastAddress,
    key: str,
    removed: Sequence[Match],
    still_listed: Sequence[Match],
    version: VersionInfo,
    *,
    delisted_keys: frozenset[str],
    found_by: str,
    found_at: datetime,
    lookback_days: int,
) -> dict[str, Any]:
    """The Delisted record naming one past decision flagged under ``key``. It would still be flagged when the
    key keeps listings or the address matched other keys this version did not delist (``delisted_keys``: every
    key the version removed completely)."""
    other_keys = [matched for matched in row.matched_keys if matched != key and matched not in delisted_keys]
    return {
        "delisted_id": delisted_id(key, version.version, row.decision_id, row.address_index),
        "key": key,
        "removed": [_full_match(match) for match in removed],
        "still_listed": [_full_match(match) for match in still_listed],
        "watchlist_version": version.version,
        "previous_version": version.previous,
        "delisted_at": to_millis(version.created_at),
        "decision": screened_address(row),
        "affected_decisions": 1,
        "open_action": row.action in OPEN_ACTIONS,
        "still_flagged": bool(still_listed) or bool(other_keys),
        "lookback_days": lookback_days,
        "found_by": found_by,
        "found_at": to_micros(found_at),
    }
