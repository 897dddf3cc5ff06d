"""OpenSanctions / FollowTheMoney `CryptoWallet` entities (`entities.ftm.json`, JSON lines) as a watchlist source.

Responsibilities:

* Read an FtM entity stream (one JSON object per line: `id`, `schema`, `properties`, plus OpenSanctions' `datasets`,
  `caption`, `first_seen`/`last_seen`, ...) and turn every `publicKey` of every `CryptoWallet` into a `SourceEntry`
  through `normalize_entry`, or into a `Rejection` with a reason. Other schemata are only read to name wallet holders.
* Provenance: `entry_id` = the wallet entity id; `entry_name` = the holder's name (`holder` points at a Person /
  Organization / LegalEntity elsewhere in the file, before or after the wallet); `programs` = the wallet's and its
  holders' `topics`, then the wallet's `datasets`; `category` from those topics (see `DEFAULT_CATEGORY_BY_TOPIC`);
  `listed_asset` = the wallet's `currency` as published; `published_at` = the newest `last_seen` in the file.
* Currency: an OFAC-style ticker (`XBT`, `ETH`, `USDT`, ...) or a network name (`bitcoin`, `tron`, `TRC20`, ...). A
  wallet with no usable currency is kept under the one chain its address is valid for (re-homing), else rejected.
* Bounded memory: lines are streamed, never loaded with one `json.load`. Only wallets (a few thousand even in the
  full collection) and the holders they name are kept. Holders may come after their wallet, so the stream is read
  twice: rewound when it is seekable (files, also .bz2/.gz), else the non-wallet lines are spooled to a temporary
  file during the first pass. Entries are yielded after the second pass; malformed lines as they are met.
* A malformed line inside the file is a `Rejection` (`malformed_json`); a last line cut off in the middle (no
  final newline, not complete JSON: a truncated download) raises `SourceFormatError` before any entry is yielded,
  so a partial export never loads as if it were complete.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import IO, Any

from aml_screener.screening.addresses import UnsupportedNetwork, networks_for_asset, resolve_network
from aml_screener.screening.watchlist import Category, Listing, severity_of
from aml_screener.watchlist.errors import SourceFormatError
from aml_screener.watchlist.sources.base import Rejection, SourceEntry, iso_millis, normalize_entry

WALLET_SCHEMA = "CryptoWallet"

# FtM topic -> watchlist category. Several topics may apply (the wallet's and its holders'); the category with the
# highest severity wins, ties going to the earlier one in this table. Topics not listed here are kept in
# `programs` but do not choose the category; a wallet none of whose topics is listed gets `default_category`.
DEFAULT_CATEGORY_BY_TOPIC: Mapping[str, str] = MappingProxyType(
    {
        "sanction": Category.SANCTIONS.value,
        # Owned/controlled by or acting for a sanctioned party: blocked like the party itself (OFAC 50 % rule).
        "sanction.linked": Category.SANCTIONS.value,
        "sanction.control": Category.SANCTIONS.value,
        # Terrorist financing seizure/freeze orders (e.g. Israel's NBCTF lists) bind like a sanction.
        "crime.terror": Category.SANCTIONS.value,
        "crime.theft": Category.THEFT.value,
        "crime.cyber": Category.THEFT.value,
        "crime.fraud": Category.SCAM.value,
        "crime.fin": "crime",
        "crime.traffick": "crime",
        "crime.traffick.drug": "crime",
        "crime.traffick.human": "crime",
        "crime.boss": "crime",
        "crime.war": "crime",
        "crime": "crime",
        "wanted": "crime",
        # Designations by non-democratic states of activists and journalists: recorded, never a block.
        "sanction.counter": "counter-sanctions",
    }
)

# Dataset -> category, preferred over a topic category of equal severity (the dataset says more precisely what a
# wallet is: ransomwhere's wallets carry the generic topic crime.theft).
DEFAULT_CATEGORY_BY_DATASET: Mapping[str, str] = MappingProxyType({"ransomwhere": Category.RANSOMWARE.value})

# Currency spellings seen in FtM data that are neither a ticker nor a network name known to `addresses`.
_CURRENCY_ALIASES: Mapping[str, str] = MappingProxyType({"tether": "USDT", "usd coin": "USDC", "ether": "ETH"})

_SEVERITY_ORDER = {"low": 0, "medium": 1, "high": 2, "critical": 3}
_TOP_LEVEL_ID = re.compile(rb'"id"\s*:\s*"([^"\\]*)"')
_CHUNK = 1 << 20
_EXCERPT = 120


@dataclass(frozen=True, slots=True)
class _Party:
    """What a wallet's holder contributes: a name and its topics."""

    name: str | None
    topics: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Wallet:
    id: str
    public_keys: tuple[str, ...]
    currencies: tuple[str, ...]
    holders: tuple[str, ...]  # holder entity ids, resolved in the second pass
    nested_holders: tuple[_Party, ...]  # holders given inline (nested export formats)
    topics: tuple[str, ...]
    datasets: tuple[str, ...]
    own_names: tuple[str, ...]  # the wallet's own name/alias (e.g. a ransomware family): fallback entry name
    exchange: str | None  # managingExchange (or the older misspelling mangingExchange)
    account_ids: tuple[str, ...]


