"""Deterministic synthetic event streams (withdrawals and deposits) with a known answer per event.

Given the listings of a watchlist and a seed, produces WithdrawalRequested records across several networks and,
for a configurable share, DepositReceived records (one to four source addresses; a flagged deposit has one listed
source among clean ones, an unscreenable one a corrupted source). For withdrawals,
a configurable share goes to listed addresses (EVM ones under random case variants — lowercase, upper-case
hex, EIP-55 — and on any EVM network; every other spelling their chain allows) or, for a fifth of those, to an
address related to a listed one (the TRON twin of a listed EVM account, the P2WPKH or Bitcoin Cash twin of a listed
Bitcoin key hash: screening/related.py), a share has invalid addresses or unknown networks (must be decided
UNSCREENABLE), a share is malformed bytes (must be dead-lettered), the rest goes to random valid addresses
(must be CLEAR). Each generated event carries its expected outcome, so tests and the demo can check the
screener's output exactly: no misses, no false hits.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

from aml_screener.devstack.address_factory import case_variants, corrupt, random_address
from aml_screener.screener.codec import HEADER, EventEncoder
from aml_screener.screening.addresses import (
    ChainFamily,
    InvalidAddress,
    network_of_key,
    networks_for_asset,
    normalize,
    normalize_listed,
    resolve_network,
)
from aml_screener.screening.records import Direction
from aml_screener.screening.related import ListingRelations, Relation, listing_keys, screening_keys
from aml_screener.screening.watchlist import Listing


class Expected(StrEnum):
    CLEAR = "CLEAR"
    FLAGGED = "FLAGGED"
    UNSCREENABLE = "UNSCREENABLE"
    DEAD_LETTER = "DEAD_LETTER"


@dataclass(frozen=True, slots=True)
class GeneratedEvent:
    event_id: str
    key: bytes
    value: bytes
    expected: Expected
    network: str
    asset: str
    address: str  # a withdrawal's destination; a deposit's source that decides (the listed one, the corrupted one)
    address_key: str | None  # normalized key when the address is valid
    dead_letter_reason: str | None = None
    direction: Direction = Direction.WITHDRAWAL
    sources: tuple[str, ...] = ()  # a deposit's source addresses, as sent


# (network, assets sent on it) for clean traffic; weights roughly follow exchange withdrawal mixes
# (USDT on TRON dominates in East Asia, then Ethereum tokens and Bitcoin).
_CLEAN_TRAFFIC: tuple[tuple[str, tuple[str, ...], int], ...] = (
    ("tron", ("USDT", "TRX"), 35),
    ("ethereum", ("ETH", "USDT", "USDC"), 25),
    ("bitcoin", ("BTC",), 15),
    ("bsc", ("BNB", "USDT"), 10),
    ("polygon", ("POL", "USDT"), 5),
    ("arbitrum", ("ETH", "USDC"), 4),
    ("litecoin", ("LTC",), 4),
    ("dogecoin", ("DOGE",), 2),
)
_EVM_NETWORKS = ("ethereum", "bsc", "polygon", "arbitrum", "optimism", "base")
_ASSET_FOR_NETWORK = {network: assets for network, assets, _ in _CLEAN_TRAFFIC}
_EXCHANGES = ("bithumb-kr", "upbit-kr", "coinone-kr", "korbit-kr")
_MALFORMED_KINDS = ("truncated", "bad_magic", "unknown_schema_id", "garbage")


@dataclass(frozen=True, slots=True)
class ListedTarget:
    network: str
    address: str
    key: str
    family: ChainFamily


def listed_targets(listings: Sequence[tuple[str, Listing]]) -> list[ListedTarget]:
    """Where each listed address can be sent: its network (every EVM network for EVM keys)."""
    targets = []
    for key, listing in listings:
        normalized = normalize_listed(listing.listed_asset or "", listing.listed_address)
        networks: tuple[str, ...] = _EVM_NETWORKS if normalized.family is ChainFamily.EVM else ()
        if not networks:
            networks = tuple(
                network for network, *_ in _CLEAN_TRAFFIC if _valid_on(network, listing.listed_address, key)
            ) or (_first_valid_network(listing),)
        for network in networks:
            targets.append(ListedTarget(network, listing.listed_address, key, normalized.family))
    return targets


def related_targets(targets: Sequence[ListedTarget]) -> list[ListedTarget]:
    """Addresses related to listed ones (a related match each), one target per destination key, on the network of
    its family and spelled as its key. Unified-address receivers are left out: they are direct matches."""
    seen = {target.key for target in targets}
    related: list[ListedTarget] = []
    for key in dict.fromkeys(target.key for target in targets):
        for item in (*screening_keys(key), *listing_keys(key, ListingRelations())):
            if item.relation is Relation.UNIFIED_RECEIVER or item.key in seen:
                continue
            seen.add(item.key)
            network = network_of_key(item.key)
            family = resolve_network(network).family
            related.append(ListedTarget(network, item.key.partition(":")[2], item.key, family))
    return related


def _valid_on(network: str, address: str, key: str) -> bool:
    try:
        return normalize(network, address).key == key
    except (InvalidAddress, ValueError):
        return False


def _first_valid_network(listing: Listing) -> str:
    for network in networks_for_asset(listing.listed_asset or ""):
        try:
            normalize(network, listing.listed_address)
        except (InvalidAddress, ValueError):
            continue
        return network
    raise ValueError(f"listed address {listing.listed_address!r} is valid on no network")


# Source addresses per deposit on UTXO chains (a transaction spends one or more inputs); account chains have one.
_UTXO_NETWORKS = frozenset({"bitcoin", "litecoin", "dogecoin", "bitcoin-cash", "zcash"})
_MAX_SOURCES = 4


class EventGenerator:
    """Withdrawals, and deposits for `deposit_share` of the events (then `deposit_encoder` encodes them): the same
    shares of hits, unscreenable and malformed events in both."""

    def __init__(
        self,
        listings: Sequence[tuple[str, Listing]],
        encoder: EventEncoder,
        *,
        seed: int = 7,
        hit_share: float = 0.02,
        invalid_share: float = 0.005,
        malformed_share: float = 0.002,
        clean_pool: int = 100_000,
        related_share: float = 0.2,
        deposit_share: float = 0.0,
        deposit_encoder: EventEncoder | None = None,
    ) -> None:
        if not 0 <= hit_share + invalid_share + malformed_share <= 1:
            raise ValueError("shares must add up to at most 1")
        if not 0 <= deposit_share <= 1:
            raise ValueError("deposit_share must be between 0 and 1")
        if deposit_share and deposit_encoder is None:
            raise ValueError("deposit_share > 0 needs a deposit_encoder (DepositReceived)")
        self.rng = random.Random(seed)
        self.encoder = encoder
        self.deposit_encoder = deposit_encoder
        self.deposit_share = deposit_share
        self.targets = listed_targets(listings)
        if hit_share and not self.targets:
            raise ValueError("hit_share > 0 needs at least one listed address")
        self.related = related_targets(self.targets)
        self.related_share = related_share if self.related else 0.0
        self.hit_share = hit_share
        self.invalid_share = invalid_share
        self.malformed_share = malformed_share
        self._listed_keys = {target.key for target in (*self.targets, *self.related)}
        networks = [network for network, _, _ in _CLEAN_TRAFFIC]
        weights = [weight for _, _, weight in _CLEAN_TRAFFIC]
        self._pool: list[tuple[str, str, str]] = []
        while len(self._pool) < clean_pool:
            network = self.rng.choices(networks, weights)[0]
            address = random_address(network, self.rng)
            key = normalize(network, address).key
            if key not in self._listed_keys:
                self._pool.append((network, address, key))
        self._pool_by_network: dict[str, list[tuple[str, str, str]]] = {}
        for item in self._pool:
            self._pool_by_network.setdefault(item[0], []).append(item)

    def _event_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _record(self, event_id: str, network: str, asset: str, address: str, requested_at_ms: int) -> dict[str, Any]:
        rng = self.rng
        amount = Decimal(rng.randrange(1, 10_000_000)) / Decimal(10_000)
        return {
            "event_id": event_id,
            "exchange_id": rng.choice(_EXCHANGES),
            "account_id": f"acct-{rng.randrange(10**8):08d}",
            "asset": asset,
            "network": network,
            "destination_address": address,
            "destination_tag": None,
            "amount": amount,
            "usd_value": (amount * Decimal(rng.choice((1, 1, 1, 60_000, 3_000)))).quantize(Decimal("0.01")),
            "requested_at": requested_at_ms,
            "metadata": {"channel": rng.choice(("app", "web", "api"))},
        }

    def _deposit_record(
        self, event_id: str, network: str, asset: str, sources: Sequence[str], observed_at_ms: int
    ) -> dict[str, Any]:
        record = self._record(event_id, network, asset, sources[0], observed_at_ms)
        rng = self.rng
        del record["destination_address"], record["destination_tag"], record["requested_at"]
        return record | {
            "tx_hash": f"{rng.getrandbits(256):064x}",
            "output_index": rng.randrange(4),
            "receiving_address": rng.choice(self._pool_by_network.get(network) or self._pool)[1],
            "source_addresses": list(sources),
            "observed_at": observed_at_ms,
            "confirmations": rng.randrange(1, 64),
        }

    def _encode(
        self, direction: Direction, event_id: str, *, network: str, asset: str, addresses: Sequence[str], now_ms: int
    ) -> bytes:
        if direction is Direction.DEPOSIT:
            assert self.deposit_encoder is not None
            return self.deposit_encoder.encode(self._deposit_record(event_id, network, asset, addresses, now_ms))
        return self.encoder.encode(self._record(event_id, network, asset, addresses[0], now_ms))

    def _with_clean_sources(self, direction: Direction, network: str, address: str) -> tuple[str, ...]:
        """A withdrawal's one destination; a deposit's sources: `address` among up to three clean ones of its
        network (account chains: `address` alone)."""
        if direction is Direction.WITHDRAWAL or network not in _UTXO_NETWORKS:
            return (address,)
        rng = self.rng
        pool = self._pool_by_network.get(network) or []
        others = [rng.choice(pool)[1] for _ in range(rng.randrange(_MAX_SOURCES))] if pool else []
        others.insert(rng.randrange(len(others) + 1), address)
        return tuple(others)

    def event(self, now_ms: int | None = None) -> GeneratedEvent:
        rng = self.rng
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        event_id = self._event_id()
        direction = (
            Direction.DEPOSIT if self.deposit_share and rng.random() < self.deposit_share else Direction.WITHDRAWAL
        )
        if direction is Direction.DEPOSIT:
            event_id = f"dep-{event_id}"
        roll = rng.random()
        if roll < self.malformed_share:
            return self._malformed(direction, event_id, now_ms)
        roll -= self.malformed_share
        if roll < self.invalid_share:
            return self._unscreenable(direction, event_id, now_ms)
        roll -= self.invalid_share
        if roll < self.hit_share:
            related = rng.random() < self.related_share
            target = rng.choice(self.related if related else self.targets)
            spelling = rng.choice(case_variants(target.network, target.address))
            asset = rng.choice(_ASSET_FOR_NETWORK.get(target.network, ("USDT",)))
            return self._generated(
                direction,
                event_id,
                expected=Expected.FLAGGED,
                network=target.network,
                asset=asset,
                address=spelling,
                key=target.key,
                now_ms=now_ms,
            )
        network, address, key = rng.choice(self._pool)
        asset = rng.choice(_ASSET_FOR_NETWORK[network])
        return self._generated(
            direction,
            event_id,
            expected=Expected.CLEAR,
            network=network,
            asset=asset,
            address=address,
            key=key,
            now_ms=now_ms,
        )

    def _generated(
        self,
        direction: Direction,
        event_id: str,
        *,
        expected: Expected,
        network: str,
        asset: str,
        address: str,
        key: str | None,
        now_ms: int,
    ) -> GeneratedEvent:
        sources = self._with_clean_sources(direction, network, address)
        value = self._encode(direction, event_id, network=network, asset=asset, addresses=sources, now_ms=now_ms)
        return GeneratedEvent(
            event_id,
            event_id.encode(),
            value,
            expected,
            network,
            asset,
            address,
            key,
            direction=direction,
            sources=sources if direction is Direction.DEPOSIT else (),
        )

    def _unscreenable(self, direction: Direction, event_id: str, now_ms: int) -> GeneratedEvent:
        rng = self.rng
        network, address, _ = rng.choice(self._pool)
        if rng.random() < 0.3:
            network = rng.choice(("dogechain-x", "solana-test", "unknownnet"))
        else:
            address = corrupt(address, rng)
        return self._generated(
            direction,
            event_id,
            expected=Expected.UNSCREENABLE,
            network=network,
            asset="USDT",
            address=address,
            key=None,
            now_ms=now_ms,
        )

    def _malformed(self, direction: Direction, event_id: str, now_ms: int) -> GeneratedEvent:
        rng = self.rng
        network, address, _ = rng.choice(self._pool)
        good = self._encode(direction, event_id, network=network, asset="USDT", addresses=(address,), now_ms=now_ms)
        kind = rng.choice(_MALFORMED_KINDS)
        if kind == "truncated":
            value = good[: rng.randrange(HEADER.size + 1, len(good) - 1)]
        elif kind == "bad_magic":
            value = b"\x01" + good[1:]
        elif kind == "unknown_schema_id":
            value = HEADER.pack(0, 999_999) + good[HEADER.size :]
        else:
            value = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 64)))
        return GeneratedEvent(
            event_id,
            event_id.encode(),
            value,
            Expected.DEAD_LETTER,
            network,
            "USDT",
            address,
            None,
            kind,
            direction=direction,
            sources=(address,) if direction is Direction.DEPOSIT else (),
        )

    def deposit_from(
        self,
        sources: Sequence[str],
        *,
        network: str,
        asset: str,
        expected: Expected,
        address_key: str | None = None,
        event_id: str | None = None,
        now_ms: int | None = None,
    ) -> GeneratedEvent:
        """One deposit from exactly these source addresses (e.g. the demo's deposit from a Lazarus address)."""
        if self.deposit_encoder is None:
            raise ValueError("deposits need a deposit_encoder (DepositReceived)")
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        event_id = event_id or f"dep-{self._event_id()}"
        value = self._encode(
            Direction.DEPOSIT, event_id, network=network, asset=asset, addresses=sources, now_ms=now_ms
        )
        return GeneratedEvent(
            event_id,
            event_id.encode(),
            value,
            expected,
            network,
            asset,
            sources[0],
            address_key,
            direction=Direction.DEPOSIT,
            sources=tuple(sources),
        )

    def stream(self, count: int) -> Iterator[GeneratedEvent]:
        for _ in range(count):
            yield self.event()
