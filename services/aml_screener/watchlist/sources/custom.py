"""The exchange's own lists: a blocklist and an allowlist, each a documented CSV file (see docs/list-formats.md).

Responsibilities: read the CSV (UTF-8 with or without BOM, CRLF or LF, quoted fields, blank lines and `#` comment
lines), check the header, validate every row and normalize its address with the same function the screener uses,
and turn it into a `SourceEntry` — or into a `Rejection` that names the row's line and the reason. Nothing is
dropped silently; a file without the required header is refused as a whole (`SourceFormatError` naming the
missing columns), because then every row would be misread.

* Blocklist (`CustomBlocklistSource`): `address,chain,category,reason,reference` (+ optional `name`, `asset`,
  `added_at`). `category` is free text, lower-cased (known ones get their severity); empty, or the reserved
  `allow`, is a row error. An address not valid on the named chain but valid on another is kept there and marked
  re-homed (as for every source); with no chain, the chain is found from the address.
* Allowlist (`CustomAllowlistSource`): `address,chain,reason,reference` (+ optional `name`), listings with the
  reserved category `allow`. Stricter than the blocklist because it can clear matches: an address must be valid
  on the chain the row names (never re-homed), `reason` is required, and a file with a `category` column (a
  blocklist given as allowlist by mistake) is refused. What an allowlist entry may override is decided by
  `screening.decision.decide`, not here.

Provenance: `entry_id` = `reference` (e.g. a case number; `<list>:<line>` if empty); `entry_name` = `name`, or
`reason`, or `name — reason` when both are given; `listed_asset` = `asset` (blocklist) or else the chain's canonical
name; `published_at` = `added_at` (ISO 8601 date or time, UTC when no offset).
"""

from __future__ import annotations

import codecs
import csv
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import IO

from aml_screener.screening.addresses import (
    InvalidAddress,
    UnsupportedNetwork,
    known_networks,
    normalize,
    resolve_network,
)
from aml_screener.screening.watchlist import Category, Listing
from aml_screener.watchlist.errors import SourceFormatError
from aml_screener.watchlist.sources.base import Rejection, SourceEntry, iso_millis, normalize_entry

BLOCKLIST_COLUMNS = ("address", "chain", "category", "reason", "reference")
BLOCKLIST_OPTIONAL = ("name", "asset", "added_at")
ALLOWLIST_COLUMNS = ("address", "chain", "reason", "reference")
ALLOWLIST_OPTIONAL = ("name",)

_CHUNK = 1 << 16


@dataclass(frozen=True, slots=True)
class Row:
    """One data row: the line it starts on (header = its own line number) and its values by column name."""

    line: int
    values: dict[str, str]

    def get(self, column: str) -> str:
        """The value, surrounding whitespace removed (for every column but `address`, which is never repaired)."""
        return self.values.get(column, "").strip()