class LineReader:
    """Lines of a binary stream without their b"\\n", read with `read()` only (works on any reader).

    `at_tail` is true while the last line is being handled and it did not end with a newline: the mark of a
    download cut short, when that line is not complete JSON.
    """

    def __init__(self, stream: IO[bytes], chunk: int = _CHUNK) -> None:
        self._stream = stream
        self._chunk = chunk
        self.at_tail = False

    def __iter__(self) -> Iterator[bytes]:
        pending: list[bytes] = []
        while data := self._stream.read(self._chunk):
            parts = data.split(b"\n")
            if len(parts) == 1:
                pending.append(data)
                continue
            pending.append(parts[0])
            yield b"".join(pending)
            yield from parts[1:-1]
            pending = [parts[-1]]
        tail = b"".join(pending)
        if tail:
            self.at_tail = True
            yield tail


def read_lines(stream: IO[bytes], chunk: int = _CHUNK) -> Iterator[bytes]:
    """Lines of a binary stream without their b"\\n" (see `LineReader`)."""
    return iter(LineReader(stream, chunk))


def _values(properties: Mapping[str, Any], name: str, *, strip: bool = True) -> tuple[str, ...]:
    """The string values of a multi-valued FtM property (a lone string is accepted as one value)."""
    raw = properties.get(name)
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        return ()
    values = (value.strip() if strip else value for value in raw if isinstance(value, str))
    return tuple(value for value in values if value.strip())


def _strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(item for item in value if isinstance(item, str) and item)


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def _party_of(entity: Mapping[str, Any]) -> _Party:
    properties = entity.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    caption = entity.get("caption")
    names = _values(properties, "name") or _values(properties, "alias")
    if isinstance(caption, str) and caption.strip() and caption != entity.get("id"):
        name: str | None = caption.strip()
    else:
        name = names[0] if names else None
    return _Party(name, _values(properties, "topics"))


