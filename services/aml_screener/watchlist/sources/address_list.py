"""Plain per-asset address lists: one address per line, or a JSON array of strings.

This is the format of public OFAC extracts (`sanctioned_addresses_<ASSET>.txt` / `.json`) and of many exchange
exports. The asset ticker comes from the command line or from the file name (`..._<ASSET>.txt`,
`<name>.<ASSET>.txt`). Every address is normalized with the same function the screener uses; an address that
does not validate is reported with its reason, never silently dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aml_screener.screening.addresses import InvalidAddress, UnsupportedNetwork, normalize_listed
from aml_screener.screening.watchlist import Listing

_ASSET_IN_NAME = re.compile(r"[_.\-]([A-Za-z0-9]{2,10})\.(?:txt|json|lst|csv)$")


@dataclass(frozen=True)
class Rejected:
    source: str
    line: int
    address: str
    reason: str
    detail: str


@dataclass
class ParseResult:
    listings: list[tuple[str, Listing]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)

    def extend(self, other: ParseResult) -> None:
        self.listings.extend(other.listings)
        self.rejected.extend(other.rejected)


def asset_from_filename(path: Path) -> str | None:
    match = _ASSET_IN_NAME.search(path.name)
    return match.group(1).upper() if match else None


def read_addresses(path: Path) -> list[tuple[int, str]]:
    """(line number, address) pairs; JSON arrays get their 1-based index as the line number."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        values = json.loads(text)
        if not isinstance(values, list) or not all(isinstance(value, str) for value in values):
            raise ValueError(f"{path}: a JSON address list must be an array of strings")
        return list(enumerate(values, start=1))
    return [
        (number, line.rstrip("\r"))
        for number, line in enumerate(text.split("\n"), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]


def parse_address_list(
    path: Path,
    *,
    list_name: str,
    category: str,
    asset: str | None = None,
    entry_id: str | None = None,
    entry_name: str | None = None,
    programs: Sequence[str] = (),
    source: str | None = None,
    published_at: int | None = None,
) -> ParseResult:
    ticker = (asset or asset_from_filename(path) or "").upper()
    source_name = source or path.name
    result = ParseResult()
    if not ticker:
        raise ValueError(f"{path}: no asset given and none in the file name (expected e.g. name_ETH.txt)")
    for line, address in read_addresses(path):
        try:
            normalized = normalize_listed(ticker, address)
        except UnsupportedNetwork:
            result.rejected.append(Rejected(source_name, line, address, "unsupported_asset", f"asset {ticker}"))
            continue
        except InvalidAddress as exc:
            result.rejected.append(Rejected(source_name, line, address, exc.reason, str(exc)))
            continue
        listing = Listing(
            list=list_name,
            category=category,
            source=source_name,
            entry_id=entry_id or f"{path.name}:{line}",
            listed_address=address,
            entry_name=entry_name,
            programs=tuple(programs),
            listed_asset=ticker,
            published_at=published_at,
        )
        result.listings.append((normalized.key, listing))
    return result
