"""What every watchlist source produces, and the one normalization step they all share.

A source turns a file (or URL contents) into a stream of `SourceEntry` (one normalized listing: the lookup key
plus provenance) and `Rejection` (an address it could not use, with a reason). Every address goes through
`normalize_entry`, which validates it for the networks its listed asset implies and, when it is valid for none
of them but valid for another chain (real data has a TRON address filed under XBT), keeps it under the chain it
is valid for and says so. Nothing is dropped silently: the caller counts rejections per reason.
"""

from __future__ import annotations

import bz2
import gzip
import io
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any, Protocol, cast

from aml_screener.screening.addresses import (
    InvalidAddress,
    NormalizedAddress,
    UnsupportedNetwork,
    known_networks,
    normalize,
    normalize_key,
    normalize_listed_key,
)
from aml_screener.screening.watchlist import Listing


@dataclass(frozen=True, slots=True)
class SourceEntry:
    """One normalized listing ready for the watchlist."""

    key: str  # normalized lookup key, e.g. "evm:0x098b..."
    chain: str  # address family of the key, e.g. "evm", "btc", "trx"
    listing: Listing  # provenance: list, category, source, entry id/name, programs, listed asset/address, published
    rehomed_from: str | None = None  # the asset it was listed under, when it is valid only for another chain


@dataclass(frozen=True, slots=True)
class Rejection:
    """An address (or address-like fragment) a source published that cannot be used, and why."""

    source: str
    location: str  # where in the source: "line 12", "entry 27307", "row 4"
    address: str
    asset: str | None
    reason: str  # stable code: bad_checksum, bad_eip55_checksum, truncated, unsupported_asset, ...
    detail: str


@dataclass
class ParseReport:
    """Counts of what a parse produced (for summaries and version metadata)."""

    entries: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    per_asset: Counter[str] = field(default_factory=Counter)
    rehomed: int = 0
    published_at: int | None = None  # ms since the epoch, as the source states it

    def count(self, item: SourceEntry | Rejection) -> None:
        if isinstance(item, SourceEntry):
            self.entries += 1
            self.per_asset[item.listing.listed_asset or "?"] += 1
            if item.rehomed_from:
                self.rehomed += 1
        else:
            self.rejected[item.reason] += 1


class Source(Protocol):
    """The one protocol of a list parser: the bytes of one file in (decompressed), entries and rejections out, in
    the order the file lists them. Everything else a parser needs (list name, category, a second file such as
    OFAC's sdn_comments.csv) is given to its constructor; `sources/registry.py` builds one per format and file."""

    name: str  # the list name entries are loaded under, e.g. "ofac-sdn"

    def parse(self, stream: IO[bytes]) -> Iterator[SourceEntry | Rejection]: ...

    @property
    def published_at(self) -> int | None:
        """Publication time the source stated (known after parsing), ms since the epoch."""
        ...


