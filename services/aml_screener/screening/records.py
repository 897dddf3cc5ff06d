"""The records that flow through screening, typed (TypedDicts: plain dicts at run time, checked by mypy).

Their fields are those of the Avro schemas in schemas/ (the decoder produces and the encoders take exactly these
dicts), so a field added to a schema is added here too. Amounts stay raw on the hot path: `amount` and `usd_value`
are the two's-complement bytes of the Avro decimals and timestamps are integers (see codec.py).
"""

from __future__ import annotations

import builtins
from enum import StrEnum
from typing import NotRequired, TypedDict


class Direction(StrEnum):
    """Which way funds move: a withdrawal sends them to an address, a deposit receives them from addresses."""

    WITHDRAWAL = "withdrawal"
    DEPOSIT = "deposit"


class WithdrawalEvent(TypedDict):
    """aml_screener.events.WithdrawalRequested, as decoded on the hot path."""

    event_id: str
    exchange_id: str
    account_id: str
    asset: str
    network: str
    destination_address: str
    destination_tag: str | None
    amount: bytes  # decimal(38, 18), unscaled two's complement
    usd_value: bytes | None  # decimal(20, 2)
    requested_at: int  # ms since the epoch
    metadata: dict[str, str] | None


class DepositEvent(TypedDict):
    """aml_screener.events.DepositReceived, as decoded on the hot path."""

    event_id: str
    exchange_id: str
    account_id: str
    asset: str
    network: str
    tx_hash: str
    output_index: int | None
    receiving_address: str
    source_addresses: list[str]
    amount: bytes  # decimal(38, 18), unscaled two's complement
    usd_value: bytes | None  # decimal(20, 2)
    observed_at: int  # ms since the epoch
    confirmations: int
    metadata: dict[str, str] | None


class Match(TypedDict):
    """aml_screener.screening.WatchlistMatch (v2)."""

    list: str  # the list's name (a field called "list": types below say builtins.list)
    category: str
    source: str
    entry_id: str
    entry_name: str | None
    programs: builtins.list[str]
    listed_asset: str | None
    listed_address: str
    published_at: int | None
    # How it matched (screening/matching.py); stored listings carry `relation` and `listed_key` only when the loader
    # derived them for a related address.
    match_type: NotRequired[str]
    relation: NotRequired[str | None]
    matched_key: NotRequired[str | None]
    listed_key: NotRequired[str | None]


class SourcePosition(TypedDict):
    topic: str
    partition: int
    offset: int
    schema_id: int


class DecisionTimings(TypedDict):
    requested_at: int
    event_timestamp: int
    decided_at: int  # microseconds since the epoch
    batch_size: int
    decode_us: int
    normalize_us: int
    lookup_us: int


class CheckedKey(TypedDict):
    key: str
    relation: str


class AddressScreening(TypedDict):
    """aml_screener.screening.AddressScreening (v1): one source address of a deposit."""

    address: str
    outcome: str  # Outcome
    reason: str | None
    address_key: str | None
    checked_keys: list[CheckedKey]
    matches: list[Match]


class ShadowResult(TypedDict):
    rule: str
    action: str
    severity: str | None


class Decision(TypedDict):
    """aml_screener.screening.ScreeningDecision (v4)."""

    decision_id: str
    direction: str  # Direction
    event_id: str
    exchange_id: str
    asset: str
    network: str
    decision: str  # Outcome
    reason: str | None
    chain_family: str | None
    address: str | None
    address_key: str | None
    checked_keys: list[CheckedKey]
    sources: list[AddressScreening]
    severity: str | None
    action: str | None
    policy_version: str | None
    policy_rule: str | None
    policy_overridden_rule: str | None
    shadow: list[ShadowResult]
    matches: list[Match]
    allowlisted: list[Match]
    overridden: list[Match]
    watchlist_version: str | None
    watchlist_digest: str | None
    source: SourcePosition
    timings: DecisionTimings
    screener: str
    screener_version: str | None


class Flagged(TypedDict):
    """aml_screener.screening.WithdrawalFlagged (v3)."""

    decision_id: str
    event_id: str
    severity: str
    action: str | None
    policy_version: str | None
    policy_rule: str | None
    summary: str
    address_key: str
    chain_family: str
    matches: list[Match]
    watchlist_version: str
    withdrawal: WithdrawalEvent
    source: SourcePosition
    flagged_at: int  # microseconds since the epoch
    screener: str
    screener_version: str | None


class DepositFlagged(TypedDict):
    """aml_screener.screening.DepositFlagged (v1)."""

    decision_id: str
    event_id: str
    severity: str
    action: str | None
    policy_version: str | None
    policy_rule: str | None
    summary: str
    matches: list[Match]
    sources: list[AddressScreening]
    watchlist_version: str
    deposit: DepositEvent
    source: SourcePosition
    flagged_at: int  # microseconds since the epoch
    screener: str
    screener_version: str | None
