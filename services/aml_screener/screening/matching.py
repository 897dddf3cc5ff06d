"""Which listings apply to one destination, and how: the matches of a decision.

The screener looks up a destination's own key and the keys :func:`~aml_screener.screening.related.screening_keys`
gives for it (one round trip per batch for all of them); this module turns what was found under those keys into
the destination's matches, each annotated with how it matched:

- ``matched_key``: the table key the listing was found under;
- ``relation`` / ``match_type``: ``None`` / ``direct`` when that key is the listed address's own; otherwise the
  relation (from the screener's side, or stored with a listing the loader derived) and its match type;
- ``listed_key``: the key of the address the list published.

Each listing counts once (a unified address and its receivers can find the same listing twice); relations are not
chained beyond a direct one (a related address of a related address is not the listed party's for certain).
Pure: the lookup result is passed in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aml_screener.screening.records import Match
from aml_screener.screening.related import MatchType, match_type_of


def _identity(listing: Match) -> tuple[Any, ...]:
    return (
        listing["list"],
        listing["entry_id"],
        listing["listed_address"],
        listing.get("listed_asset"),
        listing["source"],
        listing["category"],
    )


def collect_matches(
    address_key: str,
    related: Sequence[tuple[str, str]],
    found: Mapping[str, Sequence[Match]],
) -> list[Match]:
    """The matches of destination ``address_key`` whose related keys are ``related`` ((key, relation) pairs),
    given ``found`` (listings per key that is listed). Direct matches come first."""
    matches: list[Match] = []
    seen: set[tuple[Any, ...]] = set()
    for key, via in ((address_key, None), *related):
        listings = found.get(key)
        if not listings:
            continue
        for listing in listings:
            stored = listing.get("relation")
            if (
                via is not None
                and stored is not None
                and (match_type_of(via) is MatchType.RELATED or match_type_of(stored) is MatchType.RELATED)
            ):
                continue  # a relation of a relation: not certain to be the listed party's
            relation = via if via is not None else stored
            identity = _identity(listing)
            if identity in seen:
                continue
            seen.add(identity)
            match = listing.copy()
            match["relation"] = relation
            match["match_type"] = match_type_of(relation).value
            match["matched_key"] = key
            match["listed_key"] = listing.get("listed_key") or key  # stored only with a derived listing
            matches.append(match)
    if len(matches) > 1:
        matches.sort(key=lambda item: item["match_type"] != MatchType.DIRECT)  # stable: direct ones first
    return matches
