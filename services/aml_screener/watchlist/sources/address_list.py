"""Plain per-asset address lists: one address per line, or a JSON array of strings.

This is the format of public OFAC extracts (`sanctioned_addresses_<ASSET>.txt` / `.json`) and of many exchange
exports. The asset ticker comes from the command line or from the file name (`..._<ASSET>.txt`,
`<name>.<ASSET>.txt`, a known ticker only); without one, each address is kept under the one chain family its format
names (a plain EVM list needs no asset) and rejected as `ambiguous_network` where several families share its
format. Every address is normalized with the same function the screener uses; an address that does not validate is
reported with its reason, never silently dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from aml_screener.screening.addresses import networks_for_asset
from aml_screener.screening.watchlist import Listing
from aml_screener.watchlist.errors import SourceFormatError
from aml_screener.watchlist.sources.base import Rejection, SourceEntry, normalize_entry, normalize_unlabelled

_ASSET_IN_NAME = re.compile(r"[_.\-]([A-Za-z0-9]{2,10})\.(?:txt|json|lst|csv)$")


def asset_from_filename(path: Path) -> str | None:
    """The ticker a file's name ends with (``..._XBT.txt``), if it is a ticker we know: ``stolen-funds.txt`` is
    not a list of "FUNDS"."""
    match = _ASSET_IN_NAME.search(path.name)
    if match is None or not networks_for_asset(match.group(1)):
        return None
    return match.group(1).upper()


def read_addresses(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, address) pairs, streamed (a list of millions of lines is never held in memory); a JSON
    array (the other published form) is read whole, its 1-based index serving as the line number.

    A file that is not UTF-8, or not a valid JSON array of strings, raises `SourceFormatError`."""
    try:
        yield from _read_addresses(path)
    except UnicodeDecodeError as exc:
        raise SourceFormatError(f"{path.name}: not UTF-8 (invalid byte at offset {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise SourceFormatError(f"{path.name}: not a valid JSON address list: {exc}") from exc


def _read_addresses(path: Path) -> Iterator[tuple[int, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        first = handle.read(1)
        while first.isspace():
            first = handle.read(1)
        if first == "[":
            handle.seek(0)
            values = json.load(handle)
            if not isinstance(values, list) or not all(isinstance(value, str) for value in values):
                raise SourceFormatError(f"{path.name}: a JSON address list must be an array of strings")
            yield from enumerate(values, start=1)
            return
        handle.seek(0)
        for number, line in enumerate(handle, start=1):
            address = line.rstrip("\n").rstrip("\r")
            if address.strip() and not address.lstrip().startswith("#"):
                yield number, address


class AddressListSource:
    """Plain per-asset lists as a watchlist source: one or more files (or a glob), one table.

    Each address goes through `normalize_entry`, so an address valid only for another chain than its file's
    asset is kept under that chain (`rehomed_from`), and everything else is rejected with a reason.
    """

    def __init__(
        self,
        *,
        list_name: str,
        category: str,
        paths: Sequence[Path],
        asset: str | None = None,
        entry_id: str | None = None,
        entry_name: str | None = None,
        programs: Sequence[str] = (),
        source: str | None = None,
        published_at: int | None = None,
        label: str | None = None,
    ) -> None:
        """`label`: the name to report instead of the file's (a downloaded file's URL name)."""
        self.name = list_name
        self.label = label
        self.category = category
        self.paths = list(paths)
        self.asset = asset
        self.entry_id = entry_id
        self.entry_name = entry_name
        self.programs = tuple(programs)
        self.source = source
        self._published_at = published_at

    @property
    def published_at(self) -> int | None:
        return self._published_at

    def files(self) -> list[Path]:
        return self.paths

    def entries(self) -> Iterator[SourceEntry | Rejection]:
        for path in self.paths:
            file_name = self.label or path.name
            ticker = (self.asset or asset_from_filename(Path(file_name)) or "").upper() or None
            source_name = self.source or file_name
            for line, address in read_addresses(path):
                listing = Listing(
                    list=self.name,
                    category=self.category,
                    source=source_name,
                    entry_id=self.entry_id or f"{file_name}:{line}",
                    listed_address=address,
                    entry_name=self.entry_name,
                    programs=self.programs,
                    listed_asset=ticker,
                    published_at=self._published_at,
                )
                location = f"{file_name} line {line}"
                if ticker is None:
                    # No asset: kept where the format names one chain family (a plain EVM list needs none).
                    yield normalize_unlabelled(address, listing=listing, location=location)
                    continue
                yield normalize_entry(ticker, address, listing=listing, location=location)


class ManifestSource:
    """A manifest (JSON) naming a list, its category, and per file: asset, entry id, entry name, programs.

    The bundled demo sample (demo/watchlist/manifest.json) is one: each file holds one SDN party's addresses.
    """

    def __init__(self, manifest: Path) -> None:
        self.manifest = manifest
        try:
            document = json.loads(manifest.read_text(encoding="utf-8"))
            self.document = document
            self.name = str(document["list"])
            self.category = str(document["category"])
            published = document.get("published_at")
            self._published_at = _date_to_millis(published) if published else None
        except (ValueError, KeyError, TypeError) as exc:  # not JSON, a key missing, not an ISO 8601 date
            raise SourceFormatError(f"{manifest}: not a valid manifest: {type(exc).__name__}: {exc}") from exc

    @property
    def published_at(self) -> int | None:
        return self._published_at

    def files(self) -> list[Path]:
        return [self.manifest, *(self.manifest.parent / item["file"] for item in self.document["files"])]

    def entries(self) -> Iterator[SourceEntry | Rejection]:
        for item in self.document["files"]:
            source = AddressListSource(
                list_name=self.name,
                category=self.category,
                paths=[self.manifest.parent / item["file"]],
                asset=item.get("asset"),
                entry_id=item.get("entry_id"),
                entry_name=item.get("entry_name"),
                programs=item.get("programs", ()),
                source=self.document.get("source"),
                published_at=self._published_at,
            )
            yield from source.entries()


def _date_to_millis(value: str) -> int:
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)
