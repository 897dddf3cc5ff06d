"""Flagged events as the screener writes them, for the reporting tests: built as raw Avro records, framed with the
catalog's current WithdrawalFlagged / DepositFlagged schema (RecordEncoder, like the pipeline), and read back with
FramedReader (like the reporter). The action is set here: until the action policy fills it in, the screener's is
null."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from aml_screener.screener.codec import FramedReader, RecordEncoder, decimal_to_bytes
from aml_screener.screener.schemas import DEPOSIT_FLAGGED, WITHDRAWAL_FLAGGED
from tests.pipeline_support import CATALOG, REPOSITORY

LAZARUS = "0x098B716B8Aaf21512996dC57EB0615e2383E2f96"  # OFAC SDN 27307, Lazarus Group (DPRK3)
GARANTEX_BTC = "bc1qd7ajh9lnhq4kr4wv2v5v4nd8ywqjfnn8dm7y8l"  # stands for a listed Bitcoin address
HACK_ETH = "0x47666fab8bd0ac7003bce3f5c3585383f09486e2"  # stands for a hack-proceeds address (theft)
CLEAN_BTC = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"
CUSTOMER_DEPOSIT_ADDRESS = "bc1q9d4ywgfnd8h43da5tpcxcn6ajv590cg6d3tg6axemvljvt2k76zs50tv4q"

WITHDRAWAL_SCHEMA = CATALOG.current(WITHDRAWAL_FLAGGED)
DEPOSIT_SCHEMA = CATALOG.current(DEPOSIT_FLAGGED)
_WITHDRAWAL_ENCODER = RecordEncoder(WITHDRAWAL_SCHEMA.schema, WITHDRAWAL_SCHEMA.schema_id)
_DEPOSIT_ENCODER = RecordEncoder(DEPOSIT_SCHEMA.schema, DEPOSIT_SCHEMA.schema_id)
READER = FramedReader(REPOSITORY)
PUBLISHED = datetime(2026, 11, 28, 15, 0, tzinfo=UTC)
DECIDED = datetime(2026, 12, 2, 14, 30, tzinfo=UTC)  # a Wednesday; due Wednesday 16 December 2026


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _us(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


def match(
    address: str = LAZARUS,
    *,
    list_name: str = "ofac-sdn",
    category: str = "sanctions",
    entry_id: str = "27307",
    name: str | None = "Lazarus Group",
    programs: Sequence[str] = ("DPRK3",),
    asset: str | None = "ETH",
    match_type: str = "direct",
    relation: str | None = None,
) -> dict[str, Any]:
    """A raw WatchlistMatch (v2)."""
    return {
        "list": list_name,
        "category": category,
        "source": "sdn_advanced.xml",
        "entry_id": entry_id,
        "entry_name": name,
        "programs": list(programs),
        "listed_asset": asset,
        "listed_address": address,
        "published_at": _ms(PUBLISHED),
        "match_type": match_type,
        "relation": relation,
        "matched_key": f"evm:{address.lower()}",
        "listed_key": f"evm:{address.lower()}",
    }


def theft_match(address: str = HACK_ETH) -> dict[str, Any]:
    return match(
        address, list_name="hacks", category="theft", entry_id="bybit-2025", name="Bybit hack", programs=(), asset=None
    )


def _decision(
    event_id: str, watchlist_version: str, action: str | None, flagged_at: datetime, input_topic: str
) -> dict[str, Any]:
    """The fields every flagged event carries about its decision."""
    return {
        "decision_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{event_id}/{watchlist_version}")),
        "event_id": event_id,
        "severity": "critical",
        "action": action,
        "policy_version": "2026-12-01 (sha256:ab12)",
        "policy_rule": "default:sanctions",
        "watchlist_version": watchlist_version,
        "source": {"topic": input_topic, "partition": 1, "offset": 4211, "schema_id": 1},
        "flagged_at": _us(flagged_at),
        "screener": "screener-0",
        "screener_version": "aml-screener 0.1.0",
    }


def withdrawal_flagged(
    *,
    action: str | None = "reject",
    matches: Sequence[Mapping[str, Any]] | None = None,
    destination: str = LAZARUS,
    event_id: str | None = None,
    watchlist_version: str = "v20261128-1",
    flagged_at: datetime = DECIDED,
    amount: Decimal = Decimal("12500.5"),
    usd_value: Decimal | None = Decimal("12498.75"),
    asset: str = "USDT",
    network: str = "ethereum",
) -> dict[str, Any]:
    """A raw WithdrawalFlagged record (the current version)."""
    event_id = event_id or str(uuid.uuid4())
    found = [dict(item) for item in (matches if matches is not None else [match(destination)])]
    return {
        **_decision(event_id, watchlist_version, action, flagged_at, "withdrawals.requested"),
        "summary": f"{asset} on {network} to address listed by ofac-sdn (Lazarus Group, DPRK3)",
        "address_key": f"evm:{destination.lower()}",
        "chain_family": "evm",
        "matches": found,
        "withdrawal": {
            "event_id": event_id,
            "exchange_id": "bithumb-kr",
            "account_id": "acct-0042",
            "asset": asset,
            "network": network,
            "destination_address": destination,
            "destination_tag": None,
            "amount": decimal_to_bytes(amount, 18),
            "usd_value": None if usd_value is None else decimal_to_bytes(usd_value, 2),
            "requested_at": _ms(flagged_at) - 40,
            "metadata": {"channel": "api"},
        },
    }


def deposit_flagged(
    *,
    action: str | None = "freeze",
    sources: Sequence[tuple[str, Sequence[Mapping[str, Any]]]] | None = None,
    event_id: str | None = None,
    watchlist_version: str = "v20261128-1",
    flagged_at: datetime = DECIDED,
    amount: Decimal = Decimal("0.75"),
    usd_value: Decimal | None = Decimal("71250.00"),
) -> dict[str, Any]:
    """A raw DepositFlagged record: `sources` are (address, matches) of every source address."""
    sources = (
        sources
        if sources is not None
        else [
            (
                GARANTEX_BTC,
                [
                    match(
                        GARANTEX_BTC,
                        entry_id="36025",
                        name="Garantex Europe OU",
                        programs=("RUSSIA-EO14024",),
                        asset="XBT",
                    )
                ],
            ),
            (CLEAN_BTC, []),
        ]
    )
    event_id = event_id or f"bitcoin:{uuid.uuid4().hex}:3"
    screened: list[dict[str, Any]] = [
        {
            "address": address,
            "outcome": "FLAGGED" if found else "CLEAR",
            "reason": None,
            "address_key": f"btc:{address}",
            "checked_keys": [],
            "matches": [dict(item) for item in found],
        }
        for address, found in sources
    ]
    return {
        **_decision(event_id, watchlist_version, action, flagged_at, "deposits.received"),
        "summary": "BTC on bitcoin from an address listed by ofac-sdn (Garantex Europe OU)",
        "matches": [item for _address, found in sources for item in map(dict, found)],
        "sources": screened,
        "deposit": {
            "event_id": event_id,
            "exchange_id": "upbit-kr",
            "account_id": "acct-7777",
            "asset": "BTC",
            "network": "bitcoin",
            "tx_hash": "9f" * 32,
            "output_index": 3,
            "receiving_address": CUSTOMER_DEPOSIT_ADDRESS,
            "source_addresses": [address for address, _ in sources],
            "amount": decimal_to_bytes(amount, 18),
            "usd_value": None if usd_value is None else decimal_to_bytes(usd_value, 2),
            "observed_at": _ms(flagged_at) - 900,
            "confirmations": 2,
            "metadata": None,
        },
    }


def encode(record: Mapping[str, Any]) -> bytes:
    """Framed with the current WithdrawalFlagged or DepositFlagged schema, as the screener writes it."""
    encoder = _DEPOSIT_ENCODER if "deposit" in record else _WITHDRAWAL_ENCODER
    return encoder.encode(record)


def decoded(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record as the reporter reads it: encoded, then decoded by its writer schema with logical types."""
    return READER.decode(encode(record))[1]