def _excerpt(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace").strip()
    return text if len(text) <= _EXCERPT else text[:_EXCERPT] + "..."


def _iso_to_millis(value: str) -> int | None:
    try:
        return iso_millis(value)
    except ValueError:
        return None


def chain_of_currency(currency: str) -> tuple[str, str | None]:
    """(asset, network) to validate a wallet's address with: a known ticker -> (TICKER, None); a network name
    -> (currency, network); anything else -> (currency, None), which `normalize_entry` reports as an unsupported
    asset unless the address is valid for another chain (then it is re-homed)."""
    spelled = currency.strip()
    ticker = _CURRENCY_ALIASES.get(spelled.lower(), spelled)
    if networks_for_asset(ticker):
        return ticker.upper(), None
    try:
        return spelled, resolve_network(spelled).name
    except UnsupportedNetwork:
        return spelled, None


class OpenSanctionsSource:
    """`CryptoWallet` entities of an OpenSanctions `entities.ftm.json` export."""

    def __init__(
        self,
        list_name: str = "opensanctions",
        category_by_topic: Mapping[str, str] | None = None,
        default_category: str = Category.SANCTIONS.value,
        *,
        category_by_dataset: Mapping[str, str] | None = None,
        source: str = "OpenSanctions",
        published_at: int | None = None,
    ) -> None:
        self.name = list_name
        self.category_by_topic = dict(DEFAULT_CATEGORY_BY_TOPIC if category_by_topic is None else category_by_topic)
        self.category_by_dataset = dict(
            DEFAULT_CATEGORY_BY_DATASET if category_by_dataset is None else category_by_dataset
        )
        self.default_category = default_category
        self.source = source
        self._given_published_at = published_at
        self._latest_seen: str | None = None

    @property
    def published_at(self) -> int | None:
        """The publication time given to the constructor, else the newest `last_seen` of the file (known after
        parsing): an FtM export does not state its own export time, `last_seen` is when the crawler last saw an
        entity in its source."""
        if self._given_published_at is not None:
            return self._given_published_at
        return _iso_to_millis(self._latest_seen) if self._latest_seen else None

    # --- parsing ---------------------------------------------------------------------------------------------

    def parse(self, stream: IO[bytes]) -> Iterator[SourceEntry | Rejection]:
        self._latest_seen = None
        start = _rewind_point(stream)
        spool = None if start is not None else tempfile.TemporaryFile()  # noqa: SIM115 - closed below
        try:
            wallets: list[_Wallet] = []
            lines = LineReader(stream)
            for number, raw in enumerate(lines, start=1):
                if not raw.strip():
                    continue
                entity = self._decode(raw, number)
                if isinstance(entity, Rejection):
                    if lines.at_tail and entity.reason == "malformed_json":
                        # Entries are only yielded after the whole file: a cut-off export loads nothing.
                        raise SourceFormatError(f"line {number}: the file ends in the middle of an entity (cut off?)")
                    yield entity
                    continue
                self._see(entity)
                if entity["schema"] == WALLET_SCHEMA:
                    wallets.append(self._wallet(entity))
                elif spool is not None:
                    spool.write(raw + b"\n")
            holder_ids = {holder for wallet in wallets for holder in wallet.holders}
            parties: dict[str, _Party] = {}
            if holder_ids:
                if spool is not None:
                    spool.seek(0)
                    parties = self._holders(read_lines(spool), holder_ids)
                else:
                    stream.seek(start or 0)
                    parties = self._holders(read_lines(stream), holder_ids)
            published_at = self.published_at
            for wallet in wallets:
                yield from self._entries(wallet, parties, published_at)
        finally:
            if spool is not None:
                spool.close()

    def _decode(self, raw: bytes, number: int) -> dict[str, Any] | Rejection:
        """The entity of one line, or a Rejection saying why the line is not an FtM entity."""
        try:
            entity = json.loads(raw)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            return Rejection(self.source, f"line {number}", _excerpt(raw), None, "malformed_json", str(exc))
        if (
            not isinstance(entity, dict)
            or not isinstance(entity.get("id"), str)
            or not isinstance(entity.get("schema"), str)
            or not isinstance(entity.get("properties", {}), dict)
        ):
            detail = "not an FtM entity: expected an object with string 'id' and 'schema' and object 'properties'"
            return Rejection(self.source, f"line {number}", _excerpt(raw), None, "malformed_entity", detail)
        return entity

    def _see(self, entity: Mapping[str, Any]) -> None:
        seen = entity.get("last_seen")
        if isinstance(seen, str) and (self._latest_seen is None or seen > self._latest_seen):
            self._latest_seen = seen

    def _wallet(self, entity: Mapping[str, Any]) -> _Wallet:
        properties: Mapping[str, Any] = entity.get("properties") or {}
        holder_values = properties.get("holder")
        holder_values = holder_values if isinstance(holder_values, list) else [holder_values]
        holders = tuple(value.strip() for value in holder_values if isinstance(value, str) and value.strip())
        nested = tuple(_party_of(value) for value in holder_values if isinstance(value, dict))
        exchanges = _values(properties, "managingExchange") or _values(properties, "mangingExchange")
        return _Wallet(
            id=entity["id"],
            # Never repaired: a key with stray whitespace is rejected by normalize, not trimmed.
            public_keys=_unique(_values(properties, "publicKey", strip=False)),
            currencies=_unique(_values(properties, "currency") or _values(properties, "currencySymbol")),
            holders=holders,
            nested_holders=nested,
            topics=_values(properties, "topics"),
            datasets=_strings(entity.get("datasets")),
            own_names=_values(properties, "name") + _values(properties, "alias"),
            exchange=exchanges[0] if exchanges else None,
            account_ids=_values(properties, "accountId"),
        )

    @staticmethod
    def _holders(lines: Iterator[bytes], wanted: set[str]) -> dict[str, _Party]:
        parties: dict[str, _Party] = {}
        for raw in lines:
            quick = _TOP_LEVEL_ID.search(raw)
            if quick is not None and quick.group(1).decode("utf-8", "replace") not in wanted:
                continue  # cheap pre-filter: most lines are not holders; anything unclear is parsed
            try:
                entity = json.loads(raw)
            except ValueError:
                continue  # reported in the first pass
            if isinstance(entity, dict) and entity.get("id") in wanted:
                parties[entity["id"]] = _party_of(entity)
        return parties

    # --- entries ---------------------------------------------------------------------------------------------

    def category(self, topics: Iterable[str], datasets: Iterable[str]) -> str:
        """The most severe category the datasets and topics map to; `default_category` if none maps.

        Ties go to a dataset category first, then to the topic listed first in `category_by_topic`."""
        present = set(topics)
        candidates = [self.category_by_dataset[d] for d in datasets if d in self.category_by_dataset]
        candidates += [category for topic, category in self.category_by_topic.items() if topic in present]
        if not candidates:
            return self.default_category
        return max(candidates, key=lambda category: _SEVERITY_ORDER[severity_of(category).value])

    def _entries(
        self, wallet: _Wallet, parties: Mapping[str, _Party], published_at: int | None
    ) -> Iterator[SourceEntry | Rejection]:
        holders = [parties[h] for h in wallet.holders if h in parties] + list(wallet.nested_holders)
        names = _unique(p.name for p in holders if p.name)
        entry_name = "; ".join(names) if names else (wallet.own_names[0] if wallet.own_names else None)
        topics = _unique([*wallet.topics, *(t for p in holders for t in p.topics)])
        programs = _unique([*topics, *wallet.datasets])
        category = self.category(topics, wallet.datasets)
        location = f"entity {wallet.id}"
        if not wallet.public_keys:
            shown = wallet.account_ids[0] if wallet.account_ids else ""
            where = f" at {wallet.exchange}" if wallet.exchange else ""
            detail = f"the wallet has no publicKey (an exchange account{where}, not an on-chain address)"
            currency = wallet.currencies[0] if wallet.currencies else None
            yield Rejection(self.source, location, shown, currency, "no_public_key", detail)
            return
        for address in wallet.public_keys:

            def listing(asset: str | None, address: str = address) -> Listing:
                return Listing(
                    list=self.name,
                    category=category,
                    source=self.source,
                    entry_id=wallet.id,
                    listed_address=address,
                    entry_name=entry_name,
                    programs=programs,
                    listed_asset=asset,
                    published_at=published_at,
                )

            yield self._normalize(address, wallet, listing, location)

    def _normalize(
        self, address: str, wallet: _Wallet, listing: Callable[[str | None], Listing], location: str
    ) -> SourceEntry | Rejection:
        """One entry per address: the first currency it is valid for; else re-homed; else the first rejection."""
        results: list[SourceEntry | Rejection] = []
        for currency in wallet.currencies or (None,):
            if currency is None:
                result = normalize_entry(None, address, listing=listing(None), location=location)
            else:
                asset, network = chain_of_currency(currency)
                result = normalize_entry(asset, address, listing=listing(currency), location=location, network=network)
            if isinstance(result, SourceEntry) and result.rehomed_from is None:
                return result
            results.append(result)
        for result in results:
            if isinstance(result, SourceEntry):
                return result
        first = results[0]
        assert isinstance(first, Rejection)
        if not wallet.currencies:
            detail = "the wallet names no currency, and the address is not valid on any supported network"
            return Rejection(first.source, location, address, None, "unrecognized_address", detail)
        if wallet.exchange:
            detail = f"{first.detail} (managed by {wallet.exchange}: possibly an exchange account id)"
            return Rejection(first.source, location, address, first.asset, first.reason, detail)
        return first


def _rewind_point(stream: IO[bytes]) -> int | None:
    """The position to rewind to for the second pass, or None when the stream cannot be rewound."""
    try:
        if not stream.seekable():
            return None
        return stream.tell()
    except (AttributeError, OSError, ValueError):
        return None


__all__ = [
    "DEFAULT_CATEGORY_BY_DATASET",
    "DEFAULT_CATEGORY_BY_TOPIC",
    "WALLET_SCHEMA",
    "LineReader",
    "OpenSanctionsSource",
    "chain_of_currency",
    "read_lines",
]
