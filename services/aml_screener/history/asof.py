"""`aml-screener watchlist as-of --at TIME NETWORK ADDRESS`: was an address listed at a past time, by which entry,
since which version? Answered from the lookback's retained history of watchlist versions (history/lookback.py):
every version it processed with its activation time, and every listing each one added, removed or updated (the
baseline, the first version it saw, is recorded as adding its whole content). Nothing is read from Redis, which
keeps only the last few versions.

The watchlist in effect at TIME is the last version activated at or before it. The listings of the address's key and
of the keys it is related to (screening/related.py) are folded over the changes of every version up to that one;
the matches are then made exactly as the screener makes them (screening/matching.collect_matches), so the answer
is what a screener running at TIME with that version would have flagged. Limits (docs/lookback.md): before the
baseline there is no answer; a version garbage-collected in Redis before the lookback saw it is folded into the next
one it saw, so its changes date from that version's activation.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from aml_screener.history.changes import ChangeKind
from aml_screener.screening.addresses import normalize_key
from aml_screener.screening.matching import collect_matches
from aml_screener.screening.records import Match
from aml_screener.screening.related import screening_keys


@dataclass(frozen=True, slots=True)
class VersionAt:
    version: str
    created_at: datetime
    seq: int


@dataclass(frozen=True, slots=True)
class ListedSince:
    """A listing in effect, with the version (and its activation time) that added or last updated it."""

    listing: Match
    version: str
    since: datetime


@dataclass
class AsOf:
    """The answer: ``version`` is None when TIME is before the retained history (``history_starts``)."""

    at: datetime
    key: str
    version: VersionAt | None
    history_starts: datetime | None
    matches: list[Match] = field(default_factory=list)
    since: dict[str, ListedSince] = field(default_factory=dict)  # by identity of each match's listing

    @property
    def listed(self) -> bool:
        return bool(self.matches)


def fold_changes(rows: Iterable[tuple[str, str, str, Match, str, datetime]]) -> dict[str, dict[str, ListedSince]]:
    """Key -> identity -> listing in effect, from (key, change, identity, listing, version, activated) rows in
    version order."""
    state: dict[str, dict[str, ListedSince]] = {}
    for key, change, ident, listing, version, activated in rows:
        listings = state.setdefault(key, {})
        if change == ChangeKind.REMOVED.value:
            listings.pop(ident, None)
        elif change == ChangeKind.ADDED.value or ident not in listings:
            listings[ident] = ListedSince(listing, version, activated)
        else:  # updated: the same listing with other details; it has been listed since it was added
            listings[ident] = ListedSince(listing, listings[ident].version, listings[ident].since)
    return state


def _canonical(match: Match) -> str:
    return json.dumps(match, sort_keys=True, separators=(",", ":"), default=str)


def matches_at(
    key: str, related: Sequence[tuple[str, str]], state: Mapping[str, Mapping[str, ListedSince]]
) -> tuple[list[Match], dict[str, ListedSince]]:
    """The matches a screener would have made for ``key`` given the listings in effect, and since when each
    listing has been in effect (by the match's canonical JSON)."""
    found = {k: [item.listing for item in listings.values()] for k, listings in state.items() if listings}
    matches = collect_matches(key, related, found)
    since: dict[str, ListedSince] = {}
    for listed_key, listings in state.items():
        for item in listings.values():
            for match in collect_matches(key, related, {listed_key: [item.listing]}):
                since.setdefault(_canonical(match), item)
    return matches, since


def as_of(conn: psycopg.Connection, network: str, address: str, at: datetime) -> AsOf:
    """Whether ``address`` on ``network`` was listed at ``at`` (raises InvalidAddress/UnsupportedNetwork)."""
    key = normalize_key(network, address)
    related = [(item.key, item.relation.value) for item in screening_keys(key)]
    first = conn.execute(
        "SELECT min(created_at) FROM aml_history.watchlist_versions WHERE lookback_done_at IS NOT NULL"
    ).fetchone()
    history_starts = first[0] if first else None
    row = conn.execute(
        "SELECT version, created_at, seq FROM aml_history.watchlist_versions WHERE created_at <= %s "
        "AND lookback_done_at IS NOT NULL ORDER BY created_at DESC, seq DESC LIMIT 1",
        (at,),
    ).fetchone()
    if row is None:
        return AsOf(at, key, None, history_starts)
    version = VersionAt(*row)
    keys = [key, *(k for k, _ in related)]
    rows = conn.execute(
        "SELECT c.key, c.change, c.identity, c.listing, v.version, v.created_at "
        "FROM aml_history.watchlist_changes c JOIN aml_history.watchlist_versions v USING (version) "
        "WHERE c.key = ANY(%s) AND v.seq <= %s ORDER BY v.seq, c.key, c.identity, c.change",
        (keys, version.seq),
    ).fetchall()
    matches, since = matches_at(key, related, fold_changes(_typed(rows)))
    return AsOf(at, key, version, history_starts, matches, since)


def _typed(rows: Iterable[tuple[Any, ...]]) -> Iterator[tuple[str, str, str, Match, str, datetime]]:
    for key, change, ident, listing, version, activated in rows:
        yield str(key), str(change), str(ident), listing, str(version), activated


def render(answer: AsOf) -> dict[str, Any]:
    """The JSON the command prints."""
    rendered = []
    for match in answer.matches:
        began = answer.since.get(_canonical(match))
        rendered.append(
            {
                **match,
                "listed_since_version": began.version if began else None,
                "listed_since": began.since.isoformat() if began else None,
            }
        )
    return {
        "at": answer.at.isoformat(),
        "key": answer.key,
        "listed": answer.listed if answer.version is not None else None,
        "watchlist_version": answer.version.version if answer.version else None,
        "version_activated_at": answer.version.created_at.isoformat() if answer.version else None,
        "history_starts": answer.history_starts.isoformat() if answer.history_starts else None,
        "matches": rendered,
    }
