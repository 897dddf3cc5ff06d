"""Loading address lists into a new watchlist version: files or a manifest in, one activated version out."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from aml_screener.watchlist.sources.address_list import ParseResult, parse_address_list
from aml_screener.watchlist.store import VersionMeta, WatchlistStore


@dataclass(frozen=True)
class ListSpec:
    """A list to load: its name, category, and the parsed listings (plus rejects to report)."""

    name: str
    category: str
    parsed: ParseResult
    sources: tuple[str, ...]
    published_at: int | None = None


def _date_to_millis(value: str | None) -> int | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def from_files(
    files: Sequence[Path],
    *,
    list_name: str,
    category: str,
    asset: str | None = None,
    entry_id: str | None = None,
    entry_name: str | None = None,
    programs: Sequence[str] = (),
    published_at: str | None = None,
) -> ListSpec:
    parsed = ParseResult()
    published = _date_to_millis(published_at)
    for path in files:
        parsed.extend(
            parse_address_list(
                path,
                list_name=list_name,
                category=category,
                asset=asset,
                entry_id=entry_id,
                entry_name=entry_name,
                programs=programs,
                published_at=published,
            )
        )
    return ListSpec(list_name, category, parsed, tuple(path.name for path in files), published)


def from_manifest(manifest_path: Path) -> ListSpec:
    """A manifest names the list, its category and per file: asset, entry id, entry name, programs."""
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    published = _date_to_millis(manifest.get("published_at"))
    parsed = ParseResult()
    for item in manifest["files"]:
        parsed.extend(
            parse_address_list(
                manifest_path.parent / item["file"],
                list_name=manifest["list"],
                category=manifest["category"],
                asset=item.get("asset"),
                entry_id=item.get("entry_id"),
                entry_name=item.get("entry_name"),
                programs=item.get("programs", ()),
                source=manifest.get("source"),
                published_at=published,
            )
        )
    files = tuple(item["file"] for item in manifest["files"])
    return ListSpec(manifest["list"], manifest["category"], parsed, files, published)


def load(store: WatchlistStore, spec: ListSpec) -> VersionMeta:
    """Replace the list `spec.name` in a new version and activate it."""
    info = {
        "category": spec.category,
        "sources": list(spec.sources),
        "rejected": len(spec.parsed.rejected),
        "published_at": spec.published_at,
    }
    return store.replace_list(spec.name, spec.parsed.listings, info)
