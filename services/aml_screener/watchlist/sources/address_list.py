"""Plain per-asset address lists: one address per line, or a JSON array of strings.

This is the format of public OFAC extracts (`sanctioned_addresses_<ASSET>.txt` / `.json`) and of many exchange
exports. The asset ticker comes from the command line or from the file name (`..._<ASSET>.txt`,
`<name>.<ASSET>.txt`, a known ticker only); without one, each address is kept under the one chain family its format
names (a plain EVM list needs no asset) and rejected as `ambiguous_network` where several families share its
format. Every address is normalized with the same function the screener uses; an address that does not validate is
reported with its reason, never silently dropped. A source of several files (a glob, a `manifest`) has one parser
per file (`sources/registry.py`).
"""

from __future__ import annotations

import io
import itertools
import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

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


def read_addresses(stream: IO[bytes], name: str) -> Iterator[tuple[int, str]]:
    """(line number, address) pairs of one file, streamed (a list of millions of lines is never held in memory);
    a JSON array (the other published form, told apart by its first non-blank character) is read whole, its
    1-based index serving as the line number. Blank lines and `#` comment lines are skipped; an address is never
    repaired (surrounding spaces stay, for the normalizer to reject).

    A file that is not UTF-8, or not a valid JSON array of strings, raises `SourceFormatError` naming `name`."""
    text = io.TextIOWrapper(stream, encoding="utf-8", errors="strict", newline="")
    number = 0
    try:
        for number, line in enumerate(text, start=1):
            if not line.strip():
                continue
            if line.lstrip().startswith("["):
                yield from _json_array(line + text.read(), name)
                return
            yield from _address_lines(itertools.chain([(number, line)], enumerate(text, start=number + 1)))
            return
    except UnicodeDecodeError as exc:
        raise SourceFormatError(f"{name}: not UTF-8 (an invalid byte after line {number}: {exc.reason})") from None
    finally:
        text.detach()  # leave the caller's stream open (it owns it)


def _address_lines(lines: Iterator[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    for number, line in lines:
        address = line.rstrip("\n").rstrip("\r")
        if address.strip() and not address.lstrip().startswith("#"):
            yield number, address


def _json_array(document: str, name: str) -> Iterator[tuple[int, str]]:
    try:
        values = json.loads(document)
    except json.JSONDecodeError as exc:
        raise SourceFormatError(f"{name}: not a valid JSON address list: {exc}") from None
    if not isinstance(values, list) or not all(isinstance(value, str) for value in values):
        raise SourceFormatError(f"{name}: a JSON address list must be an array of strings")
    yield from enumerate(values, start=1)


class AddressListSource:
    """One plain address-list file as a watchlist source (a source of several files has one per file).

    `label` is the file's name as published (a downloaded file's URL name, a compressed file's inner name): the
    asset comes from it unless `asset` is given, and it is the default `source` and the prefix of default entry
    ids (`<label>:<line>`). Each address goes through `normalize_entry`, so an address valid only for another chain
    than the file's asset is kept under that chain (`rehomed_from`), and everything else is rejected with a reason.
    """

    def __init__(
        self,
        *,
        list_name: str,
        category: str,
        label: str,
        asset: str | None = None,
        entry_id: str | None = None,
        entry_name: str | None = None,
        programs: Sequence[str] = (),
        source: str | None = None,
        published_at: int | None = None,
    ) -> None:
        self.name = list_name
        self.label = label
        self.category = category
        self.asset = asset
        self.entry_id = entry_id
        self.entry_name = entry_name
        self.programs = tuple(programs)
        self.source = source
        self._published_at = published_at

    @property
    def published_at(self) -> int | None:
        """The publication time given to the constructor: a plain list states none."""
        return self._published_at

    def parse(self, stream: IO[bytes]) -> Iterator[SourceEntry | Rejection]:
        ticker = (self.asset or asset_from_filename(Path(self.label)) or "").upper() or None
        source_name = self.source or self.label
        for line, address in read_addresses(stream, self.label):
            listing = Listing(
                list=self.name,
                category=self.category,
                source=source_name,
                entry_id=self.entry_id or f"{self.label}:{line}",
                listed_address=address,
                entry_name=self.entry_name,
                programs=self.programs,
                listed_asset=ticker,
                published_at=self._published_at,
            )
            location = f"{self.label} line {line}"
            if ticker is None:
                # No asset: kept where the format names one chain family (a plain EVM list needs none).
                yield normalize_unlabelled(address, listing=listing, location=location)
                continue
            yield normalize_entry(ticker, address, listing=listing, location=location)