def _text_lines(stream: IO[bytes]) -> Iterator[str]:
    """Decoded lines (with their line ending), BOM removed; split on "\\n" only, never on other separators."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="strict")
    pending = ""
    offset = 0
    while True:
        data = stream.read(_CHUNK)
        try:
            text = decoder.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            raise SourceFormatError(f"the file is not UTF-8 (invalid byte at offset {offset + exc.start})") from exc
        offset += len(data)
        pending += text
        *lines, pending = pending.split("\n")
        for line in lines:
            yield line + "\n"
        if not data:
            break
    if pending:
        yield pending


class _Lines:
    """Feeds csv.reader, skipping `#` comment lines and remembering the line each row starts on."""

    def __init__(self, lines: Iterator[str]) -> None:
        self._lines = lines
        self.number = 0
        self.row_start: int | None = None

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        while True:
            line = next(self._lines)
            self.number += 1
            if line.lstrip().startswith("#"):
                continue
            if self.row_start is None:
                self.row_start = self.number
            return line


def read_rows(
    stream: IO[bytes],
    required: Sequence[str],
    what: str,
    source: str,
    forbidden: Mapping[str, str] | None = None,
) -> Iterator[Row | Rejection]:
    """Rows of a CSV with a header naming at least `required`; malformed rows become Rejections.

    Raises SourceFormatError when the file is not UTF-8, is empty, or its header lacks a required column, repeats
    one, or has a `forbidden` one (the message says why). Other columns are allowed and ignored.
    """
    feeder = _Lines(_text_lines(stream))
    reader = csv.reader(feeder, strict=False)
    header: list[str] | None = None
    while True:
        feeder.row_start = None
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise SourceFormatError(f"{what}: line {feeder.number}: {exc}") from exc
        line = feeder.row_start or feeder.number
        if not any(field.strip() for field in fields):
            continue  # blank line
        if header is None:
            header = _check_header(fields, required, what, forbidden or {})
            continue
        if len(fields) > len(header):
            detail = (
                f"{len(fields)} fields but the header has {len(header)}: "
                'quote fields that contain commas, e.g. "stolen, then bridged"'
            )
            yield Rejection(source, f"line {line}", fields[0], None, "extra_fields", detail)
            continue
        missing = [column for column in header[len(fields) :] if column in required]
        if missing:
            detail = f"the row ends before the column(s) {', '.join(missing)}"
            yield Rejection(source, f"line {line}", fields[0], None, "missing_column", detail)
            continue
        yield Row(line, dict(zip(header, fields, strict=False)))
    if header is None:
        raise SourceFormatError(f"{what}: the file is empty; expected a header: {','.join(required)}")


def _check_header(fields: list[str], required: Sequence[str], what: str, forbidden: Mapping[str, str]) -> list[str]:
    header = [field.strip().lower() for field in fields]
    for column, why in forbidden.items():
        if column in header:
            raise SourceFormatError(f"{what}: the header has a {column} column: {why}")
    repeated = sorted({column for column in header if column and header.count(column) > 1})
    if repeated:
        raise SourceFormatError(f"{what}: the header repeats the column(s) {', '.join(repeated)}")
    missing = [column for column in required if column not in header]
    if missing:
        raise SourceFormatError(
            f"{what}: the header lacks the required column(s) {', '.join(missing)} "
            f"(expected a first line like: {','.join(required)}; found: {','.join(fields)})"
        )
    return header


def _entry_name(row: Row) -> str | None:
    name, reason = row.get("name"), row.get("reason")
    if name and reason:
        return f"{name} — {reason}"
    return name or reason or None


def _unrecognized(rejection: Rejection) -> Rejection:
    detail = "no chain given, and the address is not valid on any supported network"
    return Rejection(rejection.source, rejection.location, rejection.address, None, "unrecognized_address", detail)


def _resolve_chain(row: Row, source: str) -> str | Rejection | None:
    """The canonical network named by the row's `chain`, None if empty, or a Rejection for an unknown one."""
    chain = row.get("chain")
    if not chain:
        return None
    try:
        return resolve_network(chain).name
    except UnsupportedNetwork:
        detail = f"unknown chain {chain!r}; known: {', '.join(known_networks())} (and their aliases, e.g. eth, trc20)"
        return Rejection(source, f"line {row.line}", row.values.get("address", ""), None, "unknown_chain", detail)


class _CustomCsvSource(ABC):
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()  # documented optional columns (others are ignored)
    forbidden: Mapping[str, str] = MappingProxyType({})  # column -> why a file with it is refused
    what = "custom list"

    def __init__(self, list_name: str, source: str | None = None) -> None:
        self.name = list_name
        self.source = source or list_name
        self._published_at: int | None = None

    @property
    def published_at(self) -> int | None:
        """The newest `added_at` of the file (known after parsing); None when no row states one."""
        return self._published_at

    def parse(self, stream: IO[bytes]) -> Iterator[SourceEntry | Rejection]:
        self._published_at = None
        for row in read_rows(stream, self.required, self.what, self.source, self.forbidden):
            if isinstance(row, Rejection):
                yield row
                continue
            yield self._item(row)

    @abstractmethod
    def _item(self, row: Row) -> SourceEntry | Rejection:
        """One data row as an entry, or a rejection with its reason."""

    def _reject(self, row: Row, reason: str, detail: str, asset: str | None = None) -> Rejection:
        return Rejection(self.source, f"line {row.line}", row.values.get("address", ""), asset, reason, detail)

    def _entry_id(self, row: Row) -> str:
        return row.get("reference") or f"{self.name}:{row.line}"