class ReadTap(io.RawIOBase):
    """A read-only view of a binary stream that hands every chunk read through it to `on_read` (a progress bar,
    a SHA-256 of the content), so one pass serves the parse and the count or checksum.

    Not seekable, on purpose: a parser that rewinds to read twice (OpenSanctions) then spools instead of seeking
    the stream underneath, which would count the bytes twice or hash a mix.
    """

    def __init__(self, stream: IO[bytes], on_read: Callable[[bytes], object]) -> None:
        super().__init__()
        self._stream = stream
        self._on_read = on_read
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        data = self._stream.read(-1 if size is None else size)
        if data:
            self.bytes_read += len(data)
            self._on_read(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def drain(self, chunk: int = 1 << 20) -> None:
        """Read what the parser left (it may stop before EOF, e.g. after the closing tag), for the checksum."""
        while self.read(chunk):
            pass


def decompressing(stream: IO[bytes], name: str) -> IO[bytes]:
    """The content of a .bz2 or .gz stream, by its file name's suffix; any other stream as it is."""
    if name.endswith(".bz2"):
        return cast("IO[bytes]", bz2.BZ2File(stream))
    if name.endswith(".gz"):
        return cast("IO[bytes]", gzip.GzipFile(fileobj=stream))
    return stream


def iso_millis(value: str) -> int:
    """An ISO 8601 date or time (``2024-09-27``, ``2024-09-27T14:03:00Z``) as ms since the epoch, UTC when it has no
    offset. Raises ValueError when it is not one."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


# Networks tried, in this order, when an address is valid for none of its listed asset's networks: the most
# common chains first, so an ambiguous string lands where it is most likely meant.
_REHOME_ORDER = ("ethereum", "bitcoin", "tron", "litecoin", "bitcoin-cash", "dogecoin", "dash", "zcash")


# Never re-homed to: formats without a checksum (any base58 string of 32 bytes is a "valid" Solana address), so
# a corrupted or mislabelled entry would silently become a Solana listing nobody meant.
_NEVER_REHOME = frozenset({"solana"})


def rehome_networks() -> tuple[str, ...]:
    rest = tuple(n for n in known_networks() if n not in _REHOME_ORDER and n not in _NEVER_REHOME)
    return tuple(network for network in _REHOME_ORDER if network in known_networks()) + rest


def find_network(address: str) -> tuple[str, NormalizedAddress] | None:
    """The first network (in re-homing order) this address is valid for, or None."""
    for network in rehome_networks():
        try:
            return network, normalize(network, address)
        except (InvalidAddress, UnsupportedNetwork):
            continue
    return None


def normalize_entry(
    asset: str | None,
    address: str,
    *,
    listing: Listing,
    location: str,
    network: str | None = None,
) -> SourceEntry | Rejection:
    """Validate and normalize one published address. `network` (when the source names one) wins over `asset`.

    Valid under the asset's networks -> entry. Otherwise, if valid for another chain -> entry under that chain,
    `rehomed_from=asset`. Otherwise -> Rejection with the most specific reason.
    """
    try:
        key = normalize_key(network, address) if network is not None else normalize_listed_key(asset or "", address)
        return SourceEntry(key, key.partition(":")[0], listing)
    except UnsupportedNetwork as exc:
        reason, detail = "unsupported_asset", f"no network known for {exc.network!r}"
    except InvalidAddress as exc:
        reason, detail = exc.reason, str(exc)
    found = find_network(address)
    if found is not None:
        _other, normalized = found
        return SourceEntry(normalized.key, normalized.family.value, listing, rehomed_from=asset or network)
    return Rejection(listing.source, location, address, asset, reason, detail)


def normalize_unlabelled(address: str, *, listing: Listing, location: str) -> SourceEntry | Rejection:
    """Normalize an address published without an asset: kept when exactly one chain family's format accepts it.

    A plain EVM list needs no asset (``0x`` + 40 hex digits is one key on every EVM chain), nor does anything else
    whose format names its chain (TRON, bech32 of one chain, CashAddr, XRP, Monero, Stellar, Zcash). Strings
    several families accept (a legacy ``1...`` is Bitcoin, Bitcoin Cash and Bitcoin SV alike; ``D...`` Dogecoin
    and Verge) are rejected as ``ambiguous_network``, and Solana is never guessed (no checksum: see
    ``_NEVER_REHOME``).
    """
    if address[:2] == "0x" and len(address) == 42:  # the common case: no other format starts so
        try:
            key = normalize_key("ethereum", address)
        except InvalidAddress as exc:
            return Rejection(listing.source, location, address, None, exc.reason, str(exc))
        return SourceEntry(key, key.partition(":")[0], listing)
    accepted: dict[str, NormalizedAddress] = {}
    best: InvalidAddress | None = None
    for network in rehome_networks():
        try:
            normalized = normalize(network, address)
        except InvalidAddress as exc:
            if best is None or exc.specificity > best.specificity:
                best = exc
            continue
        accepted.setdefault(normalized.family.value, normalized)
    if len(accepted) == 1:
        (normalized,) = accepted.values()
        return SourceEntry(normalized.key, normalized.family.value, listing)
    if accepted:
        families = ", ".join(sorted(accepted))
        detail = f"valid on several chains ({families}) and listed without an asset: give --asset (or 'asset')"
        return Rejection(listing.source, location, address, None, "ambiguous_network", detail)
    assert best is not None  # every network rejected it
    return Rejection(listing.source, location, address, None, best.reason, f"no asset given, and {best}")


def collect(items: Iterable[SourceEntry | Rejection]) -> tuple[list[SourceEntry], list[Rejection], ParseReport]:
    """Materialize a (small) parse, e.g. for tests and the inspection command's summary."""
    entries: list[SourceEntry] = []
    rejected: list[Rejection] = []
    report = ParseReport()
    for item in items:
        report.count(item)
        (entries if isinstance(item, SourceEntry) else rejected).append(item)  # type: ignore[arg-type]
    return entries, rejected, report
