"""OFAC's legacy SDN CSV (`sdn.csv`, optionally with `sdn_comments.csv`) as a watchlist source.

Responsible for: reading the whole SDN list in OFAC's legacy comma-delimited format, finding the digital-currency
addresses inside each entry's free-text Remarks, and turning each one into a `SourceEntry` (normalized through
`normalize_entry`, with the entry's number, name and programs as provenance) or a `Rejection` with a reason.
Every `Digital Currency Address - <TICKER> <address>` occurrence in the file ends up as exactly one of the two.

The format and its traps (each is handled next to the code that deals with it):

* No header row; every row has exactly 12 fields:
  ent_num, SDN_Name, SDN_Type, Program, Title, Call_Sign, Vess_type, Tonnage, GRT, Vess_flag, Vess_owner, Remarks.
* An empty field is the literal ``-0-`` followed by a space, not an empty string.
* CRLF line endings, double-quoted text fields (commas and quotes inside them): parsed with the `csv` module,
  never split by hand.
* The file ends with a Ctrl-Z byte (0x1A, a DOS end-of-file marker) after the last CRLF.
* Addresses are not in a column: they sit in Remarks as ``Digital Currency Address - XBT 1abc...;`` (later ones
  prefixed ``alt. ``), and the last one of a remark can carry the remark's closing sentence period.
* Remarks are cut at exactly 1,000 characters, mid-word: an address (or the label before it) at the cut is a
  fragment. It is rejected as ``truncated_remarks`` rather than validated (a fragment would otherwise look like a
  bad checksum, or worse, a fragment of a checksum-less format could pass). OFAC publishes the rest of such
  remarks in ``sdn_comments.csv`` (rows ``ent_num,"continuation"``, same conventions); when that file is given,
  the continuation is appended to the remark before addresses are extracted, so nothing is cut.
* The file has no publication date: `published_at` is whatever the caller passes (e.g. the HTTP Last-Modified).
* Decoding: OFAC's legacy files are ASCII in practice (Latin-1 historically); bytes that are not UTF-8 are read as
  Latin-1 characters, so a stray accented byte in a name never makes the whole list unreadable.

A file that is not this format at all (wrong number of fields, a non-numeric entry number, broken CSV quoting,
an empty file) raises `SourceFormatError`: a sanctions list that cannot be read must fail the sync loudly, never
load as a partial or empty list. Problems with one address are `Rejection`s, never exceptions.
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import IO, Final

from aml_screener.screening.watchlist import Listing
from aml_screener.watchlist.errors import SourceFormatError
from aml_screener.watchlist.sources.base import Rejection, SourceEntry, normalize_entry

__all__ = [
    "REMARKS_LIMIT",
    "OfacCsvReport",
    "OfacCsvSource",
    "parse_programs",
    "read_comments",
]

log = logging.getLogger(__name__)


#: OFAC cuts the Remarks column at exactly this many characters (the rest goes to sdn_comments.csv).
REMARKS_LIMIT: Final = 1000
_FIELDS: Final = 12
_REMARKS: Final = 11
_EMPTY: Final = "-0-"  # OFAC's empty-field marker; published with a trailing space ("-0- ")
_CTRL_Z: Final = "\x1a"
_LABEL: Final = "Digital Currency Address - "
_LABEL_RE: Final = re.compile(re.escape(_LABEL))
# After the label: the ticker is letters/digits; the address runs to the next ";" or whitespace. Both may be cut.
_ADDRESS_RE: Final = re.compile(r"(?P<ticker>[A-Za-z0-9]*)(?P<sep>[ \t]*)(?P<address>[^;\s]*)")
_PROGRAM_SEPARATOR_RE: Final = re.compile(r"\]\s*\[")
# A remark cut inside the label itself ("...; alt. Digital Currency A") still lost an address. Only a cut tail of
# at least this many characters of the label counts ("alt. D" could be "alt. Driver's License").
_MIN_LABEL_FRAGMENT: Final = len("Digital")

_DECODE_ERRORS: Final = "aml_screener.ofac_latin1_fallback"


def _latin1_fallback(error: UnicodeError) -> tuple[str, int]:
    # Trap: the files are ASCII/Latin-1, not guaranteed UTF-8. An undecodable byte becomes its Latin-1 character
    # instead of failing the whole list (addresses are ASCII, so this can only affect names and free text).
    if not isinstance(error, UnicodeDecodeError):
        raise error
    return error.object[error.start : error.end].decode("latin-1"), error.end


codecs.register_error(_DECODE_ERRORS, _latin1_fallback)


@dataclass
class OfacCsvReport:
    """What one parse saw, beyond the entries and rejections (for summaries and tests). Filled while parsing."""

    rows: int = 0
    entries_with_addresses: int = 0  # rows whose remarks carry at least one address label
    occurrences: Counter[str] = field(default_factory=Counter)  # non-empty addresses per ticker, as published
    lost_at_cut: list[tuple[str, str | None]] = field(default_factory=list)  # (ent_num, ticker): label, no address
    truncated_rows: list[str] = field(default_factory=list)  # ent_nums with remarks cut at 1,000 chars, not continued
    continued_rows: list[str] = field(default_factory=list)  # ent_nums whose remarks sdn_comments.csv continued
    stripped_periods: list[tuple[str, str, str]] = field(default_factory=list)  # (ent_num, ticker, as published)
    orphan_comments: list[str] = field(default_factory=list)  # sdn_comments.csv ent_nums with no sdn.csv row


def _clean(value: str) -> str:
    """A field's value: OFAC's "-0- " empty marker (trap: with a trailing space) becomes ""."""
    stripped = value.strip()
    return "" if stripped == _EMPTY else stripped


def parse_programs(value: str) -> tuple[str, ...]:
    """The Program column -> program codes: "[DPRK3] [CYBER2]" and "DPRK3] [CYBER2" -> ("DPRK3", "CYBER2").

    Trap: sdn.csv publishes several programs without the outer brackets ("CYBER2] [ELECTION-EO13848"), one
    program as a bare code ("SDGT"); the separator is "] [".
    """
    text = _clean(value)
    if not text:
        return ()
    inner = text.removeprefix("[").removesuffix("]")
    return tuple(dict.fromkeys(code.strip() for code in _PROGRAM_SEPARATOR_RE.split(inner) if code.strip()))


def _text(stream: IO[bytes]) -> io.TextIOWrapper:
    # newline="" so the csv module sees the CRLFs itself (trap: CRLF, and newlines inside quoted fields).
    return io.TextIOWrapper(stream, encoding="utf-8", errors=_DECODE_ERRORS, newline="")


def _rows(stream: IO[bytes], what: str, fields: int) -> Iterator[tuple[int, list[str]]]:
    """(row number, fields) of an OFAC CSV, Ctrl-Z and blank lines dropped; wrong shapes -> SourceFormatError."""
    text = _text(stream)
    reader = csv.reader(text, strict=False)
    number = 0
    try:
        for row in reader:
            # Trap: the file ends with a Ctrl-Z (0x1A) after the last CRLF, which csv reads as a one-field row;
            # without a final CRLF it would be glued to the last field instead.
            if row and row[-1].endswith(_CTRL_Z):
                row[-1] = row[-1].rstrip(_CTRL_Z)
            if not row or row == [""]:
                continue
            number += 1
            if len(row) != fields:
                raise SourceFormatError(
                    f"{what} row {number} (line {reader.line_num}): {len(row)} fields, expected {fields}"
                )
            ent_num = row[0].strip()
            if not ent_num.isdigit() or not ent_num.isascii():
                raise SourceFormatError(f"{what} row {number} (line {reader.line_num}): ent_num {ent_num[:40]!r}")
            row[0] = ent_num
            yield number, row
    except csv.Error as exc:
        raise SourceFormatError(f"{what} line {reader.line_num}: {exc}") from None
    finally:
        text.detach()  # leave the caller's stream open (it owns it)


def read_comments(stream: IO[bytes]) -> dict[str, str]:
    """`sdn_comments.csv`: ent_num -> the continuation of its remarks (several rows of one entry concatenated)."""
    continuations: dict[str, str] = {}
    for _number, (ent_num, text) in _rows(stream, "sdn_comments.csv", 2):
        # The continuation is glued on as is: OFAC cuts mid-word (even mid-address), so no separator is added.
        # Only a whole-field "-0- " is the empty marker; leading spaces of a continuation are content.
        continuation = "" if text.strip() == _EMPTY else text
        continuations[ent_num] = continuations.get(ent_num, "") + continuation
    return continuations


class OfacCsvSource:
    """OFAC's legacy `sdn.csv` (+ optional `sdn_comments.csv`) -> entries and rejections.

    `parse(stream)`: `stream` is sdn.csv; `comments` (optional, given to the constructor) opens sdn_comments.csv,
    read when the parse starts. After a complete parse, `report` holds the counts and flags (truncated remarks,
    stripped periods, ...).
    """

    def __init__(
        self,
        list_name: str = "ofac-sdn",
        *,
        category: str = "sanctions",
        source: str = "OFAC SDN CSV",
        published_at: int | None = None,
        comments: Callable[[], AbstractContextManager[IO[bytes]]] | None = None,
    ) -> None:
        self.name = list_name
        self.category = category
        self.source = source
        self._published_at = published_at
        self._comments = comments
        self.report = OfacCsvReport()

    @property
    def published_at(self) -> int | None:
        """The legacy CSV states no publication time: the value given to the constructor (ms since the epoch)."""
        return self._published_at

    def parse(self, stream: IO[bytes]) -> Iterator[SourceEntry | Rejection]:
        self.report = report = OfacCsvReport()
        unused: dict[str, str] = {}
        if self._comments is not None:
            with self._comments() as comments:
                unused = read_comments(comments)
        for _number, row in _rows(stream, "sdn.csv", _FIELDS):
            report.rows += 1
            ent_num = row[0]
            raw = row[_REMARKS]
            # Not _clean(): a remark cut right after a space must keep it, both for the length check and for
            # gluing the continuation on.
            remarks = "" if raw.strip() == _EMPTY else raw
            continuation = unused.pop(ent_num, None)
            if continuation is not None:
                remarks += continuation
                report.continued_rows.append(ent_num)
            # Trap: Remarks are cut at exactly 1,000 characters; whatever is at the end of a cut remark is a fragment.
            cut = continuation is None and len(raw) >= REMARKS_LIMIT
            if cut:
                report.truncated_rows.append(ent_num)
            if cut or _LABEL in remarks:
                yield from self._addresses(row, remarks, cut=cut)
        if report.rows == 0:
            # Trap: an empty download (the public mirror once published a 0-byte sdn.csv) must not become an
            # empty sanctions list.
            raise SourceFormatError("sdn.csv: no rows (empty file)")
        report.orphan_comments = sorted(unused, key=int)
        if report.orphan_comments:
            log.warning("sdn_comments.csv continues entries not in sdn.csv", extra={"ent_nums": report.orphan_comments})

    def _addresses(self, row: list[str], remarks: str, *, cut: bool) -> Iterator[SourceEntry | Rejection]:
        report = self.report
        ent_num = row[0]
        name = _clean(row[1]) or None
        programs = parse_programs(row[3])
        location = f"entry {ent_num}"
        # Each label owns the text up to the next label: one label is exactly one entry or rejection, whatever
        # sits between (a malformed remark cannot make one label's "address" swallow the next label).
        starts = [match.start() for match in _LABEL_RE.finditer(remarks)]
        end = len(remarks.rstrip())
        reached_cut = False
        for start, stop in zip(starts, [*starts[1:], len(remarks)], strict=False):
            match = _ADDRESS_RE.match(remarks, start + len(_LABEL), stop)
            if match is None:  # pragma: no cover - the pattern matches the empty string
                continue
            ticker, address = match["ticker"], match["address"]
            at_cut = cut and match.end() >= end
            reached_cut = reached_cut or at_cut
            # At the cut the ticker itself may be incomplete ("...Address - XB"): only a ticker followed by its
            # separator is known to be whole.
            asset = ticker if ticker and (match["sep"] or not at_cut) else None
            if address:
                report.occurrences[asset or ""] += 1
            elif at_cut:
                report.lost_at_cut.append((ent_num, asset))
            listing = Listing(
                list=self.name,
                category=self.category,
                source=self.source,
                entry_id=ent_num,
                listed_address=address,
                entry_name=name,
                programs=programs,
                listed_asset=asset,
                published_at=self._published_at,
            )
            if at_cut:
                yield Rejection(
                    self.source,
                    location,
                    address,
                    asset,
                    "truncated_remarks",
                    f"remarks are cut at {REMARKS_LIMIT} characters here, so this address is incomplete; the rest "
                    "is in sdn_comments.csv (or use the Advanced XML)",
                )
                continue
            yield self._normalize(asset, address, listing, location, ent_num)
        if starts:
            report.entries_with_addresses += 1
        if cut and not reached_cut:
            fragment = _label_fragment(remarks)
            if fragment is not None:
                if not starts:
                    report.entries_with_addresses += 1
                report.lost_at_cut.append((ent_num, None))
                yield Rejection(
                    self.source,
                    location,
                    "",
                    None,
                    "truncated_remarks",
                    f"remarks are cut at {REMARKS_LIMIT} characters inside an address label ({fragment!r}); the "
                    "address is in sdn_comments.csv (or use the Advanced XML)",
                )

    def _normalize(
        self, asset: str | None, address: str, listing: Listing, location: str, ent_num: str
    ) -> SourceEntry | Rejection:
        # Trap: the last address of a remark carries the sentence's closing period ("TFdT...Sg."). Strip exactly
        # one, only when what remains is a valid address; report it. Otherwise the address is judged as published.
        if len(address) > 1 and address.endswith("."):
            stripped = address[:-1]
            result = normalize_entry(
                asset, stripped, listing=replace(listing, listed_address=stripped), location=location
            )
            if isinstance(result, SourceEntry):
                self.report.stripped_periods.append((ent_num, asset or "", address))
                log.info(
                    "stripped a sentence period after an address",
                    extra={"entry": ent_num, "asset": asset, "address": address},
                )
                return result
        return normalize_entry(asset, address, listing=listing, location=location)


def _label_fragment(remarks: str) -> str | None:
    """The cut-off start of an address label at the end of a cut remark ("alt. Digital Currency A"), if any."""
    tail = remarks.rpartition(";")[2].strip()
    tail = tail.removeprefix("alt.").strip()
    if len(tail) >= _MIN_LABEL_FRAGMENT and _LABEL.startswith(tail):
        return tail
    return None
