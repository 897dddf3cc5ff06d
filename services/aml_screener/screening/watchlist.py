"""The watchlist entry model: one listing of one address by one source, with the provenance an analyst needs.

A listing serializes to exactly the fields of the Avro `WatchlistMatch` record, so a hit read from Redis goes
into decisions and flagged events without conversion. Several listings can share one normalized key (the same
address on several lists, or under several assets of one list).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Category(StrEnum):
    """What a listed address is tied to. Lists may use other strings; these are the ones with known severity."""

    SANCTIONS = "sanctions"
    THEFT = "theft"
    RANSOMWARE = "ransomware"
    SCAM = "scam"
    MIXER = "mixer"
    INTERNAL = "internal"
    # Reserved: the exchange's allowlist (known-safe addresses). Not a hit; see decision.decide.
    ALLOW = "allow"


class Severity(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


_SEVERITY_RANK = {Severity.LOW: 0, Severity.MEDIUM: 1, Severity.HIGH: 2, Severity.CRITICAL: 3}

# Sanctions hits are a legal prohibition (OFAC: block), hence critical; proceeds of theft and ransomware must be
# frozen and reported, hence high; scams and mixers warrant review; anything else (e.g. an exchange's internal
# watch list) is low unless the list says otherwise.
_SEVERITY_BY_CATEGORY = {
    Category.SANCTIONS.value: Severity.CRITICAL,
    Category.THEFT.value: Severity.HIGH,
    Category.RANSOMWARE.value: Severity.HIGH,
    Category.SCAM.value: Severity.MEDIUM,
    Category.MIXER.value: Severity.MEDIUM,
}


def severity_of(category: str) -> Severity:
    return _SEVERITY_BY_CATEGORY.get(category, Severity.LOW)


def highest_severity(matches: Iterable[Mapping[str, Any]]) -> Severity | None:
    best: Severity | None = None
    for match in matches:
        severity = severity_of(match["category"])
        if best is None or _SEVERITY_RANK[severity] > _SEVERITY_RANK[best]:
            best = severity
    return best


@dataclass(frozen=True, slots=True)
class Listing:
    """One address as listed by one source entry. Field names are those of the Avro WatchlistMatch record."""

    list: str
    category: str
    source: str
    entry_id: str
    listed_address: str
    entry_name: str | None = None
    programs: tuple[str, ...] = field(default=())
    listed_asset: str | None = None
    published_at: int | None = None  # milliseconds since the epoch

    def as_match(self) -> dict[str, Any]:
        return {
            "list": self.list,
            "category": self.category,
            "source": self.source,
            "entry_id": self.entry_id,
            "entry_name": self.entry_name,
            "programs": list(self.programs),
            "listed_asset": self.listed_asset,
            "listed_address": self.listed_address,
            "published_at": self.published_at,
        }

    @classmethod
    def from_match(cls, match: Mapping[str, Any]) -> Listing:
        return cls(
            list=match["list"],
            category=match["category"],
            source=match["source"],
            entry_id=match["entry_id"],
            listed_address=match["listed_address"],
            entry_name=match.get("entry_name"),
            programs=tuple(match.get("programs") or ()),
            listed_asset=match.get("listed_asset"),
            published_at=match.get("published_at"),
        )


def encode_matches(listings: Iterable[Listing]) -> str:
    """The Redis value for one address key: a JSON array of matches, in a stable order."""
    ordered = sorted(listings, key=lambda item: (item.list, item.entry_id, item.listed_asset or "", item.source))
    return json.dumps([item.as_match() for item in ordered], separators=(",", ":"), ensure_ascii=False)


def decode_matches(value: str | bytes) -> list[dict[str, Any]]:
    matches = json.loads(value)
    if not isinstance(matches, list) or not matches:
        raise ValueError("watchlist value is not a non-empty JSON array")
    return matches
