"""The shared test set of the pre-screen API's contract: withdrawals that the API and the stream must decide alike.

Drawn from the bundled OFAC sample (the watchlist the integration tests load): listed destinations in several
spellings, a related address (the TRON twin of a listed EVM account), clear ones, and unscreenable ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import base58

LISTED_EVM = "0x08723392Ed15743cc38513C4925f5e6be5c17243"  # Lazarus Group (OFAC SDN), EIP-55 form
LISTED_BTC = "134r8iHv69xdT6p5qVKTsHrcUEuBVZAYak"  # Tian Yinyin (OFAC SDN)
LISTED_TRX = "TTUDyVhhpCC1xJoPmWzdjLAzeoPwbSABdr"  # Cryptex (OFAC SDN)
CLEAR_EVM = "0x52908400098527886E0F7030069857D2E4169EE7"  # EIP-55's own test vector, not listed
CLEAR_BTC = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"
# The TRON spelling of the listed EVM account's 20 bytes: the same key holder, a `related` match.
TRON_TWIN = base58.b58encode_check(b"\x41" + bytes.fromhex(LISTED_EVM[2:])).decode()


@dataclass(frozen=True)
class Case:
    name: str
    network: str
    address: str
    outcome: str  # what the stream decides: CLEAR, FLAGGED or UNSCREENABLE
    asset: str = "USDT"
    usd_value: str | None = "1250.00"


CASES = (
    Case("listed evm, EIP-55", "ethereum", LISTED_EVM, "FLAGGED", "ETH"),
    Case("listed evm, lowercase", "ethereum", LISTED_EVM.lower(), "FLAGGED", "ETH"),
    Case("listed evm, on another EVM chain", "polygon", LISTED_EVM.upper().replace("0X", "0x"), "FLAGGED"),
    Case("tron twin of a listed evm account", "tron", TRON_TWIN, "FLAGGED"),
    Case("listed bitcoin", "bitcoin", LISTED_BTC, "FLAGGED", "BTC", None),
    Case("listed tron", "tron", LISTED_TRX, "FLAGGED", "TRX"),
    Case("clear evm", "ethereum", CLEAR_EVM, "CLEAR", "ETH"),
    Case("clear bitcoin", "bitcoin", CLEAR_BTC, "CLEAR", "BTC"),
    Case("invalid address", "ethereum", "0x1234", "UNSCREENABLE", "ETH"),
    Case("unsupported network", "not-a-chain", "whatever", "UNSCREENABLE"),
)

REQUESTED_AT = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)


def withdrawal_json(case: Case, event_id: str) -> dict[str, Any]:
    """The withdrawal as the API takes it (JSON)."""
    return {
        "event_id": event_id,
        "exchange_id": "exchange-1",
        "account_id": "account-7",
        "asset": case.asset,
        "network": case.network,
        "destination_address": case.address,
        "destination_tag": None,
        "amount": "12.5",
        "usd_value": case.usd_value,
        "requested_at": REQUESTED_AT.isoformat(),
        "metadata": {"channel": "api-contract"},
    }


def withdrawal_event(case: Case, event_id: str) -> dict[str, Any]:
    """The same withdrawal as the exchange produces it on the input topic (for harness.encoder())."""
    return {
        **withdrawal_json(case, event_id),
        "amount": Decimal("12.5"),
        "usd_value": Decimal(case.usd_value) if case.usd_value is not None else None,
        "requested_at": REQUESTED_AT,
    }


# Fields that say where and when a decision was made, not what it is: they differ between the API and the stream.
WHERE_AND_WHEN = ("source", "timings", "screener")


def what_was_decided(decision: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in decision.items() if name not in WHERE_AND_WHEN}
