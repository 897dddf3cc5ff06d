"""The watchlist entry model: one listing of one address by one source, with the provenance an analyst needs.

A listing serializes to the fields of the Avro `WatchlistMatch` record that a list states; the screener adds how
it matched (screening/matching.py) and the hit goes into decisions and flagged events without other conversion.
Several listings can share one normalized key (the same address on several lists, or under several assets of one
list). A listing the loader *derived* (stored under a related address's key, screening/related.py) carries the
relation and the listed address's own key; plain listings leave both out of the stored JSON (at ten million keys
two null fields would cost hundreds of megabytes of Redis).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, cast

from aml_screener.screening.records import Match


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


_BY_RANK = {rank: severity for severity, rank in _SEVERITY_RANK.items()}


def severity_of(category: str, match_type: str = "direct") -> Severity:
    """Severity of a match: by category; a related address (match type ``related``: the listed key holder's other
    address, screening/related.py) one level below a direct match, never below low."""
    severity = _SEVERITY_BY_CATEGORY.get(category, Severity.LOW)
    if match_type == "related":
        return _BY_RANK[max(0, _SEVERITY_RANK[severity] - 1)]
    return severity


def severity_rank(severity: Severity) -> int:
    """Order of severities: low 0, medium 1, high 2, critical 3."""
    return _SEVERITY_RANK[severity]


def highest_severity(matches: Iterable[Match]) -> Severity | None:
    best: Severity | None = None
    for match in matches:
        severity = severity_of(match["category"], match.get("match_type", "direct"))
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
    # Set only on a listing the loader derived for a related address (screening/related.py): the relation, and
    # the key of the address the list published (the table key is the related address's).
    relation: str | None = None
    listed_key: str | None = None

    def as_match(self) -> Match:
        match: Match = {
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
        if self.relation is not None:
            match["relation"] = self.relation
            match["listed_key"] = self.listed_key
        return match

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
            relation=match.get("relation"),
            listed_key=match.get("listed_key"),
        )


def encode_matches(listings: Iterable[Listing]) -> str:
    """The Redis value for one address key: a JSON array of matches, in a stable order."""
    ordered = sorted(
        listings,
        key=lambda item: (item.list, item.entry_id, item.listed_asset or "", item.source, item.relation or ""),
    )
    return json.dumps([item.as_match() for item in ordered], separators=(",", ":"), ensure_ascii=False)


def decode_matches(value: str | bytes) -> list[Match]:
    matches = json.loads(value)
    if not isinstance(matches, list) or not matches:
        raise ValueError("watchlist value is not a non-empty JSON array")
    return cast("list[Match]", matches)  # written by encode_matches (Listing.as_match); the lookup checks counts
