"""What one watchlist version changed, listing by listing: pure functions, no I/O.

A watchlist version is one table per sync source, each mapping an address key to a JSON array of listings
(screening.watchlist.encode_matches; derived listings of related addresses are stored under their own keys, so
they are compared like any other). Two versions are compared per key over all sources together, so a listing that
only moved from one source's table to another's is no change. A listing is identified by what makes it the same
listing of the same address by the same list: list, listed address and asset, the source file, and for a derived
listing its relation and listed key. The entry id is not part of it: plain address lists number their entries by
line (`file:line`), so one inserted line would otherwise turn every later address into a removal and an addition
(and every past hit on them into a false retroactive match). Then per key:

- ``added``: identities in the new version only (they drive retroactive matches),
- ``removed``: identities in the old version only (they drive delistings),
- ``updated``: the same identity with other details (another entry id or name, programs, category, publication
  date): recorded, but nothing past is looked up again for it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

from aml_screener.screening.records import Match


class ChangeKind(StrEnum):
    ADDED = "added"
    REMOVED = "removed"
    UPDATED = "updated"


@dataclass(frozen=True, slots=True)
class ListingChange:
    key: str
    kind: ChangeKind
    identity: str
    source: str  # the sync source whose table holds (or held) the listing
    listing: Match


def identity(listing: Mapping[str, Any]) -> str:
    """A listing's identity as a stable string (JSON of the identifying fields)."""
    return json.dumps(
        [
            listing.get("list"),
            listing.get("listed_address"),
            listing.get("listed_asset"),
            listing.get("source"),
            listing.get("relation"),
            listing.get("listed_key"),
        ],
        separators=(",", ":"),
        ensure_ascii=False,
    )


def _canonical(listing: Mapping[str, Any]) -> str:
    return json.dumps(listing, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _by_identity(listings: Iterable[tuple[str, Match]]) -> dict[str, tuple[str, Match]]:
    found: dict[str, tuple[str, Match]] = {}
    for source, listing in listings:
        found.setdefault(identity(listing), (source, listing))  # the same entry in two sources counts once
    return found


def key_changes(key: str, old: Sequence[tuple[str, Match]], new: Sequence[tuple[str, Match]]) -> list[ListingChange]:
    """The changes of one key from its (source, listing) pairs in the old version to those in the new one."""
    before = _by_identity(old)
    after = _by_identity(new)
    changes: list[ListingChange] = []
    for ident, (source, listing) in after.items():
        previous = before.get(ident)
        if previous is None:
            changes.append(ListingChange(key, ChangeKind.ADDED, ident, source, listing))
        elif _canonical(previous[1]) != _canonical(listing):
            changes.append(ListingChange(key, ChangeKind.UPDATED, ident, source, listing))
    for ident, (source, listing) in before.items():
        if ident not in after:
            changes.append(ListingChange(key, ChangeKind.REMOVED, ident, source, listing))
    return changes


def decode_table_value(value: str) -> list[Match]:
    """A table's value for one key: a JSON array of listings (an empty or broken value counts as none)."""
    try:
        listings = json.loads(value)
    except ValueError:
        return []
    if not isinstance(listings, list):
        return []
    return [cast("Match", item) for item in listings if isinstance(item, dict)]


def version_changes(
    keys: Iterable[str],
    old: Mapping[str, Mapping[str, str]],
    new: Mapping[str, Mapping[str, str]],
) -> list[ListingChange]:
    """Changes over ``keys`` between two versions given as source -> {key: table value} (only the keys asked
    about need to be present; a source missing from ``new`` was dropped)."""
    changes: list[ListingChange] = []
    for key in keys:
        before = [
            (source, listing)
            for source, table in old.items()
            if key in table
            for listing in decode_table_value(table[key])
        ]
        after = [
            (source, listing)
            for source, table in new.items()
            if key in table
            for listing in decode_table_value(table[key])
        ]
        changes.extend(key_changes(key, before, after))
    return changes