class CustomBlocklistSource(_CustomCsvSource):
    """The exchange's blocklist CSV: `address,chain,category,reason,reference` (+ `name`, `asset`, `added_at`)."""

    required = BLOCKLIST_COLUMNS
    optional = BLOCKLIST_OPTIONAL
    what = "blocklist CSV"

    def __init__(self, list_name: str = "exchange-blocklist", source: str | None = None) -> None:
        super().__init__(list_name, source)

    def _item(self, row: Row) -> SourceEntry | Rejection:
        address = row.values.get("address", "")
        asset = row.get("asset").upper() or None
        checked = self._check(row, asset)
        if isinstance(checked, Rejection):
            return checked
        network, category, published_at = checked
        listing = Listing(
            list=self.name,
            category=category,
            source=self.source,
            entry_id=self._entry_id(row),
            listed_address=address,
            entry_name=_entry_name(row),
            listed_asset=asset or network,
            published_at=published_at,
        )
        item = normalize_entry(asset, address, listing=listing, location=f"line {row.line}", network=network)
        if isinstance(item, Rejection) and network is None and asset is None:
            return _unrecognized(item)
        return item

    def _check(self, row: Row, asset: str | None) -> tuple[str | None, str, int | None] | Rejection:
        """(network, category, added_at in ms) of a row, or the Rejection of its first problem."""
        if not row.values.get("address", "").strip():
            return self._reject(row, "missing_address", "the address column is empty", asset)
        network = _resolve_chain(row, self.source)
        if isinstance(network, Rejection):
            return network
        category = row.get("category").lower()
        if not category:
            return self._reject(row, "missing_category", "the category column is empty", asset)
        if category == Category.ALLOW.value:
            detail = "'allow' is reserved for the allowlist (custom-allow format); a blocklist row cannot allow"
            return self._reject(row, "reserved_category", detail, asset)
        published_at: int | None = None
        if added := row.get("added_at"):
            try:
                published_at = iso_millis(added)
            except ValueError:
                detail = f"added_at {added!r} is not an ISO 8601 date or time (e.g. 2024-09-27 or 2024-09-27T14:03Z)"
                return self._reject(row, "bad_added_at", detail, asset)
            self._published_at = max(self._published_at or published_at, published_at)
        return network, category, published_at


class CustomAllowlistSource(_CustomCsvSource):
    """The exchange's allowlist CSV: `address,chain,reason,reference` (+ `name`); category `allow`."""

    required = ALLOWLIST_COLUMNS
    optional = ALLOWLIST_OPTIONAL
    what = "allowlist CSV"
    forbidden = MappingProxyType(
        {
            "category": (
                "this looks like a blocklist, and loading it as an allowlist would clear its addresses. "
                f"An allowlist has the columns {','.join(ALLOWLIST_COLUMNS)} (+ name); load blocklists as 'custom'"
            )
        }
    )

    def __init__(self, list_name: str = "exchange-allowlist", source: str | None = None) -> None:
        super().__init__(list_name, source)

    def _item(self, row: Row) -> SourceEntry | Rejection:
        address = row.values.get("address", "")
        if not address.strip():
            return self._reject(row, "missing_address", "the address column is empty")
        network = _resolve_chain(row, self.source)
        if isinstance(network, Rejection):
            return network
        if not row.get("reason"):
            return self._reject(row, "missing_reason", "an allowlist entry must say why the address is safe")
        listing = Listing(
            list=self.name,
            category=Category.ALLOW.value,
            source=self.source,
            entry_id=self._entry_id(row),
            listed_address=address,
            entry_name=_entry_name(row),
            listed_asset=network,
        )
        location = f"line {row.line}"
        if network is None:
            item = normalize_entry(None, address, listing=listing, location=location)
            return _unrecognized(item) if isinstance(item, Rejection) else item
        try:  # never re-homed: an allowlist entry must be exactly what the operator wrote
            normalized = normalize(network, address)
        except InvalidAddress as exc:
            return self._reject(row, exc.reason, str(exc))
        return SourceEntry(normalized.key, normalized.family.value, listing)


__all__ = [
    "ALLOWLIST_COLUMNS",
    "ALLOWLIST_OPTIONAL",
    "BLOCKLIST_COLUMNS",
    "BLOCKLIST_OPTIONAL",
    "CustomAllowlistSource",
    "CustomBlocklistSource",
    "Row",
    "read_rows",
]
